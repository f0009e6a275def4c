//! Day-2 operations: the local admin socket, online backups and restores, `status`.
//!
//! The daemon holds the redb file locked, so commands that need a consistent view of a running
//! daemon's data ask it over a unix socket in the data dir (`admin.sock`, mode 0600, only the
//! daemon's own user or root may talk to it). Without a running daemon they open the data dir
//! themselves.

pub mod admin;
pub mod backup;
pub mod health;
pub mod status;

/// File name of the admin socket inside the data dir.
pub const ADMIN_SOCKET: &str = "admin.sock";
/// Where the daemon prepares an online backup (hard links and a database snapshot) for the CLI.
pub const STAGING_DIR: &str = "backup-staging";
