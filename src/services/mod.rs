//! Services: the floor between the HTTP handlers (and the watch folder) and storage. A handler
//! parses its request, calls one service and maps the result; a service owns a use case's
//! steps (checks, store transaction, blob lifetime, events, waking workers) and knows nothing
//! of HTTP.

pub mod accounts;
pub mod audit;
pub mod collections;
pub mod files;
pub mod ingest;
pub mod ldap;
pub mod library;
pub mod llm;
pub mod oidc;
pub mod retention;
pub mod second_factor;
pub mod uploads;
