//! The list of every route the HTTPS router serves, with who may call it: the single source the
//! authorisation matrix test (`tests/it/authz.rs`) enumerates. A test greps the path of every
//! `route` call under `src/` and fails when a path is missing here, and another fails when a method
//! here is not served (or a served method is not listed), so a new route cannot be forgotten.

use axum::http::Method;

/// Who may call a route, and what everyone else gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed (health, readiness, registration, login, the `/api/*` 404).
    Public,
    /// Any signed-in user, on their own account or their own library as a whole; anonymous,
    /// revoked and expired credentials get 401.
    User,
    /// A signed-in user acting on a resource named in the path (file, collection, profile,
    /// token): whoever has no access to it gets 404, never 403, admins included.
    Owner,
    /// Administrators only: other users get 403, anonymous 401.
    Admin,
    /// `/metrics`: admins and/or localhost per `[metrics] allow`; anyone else gets 404.
    Metrics,
}

/// Every (method, path pattern, access) the router serves. `/api/{*rest}` answers 404 to any
/// method; the UI assets are the router's fallback and are not listed.
pub fn route_table() -> Vec<(Method, &'static str, Access)> {
    use Access::*;
    let get = || Method::GET;
    let post = || Method::POST;
    let put = || Method::PUT;
    let patch = || Method::PATCH;
    let delete = || Method::DELETE;
    vec![
        // health.rs
        (get(), "/api/health", Public),
        (get(), "/api/ready", Public),
        (get(), "/metrics", Metrics),
        (get(), "/api/admin/status", Admin),
        // auth_routes.rs
        (get(), "/api/auth/setup-needed", Public),
        (post(), "/api/auth/register", Public),
        (post(), "/api/auth/login", Public),
        (post(), "/api/auth/logout", User),
        (post(), "/api/auth/logout-all", User),
        (get(), "/api/auth/me", User),
        (post(), "/api/auth/password", User),
        (get(), "/api/auth/tokens", User),
        (post(), "/api/auth/tokens", User),
        (delete(), "/api/auth/tokens/{id}", Owner),
        (get(), "/api/admin/users", Admin),
        (post(), "/api/admin/users", Admin),
        (patch(), "/api/admin/users/{id}", Admin),
        (post(), "/api/admin/users/{id}/password", Admin),
        // totp_routes.rs
        (post(), "/api/auth/login/totp", Public),
        (delete(), "/api/account/totp", User),
        (post(), "/api/account/totp/setup", User),
        (post(), "/api/account/totp/confirm", User),
        (delete(), "/api/admin/users/{id}/totp", Admin),
        // oidc_routes.rs
        (get(), "/api/auth/providers", Public),
        (get(), "/api/auth/oidc/start", Public),
        (get(), "/api/auth/oidc/callback", Public),
        // files.rs
        (get(), "/api/files", User),
        (post(), "/api/files", User),
        (get(), "/api/files/{id}", Owner),
        (patch(), "/api/files/{id}", Owner),
        (delete(), "/api/files/{id}", Owner),
        (get(), "/api/files/{id}/media", Owner),
        // transcripts.rs
        (get(), "/api/files/{id}/transcript", Owner),
        (get(), "/api/files/{id}/export", Owner),
        (post(), "/api/files/{id}/cancel", Owner),
        (post(), "/api/files/{id}/retry", Owner),
        (post(), "/api/files/{id}/reprocess", Owner),
        (get(), "/api/admin/jobs", Admin),
        (post(), "/api/admin/jobs/{id}/cancel", Admin),
        (post(), "/api/admin/jobs/{id}/retry", Admin),
        (get(), "/api/ws", User),
        // openai.rs
        (post(), "/v1/audio/transcriptions", User),
        (post(), "/v1/audio/translations", User),
        (get(), "/v1/models", User),
        // library.rs
        (patch(), "/api/files/{id}/segments/{segment}", Owner),
        (patch(), "/api/files/{id}/speakers/{speaker}", Owner),
        (
            patch(),
            "/api/files/{id}/segments/{segment}/words/{word}",
            Owner,
        ),
        (put(), "/api/files/{id}/tags", Owner),
        (get(), "/api/tags", User),
        (get(), "/api/files/{id}/analytics", Owner),
        (get(), "/api/files/{id}/waveform", Owner),
        (get(), "/api/files/{id}/comments", Owner),
        (post(), "/api/files/{id}/comments", Owner),
        (delete(), "/api/files/{id}/comments/{comment}", Owner),
        (get(), "/api/collections", User),
        (post(), "/api/collections", User),
        (get(), "/api/collections/{cid}", Owner),
        (patch(), "/api/collections/{cid}", Owner),
        (delete(), "/api/collections/{cid}", Owner),
        (put(), "/api/collections/{cid}/files/{id}", Owner),
        (delete(), "/api/collections/{cid}/files/{id}", Owner),
        (put(), "/api/collections/{cid}/shares", Owner),
        (delete(), "/api/collections/{cid}/shares/{user}", Owner),
        (get(), "/api/exports/zip", Owner),
        // speakers.rs
        (get(), "/api/files/{id}/speakers", Owner),
        (post(), "/api/files/{id}/speakers/merge", Owner),
        (post(), "/api/files/{id}/speakers/{speaker}/profile", Owner),
        (put(), "/api/files/{id}/speakers/{speaker}/profile", Owner),
        (
            delete(),
            "/api/files/{id}/speakers/{speaker}/profile",
            Owner,
        ),
        (
            post(),
            "/api/files/{id}/speakers/{speaker}/suggestion",
            Owner,
        ),
        (get(), "/api/profiles", User),
        (patch(), "/api/profiles/{pid}", Owner),
        (delete(), "/api/profiles/{pid}", Owner),
        // search.rs
        (get(), "/api/search", User),
        // audit.rs
        (get(), "/api/admin/audit", Admin),
        (get(), "/api/admin/audit.csv", Admin),
        // retention.rs
        (get(), "/api/account/retention", User),
        (put(), "/api/account/retention", User),
        (get(), "/api/retention/preview", User),
        // openapi/
        (get(), "/api/openapi.json", Public),
        // webhooks.rs
        (get(), "/api/account/webhook", User),
        (put(), "/api/account/webhook", User),
        (delete(), "/api/account/webhook", User),
        (get(), "/api/account/webhook/deliveries", User),
        // uploads.rs (HEAD is served with GET, as everywhere)
        (post(), "/api/uploads", User),
        (get(), "/api/uploads/{id}", Owner),
        (patch(), "/api/uploads/{id}", Owner),
        (delete(), "/api/uploads/{id}", Owner),
        (post(), "/api/uploads/{id}/complete", Owner),
        // llm.rs
        (get(), "/api/files/{id}/summary", Owner),
        (post(), "/api/files/{id}/summary", Owner),
        (post(), "/api/files/{id}/ask", Owner),
        (get(), "/api/account/llm-prompts", User),
        (put(), "/api/account/llm-prompts", User),
        // mod.rs: every other `/api/…` path is a JSON 404 for any method.
        (get(), "/api/{*rest}", Public),
        (post(), "/api/{*rest}", Public),
        (put(), "/api/{*rest}", Public),
        (patch(), "/api/{*rest}", Public),
        (delete(), "/api/{*rest}", Public),
    ]
}
