//! OpenTranscribe appliance: a self-hosted transcription daemon in one binary.

pub mod app;
pub mod asr;
pub mod auth;
pub mod blobs;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod diarize;
pub mod error;
pub mod fsutil;
pub mod http;
pub mod indexer;
pub mod jobs;
pub mod media;
pub mod metrics;
pub mod models;
pub mod notify;
pub mod ops;
pub mod pipeline;
pub mod search;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod transcript;
pub mod watch;
