//! Reads the `metadata_props` of an ONNX file without loading its weights: a minimal
//! protobuf walk over the top-level `ModelProto` fields, skipping everything else.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// `ModelProto.metadata_props` is field 14; each entry has key = 1, value = 2.
const METADATA_PROPS_FIELD: u64 = 14;
/// No metadata entry is anywhere near this large; a bigger one means a corrupt file.
const MAX_ENTRY_BYTES: u64 = 16 * 1024 * 1024;

pub fn read_metadata(path: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut reader = BufReader::new(file);
    let mut out = BTreeMap::new();
    let mut position: u64 = 0;
    while position < len {
        let (tag, tag_len) = read_varint(&mut reader)?;
        position += tag_len;
        let field = tag >> 3;
        match tag & 7 {
            0 => {
                let (_, n) = read_varint(&mut reader)?;
                position += n;
            }
            1 => {
                reader.seek_relative(8)?;
                position += 8;
            }
            5 => {
                reader.seek_relative(4)?;
                position += 4;
            }
            2 => {
                let (size, n) = read_varint(&mut reader)?;
                position += n;
                if position + size > len {
                    return Err(invalid("length runs past the end of the file"));
                }
                if field == METADATA_PROPS_FIELD {
                    if size > MAX_ENTRY_BYTES {
                        return Err(invalid("metadata entry too large"));
                    }
                    let mut entry = vec![0u8; usize::try_from(size).map_err(|_| invalid("size"))?];
                    reader.read_exact(&mut entry)?;
                    let (key, value) = parse_entry(&entry)?;
                    out.insert(key, value);
                } else {
                    let offset = i64::try_from(size).map_err(|_| invalid("size"))?;
                    reader.seek(SeekFrom::Current(offset))?;
                }
                position += size;
            }
            _ => return Err(invalid("unsupported protobuf wire type: not an ONNX file")),
        }
    }
    Ok(out)
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_owned())
}

fn read_varint(reader: &mut impl Read) -> std::io::Result<(u64, u64)> {
    let mut value: u64 = 0;
    for index in 0..10u32 {
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte)?;
        value |= u64::from(byte[0] & 0x7f) << (7 * index);
        if byte[0] & 0x80 == 0 {
            return Ok((value, u64::from(index) + 1));
        }
    }
    Err(invalid("varint too long"))
}

fn parse_entry(bytes: &[u8]) -> std::io::Result<(String, String)> {
    let mut cursor = std::io::Cursor::new(bytes);
    let mut key = String::new();
    let mut value = String::new();
    while (cursor.position() as usize) < bytes.len() {
        let (tag, _) = read_varint(&mut cursor)?;
        if tag & 7 != 2 {
            return Err(invalid("unexpected wire type in metadata entry"));
        }
        let (size, _) = read_varint(&mut cursor)?;
        let start = cursor.position() as usize;
        let end = start
            .checked_add(usize::try_from(size).map_err(|_| invalid("size"))?)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| invalid("metadata entry truncated"))?;
        let text = String::from_utf8_lossy(&bytes[start..end]).into_owned();
        match tag >> 3 {
            1 => key = text,
            2 => value = text,
            _ => {}
        }
        cursor.set_position(end as u64);
    }
    Ok((key, value))
}

/// Encodes a minimal `ModelProto` with the given metadata (tests and tools use it).
pub fn encode_model_with_metadata(metadata: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    fn varint(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    fn field_bytes(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint((field << 3) | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::new();
    varint(1 << 3, &mut out); // ir_version
    varint(8, &mut out);
    field_bytes(2, b"opentranscribe-test", &mut out); // producer_name
    field_bytes(6, payload, &mut out); // doc_string stands in for weights
    for (key, value) in metadata {
        let mut entry = Vec::new();
        field_bytes(1, key.as_bytes(), &mut entry);
        field_bytes(2, value.as_bytes(), &mut entry);
        field_bytes(METADATA_PROPS_FIELD, &entry, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_metadata_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let payload = vec![0xAB; 300_000];
        let bytes = encode_model_with_metadata(
            &[("n_mels", "80"), ("model_type", "whisper-tiny.en")],
            &payload,
        );
        std::fs::write(&path, &bytes).unwrap();
        let meta = read_metadata(&path).unwrap();
        assert_eq!(meta.get("n_mels").map(String::as_str), Some("80"));
        assert_eq!(
            meta.get("model_type").map(String::as_str),
            Some("whisper-tiny.en")
        );
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(read_metadata(&path).is_err());
        std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
        assert!(read_metadata(&path).is_err());
    }
}
