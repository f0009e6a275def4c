//! Caps on the parts of an upload's multipart body that the parser (multer, behind axum's
//! `Multipart`) buffers whole: the preamble before the first delimiter, each part's header
//! block, and the number of parts. Without them a header that never ends, or a body without the
//! boundary, grows memory one-for-one with the bytes sent.
//!
//! [`guard_request`] wraps a streamed upload's body in [`GuardedBody`], which watches the bytes
//! as they pass with a small state machine that mirrors multer's (keeping only a short tail
//! across chunk borders, scanning with `memchr::memmem`) and yields a [`MultipartCap`] error
//! when a cap is broken. Bytes inside part bodies pass through untouched and unlimited here
//! (the upload's own size limit applies to them).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream};
use axum::extract::Request;
use axum::extract::multipart::MultipartError;
use axum::http::header;
use bytes::Bytes;
use futures_util::Stream;
use memchr::memmem::Finder;

use crate::error::Error;

/// Bytes before the first delimiter.
pub const MAX_PREAMBLE: usize = 16 * 1024;
/// A part's header block, from the end of its delimiter to the blank line that ends it.
pub const MAX_PART_HEADER: usize = 16 * 1024;
/// Parts per body (the upload routes use at most 9 different ones).
pub const MAX_PARTS: usize = 16;

/// The cap a multipart body broke (or the framing error the guard met first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultipartCap {
    /// No delimiter within [`MAX_PREAMBLE`] bytes.
    Preamble,
    /// A part's header block is over [`MAX_PART_HEADER`] bytes.
    PartHeader,
    /// More than [`MAX_PARTS`] parts.
    TooManyParts,
    /// A delimiter is followed by something other than `--`, padding and CRLF.
    Malformed,
}

impl std::fmt::Display for MultipartCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Preamble => write!(
                f,
                "no multipart boundary within the first {} KiB of the body",
                MAX_PREAMBLE / 1024
            ),
            Self::PartHeader => write!(
                f,
                "a multipart part's headers are over {} KiB",
                MAX_PART_HEADER / 1024
            ),
            Self::TooManyParts => write!(f, "more than {MAX_PARTS} multipart parts"),
            Self::Malformed => write!(f, "a multipart delimiter line is malformed"),
        }
    }
}

impl std::error::Error for MultipartCap {}

impl MultipartCap {
    pub fn to_error(self) -> Error {
        let code = match self {
            Self::PartHeader | Self::TooManyParts => "payload-too-large",
            Self::Preamble | Self::Malformed => "invalid-multipart",
        };
        Error::new(code, self.to_string())
    }
}

/// The error for a failed multipart read: a broken cap of this guard (found anywhere down the
/// error's `source()` chain) keeps its own code; anything else is `invalid-multipart`.
pub fn multipart_error(error: &MultipartError) -> Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(cap) = current.downcast_ref::<MultipartCap>() {
            return cap.to_error();
        }
        cause = current.source();
    }
    Error::new("invalid-multipart", error.body_text())
}

/// Wraps the body of a multipart request in [`GuardedBody`]. A request without a boundary
/// multer accepts is left as it is: axum's `Multipart` extractor refuses it without reading the
/// body (after the handler's authentication, so a 401 still comes first).
pub fn guard_request(request: Request) -> Request {
    let Some(boundary) = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
    else {
        return request;
    };
    let (parts, body) = request.into_parts();
    let guarded = GuardedBody {
        inner: body.into_data_stream(),
        scanner: Scanner::new(&boundary),
        failed: false,
    };
    Request::from_parts(parts, Body::from_stream(guarded))
}

/// A body stream that yields its chunks unchanged until a cap is broken, then one
/// [`MultipartCap`] error and the end.
pub struct GuardedBody {
    inner: BodyDataStream,
    scanner: Scanner,
    failed: bool,
}

