//! The hardening suite: the crate under hostile servers, faults and concurrency, one module per
//! behaviour, each test named after what it proves. Loopback servers only (the crate's test kit
//! and wiremock, plus a raw TCP server for huge and trickling bodies); calls are counted, and
//! sleeps never decide an outcome. See SECURITY.md for the threat model these tests pin down.
//!
//! ```sh
//! cargo test --all-features --test all hardening::
//! ```

mod adoption;
mod cancellation;
mod clock;
mod edges;
mod error_classification;
mod hostile_endpoint;
mod lost_response;
mod persistence;
mod redirects;
mod rejection_policy;
mod secrets_audit;
mod support;
