//! The crate against a real, certified authorization server: node-oidc-provider, configured in
//! `interop/oidc-provider/` (rotation on every refresh, and the whole grant revoked when a
//! consumed refresh token comes back). Each test starts its own server on loopback and kills it
//! when it ends; the server's own counters (token requests, rotations, reuse detections,
//! revoked grants) decide the outcome.
//!
//! ```sh
//! cargo test --all-features --test interop
//! ```
//!
//! Needs Node 20+ (the suite runs `npm ci` in `interop/oidc-provider` when its modules are
//! missing); without Node the tests are skipped with a note, except in CI (`CI` set), where
//! they fail. The store scenarios use Redis and PostgreSQL like the other suites
//! (`REDIS_URL`, `DATABASE_URL`).

mod clients;
mod dpop;
mod processes;
mod provider;
mod stores;
mod storms;