impl Stream for GuardedBody {
    type Item = Result<Bytes, axum::BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match this.scanner.feed(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(cap) => {
                    this.failed = true;
                    tracing::debug!(%cap, "multipart upload refused");
                    Poll::Ready(Some(Err(Box::new(cap))))
                }
            },
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Where the scanner is, mirroring multer's stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the first `--boundary` (anywhere, as multer does); `seen` bytes so far.
    Preamble { seen: usize },
    /// Just after a `--boundary`: `--` closes the body, anything else starts a part.
    DelimiterEnd { dash: bool },
    /// Spaces and tabs after the delimiter, up to its CR.
    Padding { header: usize },
    /// The LF of the delimiter line.
    LineFeed { header: usize },
    /// The part's header lines, up to `\r\n\r\n` (searched from after the delimiter's CRLF).
    Headers { header: usize },
    /// The part's body, up to `\r\n--boundary`.
    Body,
    /// After the close delimiter: multer reads no further.
    Epilogue,
}

/// The state machine over the body's bytes; keeps at most a needle's length of tail.
struct Scanner {
    state: State,
    parts: usize,
    /// `--boundary`: the first delimiter.
    first: Finder<'static>,
    /// `\r\n--boundary`: the delimiter after a part's body.
    delimiter: Finder<'static>,
    /// `\r\n\r\n`: the end of a header block.
    headers_end: Finder<'static>,
    /// The last bytes seen in the current search state (shorter than its needle).
    tail: Vec<u8>,
    scratch: Vec<u8>,
}

