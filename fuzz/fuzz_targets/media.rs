//! Media probing and decoding: arbitrary bytes through `media::probe` (the upload sniff) and
//! `media::decode` (the pipeline's 16 kHz mono stream) and the waveform peaks.
//!
//! Both entry points catch panics from the demuxers and decoders (symphonia) and report them
//! as corrupt media; libFuzzer's hook would abort on those caught panics too. This target
//! tolerates a caught panic raised inside a dependency, but aborts on one raised in our own
//! code, which is a bug even when it is caught.
#![no_main]

use std::io::Cursor;
use std::ops::ControlFlow;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use opentranscribe::media::decode::{OUTPUT_RATE_HZ, decode_to_mono_16k};
use opentranscribe::media::probe::probe;
use opentranscribe::media::waveform::PeakAccumulator;

static HOOK: Once = Once::new();

fn install_panic_hook() {
    HOOK.call_once(|| {
        let abort_hook = std::panic::take_hook();
        let our_src = concat!(env!("CARGO_MANIFEST_DIR"), "/../src/");
        let our_src = std::fs::canonicalize(our_src)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map(|l| l.file()).unwrap_or("");
            let ours =
                file.starts_with("src/") || (!our_src.is_empty() && file.starts_with(&our_src));
            if ours {
                abort_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    install_panic_hook();
    let _ = probe(Box::new(Cursor::new(data.to_vec())));

    let mut peaks = PeakAccumulator::new(OUTPUT_RATE_HZ);
    let mut samples: u64 = 0;
    let result = decode_to_mono_16k(Box::new(Cursor::new(data.to_vec())), 4096, |chunk| {
        assert!(!chunk.is_empty(), "decoder handed out an empty chunk");
        assert!(chunk.len() <= 4096, "chunk longer than asked for");
        samples += chunk.len() as u64;
        peaks.push(chunk);
        ControlFlow::Continue(())
    });
    if let Ok((_, report)) = result {
        assert_eq!(
            report.samples_out, samples,
            "report disagrees with the samples handed out"
        );
        assert!(report.packets_decoded > 0, "Ok without a decoded packet");
    }
    let waveform = peaks.finish(4000);
    let _ = waveform;
});
