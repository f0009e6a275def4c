//! Signed webhooks end to end: a separate receiver process (`webhook_receiver.py`, Python's own
//! HMAC) checks every signature and answers scripted statuses; the daemon's clock is moved to
//! show the retry schedule; the outbox survives a restart; the site webhook's secret file must
//! be 0600; PUT and DELETE of a webhook raced many times end as one of the serial outcomes.

use std::sync::Arc;
use std::time::Duration;

use opentranscribe::clock::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::{TestServer, json as body_json, sine_wav};

const SECRET: &str = "receiver-secret-0123456789";

/// The Python receiver: started on a free port, read line by line.
struct Receiver {
    _child: Child,
    port: u16,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Receiver {
    async fn start(secret: &str, statuses: &str) -> Self {
        Self::start_hanging(secret, statuses, 0).await
    }

    /// A receiver that waits `hang_secs` before each answer.
    async fn start_hanging(secret: &str, statuses: &str, hang_secs: u64) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/webhook_receiver.py");
        let hang = hang_secs.to_string();
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--secret", secret, "--statuses", statuses, "--hang", &hang])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the receiver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the receiver starts")
            .unwrap()
            .unwrap();
        let port = first.strip_prefix("PORT ").unwrap().parse().unwrap();
        Self {
            _child: child,
            port,
            lines,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The next request the receiver got, within `within`.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        match tokio::time::timeout(within, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Some(serde_json::from_str(&line).unwrap()),
            _ => None,
        }
    }

    async fn expect(&mut self, what: &str) -> Value {
        self.next(Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("the receiver got no request: {what}"))
    }
}

/// Workers run, but no model is in the cache and a job gets one attempt: every upload ends
/// `error` within a moment, through the real worker and `finish_job`.
fn failing_jobs(c: &mut opentranscribe::config::Config) {
    c.jobs.max_attempts = 1;
}

async fn upload_failing(server: &TestServer, token: &str, name: &str) -> String {
    let created = body_json(
        server
            .upload(token, name, sine_wav(0.5, 16_000, 440.0))
            .await,
    )
    .await;
    let file_id = created["id"].as_str().unwrap().to_owned();
    let file = server.wait_done(token, &file_id).await;
    assert_eq!(file["status"], "error", "{file}");
    file_id
}