impl Scanner {
    fn new(boundary: &str) -> Self {
        let first = format!("--{boundary}");
        let delimiter = format!("\r\n--{boundary}");
        Self {
            state: State::Preamble { seen: 0 },
            parts: 0,
            first: Finder::new(first.as_bytes()).into_owned(),
            delimiter: Finder::new(delimiter.as_bytes()).into_owned(),
            headers_end: Finder::new(b"\r\n\r\n").into_owned(),
            tail: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Takes the next chunk of the body.
    fn feed(&mut self, mut data: &[u8]) -> Result<(), MultipartCap> {
        while !data.is_empty() {
            match self.state {
                State::Preamble { seen } => {
                    let needle = self.first.needle().len();
                    match find_across(&self.first, &mut self.tail, &mut self.scratch, data) {
                        Some(end) => {
                            if seen + end > MAX_PREAMBLE + needle {
                                return Err(MultipartCap::Preamble);
                            }
                            data = &data[end..];
                            self.enter(State::DelimiterEnd { dash: false });
                        }
                        None => {
                            let seen = seen + data.len();
                            // Any delimiter still to come would start after the cap.
                            if seen >= MAX_PREAMBLE + needle {
                                return Err(MultipartCap::Preamble);
                            }
                            self.state = State::Preamble { seen };
                            return Ok(());
                        }
                    }
                }
                State::DelimiterEnd { dash: false } => {
                    if data[0] == b'-' {
                        data = &data[1..];
                        self.state = State::DelimiterEnd { dash: true };
                    } else {
                        // A part starts; multer looks at this byte again as padding.
                        self.parts += 1;
                        if self.parts > MAX_PARTS {
                            return Err(MultipartCap::TooManyParts);
                        }
                        self.state = State::Padding { header: 0 };
                    }
                }
                State::DelimiterEnd { dash: true } => {
                    if data[0] != b'-' {
                        return Err(MultipartCap::Malformed);
                    }
                    self.state = State::Epilogue;
                    return Ok(());
                }
                State::Padding { header } => {
                    let header = header + 1;
                    if header > MAX_PART_HEADER {
                        return Err(MultipartCap::PartHeader);
                    }
                    self.state = match data[0] {
                        b' ' | b'\t' => State::Padding { header },
                        b'\r' => State::LineFeed { header },
                        _ => return Err(MultipartCap::Malformed),
                    };
                    data = &data[1..];
                }
                State::LineFeed { header } => {
                    if data[0] != b'\n' {
                        return Err(MultipartCap::Malformed);
                    }
                    data = &data[1..];
                    self.enter(State::Headers { header: header + 1 });
                }
                State::Headers { header } => {
                    match find_across(&self.headers_end, &mut self.tail, &mut self.scratch, data) {
                        Some(end) => {
                            if header + end > MAX_PART_HEADER {
                                return Err(MultipartCap::PartHeader);
                            }
                            data = &data[end..];
                            self.enter(State::Body);
                        }
                        None => {
                            let header = header + data.len();
                            if header > MAX_PART_HEADER {
                                return Err(MultipartCap::PartHeader);
                            }
                            self.state = State::Headers { header };
                            return Ok(());
                        }
                    }
                }
                State::Body => {
                    match find_across(&self.delimiter, &mut self.tail, &mut self.scratch, data) {
                        Some(end) => {
                            data = &data[end..];
                            self.enter(State::DelimiterEnd { dash: false });
                        }
                        None => return Ok(()),
                    }
                }
                State::Epilogue => return Ok(()),
            }
        }
        Ok(())
    }

    /// A new state: the tail of the previous search does not carry over.
    fn enter(&mut self, state: State) {
        self.state = state;
        self.tail.clear();
    }
}

/// Finds `finder`'s needle in `tail` + `data`, where `tail` (shorter than the needle) holds the
/// last bytes before `data` in the same search. Returns the offset in `data` just past the first
/// match; without one, keeps the last bytes of `tail` + `data` in `tail`. O(`data.len()`).
fn find_across(
    finder: &Finder<'_>,
    tail: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    data: &[u8],
) -> Option<usize> {
    let needle = finder.needle().len();
    if !tail.is_empty() {
        // A match that starts in the tail ends within the needle's length of `data`.
        scratch.clear();
        scratch.extend_from_slice(tail);
        scratch.extend_from_slice(&data[..data.len().min(needle - 1)]);
        if let Some(at) = finder.find(scratch)
            && at < tail.len()
        {
            return Some(at + needle - tail.len());
        }
    }
    if let Some(at) = finder.find(data) {
        return Some(at + needle);
    }
    let keep = needle - 1;
    if data.len() >= keep {
        tail.clear();
        tail.extend_from_slice(&data[data.len() - keep..]);
    } else {
        tail.extend_from_slice(data);
        let excess = tail.len().saturating_sub(keep);
        tail.drain(..excess);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "XyZ-boundary";

    fn part(name: &str, content: &[u8]) -> Vec<u8> {
        let mut out =
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .into_bytes();
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
        out
    }

    fn body(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, content) in parts {
            out.extend(part(name, content));
        }
        out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        out
    }

    /// Feeds `bytes` in pieces of `size`; the result and the number of parts seen.
    fn scan(bytes: &[u8], size: usize) -> (Result<(), MultipartCap>, usize, State) {
        let mut scanner = Scanner::new(BOUNDARY);
        for chunk in bytes.chunks(size) {
            if let Err(cap) = scanner.feed(chunk) {
                return (Err(cap), scanner.parts, scanner.state);
            }
        }
        (Ok(()), scanner.parts, scanner.state)
    }

    /// Every chunk size from 1 byte (every border split) to the whole body.
    fn scan_all_splits(bytes: &[u8]) -> Vec<(Result<(), MultipartCap>, usize, State)> {
        (1..=bytes.len()).map(|size| scan(bytes, size)).collect()
    }

    #[test]
    fn a_normal_body_passes_at_every_chunk_size() {
        // File content that holds near-delimiters: CRLF, `--`, the boundary without CRLF.
        let content =
            format!("a\r\n-\r\n--XyZ\r\n\r\nz--{BOUNDARY}x but no CRLF before").into_bytes();
        let bytes = body(&[("language", b"en"), ("file", &content), ("diarize", b"")]);
        for (result, parts, state) in scan_all_splits(&bytes) {
            assert_eq!(result, Ok(()));
            assert_eq!(parts, 3);
            assert_eq!(state, State::Epilogue);
        }
    }

    #[test]
    fn a_delimiter_split_across_two_chunks_is_found() {
        let bytes = body(&[("a", b"1"), ("b", b"2")]);
        // The `\r\n--` before the second part's boundary.
        let second = memchr::memmem::find(&bytes, format!("\r\n--{BOUNDARY}").as_bytes()).unwrap();
        for split in second + 1..second + 4 + BOUNDARY.len() {
            let mut scanner = Scanner::new(BOUNDARY);
            scanner.feed(&bytes[..split]).unwrap();
            scanner.feed(&bytes[split..]).unwrap();
            assert_eq!(scanner.parts, 2, "split at {split}");
            assert_eq!(scanner.state, State::Epilogue, "split at {split}");
        }
    }

    #[test]
    fn a_preamble_and_an_epilogue_of_any_content_are_fine_within_the_cap() {
        let mut bytes = b"preamble --XyZ not yet\r\n".to_vec();
        bytes.extend(body(&[("file", b"data")]));
        bytes.extend_from_slice(&[0u8; 100_000]);
        for size in [1, 2, 7, 64, 4096, bytes.len()] {
            let (result, parts, state) = scan(&bytes, size);
            assert_eq!(result, Ok(()));
            assert_eq!((parts, state), (1, State::Epilogue));
        }
    }

    #[test]
    fn a_body_without_the_boundary_breaks_the_preamble_cap() {
        let bytes = vec![0u8; MAX_PREAMBLE + 1024];
        for size in [1, 100, 8192, bytes.len()] {
            assert_eq!(scan(&bytes, size).0, Err(MultipartCap::Preamble));
        }
        // A delimiter just after the cap is too late as well.
        let mut late = vec![b'p'; MAX_PREAMBLE + 1];
        late.extend(body(&[("file", b"x")]));
        assert_eq!(scan(&late, 4096).0, Err(MultipartCap::Preamble));
        let mut in_time = vec![b'p'; MAX_PREAMBLE];
        in_time.extend(body(&[("file", b"x")]));
        assert_eq!(scan(&in_time, 4096).0, Ok(()));
    }

    #[test]
    fn a_header_that_never_ends_breaks_the_header_cap() {
        let mut bytes =
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a")
                .into_bytes();
        bytes.extend(std::iter::repeat_n(b'a', MAX_PART_HEADER));
        for size in [1, 3, 1000, bytes.len()] {
            assert_eq!(scan(&bytes, size).0, Err(MultipartCap::PartHeader));
        }
        // Lines that end but never make a blank line count together.
        let mut lines = format!("--{BOUNDARY}\r\n").into_bytes();
        for _ in 0..MAX_PART_HEADER / 8 {
            lines.extend_from_slice(b"X-A: b\r\n");
        }
        assert_eq!(scan(&lines, 512).0, Err(MultipartCap::PartHeader));
        // Endless padding after a delimiter counts too.
        let mut padding = format!("--{BOUNDARY}").into_bytes();
        padding.extend(std::iter::repeat_n(b' ', MAX_PART_HEADER + 1));
        assert_eq!(scan(&padding, 1000).0, Err(MultipartCap::PartHeader));
    }

    #[test]
    fn headers_of_a_long_file_name_within_the_cap_pass() {
        let name = "n".repeat(MAX_PART_HEADER - 200);
        let mut bytes = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(format!("x\r\n--{BOUNDARY}--").as_bytes());
        assert_eq!(scan(&bytes, 333).0, Ok(()));
    }

    #[test]
    fn too_many_parts_break_the_parts_cap() {
        let parts: Vec<(&str, &[u8])> = vec![("prompt", b"x"); MAX_PARTS];
        for (result, count, _) in scan_all_splits(&body(&parts)) {
            assert_eq!(result, Ok(()));
            assert_eq!(count, MAX_PARTS);
        }
        let parts: Vec<(&str, &[u8])> = vec![("prompt", b"x"); MAX_PARTS + 1];
        for (result, _, _) in scan_all_splits(&body(&parts)) {
            assert_eq!(result, Err(MultipartCap::TooManyParts));
        }
        // Empty parts without headers are parts (multer wants `\r\n\r\n` after the
        // delimiter line even when there are no headers).
        let mut bare = Vec::new();
        for _ in 0..=MAX_PARTS {
            bare.extend_from_slice(format!("--{BOUNDARY}\r\n\r\n\r\n\r\n").as_bytes());
        }
        assert_eq!(scan(&bare, 5).0, Err(MultipartCap::TooManyParts));
    }

    #[test]
    fn the_header_search_starts_after_the_delimiter_line_as_multer_does() {
        // `--B\r\n\r\n`: multer reads the CRLF, then needs a whole `\r\n\r\n` after it, so the
        // bytes that follow are still headers (and capped), not a part body.
        let mut bytes = format!("--{BOUNDARY}\r\n\r\n").into_bytes();
        bytes.extend(std::iter::repeat_n(b'a', MAX_PART_HEADER));
        for size in [1, 2, 4096] {
            assert_eq!(scan(&bytes, size).0, Err(MultipartCap::PartHeader));
        }
        // And a match never reaches back before the state it is searched in: the body's
        // delimiter search starts after the blank line.
        let tight = format!("--{BOUNDARY}\r\nA: b\r\n\r\n\r\n--{BOUNDARY}--").into_bytes();
        for (result, parts, state) in scan_all_splits(&tight) {
            assert_eq!(result, Ok(()));
            assert_eq!((parts, state), (1, State::Epilogue));
        }
    }

    #[test]
    fn a_malformed_delimiter_line_is_refused() {
        for bad in ["-x", "x\r\n", " \t\rx"] {
            let bytes = format!("--{BOUNDARY}{bad}").into_bytes();
            for size in [1, bytes.len()] {
                assert_eq!(
                    scan(&bytes, size).0,
                    Err(MultipartCap::Malformed),
                    "{bad:?}"
                );
            }
        }
        // Padding before the CRLF is allowed.
        let padded = format!("--{BOUNDARY} \t\r\nA: b\r\n\r\nx\r\n--{BOUNDARY}--").into_bytes();
        assert_eq!(scan(&padded, 1).0, Ok(()));
    }

    /// What multer itself makes of a body: the number of parts, or an error.
    async fn multer_parts(bytes: &[u8]) -> Result<usize, String> {
        let stream = futures_util::stream::iter(
            bytes
                .chunks(7)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let mut multipart = multer::Multipart::new(stream, BOUNDARY);
        let mut parts = 0;
        while let Some(mut field) = multipart.next_field().await.map_err(|e| e.to_string())? {
            parts += 1;
            while field.chunk().await.map_err(|e| e.to_string())?.is_some() {}
        }
        Ok(parts)
    }

    #[tokio::test]
    async fn the_scanner_agrees_with_multer() {
        let content = format!("a\r\n-\r\nz--{BOUNDARY}x\r\n\r\n").into_bytes();
        let bodies = [
            body(&[("language", b"en"), ("file", &content), ("diarize", b"")]),
            format!("pre--{BOUNDARY} \t\r\nA: b\r\n\r\nx\r\n--{BOUNDARY}--epilogue").into_bytes(),
            format!("--{BOUNDARY}\r\nA: b\r\n\r\n\r\n--{BOUNDARY}--").into_bytes(),
            format!("--{BOUNDARY}\r\n\r\n\r\n\r\n--{BOUNDARY}\r\n\r\n\r\nx\r\n--{BOUNDARY}--")
                .into_bytes(),
        ];
        for bytes in bodies {
            let (result, parts, state) = scan(&bytes, 1);
            assert_eq!((result, state), (Ok(()), State::Epilogue));
            assert_eq!(
                multer_parts(&bytes).await,
                Ok(parts),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        for bad in ["-x", "x\r\n", " \t\rx"] {
            let bytes = format!("--{BOUNDARY}{bad}A: b\r\n\r\nx\r\n--{BOUNDARY}--").into_bytes();
            assert_eq!(scan(&bytes, 1).0, Err(MultipartCap::Malformed));
            assert!(multer_parts(&bytes).await.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn find_across_keeps_a_short_tail() {
        let finder = Finder::new(b"\r\n--abc").into_owned();
        let (mut tail, mut scratch) = (Vec::new(), Vec::new());
        assert_eq!(
            find_across(&finder, &mut tail, &mut scratch, b"xxxxxxxxxx\r\n-"),
            None
        );
        assert_eq!(tail, b"xxx\r\n-");
        assert_eq!(find_across(&finder, &mut tail, &mut scratch, b"-"), None);
        assert_eq!(tail, b"xx\r\n--");
        assert_eq!(
            find_across(&finder, &mut tail, &mut scratch, b"abcdef"),
            Some(3)
        );
    }

    #[test]
    fn caps_map_to_codes() {
        assert_eq!(
            MultipartCap::PartHeader.to_error().code,
            "payload-too-large"
        );
        assert_eq!(
            MultipartCap::TooManyParts.to_error().code,
            "payload-too-large"
        );
        assert_eq!(MultipartCap::Preamble.to_error().code, "invalid-multipart");
        assert_eq!(MultipartCap::Malformed.to_error().code, "invalid-multipart");
    }
}
