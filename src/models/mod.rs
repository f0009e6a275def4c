//! Models: the offline cache, manifests, bundles, and ONNX Runtime sessions.

pub mod bundle;
pub mod cache;
pub mod cli;
pub mod manifest;
pub mod onnx_meta;
pub mod runtime;
pub mod sherpa;
