//! The crate's test kit (`reqwest_token_refresh::test_util`, feature `test-util`) under the
//! name the tests use.

pub use reqwest_token_refresh::test_util::*;

/// The name the tests use.
pub type AuthServer = MockAuthorizationServer;
