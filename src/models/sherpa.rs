//! Adapts sherpa-onnx's published model archives (Whisper, pyannote segmentation) into our
//! cache layout: renamed files, a manifest, and parameters read from the ONNX metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::cache::sha256_file;
use super::manifest::{FORMAT_VERSION, MANIFEST_FILE, is_safe_name};
use super::onnx_meta::read_metadata;

/// If `dir` (a staged, unpacked archive directory without a manifest) is in a sherpa-onnx
/// layout, builds the model directory next to it and returns its name.
pub fn adapt(dir: &Path) -> Result<Option<String>, String> {
    let files = list_files(dir);
    let name_of = |suffix: &str| {
        files
            .iter()
            .find(|f| f.ends_with(suffix) && !f.contains('/'))
            .cloned()
    };
    if let (Some(encoder), Some(decoder), Some(tokens)) = (
        name_of("-encoder.onnx"),
        name_of("-decoder.onnx"),
        name_of("-tokens.txt"),
    ) {
        let prefix = encoder.trim_end_matches("-encoder.onnx").to_owned();
        return adapt_whisper(dir, &prefix, &encoder, &decoder, &tokens).map(Some);
    }
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if dir_name.contains("pyannote-segmentation") && files.iter().any(|f| f == "model.onnx") {
        return adapt_segmentation(dir, &dir_name).map(Some);
    }
    Ok(None)
}

fn list_files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn meta_int(meta: &BTreeMap<String, String>, key: &str) -> Result<i64, String> {
    meta.get(key)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or_else(|| format!("encoder metadata lacks `{key}`: not a sherpa-onnx Whisper export"))
}

fn adapt_whisper(
    dir: &Path,
    prefix: &str,
    encoder: &str,
    decoder: &str,
    tokens: &str,
) -> Result<String, String> {
    let meta = read_metadata(&dir.join(encoder)).map_err(|e| format!("{encoder}: {e}"))?;
    let name = format!("whisper-{prefix}");
    if !is_safe_name(&name) {
        return Err(format!("unusable model name `{name}`"));
    }
    let mut dims = serde_json::Map::new();
    for key in [
        "n_mels",
        "n_audio_ctx",
        "n_audio_state",
        "n_audio_head",
        "n_audio_layer",
        "n_vocab",
        "n_text_ctx",
        "n_text_state",
        "n_text_head",
        "n_text_layer",
    ] {
        dims.insert(key.to_owned(), json!(meta_int(&meta, key)?));
    }
    let multilingual = meta_int(&meta, "is_multilingual")? != 0;
    let codes: Vec<&str> = meta
        .get("all_language_codes")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let ids: Vec<i64> = meta
        .get("all_language_tokens")
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_default();
    let language_tokens: serde_json::Map<String, Value> = codes
        .iter()
        .zip(&ids)
        .map(|(code, id)| ((*code).to_owned(), json!(id)))
        .collect();
    let no_timestamps = meta_int(&meta, "no_timestamps")?;
    let eot = meta_int(&meta, "eot")?;
    let suppress: Vec<i64> = meta
        .get("non_speech_tokens")
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_default();

    let target = dir.with_file_name(format!(".sherpa-{name}"));
    std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
    let mut renames: Vec<(String, &str)> = vec![
        (encoder.to_owned(), "encoder.onnx"),
        (decoder.to_owned(), "decoder.onnx"),
        (tokens.to_owned(), "tokens.txt"),
    ];
    let mut file_roles = serde_json::Map::new();
    file_roles.insert("encoder".into(), json!("encoder.onnx"));
    file_roles.insert("decoder".into(), json!("decoder.onnx"));
    file_roles.insert("tokens".into(), json!("tokens.txt"));
    for (suffix, role, new_name) in [
        ("-encoder.int8.onnx", "encoder_int8", "encoder.int8.onnx"),
        ("-decoder.int8.onnx", "decoder_int8", "decoder.int8.onnx"),
    ] {
        let original = format!("{prefix}{suffix}");
        if dir.join(&original).is_file() {
            renames.push((original, new_name));
            file_roles.insert(role.into(), json!(new_name));
        }
    }
    for (from, to) in &renames {
        std::fs::rename(dir.join(from), target.join(to)).map_err(|e| e.to_string())?;
    }
    let mut parameters = dims;
    parameters.insert("name".into(), json!(name));
    parameters.insert("multilingual".into(), json!(multilingual));
    parameters.insert("sample_rate".into(), json!(16000));
    parameters.insert("n_fft".into(), json!(400));
    parameters.insert("hop_length".into(), json!(160));
    parameters.insert("chunk_length".into(), json!(30));
    parameters.insert("n_frames".into(), json!(3000));
    // sherpa-onnx exports have no cross-attention output: word timestamps come from the
    // timestamp tokens instead of DTW over alignment heads.
    parameters.insert("alignment_heads".into(), json!([]));
    parameters.insert("cross_qk".into(), json!(false));
    parameters.insert("layout".into(), json!("sherpa-onnx"));
    parameters.insert(
        "special_tokens".into(),
        json!({
            "eot": eot,
            "sot": meta_int(&meta, "sot")?,
            "translate": meta_int(&meta, "translate")?,
            "transcribe": meta_int(&meta, "transcribe")?,
            "sot_lm": meta_int(&meta, "sot_lm")?,
            "sot_prev": meta_int(&meta, "sot_prev")?,
            "no_speech": meta_int(&meta, "no_speech")?,
            "no_timestamps": no_timestamps,
            "timestamp_begin": no_timestamps + 1,
            "language_tokens": language_tokens,
        }),
    );
    parameters.insert("suppress_tokens".into(), json!(suppress));
    parameters.insert("begin_suppress".into(), json!([220, eot]));
    parameters.insert("files".into(), Value::Object(file_roles));
    let source = format!(
        "sherpa-onnx Whisper export ({})",
        meta.get("model_type").map(String::as_str).unwrap_or(prefix)
    );
    finish(
        dir,
        &target,
        &name,
        "asr",
        &source,
        "MIT",
        Value::Object(parameters),
    )
}

