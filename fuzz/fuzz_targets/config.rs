//! Config parsing: arbitrary TOML text through `config::parse_str` (what `config check` does),
//! and through `Config::load_from` with environment overrides (what `serve` does).
//!
//! Input: the file's text, then optionally a NUL byte and `OPENTRANSCRIBE_…=value` lines.
//! A config that loads must survive a round trip through TOML unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentranscribe::config::{Config, FlagOverrides, parse_str};

fn round_trip(config: &Config) {
    let text = toml::to_string(config).expect("a loaded config serialises");
    let again = parse_str(&text, "round trip")
        .unwrap_or_else(|e| panic!("a loaded config does not load again: {e}\n{text}"));
    assert_eq!(&again, config, "config changed in a round trip");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file_text, env_text) = text.split_once('\0').unwrap_or((text, ""));
    if let Ok(config) = parse_str(file_text, "fuzz.toml") {
        round_trip(&config);
    }
    let env: Vec<(String, String)> = env_text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("opentranscribe.toml");
    std::fs::write(&path, file_text).expect("write config");
    if let Ok(config) = Config::load_from(Some(&path), &env, &FlagOverrides::default()) {
        round_trip(&config);
    }
    if let Ok(config) = Config::load_from(None, &env, &FlagOverrides::default()) {
        round_trip(&config);
    }
});
