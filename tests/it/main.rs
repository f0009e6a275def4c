//! The one integration-test binary: the real server over TLS on 127.0.0.1, real clients.

mod abuse;
mod accounts;
mod asr;
mod authz;
mod backup;
mod cli;
mod convert;
mod diarize;
mod disk_full;
mod files;
mod integrity;
mod layout;
mod library;
mod malformed_media;
mod model_choice;
mod models;
mod multipart;
mod openai;
mod openapi;
mod pipeline;
mod profiles;
mod races;
mod search;
mod server;
mod support;
mod watch;
