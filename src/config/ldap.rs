//! The `[ldap]` section: sign-in against an LDAP directory or Active Directory, with the
//! directory's groups deciding who may sign in and who is an administrator. Off by default.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SecretFileError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    pub enabled: bool,
    /// `ldaps://host:636`, or `ldap://host:389` with `starttls = true`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (required unless `allow_plaintext`).
    pub starttls: bool,
    /// PEM file of the CA(s) that signed the directory's certificate; empty = the system's.
    pub ca_file: String,
    /// Allow `ldap://` without StartTLS (passwords in the clear; for tests on localhost).
    pub allow_plaintext: bool,
    /// Search-then-bind: the service account that finds users (and reads groups).
    pub bind_dn: String,
    /// Its password, first line of a file of mode 0600.
    pub bind_password_file: String,
    /// Direct bind without a service account: e.g. `uid={username},ou=people,dc=example,dc=org`.
    pub user_dn_template: String,
    /// Where users are searched (search-then-bind).
    pub user_base: String,
    /// The search filter; `{username}` is replaced (escaped per RFC 4515).
    pub user_filter: String,
    /// An attribute of the user entry listing the groups' DNs (Active Directory: `memberOf`);
    /// empty = search `group_base` with `group_filter` instead.
    pub group_attribute: String,
    pub group_base: String,
    /// `{dn}` is the user's DN, `{username}` the name signed in with.
    pub group_filter: String,
    /// Groups (DN, or the `cn`) whose members are administrators.
    pub admin_groups: Vec<String>,
    /// Groups whose members may sign in; empty = every user the filter finds.
    pub allowed_groups: Vec<String>,
    /// Seconds for connecting and for each operation.
    pub timeout_secs: u64,
}

impl Default for LdapConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: String::new(),
            starttls: true,
            ca_file: String::new(),
            allow_plaintext: false,
            bind_dn: String::new(),
            bind_password_file: String::new(),
            user_dn_template: String::new(),
            user_base: String::new(),
            user_filter: "(uid={username})".to_owned(),
            group_attribute: String::new(),
            group_base: String::new(),
            group_filter: "(|(member={dn})(uniqueMember={dn})(memberUid={username}))".to_owned(),
            admin_groups: Vec::new(),
            allowed_groups: Vec::new(),
            timeout_secs: 10,
        }
    }
}

impl LdapConfig {
    /// Checks values that parse but make no sense; returns the key and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !self.enabled {
            return Ok(());
        }
        let lower = self.url.to_ascii_lowercase();
        let ldaps = lower.starts_with("ldaps://");
        if !ldaps && !lower.starts_with("ldap://") {
            return Err(("ldap.url", "must start with ldaps:// or ldap://"));
        }
        if !ldaps && !self.starttls && !self.allow_plaintext {
            return Err((
                "ldap.starttls",
                "ldap:// sends passwords in the clear: set starttls = true or use ldaps://",
            ));
        }
        if self.bind_dn.is_empty() && self.user_dn_template.is_empty() {
            return Err((
                "ldap.bind_dn",
                "set bind_dn (search-then-bind) or user_dn_template (direct bind)",
            ));
        }
        if !self.bind_dn.is_empty() {
            if self.bind_password_file.is_empty() {
                return Err(("ldap.bind_password_file", "bind_dn needs a password file"));
            }
            if self.user_base.is_empty() || !self.user_filter.contains("{username}") {
                return Err((
                    "ldap.user_filter",
                    "search-then-bind needs user_base and a user_filter with {username}",
                ));
            }
        } else if !self.user_dn_template.contains("{username}") {
            return Err(("ldap.user_dn_template", "must contain {username}"));
        }
        let groups_needed = !self.admin_groups.is_empty() || !self.allowed_groups.is_empty();
        if groups_needed && self.group_attribute.is_empty() && self.group_base.is_empty() {
            return Err((
                "ldap.group_base",
                "group mapping needs group_attribute or group_base",
            ));
        }
        if self.timeout_secs == 0 {
            return Err(("ldap.timeout_secs", "must be greater than 0"));
        }
        Ok(())
    }

    /// The service account's password (file of mode 0600).
    pub fn read_bind_password(&self) -> Result<String, SecretFileError> {
        super::notify::read_secret_file(Path::new(&self.bind_password_file))
    }
}
