//! `GET /api/openapi.json` from the real server (public, every route of the table with its
//! method), and axum's own rejections answered in the documented error shapes.

use opentranscribe::http::openapi::is_documented_route;
use opentranscribe::http::routes_table::route_table;
use reqwest::Method;
use serde_json::Value;

use crate::support::{TestServer, json as body_json};

#[tokio::test]
async fn the_document_is_public_and_lists_every_route_with_its_method() {
    let server = TestServer::start().await;
    let response = server
        .client
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let document = body_json(response).await;
    assert_eq!(document["openapi"], "3.1.0");
    let mut operations = 0;
    for (method, path, _) in route_table() {
        if !is_documented_route(path) {
            continue;
        }
        let operation = &document["paths"][path][method.as_str().to_ascii_lowercase()];
        assert!(operation.is_object(), "{method} {path} not in the document");
        operations += 1;
    }
    let listed: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|methods| methods.as_object().unwrap().len())
        .sum();
    assert_eq!(
        listed, operations,
        "the document lists routes the table does not"
    );
    server.stop().await;
}

#[tokio::test]
async fn axum_rejections_are_json_errors() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let request = |method: Method, path: &str| {
        server
            .client
            .request(method, server.url(path))
            .bearer_auth(&admin)
    };
    // (request, status, code): a path segment that is not a number, an upload without a
    // multipart body, a WebSocket request without upgrade headers, a method not served.
    let cases = [
        (
            request(Method::PATCH, "/api/files/x/segments/not-a-number")
                .header("content-type", "application/json")
                .body("{\"text\":\"a\"}"),
            400,
            "bad-request",
        ),
        // A body that is not multipart: the same code as the OpenAI route's.
        (
            request(Method::POST, "/api/files"),
            400,
            "invalid-multipart",
        ),
        (request(Method::GET, "/api/ws"), 400, "bad-request"),
        (
            request(Method::PUT, "/api/health"),
            405,
            "method-not-allowed",
        ),
    ];
    for (builder, status, code) in cases {
        let response = builder.send().await.unwrap();
        let url = response.url().path().to_owned();
        assert_eq!(response.status(), status, "{url}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{url}"
        );
        let allow = response.headers().get("allow").cloned();
        let body = body_json(response).await;
        assert_eq!(body["code"], code, "{url}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        if status == 405 {
            assert_eq!(allow.unwrap(), "GET,HEAD", "{url}");
        }
    }
    // The OpenAI-compatible routes answer in OpenAI's shape, refusals included.
    let response = request(Method::POST, "/v1/audio/transcriptions")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = body_json(response).await;
    assert_eq!(body["error"]["code"], "invalid-multipart", "{body}");
    let response = server
        .client
        .get(server.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = body_json(response).await;
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    server.stop().await;
}
