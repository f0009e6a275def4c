//! The model cache: verification, bundle import safety and atomicity, export round trip.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use opentranscribe::models::bundle::{self, BundleError, ImportLimits};
use opentranscribe::models::cache::{Depth, ModelCache, sha256_file};
use serde_json::json;

/// Writes a model directory with a correct manifest.
fn make_model(cache_root: &Path, name: &str, files: &[(&str, &[u8])]) {
    let dir = cache_root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut listed = Vec::new();
    for (path, bytes) in files {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, bytes).unwrap();
        listed.push(
            json!({"path": path, "size": bytes.len(), "sha256": sha256_file(&target).unwrap()}),
        );
    }
    let manifest = json!({
        "format_version": 1, "name": name, "kind": "vad", "source": "test", "license": "MIT",
        "files": listed, "parameters": {"sample_rate": 16000}
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

/// Every file under `root` with its content, to compare a cache before and after.
fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = crate::support::walk(root)
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(root).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opentranscribe"));
    command.env_remove("OPENTRANSCRIBE_CONFIG");
    command
}

#[test]
fn verify_catches_a_flipped_byte_and_names_the_file() {
    let root = tempfile::tempdir().unwrap();
    make_model(
        root.path(),
        "tiny-vad",
        &[
            ("model.onnx", &[7u8; 4096]),
            ("extra/tokens.txt", b"a 1\nb 2\n"),
        ],
    );
    let cache = ModelCache::new(root.path());
    assert!(cache.verify("tiny-vad", Depth::Hashes).is_empty());
    let output = binary()
        .args(["models", "--models-dir"])
        .arg(root.path())
        .args(["verify", "tiny-vad"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The contract: `--models-dir` after the subcommand works as well (a global flag), for
    // list, verify and remove alike.
    for args in [&["list"][..], &["verify", "tiny-vad"]] {
        let output = binary()
            .arg("models")
            .args(args)
            .arg("--models-dir")
            .arg(root.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "models {args:?} --models-dir: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if args[0] == "list" {
            assert!(String::from_utf8_lossy(&output.stdout).contains("tiny-vad"));
        }
    }

    let path = root.path().join("tiny-vad/model.onnx");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1234] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    // Same size: only hashing can tell.
    assert!(cache.verify("tiny-vad", Depth::Sizes).is_empty());
    let problems = cache.verify("tiny-vad", Depth::Hashes);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("model.onnx"));
    let output = binary()
        .args(["models", "--models-dir"])
        .arg(root.path())
        .args(["verify", "tiny-vad"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("model.onnx"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let list = binary()
        .args(["models", "--models-dir"])
        .arg(root.path())
        .arg("list")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&list.stdout);
    assert!(
        stdout.contains("tiny-vad") && stdout.contains("vad"),
        "{stdout}"
    );
}

#[test]
fn export_then_import_round_trips_atomically() {
    let source = tempfile::tempdir().unwrap();
    make_model(source.path(), "model-a", &[("model.onnx", &[1u8; 100_000])]);
    make_model(source.path(), "model-b", &[("weights.bin", b"bbbb")]);
    let bundle_dir = tempfile::tempdir().unwrap();
    let bundle_path = bundle_dir.path().join("models.tar.zst");
    let output = binary()
        .args(["models", "--models-dir"])
        .arg(source.path())
        .args(["export", "model-a", "model-b", "-o"])
        .arg(&bundle_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let target = tempfile::tempdir().unwrap();
    let output = binary()
        .args(["models", "--models-dir"])
        .arg(target.path())
        .arg("import")
        .arg(&bundle_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(snapshot(source.path()), snapshot(target.path()));

    // Re-importing replaces in place; remove takes a model out.
    let cache = ModelCache::new(target.path());
    bundle::import(&cache, &bundle_path, ImportLimits::default(), |_| {}).unwrap();
    assert_eq!(snapshot(source.path()), snapshot(target.path()));
    let output = binary()
        .args(["models", "--models-dir"])
        .arg(target.path())
        .args(["remove", "model-b"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(!target.path().join("model-b").exists());
}

/// Builds a plain tar whose single member has a raw, unvalidated name and type.
fn raw_tar(name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    if let Some(target) = link {
        header.set_link_name(target).unwrap();
    }
    header.set_cksum();
    builder.append(&header, data).unwrap();
    builder.into_inner().unwrap()
}

#[test]
fn import_refuses_unsafe_members_and_leaves_the_cache_unchanged() {
    let root = tempfile::tempdir().unwrap();
    make_model(root.path(), "existing", &[("model.onnx", b"keep me")]);
    let before = snapshot(root.path());
    let cache = ModelCache::new(root.path());
    let work = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            raw_tar("../escaped.txt", tar::EntryType::Regular, b"x", None),
        ),
        (
            "nested-dotdot",
            raw_tar(
                "model/../../escaped.txt",
                tar::EntryType::Regular,
                b"x",
                None,
            ),
        ),
        (
            "absolute",
            raw_tar("/tmp/escaped.txt", tar::EntryType::Regular, b"x", None),
        ),
        (
            "symlink",
            raw_tar(
                "model/link",
                tar::EntryType::Symlink,
                b"",
                Some("/etc/passwd"),
            ),
        ),
        (
            "hardlink",
            raw_tar(
                "model/hard",
                tar::EntryType::Link,
                b"",
                Some("existing/model.onnx"),
            ),
        ),
        (
            "device",
            raw_tar("model/dev", tar::EntryType::Char, b"", None),
        ),
    ];
    for (label, tar_bytes) in cases {
        let path = work.path().join(format!("{label}.tar"));
        std::fs::write(&path, tar_bytes).unwrap();
        let result = bundle::import(&cache, &path, ImportLimits::default(), |_| {});
        assert!(
            matches!(result, Err(BundleError::UnsafeMember { .. })),
            "{label}: {result:?}"
        );
        assert_eq!(snapshot(root.path()), before, "{label} changed the cache");
        assert!(!work.path().parent().unwrap().join("escaped.txt").exists());
    }

    // Oversized members are refused by their header before any data is written.
    let big = raw_tar("model/big.bin", tar::EntryType::Regular, &[0u8; 4096], None);
    let path = work.path().join("big.tar");
    std::fs::write(&path, big).unwrap();
    let limits = ImportLimits {
        max_member_bytes: 1024,
        ..ImportLimits::default()
    };
    let result = bundle::import(&cache, &path, limits, |_| {});
    assert!(
        matches!(result, Err(BundleError::UnsafeMember { .. })),
        "{result:?}"
    );

    // A model whose files do not match its manifest is refused as a whole.
    let staging = tempfile::tempdir().unwrap();
    make_model(staging.path(), "liar", &[("model.onnx", b"original")]);
    std::fs::write(staging.path().join("liar/model.onnx"), b"tampered").unwrap();
    let tar_path = work.path().join("liar.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    builder
        .append_dir_all("liar", staging.path().join("liar"))
        .unwrap();
    builder.into_inner().unwrap().flush().unwrap();
    let result = bundle::import(&cache, &tar_path, ImportLimits::default(), |_| {});
    assert!(
        matches!(result, Err(BundleError::Verification(_))),
        "{result:?}"
    );
    assert_eq!(snapshot(root.path()), before);

    // The CLI says so in one line and exits non-zero.
    let output = binary()
        .args(["models", "--models-dir"])
        .arg(root.path())
        .arg("import")
        .arg(work.path().join("dotdot.tar"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("../escaped.txt"));
}

#[test]
fn an_interrupted_import_leaves_the_cache_unchanged() {
    let source = tempfile::tempdir().unwrap();
    make_model(
        source.path(),
        "big-model",
        &[("model.onnx", &vec![3u8; 2_000_000])],
    );
    let cache_source = ModelCache::new(source.path());
    let bundle_dir = tempfile::tempdir().unwrap();
    let full = bundle_dir.path().join("full.tar");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&full).unwrap());
        builder
            .append_dir_all("big-model", source.path().join("big-model"))
            .unwrap();
        builder.into_inner().unwrap().flush().unwrap();
    }
    let root = tempfile::tempdir().unwrap();
    make_model(
        root.path(),
        "big-model",
        &[("model.onnx", b"the old version")],
    );
    let before = snapshot(root.path());
    let cache = ModelCache::new(root.path());

    // The transfer stopped halfway: the archive ends mid-member.
    let bytes = std::fs::read(&full).unwrap();
    let cut = bundle_dir.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let result = bundle::import(&cache, &cut, ImportLimits::default(), |_| {});
    assert!(result.is_err());
    assert_eq!(snapshot(root.path()), before);

    // A crash mid-import leaves a staging dir; it is invisible and removed next time.
    std::fs::create_dir_all(root.path().join(".import-crashed/big-model")).unwrap();
    std::fs::write(
        root.path().join(".import-crashed/big-model/model.onnx"),
        b"half",
    )
    .unwrap();
    assert_eq!(cache.list().len(), 1);
    bundle::import(&cache, &full, ImportLimits::default(), |_| {}).unwrap();
    assert!(!root.path().join(".import-crashed").exists());
    assert_eq!(snapshot(root.path()), snapshot(source.path()));
    assert!(cache_source.verify("big-model", Depth::Hashes).is_empty());
}

#[test]
fn a_sherpa_onnx_whisper_archive_imports() {
    use opentranscribe::models::onnx_meta::encode_model_with_metadata;
    let metadata = [
        ("model_type", "whisper-tiny.en"),
        ("n_mels", "80"),
        ("n_audio_ctx", "1500"),
        ("n_audio_state", "384"),
        ("n_audio_head", "6"),
        ("n_audio_layer", "4"),
        ("n_vocab", "51864"),
        ("n_text_ctx", "448"),
        ("n_text_state", "384"),
        ("n_text_head", "6"),
        ("n_text_layer", "4"),
        ("is_multilingual", "0"),
        ("sot", "50257"),
        ("eot", "50256"),
        ("translate", "50357"),
        ("transcribe", "50358"),
        ("sot_lm", "50359"),
        ("sot_prev", "50360"),
        ("no_speech", "50361"),
        ("no_timestamps", "50362"),
        ("all_language_tokens", "50258"),
        ("all_language_codes", "en"),
        ("non_speech_tokens", "1,2,7"),
    ];
    let encoder = encode_model_with_metadata(&metadata, &[1u8; 50_000]);
    let decoder = encode_model_with_metadata(&[], &[2u8; 40_000]);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("sherpa-onnx-whisper-tiny.en.tar.bz2");
    {
        let file = std::fs::File::create(&archive).unwrap();
        let encoder_stream = bzip2::write::BzEncoder::new(file, bzip2::Compression::fast());
        let mut builder = tar::Builder::new(encoder_stream);
        let mut add = |path: &str, bytes: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(
                    &mut header,
                    format!("sherpa-onnx-whisper-tiny.en/{path}"),
                    bytes,
                )
                .unwrap();
        };
        add("tiny.en-encoder.onnx", &encoder);
        add("tiny.en-decoder.onnx", &decoder);
        add("tiny.en-encoder.int8.onnx", &encoder);
        add("tiny.en-decoder.int8.onnx", &decoder);
        add("tiny.en-tokens.txt", b"IQ== 0\nIg== 1\n");
        add("test_wavs/0.wav", b"RIFF....");
        add("README.md", b"docs");
        builder.into_inner().unwrap().finish().unwrap();
    }
    let root = tempfile::tempdir().unwrap();
    let output = binary()
        .args(["models", "--models-dir"])
        .arg(root.path())
        .arg("import")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cache = ModelCache::new(root.path());
    let names: Vec<String> = cache.list().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["whisper-tiny.en"]);
    assert!(cache.verify("whisper-tiny.en", Depth::Hashes).is_empty());
    let manifest = cache.model("whisper-tiny.en").manifest.unwrap();
    assert_eq!(manifest.kind.as_str(), "asr");
    let p = &manifest.parameters;
    assert_eq!(p["n_text_layer"], 4);
    assert_eq!(p["multilingual"], false);
    assert_eq!(p["special_tokens"]["timestamp_begin"], 50363);
    assert_eq!(p["special_tokens"]["language_tokens"]["en"], 50258);
    assert_eq!(p["files"]["decoder_int8"], "decoder.int8.onnx");
    assert_eq!(p["cross_qk"], false);
    let mut files: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    files.sort();
    assert_eq!(
        files,
        [
            "decoder.int8.onnx",
            "decoder.onnx",
            "encoder.int8.onnx",
            "encoder.onnx",
            "tokens.txt"
        ]
    );
    assert_eq!(
        std::fs::read(root.path().join("whisper-tiny.en/encoder.onnx")).unwrap(),
        encoder
    );
}

/// The cache `scripts/fetch-models` filled; `scripts/test` fills it before running tests.
pub fn models_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("OT_TEST_MODELS_DIR") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").expect("HOME");
    std::path::PathBuf::from(home).join(".cache/opentranscribe/models")
}

fn shape_of(outputs: &ort::session::SessionOutputs, name: &str) -> Vec<i64> {
    let (shape, data) = outputs[name].try_extract_tensor::<f32>().unwrap();
    assert!(
        data.iter().all(|v| v.is_finite()),
        "{name} has non-finite values"
    );
    shape.iter().copied().collect()
}

/// Numeric dims of the manifest's declared shape must match; symbolic ones are free.
fn assert_shape_matches(declared: &serde_json::Value, actual: &[i64], what: &str) {
    let declared = declared["shape"].as_array().unwrap();
    assert_eq!(declared.len(), actual.len(), "{what}: rank");
    for (dim, got) in declared.iter().zip(actual) {
        if let Some(expected) = dim.as_i64() {
            assert_eq!(expected, *got, "{what}: {declared:?} vs {actual:?}");
        }
    }
}

#[test]
fn every_cached_model_loads_and_runs_on_a_tiny_input() {
    use opentranscribe::models::runtime::{Device, Runtime, RuntimeSettings};
    use ort::value::Tensor;
    let dir = models_dir();
    let cache = ModelCache::new(&dir);
    for (name, _) in opentranscribe::models::manifest::DEFAULT_MODELS {
        assert!(
            cache.verify(name, Depth::Sizes).is_empty(),
            "{name} missing from {}: run scripts/fetch-models",
            dir.display()
        );
    }
    let runtime = Runtime::get_or_init(&RuntimeSettings {
        library: None,
        models_dir: dir.clone(),
        device: Device::Auto,
        device_id: 0,
        threads: 0,
        spin: false,
    })
    .unwrap();
    assert_eq!(runtime.provider, "cpu");
    let manifest = |name: &str| cache.model(name).manifest.unwrap();
    let session = |name: &str, file: &str| runtime.session(&dir.join(name).join(file)).unwrap();

    // Silero VAD: one 512-sample window with its recurrent state.
    let vad = manifest("silero-vad");
    assert!(
        opentranscribe::models::onnx_meta::read_metadata(&dir.join("silero-vad/model.onnx"))
            .is_ok()
    );
    let mut vad_session = session("silero-vad", "model.onnx");
    let outputs = vad_session
        .run(ort::inputs![
            "input" => Tensor::from_array((vec![1i64, 512], vec![0.01f32; 512])).unwrap(),
            "state" => Tensor::from_array((vec![2i64, 1, 128], vec![0f32; 256])).unwrap(),
            "sr" => Tensor::from_array(((), vec![16000i64])).unwrap(),
        ])
        .unwrap();
    let speech = shape_of(&outputs, "output");
    assert_shape_matches(&vad.parameters["outputs"][0], &speech, "silero output");
    assert_eq!(shape_of(&outputs, "stateN"), [2, 1, 128]);

    // Segmentation: 10 s of audio gives 589 frames of 7 powerset classes.
    let seg = manifest("pyannote-segmentation-3.0");
    let frames = seg.parameters["frames_per_window"].as_i64().unwrap();
    let mut seg_session = session("pyannote-segmentation-3.0", "model.onnx");
    let noise: Vec<f32> = (0..160_000)
        .map(|i| ((i * 7919) % 200) as f32 / 2000.0 - 0.05)
        .collect();
    let outputs = seg_session
        .run(ort::inputs![
            "waveform" => Tensor::from_array((vec![1i64, 1, 160_000], noise)).unwrap()
        ])
        .unwrap();
    let logits = shape_of(&outputs, "logits");
    assert_eq!(logits, [1, frames, 7]);
    assert_shape_matches(
        &seg.parameters["outputs"][0],
        &logits,
        "segmentation logits",
    );

    // CAM++: 100 frames of 80-bin fbank give one 192-d embedding.
    let spk = manifest("campplus-zh-en");
    let mut spk_session = session("campplus-zh-en", "model.onnx");
    let fbank: Vec<f32> = (0..100 * 80).map(|i| (i % 13) as f32 / 13.0).collect();
    let outputs = spk_session
        .run(ort::inputs!["fbank" => Tensor::from_array((vec![1i64, 100, 80], fbank)).unwrap()])
        .unwrap();
    let embedding = shape_of(&outputs, "embedding");
    assert_shape_matches(
        &spk.parameters["outputs"][0],
        &embedding,
        "speaker embedding",
    );
    assert_eq!(embedding, [1, 192]);

    // MiniLM: 8 tokens give 8 × 384 hidden states.
    let text = manifest("minilm-l6-v2");
    let mut text_session = session("minilm-l6-v2", "model.onnx");
    let ids = vec![101i64, 7592, 2088, 2003, 1037, 3231, 1012, 102];
    let outputs = text_session
        .run(ort::inputs![
            "input_ids" => Tensor::from_array((vec![1i64, 8], ids)).unwrap(),
            "attention_mask" => Tensor::from_array((vec![1i64, 8], vec![1i64; 8])).unwrap(),
            "token_type_ids" => Tensor::from_array((vec![1i64, 8], vec![0i64; 8])).unwrap(),
        ])
        .unwrap();
    let hidden = shape_of(&outputs, "last_hidden_state");
    assert_shape_matches(&text.parameters["outputs"][0], &hidden, "text embedding");
    assert_eq!(hidden, [1, 8, 384]);

    // Whisper: encoder on a silent 30 s mel, then one decoder step of three prompt tokens.
    for name in ["whisper-tiny.en", "whisper-base"] {
        let asr = manifest(name);
        let p = &asr.parameters;
        let dim = |key: &str| p[key].as_i64().unwrap();
        let (n_mels, layers, state, heads, vocab, text_ctx) = (
            dim("n_mels"),
            dim("n_text_layer"),
            dim("n_text_state"),
            dim("n_text_head"),
            dim("n_vocab"),
            dim("n_text_ctx"),
        );
        let mut encoder = session(name, p["files"]["encoder"].as_str().unwrap());
        let mel = vec![-0.5f32; (n_mels * 3000) as usize];
        let encoded = encoder
            .run(
                ort::inputs!["mel" => Tensor::from_array((vec![1i64, n_mels, 3000], mel)).unwrap()],
            )
            .unwrap();
        // Layout 2 (scripts/convert_whisper.py): per-layer cross K/V [1, heads, 1500, dim].
        let dim_head = state / heads;
        assert_eq!(p["decoder_layout"].as_i64(), Some(2), "{name} layout");
        let mut inputs: Vec<(
            std::borrow::Cow<'static, str>,
            ort::session::SessionInputValue,
        )> = Vec::new();
        for layer in 0..layers {
            for kind in ["k", "v"] {
                let cross = format!("cross_{kind}_{layer}");
                assert_eq!(
                    shape_of(&encoded, &cross),
                    [1, heads, 1500, dim_head],
                    "{name} {cross}"
                );
                let (shape, data) = encoded[cross.as_str()].try_extract_tensor::<f32>().unwrap();
                let value = Tensor::from_array((shape.to_vec(), data.to_vec())).unwrap();
                inputs.push((cross.into(), value.into()));
                // A short cache: the decoder takes any slot count up to the context.
                let cache = Tensor::from_array((
                    vec![1i64, heads, 16, dim_head],
                    vec![0f32; (heads * 16 * dim_head) as usize],
                ))
                .unwrap();
                inputs.push((format!("cache_{kind}_{layer}").into(), cache.into()));
            }
        }
        let _ = text_ctx;
        let mut decoder = session(name, p["files"]["decoder"].as_str().unwrap());
        let specials = &p["special_tokens"];
        let tokens = vec![
            specials["sot"].as_i64().unwrap(),
            specials["transcribe"].as_i64().unwrap(),
            specials["no_timestamps"].as_i64().unwrap(),
        ];
        inputs.push((
            "tokens".into(),
            Tensor::from_array((vec![1i64, 3], tokens)).unwrap().into(),
        ));
        inputs.push((
            "offset".into(),
            Tensor::from_array((vec![1i64], vec![0i64])).unwrap().into(),
        ));
        inputs.push((
            "positions".into(),
            Tensor::from_array((vec![3i64], vec![0i64, 1, 2]))
                .unwrap()
                .into(),
        ));
        let outputs = decoder.run(inputs).unwrap();
        assert_eq!(shape_of(&outputs, "logits"), [1, 3, vocab], "{name} logits");
        assert_eq!(shape_of(&outputs, "new_k"), [layers, 1, heads, 3, dim_head]);
        assert_eq!(
            shape_of(&outputs, "cross_qk"),
            [layers, 1, heads, 3, 1500],
            "{name} cross_qk"
        );
    }
}

#[test]
fn a_failed_runtime_load_is_retried_once_the_models_arrive() {
    use opentranscribe::models::runtime::{Device, Runtime, RuntimeError, RuntimeSettings};
    let settings = |dir: std::path::PathBuf| RuntimeSettings {
        library: None,
        models_dir: dir,
        device: Device::Auto,
        device_id: 0,
        threads: 0,
        spin: false,
    };
    let empty = tempfile::tempdir().unwrap();
    // Run alone (`cargo test runtime_load`), the first call finds no library; another test may
    // have loaded the runtime already, in which case it is shared.
    match Runtime::get_or_init(&settings(empty.path().to_path_buf())) {
        Err(RuntimeError::NotFound(_)) | Ok(_) => {}
        Err(other) => panic!("unexpected error: {other}"),
    }
    // A daemon started before its models were imported must not keep that failure.
    Runtime::get_or_init(&settings(models_dir())).unwrap();
}
