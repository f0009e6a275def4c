//! Accounts: registration, login, throttling, sessions and CSRF, API tokens, admin API.

use serde_json::{Value, json};

use crate::support::{TestServer, json};

fn session_cookie(response: &reqwest::Response) -> (String, String) {
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    (pair, set_cookie)
}

#[tokio::test]
async fn first_user_is_admin_then_registration_closes() {
    let server = TestServer::start().await;
    let setup = |server: &TestServer| {
        server
            .client
            .get(server.url("/api/auth/setup-needed"))
            .send()
    };
    assert_eq!(
        json(setup(&server).await.unwrap()).await["setup_needed"],
        true
    );
    let first = server.register("alice", "alice-password").await;
    assert_eq!(first.status(), 201);
    let body = json(first).await;
    assert_eq!(body["role"], "admin");
    assert_eq!(body["username"], "alice");
    assert!(body.get("password_hash").is_none());
    assert_eq!(
        json(setup(&server).await.unwrap()).await["setup_needed"],
        false
    );

    let second = server.register("bob", "bob-password").await;
    assert_eq!(second.status(), 403);
    assert_eq!(json(second).await["code"], "registration-closed");

    let weak = server.register("carol", "short").await;
    assert!(weak.status() == 400 || weak.status() == 403);
    server.stop().await;

    let open = TestServer::start_with(|c| c.auth.registration = "open".into()).await;
    assert_eq!(open.register("alice", "alice-password").await.status(), 201);
    let bob = open.register("bob", "bob-password").await;
    assert_eq!(bob.status(), 201);
    assert_eq!(json(bob).await["role"], "user");
    let taken = open.register("BOB", "bob-password").await;
    assert_eq!(taken.status(), 409);
    let weak = open.register("carol", "short").await;
    assert_eq!(weak.status(), 400);
    assert_eq!(json(weak).await["code"], "weak-password");
    let bad_json = open
        .client
        .post(open.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    assert_eq!(json(bad_json).await["code"], "invalid-json");
    open.stop().await;
}

#[tokio::test]
async fn wrong_password_then_lockout_that_expires() {
    let server = TestServer::start_with(|c| {
        c.auth.login_max_failures = 3;
        c.auth.login_lockout_secs = 2;
    })
    .await;
    server.admin().await;
    for _ in 0..2 {
        let wrong = server.login("admin", "wrong-password").await;
        assert_eq!(wrong.status(), 401);
        assert_eq!(json(wrong).await["code"], "invalid-credentials");
    }
    let unknown = server.login("nobody", "whatever-password").await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(json(unknown).await["code"], "invalid-credentials");
    assert_eq!(server.login("admin", "wrong-password").await.status(), 401);
    // Locked now: even the right password is refused until the lockout ends.
    let locked = server.login("admin", "admin-password").await;
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().contains_key("retry-after"));
    assert_eq!(json(locked).await["code"], "too-many-attempts");
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(server.login("admin", "admin-password").await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn cookie_sessions_need_csrf_on_unsafe_methods() {
    let server = TestServer::start().await;
    server.admin().await;
    let login = server.login("admin", "admin-password").await;
    assert_eq!(login.status(), 200);
    let (cookie, set_cookie) = session_cookie(&login);
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    assert!(cookie.starts_with("__Host-ot_session=ots_"));
    let body = json(login).await;
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(body["user"]["role"], "admin");

    let me = server
        .client
        .get(server.url("/api/auth/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(json(me).await["csrf_token"], csrf.as_str());

    let create = |csrf: Option<&str>, origin: Option<&str>| {
        let mut request = server
            .client
            .post(server.url("/api/auth/tokens"))
            .header("cookie", &cookie)
            .json(&json!({"name": "cli"}));
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let refused = create(None, None).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(json(refused).await["code"], "csrf-failed");
    let wrong = create(Some("not-the-token"), None).await.unwrap();
    assert_eq!(wrong.status(), 403);
    let cross_site = create(Some(&csrf), Some("https://evil.example"))
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let port = server.running().https_addr.port();
    let same_site = create(Some(&csrf), Some(&format!("https://localhost:{port}")))
        .await
        .unwrap();
    assert_eq!(same_site.status(), 201);
    let ok = create(Some(&csrf), None).await.unwrap();
    assert_eq!(ok.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn sessions_expire_when_idle() {
    let server = TestServer::start_with(|c| c.auth.session_idle_timeout_secs = 1).await;
    let token = server.admin().await;
    let me = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let expired = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 401);
    assert_eq!(json(expired).await["code"], "session-expired");
    server.stop().await;
}

#[tokio::test]
async fn logout_logout_everywhere_and_password_change() {
    let server = TestServer::start().await;
    let first = server.admin().await;
    let second = server.token("admin", "admin-password").await;
    let third = server.token("admin", "admin-password").await;
    let me = |token: String| {
        server
            .client
            .get(server.url("/api/auth/me"))
            .bearer_auth(token)
            .send()
    };
    let logout = server
        .client
        .post(server.url("/api/auth/logout"))
        .bearer_auth(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert_eq!(me(first.clone()).await.unwrap().status(), 401);
    assert_eq!(me(second.clone()).await.unwrap().status(), 200);

    let change = server
        .client
        .post(server.url("/api/auth/password"))
        .bearer_auth(&second)
        .json(&json!({"current_password": "wrong-one", "new_password": "new-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), 401);
    let change = server
        .client
        .post(server.url("/api/auth/password"))
        .bearer_auth(&second)
        .json(&json!({"current_password": "admin-password", "new_password": "new-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), 204);
    // The session that changed it survives; the others end.
    assert_eq!(me(second.clone()).await.unwrap().status(), 200);
    assert_eq!(me(third.clone()).await.unwrap().status(), 401);
    assert_eq!(server.login("admin", "admin-password").await.status(), 401);
    let fourth = server.token("admin", "new-password-1").await;

    let all = server
        .client
        .post(server.url("/api/auth/logout-all"))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 204);
    assert_eq!(me(second).await.unwrap().status(), 401);
    assert_eq!(me(fourth).await.unwrap().status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn api_tokens_are_shown_once_and_can_be_revoked() {
    let server = TestServer::start().await;
    let session = server.admin().await;
    let created = server
        .client
        .post(server.url("/api/auth/tokens"))
        .bearer_auth(&session)
        .json(&json!({"name": "scripts"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created = json(created).await;
    let api_token = created["token"].as_str().unwrap().to_owned();
    assert!(api_token.starts_with("otk_"));
    let me = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert!(json(me).await.get("csrf_token").is_none());
    let list: Value = json(
        server
            .client
            .get(server.url("/api/auth/tokens"))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("token").is_none());
    assert!(!list.to_string().contains(&api_token));
    let id = created["id"].as_str().unwrap();
    let revoke = server
        .client
        .delete(server.url(&format!("/api/auth/tokens/{id}")))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    let after = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    // The database holds hashes only.
    let raw = std::fs::read(server.data_dir.path().join("opentranscribe.redb")).unwrap();
    let needle = api_token.as_bytes();
    assert!(!raw.windows(needle.len()).any(|w| w == needle));
    server.stop().await;
}

#[tokio::test]
async fn admin_api_manages_users_and_others_cannot() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let bob = server.user(&admin, "bob").await;
    let forbidden = server
        .client
        .get(server.url("/api/admin/users"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    let users: Value = json(
        server
            .client
            .get(server.url("/api/admin/users"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(users.as_array().unwrap().len(), 2);
    let bob_id = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "bob")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let reset = server
        .client
        .post(server.url(&format!("/api/admin/users/{bob_id}/password")))
        .bearer_auth(&admin)
        .json(&json!({"password": "reset-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(server.login("bob", "user-password").await.status(), 401);
    let bob = server.token("bob", "reset-password").await;

    let disable = server
        .client
        .patch(server.url(&format!("/api/admin/users/{bob_id}")))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(disable.status(), 200);
    let me = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
    let login = server.login("bob", "reset-password").await;
    assert_eq!(login.status(), 403);
    assert_eq!(json(login).await["code"], "account-disabled");

    let promote = server
        .client
        .patch(server.url(&format!("/api/admin/users/{bob_id}")))
        .bearer_auth(&admin)
        .json(&json!({"disabled": false, "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(promote).await["role"], "admin");
    server.stop().await;
}

/// Expiry and lockouts read the daemon's clock: moved forward, sessions expire (idle and
/// absolute) and a lockout ends, with no sleeping.
#[tokio::test]
async fn expiry_and_lockout_follow_the_clock_without_sleeping() {
    let clock = std::sync::Arc::new(opentranscribe::clock::ManualClock::new());
    let server = TestServer::start_on_clock(
        tempfile::tempdir().unwrap(),
        |c| {
            c.jobs.workers = 0;
            c.auth.session_idle_timeout_secs = 3600;
            c.auth.session_absolute_timeout_secs = 7 * 86_400;
            c.auth.login_lockout_secs = 900;
        },
        clock.clone(),
    )
    .await;
    let me = |token: String| {
        let request = server
            .client
            .get(server.url("/api/auth/me"))
            .bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let token = server.admin().await;
    clock.advance(3000);
    assert_eq!(
        me(token.clone()).await.status(),
        200,
        "within the idle limit"
    );
    // The use refreshed the idle timer: 3000 s more is still within an hour of it.
    clock.advance(3000);
    assert_eq!(me(token.clone()).await.status(), 200);
    clock.advance(3601);
    let expired = me(token).await;
    assert_eq!(expired.status(), 401, "idle past the limit");
    assert_eq!(json(expired).await["code"], "session-expired");

    // Absolute limit: used every half hour, the session still ends after seven days.
    let token = server.token("admin", "admin-password").await;
    let mut half_hours = 0;
    while half_hours < 7 * 48 + 2 {
        clock.advance(1800);
        half_hours += 1;
        if me(token.clone()).await.status() != 200 {
            break;
        }
    }
    // Seven days are 336 half hours: the session ends at the first use past them.
    assert!(
        (7 * 48..=7 * 48 + 1).contains(&half_hours),
        "ended after {half_hours} half hours"
    );
    assert_eq!(me(token).await.status(), 401, "past the absolute limit");

    // A lockout lasts `login_lockout_secs` of the clock.
    for _ in 0..5 {
        assert_eq!(server.login("admin", "wrong-password").await.status(), 401);
    }
    assert_eq!(server.login("admin", "admin-password").await.status(), 429);
    clock.advance(600);
    assert_eq!(server.login("admin", "admin-password").await.status(), 429);
    clock.advance(301);
    assert_eq!(
        server.login("admin", "admin-password").await.status(),
        200,
        "lockout over"
    );
}
