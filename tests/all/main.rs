//! Integration tests: real loopback servers (wiremock), counted calls, no sleeps for correctness.
//! Test names say what they prove; some start with the id of the rule they check in the
//! project's requirements (`r…` from the RFCs, `d…` derived from them). The hardening suite
//! (hostile servers, faults, cancellation) is the module `hardening`; the fixtures every module
//! shares are in `helpers`.

mod auth_server;
mod client_authentication;
mod client_credentials;
mod concurrency;
mod discovery;
#[cfg(feature = "dpop")]
mod dpop;
#[cfg(feature = "dpop")]
mod dpop_hostile;
mod errors;
mod eviction;
#[cfg(feature = "file")]
mod file_store;
mod hardening;
mod helpers;
mod http_client;
mod injection;
#[cfg(feature = "redis")]
mod redis_auth;
#[cfg(feature = "redis")]
mod redis_cluster;
#[cfg(feature = "redis")]
mod redis_sentinel;
#[cfg(feature = "redis")]
mod redis_store;
#[cfg(feature = "redis")]
mod redis_support;
mod refresh;
#[cfg(feature = "retry")]
mod retry;
mod revocation;
mod secrets;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_store;
mod store_contract;
#[cfg(all(feature = "dpop", feature = "private-key-jwt"))]
mod test_kit_dpop;
mod workers;
