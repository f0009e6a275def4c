//! Sign-in against an LDAP directory (OpenLDAP, Active Directory): search-then-bind with a
//! service account (or a direct bind with a DN template), the user's groups from an attribute
//! (`memberOf`) or a group search, and the groups mapped to the role. Connections are
//! encrypted (LDAPS or StartTLS) with the CA in `[ldap] ca_file`; a new connection per sign-in.

use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, dn_escape, ldap_escape};

use crate::config::LdapConfig;
use crate::error::{Error, Result};
use crate::store::records::Role;

/// Who the directory says someone is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub dn: String,
    /// Group DNs (or names, from `memberUid`-style searches).
    pub groups: Vec<String>,
    pub role: Role,
    /// False when `allowed_groups` is set and the user is in none of them (nor an admin).
    pub allowed: bool,
}

/// `SearchEntry::construct` panics on an entry the server encoded wrongly; a broken or hostile
/// directory gets a clear 503 instead of a panicking request.
fn search_entry(entry: ldap3::ResultEntry) -> Result<SearchEntry> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        SearchEntry::construct(entry)
    }))
    .map_err(|_| unavailable("the directory sent a malformed entry".to_owned()))
}

fn unavailable(message: String) -> Error {
    Error::new("directory-unavailable", message)
}

/// A readable cause for a connection failure: certificate problems name `ca_file`.
fn describe(error: &ldap3::LdapError, config: &LdapConfig) -> String {
    let text = error.to_string();
    let lower = text.to_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        format!(
            "the LDAP server's TLS certificate is not trusted ({text}); check [ldap] ca_file ({})",
            if config.ca_file.is_empty() {
                "the system's CAs"
            } else {
                config.ca_file.as_str()
            }
        )
    } else {
        format!("cannot reach the LDAP server {}: {text}", config.url)
    }
}

