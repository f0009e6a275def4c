//! The binary's subcommands, run as a user would run them.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::TestServer;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opentranscribe"));
    command.env_remove("OPENTRANSCRIBE_CONFIG");
    command
}

#[test]
fn config_check_names_the_file_and_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"0.0.0.0:8443\"\nlisen_port = 3\n",
    )
    .unwrap();
    let output = binary()
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(stderr.contains("lisen_port"), "{stderr}");

    let corrupt = dir.path().join("corrupt.toml");
    std::fs::write(&corrupt, [0xff, 0xfe, b'[', b'\n', 0x00]).unwrap();
    let output = binary()
        .args(["config", "check"])
        .arg(&corrupt)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("corrupt.toml"));

    let invalid = dir.path().join("invalid.toml");
    std::fs::write(&invalid, "[auth]\nregistration = \"sometimes\"\n").unwrap();
    let output = binary()
        .args(["config", "check"])
        .arg(&invalid)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.registration"));

    let output = binary()
        .args(["config", "check"])
        .arg(&invalid)
        .env("OPENTRANSCRIBE_AUTH_REGISTRATION", "open")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the file itself must be valid");

    let example = binary().args(["config", "example"]).output().unwrap();
    assert!(example.status.success());
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &example.stdout).unwrap();
    let output = binary()
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn user_create_offline_then_sign_in() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = binary()
        .args([
            "user",
            "create",
            "root-admin",
            "--admin",
            "--password-stdin",
            "--data-dir",
        ])
        .arg(data_dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"bootstrap-password\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let again = binary()
        .args([
            "user",
            "create",
            "root-admin",
            "--password-stdin",
            "--data-dir",
        ])
        .arg(data_dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let server = TestServer::start_in(data_dir, |_| {}).await;
    let login = server.login("root-admin", "bootstrap-password").await;
    assert_eq!(login.status(), 200);
    let body: serde_json::Value = login.json().await.unwrap();
    assert_eq!(body["user"]["role"], "admin");
    // The first user exists, so self-registration is closed.
    assert_eq!(
        server
            .register("mallory", "mallory-password")
            .await
            .status(),
        403
    );
    server.stop().await;
}