fn adapt_segmentation(dir: &Path, dir_name: &str) -> Result<String, String> {
    let name = "pyannote-segmentation-3.0".to_owned();
    if !dir_name.contains("3-0") && !dir_name.contains("3.0") {
        return Err(format!(
            "{dir_name}: only pyannote segmentation 3.0 is supported"
        ));
    }
    let target = dir.with_file_name(format!(".sherpa-{name}"));
    std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
    std::fs::rename(dir.join("model.onnx"), target.join("model.onnx"))
        .map_err(|e| e.to_string())?;
    let parameters = json!({
        "sample_rate": 16000,
        "window_seconds": 10.0,
        "frames_per_window": 589,
        "num_classes": 7,
        "powerset": {"max_speakers_per_chunk": 3, "max_speakers_per_frame": 2,
                     "classes": [[], [0], [1], [2], [0, 1], [0, 2], [1, 2]]},
        "layout": "sherpa-onnx",
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["N", 1, "T"]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["N", "frames", 7]}],
    });
    finish(
        dir,
        &target,
        &name,
        "segmentation",
        "sherpa-onnx pyannote segmentation-3.0 export",
        "MIT",
        parameters,
    )
}

/// Writes the manifest, drops the leftovers of the archive, and puts the model at its name.
fn finish(
    original: &Path,
    target: &Path,
    name: &str,
    kind: &str,
    source: &str,
    license: &str,
    parameters: Value,
) -> Result<String, String> {
    let mut files = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(target)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    for path in paths {
        let size = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
        let sha256 = sha256_file(&path).map_err(|e| e.to_string())?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push(json!({"path": file_name, "size": size, "sha256": sha256}));
    }
    let manifest = json!({
        "format_version": FORMAT_VERSION,
        "name": name,
        "kind": kind,
        "source": source,
        "license": license,
        "files": files,
        "parameters": parameters,
    });
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    std::fs::write(target.join(MANIFEST_FILE), text).map_err(|e| e.to_string())?;
    std::fs::remove_dir_all(original).map_err(|e| e.to_string())?;
    let final_dir = original.with_file_name(name);
    if final_dir.exists() {
        return Err(format!("the archive holds `{name}` twice"));
    }
    std::fs::rename(target, &final_dir).map_err(|e| e.to_string())?;
    Ok(name.to_owned())
}
