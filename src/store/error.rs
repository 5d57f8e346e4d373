use std::fmt;
use std::sync::Arc;

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend could not be reached or timed out; retrying may succeed.
    Unavailable,
    /// The stored record cannot be decoded (corrupt, truncated, tampered, wrong version).
    /// It is left in place.
    Corrupt,
    /// The record is refused for safety (file permissions, symlink, wrong binding).
    Refused,
    /// The cross-process lock could not be taken in time.
    LockTimeout,
    /// The backend is missing something it needs (schema, directory, key).
    Misconfigured,
    /// The stored record kept changing while this process held the lock (another writer
    /// ignored the lock, or the lock was lost); nothing was overwritten. Retrying may succeed.
    Conflict,
    /// Anything else.
    Other,
}

/// A failure of a [`TokenStore`](super::TokenStore).
///
/// Opaque on purpose: backend error types never appear in this crate's public enums. Use
/// [`kind`](StoreError::kind) to branch, and the `source()` chain for details. The message never
/// contains a token.
#[derive(Clone)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// An error of `kind` described by `message` (lowercase, no secrets, no trailing period).
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Unavailable | StoreErrorKind::LockTimeout | StoreErrorKind::Conflict
        )
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}
