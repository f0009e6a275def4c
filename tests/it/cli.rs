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

/// Reads the daemon's stderr until it logs its HTTPS address.
pub fn wait_for_listen_line(
    stderr: std::process::ChildStderr,
) -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(line) = receiver.recv_timeout(std::time::Duration::from_millis(200))
            && line.contains("listening")
            && let Some(rest) = line.split("https_addr=").nth(1)
        {
            let addr = rest.split_whitespace().next().unwrap();
            let port = addr.rsplit(':').next().unwrap().parse().unwrap();
            return (port, receiver);
        }
    }
    panic!("daemon did not report its address");
}

#[tokio::test]
async fn daemon_reloads_tls_on_sighup_and_stops_gracefully_on_sigterm() {
    let data_dir = tempfile::tempdir().unwrap();
    // Plays systemd's part: a notify socket that collects READY, WATCHDOG and STOPPING.
    let notify_path = data_dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    let mut child = binary()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--data-dir",
        ])
        .arg(data_dir.path())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .env("OPENTRANSCRIBE_SERVER_SHUTDOWN_GRACE_SECS", "2")
        .env("OPENTRANSCRIBE_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (port, _lines) = wait_for_listen_line(child.stderr.take().unwrap());
    let cert = data_dir.path().join("tls/cert.pem");
    let key = data_dir.path().join("tls/key.pem");
    let url = format!("https://localhost:{port}/api/health");
    let old_client = crate::support::client_for(&cert);
    assert_eq!(old_client.get(&url).send().await.unwrap().status(), 200);

    let other = tempfile::tempdir().unwrap();
    let (new_cert, new_key) = opentranscribe::http::tls::ensure_self_signed(other.path()).unwrap();
    let new_client = crate::support::client_for(&new_cert);
    assert!(new_client.get(&url).send().await.is_err());
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut reloaded = false;
    for _ in 0..50 {
        if new_client.get(&url).send().await.is_ok() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reloaded, "SIGHUP did not reload the certificate");
    // The connection opened before the reload still works: the old client trusts only the old
    // certificate, so this succeeds only over its pooled connection, which was not dropped.
    assert_eq!(old_client.get(&url).send().await.unwrap().status(), 200);

    // An upload in flight when SIGTERM arrives is cut at the grace period and leaves nothing.
    let register = new_client
        .post(format!("https://localhost:{port}/api/auth/register"))
        .json(&serde_json::json!({"username": "admin", "password": "admin-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201);
    let login: serde_json::Value = new_client
        .post(format!("https://localhost:{port}/api/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": "admin-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let slow = futures_util::stream::unfold(0u32, |sent| async move {
        if sent > 600 {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 4096])),
            sent + 1,
        ))
    });
    let part =
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(slow)).file_name("slow.wav");
    let upload_client = new_client.clone();
    let upload = tokio::spawn(async move {
        upload_client
            .post(format!("https://localhost:{port}/api/files"))
            .bearer_auth(token)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let temp_dir = data_dir.path().join("blobs/tmp");
    assert_eq!(
        crate::support::walk(&temp_dir).len(),
        1,
        "upload is being written"
    );
    let stopped_at = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "daemon exit status {status}");
    assert!(stopped_at.elapsed() < std::time::Duration::from_secs(10));
    let _ = upload.await;
    assert!(
        crate::support::walk(&temp_dir).is_empty(),
        "partial upload left behind"
    );
    let mut messages = String::new();
    let mut buffer = [0u8; 512];
    while let Ok(n) = notify.recv(&mut buffer) {
        messages.push_str(&String::from_utf8_lossy(&buffer[..n]));
        messages.push('\n');
    }
    for expected in ["READY=1", "WATCHDOG=1", "STOPPING=1"] {
        assert!(messages.contains(expected), "no {expected} in {messages:?}");
    }
    let ready_at = messages.find("READY=1").unwrap();
    assert!(messages.find("STOPPING=1").unwrap() > ready_at);
}
