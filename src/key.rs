//! The name under which one credential (one token set) is kept.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// Names one credential: the tokens of one user, tenant or service account.
///
/// A middleware serves the [default key](TokenKey::default) unless a request carries another
/// one in its extensions, which is how a backend acting for many users picks whose tokens to
/// send:
///
/// ```
/// # async fn run(client: reqwest_middleware::ClientWithMiddleware) -> reqwest_middleware::Result<()> {
/// use reqwest_token_refresh::TokenKey;
///
/// let response = client
///     .get("https://api.example.com/me")
///     .with_extension(TokenKey::new("user-42"))
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
///
/// The key is not a secret: it appears in errors, events and logs, and names records in stores.
#[derive(Clone, Eq, PartialOrd, Ord)]
pub struct TokenKey(Arc<str>);

impl TokenKey {
    /// A key with the given name.
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(Arc::from(name.as_ref()))
    }

    /// The key's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for TokenKey {
    /// Equal names. A clone of the same key (the default key, or a key a caller keeps) is
    /// recognized without reading the name, which on a lookup among many keys is memory the
    /// CPU cache may not hold.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Default for TokenKey {
    /// The key named `default`, used when a request names none. Every default key shares one
    /// name, so comparing two of them does not read it.
    fn default() -> Self {
        static DEFAULT: OnceLock<TokenKey> = OnceLock::new();
        DEFAULT.get_or_init(|| Self::new("default")).clone()
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKey({:?})", &*self.0)
    }
}

impl fmt::Display for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TokenKey {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for TokenKey {
    fn from(name: String) -> Self {
        Self(Arc::from(name))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::TokenKey;

    #[test]
    fn keys_are_equal_by_name_whether_or_not_they_share_it() {
        let key = TokenKey::new("user-1");
        assert_eq!(key, key.clone());
        assert_eq!(key, TokenKey::new("user-1"));
        assert_ne!(key, TokenKey::new("user-2"));
        let set: HashSet<TokenKey> = [key.clone(), TokenKey::from("user-1".to_owned())].into();
        assert_eq!(set.len(), 1);
        assert!(set.contains(&TokenKey::new("user-1")));
    }

    #[test]
    fn default_keys_share_their_name() {
        let (a, b) = (TokenKey::default(), TokenKey::default());
        assert_eq!(a.as_str(), "default");
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
        assert_eq!(a, TokenKey::new("default"));
    }
}
