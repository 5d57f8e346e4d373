//! Opaque wrappers for secret strings: access tokens, refresh tokens, client secrets.
//!
//! They follow the `oauth2` crate: a private field, one accessor named `secret()`, a `Debug`
//! that prints `[redacted]`, no `Display` and no `Deref`. Their memory is zeroed on drop.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Box<str>);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into().into_boxed_str())
            }

            /// Returns the secret value.
            ///
            /// # Security
            /// Never log, print or persist the returned string in clear text: anyone who reads
            /// it can act as your application.
            pub fn secret(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::new)
            }
        }
    };
}

secret_type!(
    /// An OAuth 2.0 access token (RFC 6749 §1.4), sent to resource servers as a bearer token.
    AccessToken
);
secret_type!(
    /// An OAuth 2.0 refresh token (RFC 6749 §1.5), sent only to the token endpoint.
    RefreshToken
);
secret_type!(
    /// The client secret used to authenticate to the token endpoint (RFC 6749 §2.3.1).
    ClientSecret
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let token = AccessToken::new("canary-access");
        assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
        let refresh = RefreshToken::new("canary-refresh");
        assert!(!format!("{refresh:?}").contains("canary"));
        let secret = ClientSecret::new("canary-secret");
        assert!(!format!("{secret:#?}").contains("canary"));
    }

    #[test]
    fn serializes_as_a_plain_json_string() {
        let token = RefreshToken::new("rt-1");
        let json = serde_json::to_string(&token).unwrap();
        assert_eq!(json, "\"rt-1\"");
        let back: RefreshToken = serde_json::from_str(&json).unwrap();
        assert_eq!(back.secret(), "rt-1");
    }
}
