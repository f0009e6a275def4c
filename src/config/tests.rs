//! Config parsing, layering and validation tests.

use super::*;

#[test]
fn example_parses_to_defaults_and_names_every_key() {
    let text = example();
    let parsed = parse_str(&text, "example").unwrap();
    assert_eq!(parsed, Config::default());
    for key in known_keys() {
        let leaf = key.rsplit('.').next().unwrap();
        assert!(
            text.contains(&format!("{leaf} = ")),
            "config example does not mention `{key}`"
        );
    }
}

#[test]
fn unknown_key_is_named() {
    let err = parse_str("[server]\nlisten_port = 1\n", "/etc/x.toml").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/etc/x.toml"), "{text}");
    assert!(text.contains("listen_port"), "{text}");
}

#[test]
fn layers_apply_in_order() {
    let dir = std::env::temp_dir().join(format!("ot-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:1000\"\nshutdown_grace_secs = 5\n[auth]\nregistration = \"open\"\n",
    )
    .unwrap();
    let env = vec![
        (
            "OPENTRANSCRIBE_SERVER_LISTEN".to_owned(),
            "127.0.0.1:2000".to_owned(),
        ),
        (
            "OPENTRANSCRIBE_STORAGE_ENCRYPT_AT_REST".to_owned(),
            "true".to_owned(),
        ),
    ];
    let flags = FlagOverrides {
        listen: Some("127.0.0.1:3000".parse().unwrap()),
        ..Default::default()
    };
    let from_env = Config::load_from(Some(&file), &env, &FlagOverrides::default()).unwrap();
    assert_eq!(from_env.server.listen.port(), 2000);
    assert_eq!(from_env.server.shutdown_grace_secs, 5);
    assert!(from_env.storage.encrypt_at_rest);
    assert_eq!(from_env.auth.registration, "open");
    let from_flags = Config::load_from(Some(&file), &env, &flags).unwrap();
    assert_eq!(from_flags.server.listen.port(), 3000);

    let bad_env = vec![("OPENTRANSCRIBE_NOPE".to_owned(), "1".to_owned())];
    let err = Config::load_from(None, &bad_env, &FlagOverrides::default()).unwrap_err();
    assert!(err.to_string().contains("OPENTRANSCRIBE_NOPE"));
    let bad_type = vec![(
        "OPENTRANSCRIBE_SERVER_MAX_UPLOAD_BYTES".to_owned(),
        "lots".to_owned(),
    )];
    let err = Config::load_from(None, &bad_type, &FlagOverrides::default()).unwrap_err();
    assert!(err.to_string().contains("MAX_UPLOAD_BYTES"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_values_name_the_key() {
    let err = parse_str("[auth]\nregistration = \"maybe\"\n", "f.toml").unwrap_err();
    assert!(err.to_string().contains("auth.registration"), "{err}");
    let err = parse_str("[server]\nlisten = \"nowhere\"\n", "f.toml").unwrap_err();
    assert!(err.to_string().contains("listen"), "{err}");
}