async fn deliveries(server: &TestServer, token: &str) -> Vec<Value> {
    let (status, list) = server
        .call(Method::GET, "/api/account/webhook/deliveries", token, None)
        .await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

/// Polls the deliveries until the newest is in `state` with `attempts` attempts recorded (the
/// receiver prints a request before the daemon has recorded its answer).
async fn wait_state(server: &TestServer, token: &str, state: &str, attempts: usize) -> Value {
    for _ in 0..100 {
        let list = deliveries(server, token).await;
        if list.first().is_some_and(|d| {
            d["state"] == state && d["attempts"].as_array().map(Vec::len) == Some(attempts)
        }) {
            return list[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no delivery reached {state}: {:?}",
        deliveries(server, token).await
    );
}

#[tokio::test]
async fn retries_follow_the_backoff_and_every_signature_verifies() {
    let clock = Arc::new(ManualClock::new());
    let server =
        TestServer::start_on_clock(tempfile::tempdir().unwrap(), failing_jobs, clock.clone()).await;
    let token = server.admin().await;
    let mut receiver = Receiver::start(SECRET, "500,500,200").await;
    let (status, set) = server
        .call(
            Method::PUT,
            "/api/account/webhook",
            &token,
            Some(json!({"url": receiver.url(), "secret": SECRET})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    assert!(
        set.get("secret").is_none(),
        "a given secret is never echoed: {set}"
    );
    let (status, got) = server
        .call(Method::GET, "/api/account/webhook", &token, None)
        .await;
    assert_eq!((status, &got["url"]), (200, &json!(receiver.url())));
    assert!(got.get("secret").is_none(), "{got}");

    let file_id = upload_failing(&server, &token, "tone.wav").await;
    let first = receiver.expect("first attempt").await;
    assert_eq!(first["valid"], true, "{first}");
    assert_eq!(first["answered"], 500);
    assert_eq!(first["content_type"], "application/json");
    let payload = &first["payload"];
    assert_eq!(payload["event"], "job.failed", "{payload}");
    assert_eq!(payload["file_id"], file_id.as_str());
    assert_eq!(payload["filename"], "tone.wav");
    assert_eq!(payload["status"], "error");
    assert!(payload["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(payload["attempt"], 1);
    let delivery_id = payload["delivery_id"].as_str().unwrap().to_owned();
    assert_eq!(first["delivery_header"], delivery_id.as_str());

    let pending = wait_state(&server, &token, "pending", 1).await;
    let attempts = pending["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{pending}");
    assert_eq!(attempts[0]["status"], 500);
    let t1 = first["t"].as_u64().unwrap();
    assert_eq!(pending["next_attempt_at"].as_u64().unwrap(), t1 + 30);

    // Nothing before the backoff has passed on the daemon's clock.
    assert!(receiver.next(Duration::from_secs(2)).await.is_none());
    clock.advance(30);
    let second = receiver.expect("second attempt, 30 s later").await;
    assert_eq!(
        (second["valid"].clone(), second["answered"].clone()),
        (json!(true), json!(500))
    );
    assert_eq!(second["payload"]["delivery_id"], delivery_id.as_str());
    assert_eq!(second["payload"]["attempt"], 2);
    let t2 = second["t"].as_u64().unwrap();
    assert!(t2 >= t1 + 30, "{t1} → {t2}");

    // The second wait is 2 minutes: 60 s is not enough.
    clock.advance(60);
    assert!(receiver.next(Duration::from_secs(2)).await.is_none());
    clock.advance(60);
    let third = receiver.expect("third attempt, 2 min later").await;
    assert_eq!(
        (third["valid"].clone(), third["answered"].clone()),
        (json!(true), json!(200))
    );
    let t3 = third["t"].as_u64().unwrap();
    assert!(t3 >= t2 + 120, "{t2} → {t3}");

    let delivered = wait_state(&server, &token, "delivered", 3).await;
    let statuses: Vec<u64> = delivered["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(delivered["id"], delivery_id.as_str());
    assert!(delivered["next_attempt_at"].is_null());
    // Delivered once: nothing more arrives, however far the clock moves.
    clock.advance(7 * 3600);
    assert!(receiver.next(Duration::from_secs(2)).await.is_none());
    eprintln!("webhook attempts at t+0, t+{}, t+{} s", t2 - t1, t3 - t1);
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_secret_is_detected_by_the_receiver_and_a_new_one_applies_to_the_retry() {
    let clock = Arc::new(ManualClock::new());
    let server =
        TestServer::start_on_clock(tempfile::tempdir().unwrap(), failing_jobs, clock.clone()).await;
    let token = server.admin().await;
    let mut receiver = Receiver::start(SECRET, "").await;
    // No secret given: one is generated and shown this once.
    let (status, set) = server
        .call(
            Method::PUT,
            "/api/account/webhook",
            &token,
            Some(json!({"url": receiver.url()})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let generated = set["secret"].as_str().unwrap().to_owned();
    assert!(generated.starts_with("whsec_"), "{generated}");
    let (_, again) = server
        .call(
            Method::PUT,
            "/api/account/webhook",
            &token,
            Some(json!({"url": receiver.url()})),
        )
        .await;
    assert!(again.get("secret").is_none(), "shown once only: {again}");

    upload_failing(&server, &token, "tone.wav").await;
    let forged = receiver.expect("attempt signed with another secret").await;
    assert_eq!(forged["valid"], false, "{forged}");
    assert_eq!(forged["answered"], 401);
    let pending = wait_state(&server, &token, "pending", 1).await;
    assert_eq!(pending["attempts"][0]["status"], 401);

    // The user sets the receiver's secret; the retry is signed with it.
    let (status, _) = server
        .call(
            Method::PUT,
            "/api/account/webhook",
            &token,
            Some(json!({"url": receiver.url(), "secret": SECRET})),
        )
        .await;
    assert_eq!(status, 200);
    clock.advance(30);
    let retried = receiver.expect("retry").await;
    assert_eq!(retried["valid"], true, "{retried}");
    wait_state(&server, &token, "delivered", 2).await;

    // Bad input is refused with its own code, never a 500.
    for body in [
        json!({"url": "ftp://example.test/"}),
        json!({"url": "not a url"}),
        json!({"url": receiver.url(), "secret": "short"}),
        json!({"url": receiver.url(), "secret": "x".repeat(300)}),
    ] {
        let (status, got) = server
            .call(
                Method::PUT,
                "/api/account/webhook",
                &token,
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status, got["code"].clone()),
            (400, json!("invalid-webhook")),
            "{body}"
        );
    }
    let (status, got) = server
        .call(
            Method::PUT,
            "/api/account/webhook",
            &token,
            Some(json!({"url": receiver.url(), "extra": 1})),
        )
        .await;
    assert_eq!(status, 400, "{got}");
    server.stop().await;
}

#[tokio::test]
async fn the_outbox_survives_a_restart_without_duplicates() {
    let clock = Arc::new(ManualClock::new());
    let server =
        TestServer::start_on_clock(tempfile::tempdir().unwrap(), failing_jobs, clock.clone()).await;
    let token = server.admin().await;
    let mut receiver = Receiver::start(SECRET, "503").await;
    server
        .call(
            Method::PUT,
            "/api/account/webhook",
            &token,
            Some(json!({"url": receiver.url(), "secret": SECRET})),
        )
        .await;
    upload_failing(&server, &token, "before-restart.wav").await;
    let first = receiver.expect("first attempt").await;
    assert_eq!(first["answered"], 503);
    let pending = wait_state(&server, &token, "pending", 1).await;
    let data_dir = server.stop_keep().await;

    // A new daemon on the same data dir (and a new clock, past the first backoff).
    let clock = Arc::new(ManualClock::new());
    clock.advance(31);
    let server = TestServer::start_on_clock(data_dir, failing_jobs, clock.clone()).await;
    let token = server.token("admin", "admin-password").await;
    let second = receiver.expect("the retry after the restart").await;
    assert_eq!(
        (second["valid"].clone(), second["answered"].clone()),
        (json!(true), json!(200))
    );
    assert_eq!(second["payload"]["delivery_id"], pending["id"]);
    assert_eq!(second["payload"]["attempt"], 2);
    let delivered = wait_state(&server, &token, "delivered", 2).await;
    assert_eq!(delivered["id"], pending["id"]);
    assert_eq!(
        deliveries(&server, &token).await.len(),
        1,
        "one record, no duplicate"
    );
    assert!(receiver.next(Duration::from_secs(2)).await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn the_site_webhook_needs_a_0600_secret_file_and_gets_every_job() {
    use std::os::unix::fs::PermissionsExt;
    let mut receiver = Receiver::start("site-secret-0123456789", "").await;
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("webhook.secret");
    std::fs::write(&secret_file, "site-secret-0123456789\n").unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let site = |c: &mut opentranscribe::config::Config| {
        c.jobs.max_attempts = 1;
        c.notify.webhook_url = receiver.url();
        c.notify.webhook_secret_file = secret_file.display().to_string();
    };
    let mut config = opentranscribe::config::Config {
        data_dir: data_dir.path().to_path_buf(),
        models_dir: data_dir.path().join("models"),
        ..Default::default()
    };
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    site(&mut config);
    let refused = opentranscribe::daemon::start(config).await.unwrap_err();
    assert_eq!(refused.code, "notify-secret-file");
    assert!(
        refused.message.contains("0644") && refused.message.contains("0600"),
        "{}",
        refused.message
    );

    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = TestServer::start_in(data_dir, site).await;
    let admin = server.admin().await;
    let alice = server.user(&admin, "alice").await;
    let file_id = upload_failing(&server, &alice, "alice.wav").await;
    let got = receiver.expect("the site delivery").await;
    assert_eq!(got["valid"], true, "{got}");
    assert_eq!(got["payload"]["file_id"], file_id.as_str());
    // Site deliveries are not in the user's list; the user has no webhook of their own.
    assert!(deliveries(&server, &alice).await.is_empty());
    let (status, own) = server
        .call(Method::GET, "/api/account/webhook", &alice, None)
        .await;
    assert_eq!((status, own["url"].is_null()), (200, true), "{own}");
    server.stop().await;
}

/// A receiver that never answers in time: each attempt ends at `webhook_timeout_secs` and is
/// recorded as a timeout, and jobs go on finishing meanwhile.
#[tokio::test]
async fn a_receiver_that_hangs_costs_one_timeout_per_attempt_and_never_holds_up_jobs() {
    let clock = Arc::new(ManualClock::new());
    let server = TestServer::start_on_clock(
        tempfile::tempdir().unwrap(),
        |c| {
            c.jobs.max_attempts = 1;
            c.notify.webhook_timeout_secs = 1;
        },
        clock.clone(),
    )
    .await;
    let token = server.admin().await;
    let mut receiver = Receiver::start_hanging(SECRET, "", 30).await;
    server
        .call(
            Method::PUT,
            "/api/account/webhook",
            &token,
            Some(json!({"url": receiver.url(), "secret": SECRET})),
        )
        .await;
    let started = std::time::Instant::now();
    for n in 0..3 {
        upload_failing(&server, &token, &format!("tone-{n}.wav")).await;
    }
    let jobs_took = started.elapsed();
    for _ in 0..3 {
        receiver.expect("an attempt").await;
    }
    let mut timed_out = Vec::new();
    for _ in 0..100 {
        timed_out = deliveries(&server, &token)
            .await
            .into_iter()
            .filter(|d| {
                d["attempts"][0]["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("timed out"))
            })
            .collect();
        if timed_out.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(timed_out.len(), 3, "{timed_out:?}");
    for delivery in &timed_out {
        assert_eq!(delivery["state"], "pending");
        assert!(delivery["attempts"][0]["status"].is_null());
    }
    assert!(
        jobs_took < Duration::from_secs(20),
        "three failing jobs took {jobs_took:?} while the receiver hung"
    );
    eprintln!(
        "3 jobs ended in {jobs_took:?} while the receiver hung; 3 attempts timed out after 1 s"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_real_transcription_notifies_job_completed() {
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
    })
    .await;
    let token = server.admin().await;
    let mut receiver = Receiver::start(SECRET, "").await;
    server
        .call(
            Method::PUT,
            "/api/account/webhook",
            &token,
            Some(json!({"url": receiver.url(), "secret": SECRET})),
        )
        .await;
    let (id, _) = crate::asr::references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{}/{id}.wav", crate::asr::LIBRIVOX)).unwrap();
    let created = body_json(server.upload(&token, "speech.wav", wav).await).await;
    let file_id = created["id"].as_str().unwrap().to_owned();
    let got = receiver
        .next(Duration::from_secs(300))
        .await
        .expect("a delivery");
    assert_eq!(got["valid"], true, "{got}");
    let payload = &got["payload"];
    assert_eq!(payload["event"], "job.completed", "{payload}");
    assert_eq!(payload["file_id"], file_id.as_str());
    assert_eq!(payload["status"], "completed");
    assert!(payload["error"].is_null());
    let file = server.wait_done(&token, &file_id).await;
    assert_eq!(file["status"], "completed");
    wait_state(&server, &token, "delivered", 1).await;
    server.stop().await;
}

/// PUT (without a secret) raced with DELETE of an existing webhook. Serially: PUT first keeps
/// the old secret and the DELETE then removes it (gone); DELETE first makes the PUT create a new
/// webhook with a generated secret (present). A PUT that kept the old secret and still left a
/// webhook would have revived a deleted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_racing_delete_of_a_webhook_ends_as_one_serial_outcome() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let admin = server.admin().await;
    let bob = server.user(&admin, "bob").await;
    let rounds = crate::races::iterations();
    let (mut kept_then_deleted, mut deleted_then_created) = (0, 0);
    for round in 0..rounds {
        let (status, _) = server
            .call(
                Method::PUT,
                "/api/account/webhook",
                &admin,
                Some(json!({"url": "http://127.0.0.1:9/old", "secret": SECRET})),
            )
            .await;
        assert_eq!(status, 200);
        let url = format!("http://127.0.0.1:9/round-{round}");
        // Each request in turn starts late by 0 to 2.7 ms, so both orders happen.
        let jitter = Duration::from_micros((round / 2 % 10) as u64 * 300);
        let (put_delay, delete_delay) = if round % 2 == 0 {
            (Duration::ZERO, jitter)
        } else {
            (jitter, Duration::ZERO)
        };
        let put = async {
            tokio::time::sleep(put_delay).await;
            server
                .call(
                    Method::PUT,
                    "/api/account/webhook",
                    &admin,
                    Some(json!({"url": url})),
                )
                .await
        };
        let delete = async {
            tokio::time::sleep(delete_delay).await;
            server
                .call(Method::DELETE, "/api/account/webhook", &admin, None)
                .await
        };
        let ((put_status, put), (delete_status, _)) = tokio::join!(put, delete);
        assert_eq!(
            (put_status, delete_status),
            (200, 204),
            "round {round}: {put}"
        );
        let (get_status, got) = server
            .call(Method::GET, "/api/account/webhook", &admin, None)
            .await;
        assert_eq!(get_status, 200);
        if put.get("secret").is_some() {
            // DELETE first, then a new webhook.
            assert_eq!(
                got["url"],
                url.as_str(),
                "round {round}: the new webhook is lost"
            );
            deleted_then_created += 1;
            let (status, _) = server
                .call(Method::DELETE, "/api/account/webhook", &admin, None)
                .await;
            assert_eq!(status, 204);
        } else {
            assert!(
                got["url"].is_null(),
                "round {round}: a deleted webhook revived: {got}"
            );
            kept_then_deleted += 1;
        }
        // Nothing left behind.
        let (_, left) = server
            .call(Method::GET, "/api/account/webhook", &admin, None)
            .await;
        assert!(left["url"].is_null(), "round {round}: {left}");
    }
    // Per-user isolation: bob's calls never reach the admin's webhook.
    server
        .call(
            Method::PUT,
            "/api/account/webhook",
            &admin,
            Some(json!({"url": "http://127.0.0.1:9/admin", "secret": SECRET})),
        )
        .await;
    let (status, seen) = server
        .call(Method::GET, "/api/account/webhook", &bob, None)
        .await;
    assert_eq!((status, seen["url"].is_null()), (200, true), "{seen}");
    let (status, _) = server
        .call(Method::DELETE, "/api/account/webhook", &bob, None)
        .await;
    assert_eq!(status, 404);
    let (status, got) = server
        .call(Method::GET, "/api/account/webhook", &admin, None)
        .await;
    assert_eq!(
        (status, &got["url"]),
        (200, &json!("http://127.0.0.1:9/admin"))
    );
    eprintln!(
        "webhook PUT/DELETE race: {rounds} rounds, {kept_then_deleted} PUT first, {deleted_then_created} DELETE first"
    );
    server.stop().await;
}
