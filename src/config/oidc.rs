//! The `[oidc]` section: sign-in through an OpenID Connect provider (Keycloak, Dex, Entra ID,
//! Authentik…) with the authorization code flow and PKCE; a groups claim decides who may sign
//! in and who is an administrator. Off by default.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SecretFileError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    pub enabled: bool,
    /// The provider's issuer URL; `{issuer}/.well-known/openid-configuration` is read.
    pub issuer: String,
    /// The name on the sign-in button ("Sign in with …").
    pub display_name: String,
    pub client_id: String,
    /// The client secret, first line of a file of mode 0600.
    pub client_secret_file: String,
    /// `https://<this host>/api/auth/oidc/callback`, as registered with the provider.
    pub redirect_url: String,
    pub scopes: Vec<String>,
    /// The claim that becomes the local username.
    pub username_claim: String,
    /// The claim holding the user's groups (a list of strings).
    pub groups_claim: String,
    pub admin_groups: Vec<String>,
    /// Groups whose members may sign in; empty = everyone the provider signs in.
    pub allowed_groups: Vec<String>,
    /// Allow an `http://` issuer (only for a provider on this host, e.g. in tests).
    pub allow_http: bool,
    pub timeout_secs: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            issuer: String::new(),
            display_name: "single sign-on".to_owned(),
            client_id: String::new(),
            client_secret_file: String::new(),
            redirect_url: String::new(),
            scopes: vec![
                "openid".to_owned(),
                "profile".to_owned(),
                "email".to_owned(),
            ],
            username_claim: "preferred_username".to_owned(),
            groups_claim: "groups".to_owned(),
            admin_groups: Vec::new(),
            allowed_groups: Vec::new(),
            allow_http: false,
            timeout_secs: 10,
        }
    }
}

impl OidcConfig {
    /// Checks values that parse but make no sense; returns the key and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !self.enabled {
            return Ok(());
        }
        let http_allowed = self.allow_http && self.issuer.starts_with("http://");
        if !(self.issuer.starts_with("https://") || http_allowed) {
            return Err(("oidc.issuer", "must be an https:// URL"));
        }
        if self.client_id.is_empty() {
            return Err(("oidc.client_id", "must be set"));
        }
        if self.client_secret_file.is_empty() {
            return Err(("oidc.client_secret_file", "must name a file of mode 0600"));
        }
        if !self.redirect_url.starts_with("https://")
            || !self.redirect_url.ends_with("/api/auth/oidc/callback")
        {
            return Err((
                "oidc.redirect_url",
                "must be https://<this host>/api/auth/oidc/callback",
            ));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(("oidc.scopes", "must include openid"));
        }
        if self.timeout_secs == 0 {
            return Err(("oidc.timeout_secs", "must be greater than 0"));
        }
        Ok(())
    }

    pub fn read_client_secret(&self) -> Result<String, SecretFileError> {
        super::notify::read_secret_file(Path::new(&self.client_secret_file))
    }
}