fn tls_config(config: &LdapConfig) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let path = if config.ca_file.is_empty() {
        "/etc/ssl/certs/ca-certificates.crt"
    } else {
        config.ca_file.as_str()
    };
    let pem = std::fs::read(path)
        .map_err(|e| unavailable(format!("cannot read [ldap] ca_file {path}: {e}")))?;
    let mut added = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| unavailable(format!("[ldap] ca_file {path}: {e}")))?;
        if roots.add(cert).is_ok() {
            added += 1;
        }
    }
    if added == 0 {
        return Err(unavailable(format!(
            "[ldap] ca_file {path} holds no usable certificate"
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal("internal", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

async fn connect(config: &LdapConfig) -> Result<ldap3::Ldap> {
    let timeout = Duration::from_secs(config.timeout_secs);
    let ldaps = config.url.to_ascii_lowercase().starts_with("ldaps://");
    let mut settings = LdapConnSettings::new().set_conn_timeout(timeout);
    if ldaps || config.starttls {
        settings = settings
            .set_config(tls_config(config)?)
            .set_starttls(!ldaps && config.starttls);
    }
    let (conn, ldap) = LdapConnAsync::with_settings(settings, &config.url)
        .await
        .map_err(|e| unavailable(describe(&e, config)))?;
    ldap3::drive!(conn);
    Ok(ldap)
}

/// For `doctor`: connects (with LDAPS or StartTLS as configured) and binds the service account
/// when there is one; says what worked, or why not.
pub async fn check(config: &LdapConfig) -> Result<String> {
    let timeout = Duration::from_secs(config.timeout_secs);
    let mut ldap = connect(config).await?;
    let transport = if config.url.to_ascii_lowercase().starts_with("ldaps://") {
        "LDAPS"
    } else if config.starttls {
        "StartTLS"
    } else {
        "plain text"
    };
    let mut said = format!("connected to {} ({transport})", config.url);
    if !config.bind_dn.is_empty() {
        let secret = config
            .read_bind_password()
            .map_err(|e| unavailable(format!("[ldap] bind_password_file: {e}")))?;
        ldap.with_timeout(timeout)
            .simple_bind(&config.bind_dn, &secret)
            .await
            .map_err(|e| unavailable(describe(&e, config)))?
            .success()
            .map_err(|e| {
                unavailable(format!(
                    "the LDAP server refused the service account [ldap] bind_dn: {e}"
                ))
            })?;
        said.push_str(&format!(", service account {} bound", config.bind_dn));
    }
    let _ = ldap.unbind().await;
    Ok(said)
}

/// Whether `group` (a DN or a name) is one of `wanted` (DNs or `cn` values), ignoring case.
fn group_matches(group: &str, wanted: &[String]) -> bool {
    let cn = group
        .split(',')
        .next()
        .and_then(|rdn| rdn.split_once('='))
        .filter(|(key, _)| key.trim().eq_ignore_ascii_case("cn"))
        .map(|(_, value)| value.trim());
    wanted
        .iter()
        .any(|w| w.eq_ignore_ascii_case(group) || cn.is_some_and(|cn| w.eq_ignore_ascii_case(cn)))
}

/// Checks a username and password against the directory. `Ok(None)`: no such user, or a
/// wrong password. Errors: the directory cannot be reached or refuses the service account.
pub async fn authenticate(
    config: &LdapConfig,
    username: &str,
    password: &str,
) -> Result<Option<Identity>> {
    // An empty password would be an anonymous ("unauthenticated") bind that succeeds.
    if password.is_empty() || username.is_empty() {
        return Ok(None);
    }
    let timeout = Duration::from_secs(config.timeout_secs);
    let mut ldap = connect(config).await?;
    let op_error = |e: ldap3::LdapError| unavailable(describe(&e, config));
    let service_password = if config.bind_dn.is_empty() {
        None
    } else {
        Some(
            config
                .read_bind_password()
                .map_err(|e| unavailable(format!("[ldap] bind_password_file: {e}")))?,
        )
    };
    // Find the user's DN (and the group attribute, when groups come from the entry).
    let mut attrs: Vec<String> = Vec::new();
    if config.group_attribute.is_empty() {
        attrs.push("1.1".to_owned()); // RFC 4511: no attributes, only the DN
    } else {
        attrs.push(config.group_attribute.clone());
    }
    let (dn, mut groups) = if let Some(secret) = &service_password {
        ldap.with_timeout(timeout)
            .simple_bind(&config.bind_dn, secret)
            .await
            .map_err(op_error)?
            .success()
            .map_err(|e| {
                unavailable(format!(
                    "the LDAP server refused the service account [ldap] bind_dn: {e}"
                ))
            })?;
        let filter = config
            .user_filter
            .replace("{username}", &ldap_escape(username));
        let (entries, _) = ldap
            .with_timeout(timeout)
            .search(&config.user_base, Scope::Subtree, &filter, attrs.clone())
            .await
            .map_err(op_error)?
            .success()
            .map_err(|e| unavailable(format!("the LDAP user search failed: {e}")))?;
        if entries.len() != 1 {
            // None, or ambiguous: refuse like a wrong password.
            let _ = ldap.unbind().await;
            return Ok(None);
        }
        let Some(first) = entries.into_iter().next() else {
            return Ok(None);
        };
        let entry = search_entry(first)?;
        let groups = entry
            .attrs
            .get(&config.group_attribute)
            .cloned()
            .unwrap_or_default();
        (entry.dn, groups)
    } else {
        (
            config
                .user_dn_template
                .replace("{username}", &dn_escape(username)),
            Vec::new(),
        )
    };
    // The user's own bind proves the password.
    let bound = ldap
        .with_timeout(timeout)
        .simple_bind(&dn, password)
        .await
        .map_err(op_error)?;
    if bound.rc != 0 {
        let _ = ldap.unbind().await;
        return Ok(None);
    }
    // Direct bind and group attribute: read the entry as the user.
    if service_password.is_none() && !config.group_attribute.is_empty() {
        let (entries, _) = ldap
            .with_timeout(timeout)
            .search(&dn, Scope::Base, "(objectClass=*)", attrs.clone())
            .await
            .map_err(op_error)?
            .success()
            .map_err(|e| unavailable(format!("cannot read the user's LDAP entry: {e}")))?;
        if let Some(entry) = entries.into_iter().next() {
            let entry = search_entry(entry)?;
            groups = entry
                .attrs
                .get(&config.group_attribute)
                .cloned()
                .unwrap_or_default();
        }
    }
    if config.group_attribute.is_empty() && !config.group_base.is_empty() {
        if let Some(secret) = &service_password {
            // Groups are read as the service account, not as the user.
            ldap.with_timeout(timeout)
                .simple_bind(&config.bind_dn, secret)
                .await
                .map_err(op_error)?
                .success()
                .map_err(|e| unavailable(format!("LDAP service account re-bind: {e}")))?;
        }
        let filter = config
            .group_filter
            .replace("{dn}", &ldap_escape(&dn))
            .replace("{username}", &ldap_escape(username));
        let (entries, _) = ldap
            .with_timeout(timeout)
            .search(&config.group_base, Scope::Subtree, &filter, vec!["cn"])
            .await
            .map_err(op_error)?
            .success()
            .map_err(|e| unavailable(format!("the LDAP group search failed: {e}")))?;
        groups = entries
            .into_iter()
            .map(|e| search_entry(e).map(|e| e.dn))
            .collect::<Result<_>>()?;
    }
    let _ = ldap.unbind().await;
    let admin = groups
        .iter()
        .any(|g| group_matches(g, &config.admin_groups));
    let allowed = admin
        || config.allowed_groups.is_empty()
        || groups
            .iter()
            .any(|g| group_matches(g, &config.allowed_groups));
    Ok(Some(Identity {
        dn,
        groups,
        role: if admin { Role::Admin } else { Role::User },
        allowed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_match_by_dn_or_cn() {
        let wanted = vec!["admins".to_owned(), "cn=Staff,ou=groups,dc=x".to_owned()];
        assert!(group_matches("cn=admins,ou=groups,dc=x", &wanted));
        assert!(group_matches(
            "CN=Staff,OU=groups,DC=x",
            &["staff".to_owned()]
        ));
        assert!(group_matches("cn=staff,ou=groups,dc=x", &wanted));
        assert!(!group_matches("cn=others,ou=groups,dc=x", &wanted));
        assert!(!group_matches("ou=admins,dc=x", &["admins".to_owned()]));
        assert!(group_matches("admins", &wanted));
    }
}
