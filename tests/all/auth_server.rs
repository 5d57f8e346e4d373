//! The crate's test kit (`src/test_util.rs`, public under the `test-util` feature), compiled
//! into the test binaries directly so they need no feature.
#![allow(dead_code, unused_imports)]

#[path = "../../src/test_util.rs"]
mod kit;

pub use kit::*;

/// The name the tests use.
pub type AuthServer = MockAuthorizationServer;
