//! The one integration-test binary: the real server over TLS on 127.0.0.1, real clients.

mod accounts;
mod asr;
mod cli;
mod diarize;
mod files;
mod layout;
mod models;
mod pipeline;
mod server;
mod support;
