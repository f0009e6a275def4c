//! Upload form handling without a server: axum's multipart parser over an arbitrary body, with
//! the upload handler's per-part steps (`sanitize_filename`, `read_small_field`,
//! `apply_option`) and the `Content-Disposition` a stored name is later served with.
//!
//! Input: the boundary on the first line, then the body.
#![no_main]

use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use http::{HeaderValue, Request, header};
use libfuzzer_sys::fuzz_target;
use opentranscribe::http::files::{
    apply_option, content_disposition, read_small_field, sanitize_filename,
};
use opentranscribe::store::records::UploadOptions;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
});

fn check_filename(raw: &str) {
    let name = sanitize_filename(raw);
    assert!(!name.is_empty());
    assert!(name.chars().count() <= 200, "name too long: {name:?}");
    assert!(!name.contains(['/', '\\']), "path separator kept: {name:?}");
    assert!(name != "." && name != "..");
    assert!(
        !name.chars().any(char::is_control),
        "control character kept: {name:?}"
    );
    assert_eq!(name, name.trim(), "untrimmed name");
    let disposition = content_disposition(&name);
    assert!(
        HeaderValue::from_str(&disposition).is_ok(),
        "not a valid header value: {disposition:?}"
    );
    assert_eq!(disposition.matches('"').count(), 2, "{disposition:?}");
}

fn check_options(options: &UploadOptions) {
    assert!(matches!(options.priority, 1 | 5 | 9));
    for n in [
        options.num_speakers,
        options.min_speakers,
        options.max_speakers,
    ]
    .into_iter()
    .flatten()
    {
        assert!((1..=20).contains(&n));
    }
    if let (Some(min), Some(max)) = (options.min_speakers, options.max_speakers) {
        assert!(min <= max);
    }
    if let Some(language) = &options.language {
        assert!(language.len() <= 8 && language.chars().all(|c| c.is_ascii_lowercase()));
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let boundary = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or(&[]).to_vec();
    let Ok(content_type) = HeaderValue::from_str(&format!(
        "multipart/form-data; boundary={}",
        boundary.trim_end()
    )) else {
        return;
    };
    let request = Request::builder()
        .method("POST")
        .uri("/api/files")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("request");
    RUNTIME.block_on(async move {
        let Ok(mut multipart) = Multipart::from_request(request, &()).await else {
            return;
        };
        let mut options = UploadOptions {
            diarize: true,
            ..UploadOptions::default()
        };
        // The handler stops at the first bad part; this goes on to the end of the body, to reach
        // more of the parser, but applies no option after one was refused, as the handler would.
        let mut refused = false;
        while let Ok(Some(mut field)) = multipart.next_field().await {
            let name = field.name().unwrap_or("").to_owned();
            if name == "file" {
                check_filename(field.file_name().unwrap_or("upload"));
                while let Ok(Some(_chunk)) = field.chunk().await {}
            } else if let Ok(text) = read_small_field(field).await
                && !refused
            {
                refused = apply_option(&mut options, &name, text.trim()).is_err();
                if !refused {
                    check_options(&options);
                }
            }
        }
    });
});
