//! Integration tests: real loopback servers (wiremock), counted calls, no sleeps for correctness.
//! Test names cite the REQUIREMENTS rule they prove (R* normative, D* derived).

mod auth_server;
mod concurrency;
mod errors;
mod helpers;
mod injection;
mod refresh;
#[cfg(feature = "retry")]
mod retry;
mod secrets;
