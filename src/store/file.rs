//! A durable JSON token file shared by the processes of one machine.

mod atomic;

#[cfg(not(unix))]
compile_error!("the `file` feature needs a unix platform (file modes and flock)");

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use super::{HeldLock, SaveOutcome, StoreError, StoreErrorKind, StoreLock, TokenStore};
use crate::backoff::Backoff;
use crate::error::ConfigError;
use crate::key::TokenKey;
use crate::record::TokenRecord;
use crate::revision::Revision;

use self::atomic::{WriteError, PRIVATE_MODE};
use crate::log;

/// The document version this store writes. Version 1 (token sets only, compared by
/// generation) is still read, and rewritten as version 2 by the next save.
const VERSION: u64 = 2;
/// A token file larger than this is not one this store wrote.
const MAX_FILE_BYTES: u64 = 1 << 20;
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// Pauses between attempts while another process holds the file lock.
const LOCK_POLL_MAX: Duration = Duration::from_millis(20);
const LOCK_POLL: Backoff = Backoff::new(Duration::from_millis(1), LOCK_POLL_MAX);

/// Keeps token sets in a JSON file, safely shared by the processes of one machine: a CLI run
/// many times, or several workers using one credential.
///
/// ```no_run
/// use std::time::Duration;
/// use reqwest_token_refresh::{FileTokenStore, RefreshTokenGrant, TokenManager};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let grant = RefreshTokenGrant::builder("https://auth.example.com/oauth/token", "my-cli").build()?;
/// let store = FileTokenStore::builder("/home/me/.config/my-cli/tokens.json")
///     .lock_timeout(Duration::from_secs(10))
///     .build()?;
/// let tokens = TokenManager::builder(grant)
///     .allow_origin("https://api.example.com")?
///     .store(store)
///     .build();
/// # Ok(()) }
/// ```
///
/// # The file
///
/// One file holds the [`TokenRecord`] of every [`TokenKey`], as a versioned JSON document with
/// data fields only (the [`TokenSet`](crate::TokenSet) and [`Ended`](crate::Ended) formats):
///
/// ```json
/// {
///   "version": 2,
///   "tokens": {
///     "default": {"access_token": "…", "refresh_token": "…", "token_type": "Bearer",
///                 "expires_at": 1767225600.5, "issued_at": 1767222000.5,
///                 "issued_for": "https://auth.example.com/oauth/token my-cli",
///                 "generation": 7, "revision": "3f9a…"},
///     "bob": {"ended": "logged_out", "ended_at": 1767220000, "generation": 4, "revision": "…"}
///   }
/// }
/// ```
///
/// - **Private.** The file is created with mode 0600, whatever the umask. A token file that
///   group or others may read or write, that is a symbolic link, or that another user owns, and
///   a directory that group or others can write to (unless it has the sticky bit, like `/tmp`),
///   are refused ([`StoreErrorKind::Refused`]; the message says how to fix it;
///   [`danger_skip_ownership_checks`](FileTokenStoreBuilder::danger_skip_ownership_checks) accepts the last two).
/// - **Crash-safe.** Every write goes to a new temp file in the same directory
///   (`.<name>.tmp-<pid>-<n>`), which is fsynced and renamed over the file, then the directory
///   is fsynced. A crash leaves the old or the new document, never a torn one. Temp files are
///   never read; leftovers of a crashed writer are deleted by the next [`lock`](TokenStore::lock).
/// - **Never silently reset.** A file that is not a version 1 or 2 document (corrupt, truncated,
///   written by a newer version) is a [`StoreErrorKind::Corrupt`] error on load *and* on save,
///   and stays untouched. A failed write (read-only directory, full disk) is an error and leaves
///   the old file in place; the middleware keeps using its tokens from memory and retries.
/// - A missing directory is created (mode 0700) when the lock is first taken.
///
/// # Locking
///
/// [`lock`](TokenStore::lock) takes an exclusive `flock` on a sibling file, `<name>.lock`
/// (never on the token file itself, which every write replaces), so processes sharing the file
/// refresh one at a time and the others reload and adopt the rotated tokens. The OS releases the
/// lock when its holder dies. If the lock file is removed or replaced while held, the holder
/// notices (it checks that the path still names the file it locked, after locking and before
/// every token call) and calls nothing. Waiting is bounded by
/// [`lock_timeout`](FileTokenStoreBuilder::lock_timeout) (default 30 s; then [`StoreErrorKind::LockTimeout`]).
///
/// The lock covers the whole file, so it serializes the refreshes of every key in it. Within one
/// process, tasks locking the same store queue on an async mutex in front of the file lock (two
/// `flock`s of one process on different descriptors would otherwise contend like two processes).
/// Share one store per file within a process (pass an `Arc` of it to each [`store`]); separate instances on one file
/// are still safe, they just poll each other's file lock.
///
/// [`save`](TokenStore::save) compares revisions and writes without taking the lock itself
/// (the middleware already holds it): its compare-and-write is exact when the caller holds
/// [`lock`](TokenStore::lock), as the middleware always does.
///
/// Unix only. Errors and `Debug` output name the file, never a token.
///
/// [`store`]: crate::TokenManagerBuilder::store
pub struct FileTokenStore {
    paths: Arc<Paths>,
    lock_timeout: Duration,
    in_process: Arc<tokio::sync::Mutex<()>>,
}

/// Configures a [`FileTokenStore`].
#[derive(Debug)]
#[must_use]
pub struct FileTokenStoreBuilder {
    path: PathBuf,
    lock_timeout: Duration,
    check_owners: bool,
}

/// The files a store uses, derived from the token file's path.
#[derive(Debug, Clone)]
struct Paths {
    file: PathBuf,
    dir: PathBuf,
    lock: PathBuf,
    temp_prefix: OsString,
    /// Refuse a token file another user owns, and a directory others can write to.
    check_owners: bool,
}

impl Paths {
    fn new(file: &Path, check_owners: bool) -> Result<Self, ConfigError> {
        let name = file.file_name().ok_or_else(|| ConfigError::Store {
            setting: "token file path",
            reason: format!("{} does not end in a file name", file.display()),
        })?;
        let dir = match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut lock = name.to_os_string();
        lock.push(".lock");
        let mut temp_prefix = OsString::from(".");
        temp_prefix.push(name);
        temp_prefix.push(".tmp-");
        Ok(Self {
            file: file.to_path_buf(),
            lock: dir.join(lock),
            dir,
            temp_prefix,
            check_owners,
        })
    }

    /// Refuses a directory where another user can swap files: writable by group or others,
    /// unless the sticky bit restricts renames and deletes to each file's owner (as in /tmp).
    fn check_dir(&self) -> Result<(), StoreError> {
        if !self.check_owners {
            return Ok(());
        }
        let metadata = match fs::metadata(&self.dir) {
            Ok(metadata) => metadata,
            // Created (0700) when the lock is first taken.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(io_error("could not read directory", &self.dir, error)),
        };
        let mode = metadata.mode() & 0o7777;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(StoreError::new(
                StoreErrorKind::Refused,
                format!(
                    "directory {dir} is writable by group or others (mode {mode:04o}) without the \
                     sticky bit: another user could replace the token file. run `chmod go-w \
                     {dir}`, or keep the file in a private directory",
                    dir = self.dir.display()
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a file owned by another user than this process's: it could have been planted.
    fn check_owner(&self, path: &Path, metadata: &fs::Metadata) -> Result<(), StoreError> {
        let euid = rustix::process::geteuid().as_raw();
        if !self.check_owners || metadata.uid() == euid {
            return Ok(());
        }
        Err(StoreError::new(
            StoreErrorKind::Refused,
            format!(
                "{path} is owned by uid {owner}, not by this process's user (uid {euid}); \
                 refusing to use it (another user may have planted it). run `chown` to give it \
                 to the user running this program",
                path = path.display(),
                owner = metadata.uid()
            ),
        ))
    }
}

impl FileTokenStore {
    /// Starts configuring a store keeping its tokens in the file at `path` (created, with its
    /// directory, on the first save).
    ///
    /// ```
    /// use reqwest_token_refresh::FileTokenStore;
    ///
    /// let store = FileTokenStore::builder("tokens.json").build()?;
    /// assert_eq!(store.path(), std::path::Path::new("tokens.json"));
    /// # Ok::<_, reqwest_token_refresh::ConfigError>(())
    /// ```
    pub fn builder(path: impl Into<PathBuf>) -> FileTokenStoreBuilder {
        FileTokenStoreBuilder {
            path: path.into(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            check_owners: true,
        }
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.paths.file
    }

    fn paths(&self) -> Arc<Paths> {
        Arc::clone(&self.paths)
    }
}

impl FileTokenStoreBuilder {
    /// How long [`lock`](TokenStore::lock) waits for other holders before failing with
    /// [`StoreErrorKind::LockTimeout`] (default 30 s).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Accepts a token file owned by another user and a directory that others can write to.
    /// Both are refused by default ([`StoreErrorKind::Refused`]), since either lets another
    /// user plant or swap the tokens; use this only for a deployment that needs it (a file
    /// provisioned by another account) and whose directory you trust.
    pub fn danger_skip_ownership_checks(mut self) -> Self {
        self.check_owners = false;
        self
    }

    /// Checks the path (it must end in a file name) and builds the store. Nothing is touched
    /// on disk until the store is used.
    pub fn build(self) -> Result<FileTokenStore, ConfigError> {
        let paths = Paths::new(&self.path, self.check_owners)?;
        Ok(FileTokenStore {
            paths: Arc::new(paths),
            lock_timeout: self.lock_timeout,
            in_process: Arc::default(),
        })
    }
}

impl std::fmt::Debug for FileTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTokenStore")
            .field("path", &self.paths.file)
            .field("lock_timeout", &self.lock_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenStore for FileTokenStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRecord>, StoreError> {
        let paths = self.paths();
        let key = key.clone();
        blocking(move || {
            Ok(
                read_document(&paths)?
                    .and_then(|mut document| document.tokens.remove(key.as_str())),
            )
        })
        .await
    }

    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        expected: Option<&Revision>,
    ) -> Result<SaveOutcome, StoreError> {
        let paths = self.paths();
        let key = key.clone();
        let record = record.clone();
        let expected = expected.cloned();
        blocking(move || {
            let mut document = read_document(&paths)?.unwrap_or_default();
            let current = document.tokens.get(key.as_str());
            if current.map(TokenRecord::revision) != expected.as_ref() {
                return Ok(SaveOutcome::Conflict {
                    current: current.cloned(),
                });
            }
            document.tokens.insert(key.as_str().to_owned(), record);
            document.version = VERSION;
            write_document(&paths, &document)?;
            Ok(SaveOutcome::Saved)
        })
        .await
    }

    async fn lock(&self, _key: &TokenKey) -> Result<StoreLock, StoreError> {
        let paths = self.paths();
        let deadline = Instant::now() + self.lock_timeout;
        let timed_out = || {
            StoreError::new(
                StoreErrorKind::LockTimeout,
                format!(
                    "timed out after {:?} waiting for the lock {}; another process or task \
                     holds it",
                    self.lock_timeout,
                    paths.lock.display()
                ),
            )
        };
        let in_process =
            tokio::time::timeout_at(deadline, Arc::clone(&self.in_process).lock_owned())
                .await
                .map_err(|_| timed_out())?;
        let mut pauses = LOCK_POLL.pauses();
        let file = loop {
            let file = blocking({
                let paths = Arc::clone(&paths);
                move || open_lock_file(&paths)
            })
            .await?;
            // Non-blocking (LOCK_NB): polling keeps the wait bounded and cancellable.
            match file.try_lock() {
                // Locked, but the path may name another file by now (the lock file was removed
                // or replaced after we opened it): a lock on an unlinked file excludes nobody.
                Ok(()) if names(&paths.lock, &file) => break file,
                Ok(()) => continue,
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(error)) => {
                    return Err(StoreError::new(
                        StoreErrorKind::Unavailable,
                        format!("could not lock {}", paths.lock.display()),
                    )
                    .with_source(error))
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(timed_out());
            }
            let pause = pauses.next().unwrap_or(LOCK_POLL_MAX);
            tokio::time::sleep(pause.min(deadline - now)).await;
        };
        let guard = FileLockGuard {
            file,
            path: paths.lock.clone(),
            _in_process: in_process,
        };
        // Every writer holds this lock, so a temp file present now belongs to a dead writer.
        blocking(move || {
            if let Err(error) = atomic::remove_leftovers(&paths.dir, &paths.temp_prefix) {
                log::debug!(dir = %paths.dir.display(), %error, "could not remove leftover temp files");
            }
            Ok(())
        })
        .await?;
        Ok(StoreLock::held(guard))
    }
}

/// Whether `path` still names the open `file` (same device and inode).
fn names(path: &Path, file: &File) -> bool {
    match (fs::symlink_metadata(path), file.metadata()) {
        (Ok(named), Ok(open)) => named.dev() == open.dev() && named.ino() == open.ino(),
        _ => false,
    }
}

/// Holds the file lock, then the in-process queue; releases them in that order.
struct FileLockGuard {
    file: File,
    path: PathBuf,
    _in_process: OwnedMutexGuard<()>,
}

#[async_trait]
impl HeldLock for FileLockGuard {
    /// Still the lock file the path names: if someone removed or replaced it, another process
    /// can lock the new one, and this lock excludes nobody.
    async fn is_held(&self) -> bool {
        names(&self.path, &self.file)
    }

    async fn release(self: Box<Self>) {
        // Dropped: unlocked, then the in-process queue moves on.
    }
}

impl Drop for FileLockGuard {
    fn drop(&mut self) {
        // Closing the descriptor would release it too; unlocking first says so explicitly.
        let _ = self.file.unlock();
    }
}

/// The file's contents.
#[derive(Serialize, Deserialize)]
struct Document {
    version: u64,
    tokens: BTreeMap<String, TokenRecord>,
}

impl Default for Document {
    fn default() -> Self {
        Self {
            version: VERSION,
            tokens: BTreeMap::new(),
        }
    }
}

/// Runs blocking file I/O off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|_| {
        Err(StoreError::new(
            StoreErrorKind::Other,
            "the file store's i/o task did not complete",
        ))
    })
}

/// Reads and checks the token file; `None` when there is none.
fn read_document(paths: &Paths) -> Result<Option<Document>, StoreError> {
    let path = &paths.file;
    paths.check_dir()?;
    // O_NOFOLLOW: a symlink is refused by the open itself (no check-then-open gap);
    // O_NONBLOCK: a FIFO put in the file's place cannot hang the open.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StoreError::new(
                StoreErrorKind::Refused,
                format!(
                    "token file {} is a symbolic link; refusing to follow it (point the store at \
                     the real file, or replace the link with the file itself)",
                    path.display()
                ),
            ))
        }
        Err(error) => return Err(io_error("could not read token file", path, error)),
    };
    // Check what was opened, not what the name pointed to a moment ago.
    let metadata = file
        .metadata()
        .map_err(|error| io_error("could not read token file", path, error))?;
    if !metadata.is_file() {
        return Err(StoreError::new(
            StoreErrorKind::Refused,
            format!("token file {} is not a regular file", path.display()),
        ));
    }
    paths.check_owner(path, &metadata)?;
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::new(
            StoreErrorKind::Refused,
            format!(
                "token file {path} is accessible by group or others (mode {mode:04o}); \
                 refusing to use it. run `chmod 600 {path}`, and consider the tokens in it \
                 exposed",
                path = path.display()
            ),
        ));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(corrupt(path, "is larger than 1 mib"));
    }
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| io_error("could not read token file", path, error))?;
    parse(path, &bytes).map(Some)
}

/// Decodes a document. serde errors are summarised, never attached: their messages can quote
/// the offending value, which may be a token.
fn parse(path: &Path, bytes: &[u8]) -> Result<Document, StoreError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
        corrupt(
            path,
            &match error.classify() {
                serde_json::error::Category::Eof => "is empty or truncated".to_owned(),
                _ => format!(
                    "is not valid json (line {}, column {})",
                    error.line(),
                    error.column()
                ),
            },
        )
    })?;
    match value.get("version").map(serde_json::Value::as_u64) {
        Some(Some(1 | VERSION)) => {}
        Some(Some(version)) => {
            return Err(corrupt(
                path,
                &format!("has version {version}; this store reads versions 1 and {VERSION}"),
            ))
        }
        _ => return Err(corrupt(path, "has no numeric `version` field")),
    }
    serde_json::from_value(value)
        .map_err(|_| corrupt(path, "does not hold a valid `tokens` map of token records"))
}

fn write_document(paths: &Paths, document: &Document) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(document).map_err(|_| {
        StoreError::new(
            StoreErrorKind::Other,
            format!("could not encode the token file {}", paths.file.display()),
        )
    })?;
    bytes.push(b'\n');
    atomic::replace(&paths.dir, &paths.file, &paths.temp_prefix, &bytes).map_err(
        |error| match error {
            WriteError::NotReplaced(error) => io_error(
                "could not write token file (the old file is unchanged)",
                &paths.file,
                error,
            ),
            WriteError::NotDurable(error) => io_error(
                "wrote token file but could not sync its directory",
                &paths.file,
                error,
            ),
        },
    )
}

/// Opens (creating it if needed, with its directory) the lock file.
fn open_lock_file(paths: &Paths) -> Result<File, StoreError> {
    paths.check_dir()?;
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(PRIVATE_MODE)
            // Never create or open through a symlink, never block on a FIFO.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&paths.lock)
    };
    let file = match open() {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&paths.dir)
                .map_err(|error| {
                    StoreError::new(
                        StoreErrorKind::Misconfigured,
                        format!("could not create directory {}", paths.dir.display()),
                    )
                    .with_source(error)
                })?;
            open()
        }
        other => other,
    }
    .map_err(|error| {
        if error.raw_os_error() == Some(libc::ELOOP) {
            StoreError::new(
                StoreErrorKind::Refused,
                format!(
                    "lock file {} is a symbolic link; remove it (it is recreated)",
                    paths.lock.display()
                ),
            )
        } else {
            io_error("could not open lock file", &paths.lock, error)
        }
    })?;
    let metadata = file
        .metadata()
        .map_err(|error| io_error("could not open lock file", &paths.lock, error))?;
    if !metadata.is_file() {
        return Err(StoreError::new(
            StoreErrorKind::Refused,
            format!(
                "lock file {} is not a regular file; remove it",
                paths.lock.display()
            ),
        ));
    }
    // Another user's lock file could be held by them for ever.
    paths.check_owner(&paths.lock, &metadata)?;
    Ok(file)
}

fn corrupt(path: &Path, what: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Corrupt,
        format!(
            "token file {} {what}; it was left unchanged (fix or delete it, then log in again)",
            path.display()
        ),
    )
}

fn io_error(action: &str, path: &Path, error: io::Error) -> StoreError {
    StoreError::new(
        StoreErrorKind::Unavailable,
        format!("{action}: {}", path.display()),
    )
    .with_source(error)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::secret::{AccessToken, RefreshToken};
    use crate::token::TokenSet;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "rtr-file-unit-{}-{n}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("tokens.json")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tokens(generation: u64) -> TokenRecord {
        TokenRecord::Tokens(
            TokenSet::new(AccessToken::new(format!("secret-at-{generation}")))
                .with_refresh_token(RefreshToken::new(format!("secret-rt-{generation}")))
                .renewed(generation),
        )
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn several_keys_share_one_versioned_document() {
        let dir = TempDir::new();
        let store = FileTokenStore::builder(dir.file()).build().unwrap();
        let (a, b) = (TokenKey::new("alice"), TokenKey::new("bob"));
        assert_eq!(
            store.save(&a, &tokens(1), None).await.unwrap(),
            SaveOutcome::Saved
        );
        let bob = tokens(7);
        assert_eq!(
            store.save(&b, &bob, None).await.unwrap(),
            SaveOutcome::Saved
        );
        assert_eq!(store.load(&b).await.unwrap(), Some(bob.clone()));
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.file()).unwrap()).unwrap();
        assert_eq!(json["version"], 2);
        assert_eq!(json["tokens"]["bob"]["generation"], 7);
        assert_eq!(json["tokens"]["bob"]["revision"], bob.revision().as_str());
        assert_eq!(json["tokens"]["bob"]["access_token"], "secret-at-7");
    }

    #[tokio::test]
    async fn a_version_1_file_is_read_and_rewritten_as_version_2() {
        let dir = TempDir::new();
        fs::write(
            dir.file(),
            br#"{"version":1,"tokens":{"default":{"access_token":"secret-at","token_type":"Bearer","generation":3}}}"#,
        )
        .unwrap();
        fs::set_permissions(dir.file(), fs::Permissions::from_mode(0o600)).unwrap();
        let store = FileTokenStore::builder(dir.file()).build().unwrap();
        let key = TokenKey::default();
        let old = store.load(&key).await.unwrap().unwrap();
        assert_eq!(old.revision().as_str(), "legacy-3");
        let next = tokens(4);
        assert_eq!(
            store.save(&key, &next, Some(old.revision())).await.unwrap(),
            SaveOutcome::Saved
        );
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.file()).unwrap()).unwrap();
        assert_eq!(json["version"], 2);
        assert_eq!(store.load(&key).await.unwrap(), Some(next));
    }

    #[tokio::test]
    async fn d6_files_are_private_and_no_temp_file_remains() {
        let dir = TempDir::new();
        let store = FileTokenStore::builder(dir.file()).build().unwrap();
        let key = TokenKey::default();
        let _lock = store.lock(&key).await.unwrap();
        let _ = store.save(&key, &tokens(1), None).await.unwrap();
        assert_eq!(mode(&dir.file()), 0o600);
        assert_eq!(mode(&dir.0.join("tokens.json.lock")), 0o600);
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[tokio::test]
    async fn leftover_temp_files_are_never_loaded_and_removed_by_the_next_lock() {
        let dir = TempDir::new();
        let store = FileTokenStore::builder(dir.file()).build().unwrap();
        let key = TokenKey::default();
        let first = tokens(1);
        let _ = store.save(&key, &first, None).await.unwrap();
        let leftover = dir.0.join(".tokens.json.tmp-999999-0");
        fs::write(&leftover, b"{\"version\":1,\"tok").unwrap();
        assert_eq!(store.load(&key).await.unwrap(), Some(first.clone()));
        drop(store.lock(&key).await.unwrap());
        assert!(!leftover.exists());
        assert_eq!(store.load(&key).await.unwrap(), Some(first));
    }

    #[tokio::test]
    async fn corrupt_truncated_and_wrong_version_files_are_errors_and_kept() {
        let cases: [&[u8]; 6] = [
            b"",
            b"{\"version\":1,\"tokens\":{\"default\":{\"access_token\":\"secret-at",
            b"not json",
            b"{\"version\":3,\"tokens\":{}}",
            b"{\"tokens\":{}}",
            b"{\"version\":1,\"tokens\":{\"default\":{\"access_token\":7}}}",
        ];
        for bytes in cases {
            let dir = TempDir::new();
            fs::write(dir.file(), bytes).unwrap();
            fs::set_permissions(dir.file(), fs::Permissions::from_mode(0o600)).unwrap();
            let store = FileTokenStore::builder(dir.file()).build().unwrap();
            let key = TokenKey::default();
            let error = store.load(&key).await.unwrap_err();
            assert_eq!(error.kind(), StoreErrorKind::Corrupt, "{error}");
            assert!(error.to_string().contains(&*dir.file().to_string_lossy()));
            assert!(!format!("{error:?}").contains("secret"), "{error:?}");
            let error = store.save(&key, &tokens(1), None).await.unwrap_err();
            assert_eq!(error.kind(), StoreErrorKind::Corrupt);
            assert_eq!(fs::read(dir.file()).unwrap(), bytes);
        }
    }

    #[tokio::test]
    async fn a_group_readable_file_is_refused_with_the_fix() {
        let dir = TempDir::new();
        let store = FileTokenStore::builder(dir.file()).build().unwrap();
        let key = TokenKey::default();
        let first = tokens(1);
        let _ = store.save(&key, &first, None).await.unwrap();
        fs::set_permissions(dir.file(), fs::Permissions::from_mode(0o640)).unwrap();
        let error = store.load(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Refused);
        assert!(error.to_string().contains("chmod 600"), "{error}");
        assert!(error.to_string().contains("0640"), "{error}");
        let error = store
            .save(&key, &tokens(2), Some(first.revision()))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Refused);
    }

    /// Another user's file could have been planted; a directory others can write lets them
    /// swap the file. Both are refused unless the deployment says otherwise.
    #[tokio::test]
    async fn files_of_other_users_and_directories_others_can_write_are_refused() {
        let dir = TempDir::new();
        let key = TokenKey::default();
        // A new store for every check: each looks at the file and directory as they are now.
        let fresh = || FileTokenStore::builder(dir.file()).build().unwrap();
        let _ = fresh().save(&key, &tokens(1), None).await.unwrap();

        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o777)).unwrap();
        let error = fresh().load(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Refused, "{error}");
        assert!(error.to_string().contains("chmod go-w"), "{error}");
        let error = fresh().lock(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Refused, "{error}");
        // The sticky bit (as on /tmp) restricts renames and deletes to each file's owner.
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(fresh().load(&key).await.is_ok());
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o777)).unwrap();
        let trusting = FileTokenStore::builder(dir.file())
            .danger_skip_ownership_checks()
            .build()
            .unwrap();
        assert!(trusting.load(&key).await.is_ok());
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o700)).unwrap();

        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping the owner check: giving a file away needs root");
            return;
        }
        let nobody = 65534;
        std::os::unix::fs::chown(dir.file(), Some(nobody), Some(nobody)).unwrap();
        let error = fresh().load(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Refused, "{error}");
        assert!(error.to_string().contains("uid 65534"), "{error}");
        let error = fresh().save(&key, &tokens(2), None).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Refused, "{error}");
        assert!(trusting.load(&key).await.is_ok());
        // A lock file another user planted is refused too (they could hold it for ever).
        std::os::unix::fs::chown(dir.file(), Some(0), Some(0)).unwrap();
        let lock = dir.0.join("tokens.json.lock");
        fs::write(&lock, b"").unwrap();
        fs::set_permissions(&lock, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&lock, Some(nobody), Some(nobody)).unwrap();
        let error = fresh().lock(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Refused, "{error}");
    }

    /// Someone removes or replaces the lock file while it is held: another process can lock
    /// the new file, so the holder must learn that its lock excludes nobody.
    #[tokio::test]
    async fn a_removed_or_replaced_lock_file_is_reported_lost() {
        let dir = TempDir::new();
        let key = TokenKey::default();
        let lock = dir.0.join("tokens.json.lock");
        let store = FileTokenStore::builder(dir.file()).build().unwrap();
        let held = store.lock(&key).await.unwrap();
        assert!(held.still_held().await);
        fs::remove_file(&lock).unwrap();
        assert!(!held.still_held().await, "removed");
        let other = FileTokenStore::builder(dir.file())
            .lock_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let second = other.lock(&key).await.expect("the new lock file is free");
        assert!(second.still_held().await);
        // Replaced by another file of the same name.
        fs::rename(&lock, dir.0.join("elsewhere")).unwrap();
        fs::write(&lock, b"").unwrap();
        assert!(!second.still_held().await, "replaced");
        drop((held, second));
    }

    #[tokio::test]
    async fn a_symlinked_file_is_refused() {
        let dir = TempDir::new();
        let real = dir.0.join("real.json");
        let _ = FileTokenStore::builder(&real)
            .build()
            .unwrap()
            .save(&TokenKey::default(), &tokens(1), None)
            .await
            .unwrap();
        std::os::unix::fs::symlink(&real, dir.file()).unwrap();
        let error = FileTokenStore::builder(dir.file())
            .build()
            .unwrap()
            .load(&TokenKey::default())
            .await
            .unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Refused);
        assert!(error.to_string().contains("symbolic link"), "{error}");
    }

    #[tokio::test]
    async fn a_path_without_file_name_is_a_configuration_error() {
        let error = FileTokenStore::builder("/").build().unwrap_err();
        assert!(
            matches!(
                &error,
                ConfigError::Store {
                    setting: "token file path",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn lock_creates_a_missing_directory() {
        let dir = TempDir::new();
        let store = FileTokenStore::builder(dir.0.join("nested/deeper/tokens.json"))
            .build()
            .unwrap();
        let key = TokenKey::default();
        let _lock = store.lock(&key).await.unwrap();
        let _ = store.save(&key, &tokens(1), None).await.unwrap();
        assert_eq!(mode(&dir.0.join("nested/deeper")), 0o700);
    }

    #[tokio::test]
    async fn d7_the_lock_excludes_other_holders_and_times_out() {
        let dir = TempDir::new();
        let key = TokenKey::default();
        let first = FileTokenStore::builder(dir.file()).build().unwrap();
        // Another instance takes the flock through its own descriptor, as another process does.
        let second = FileTokenStore::builder(dir.file())
            .lock_timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        let held = first.lock(&key).await.unwrap();
        let error = second.lock(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::LockTimeout);
        assert!(error.to_string().contains("tokens.json.lock"), "{error}");
        // Same store, another key: waits on the in-process queue, and also times out.
        let first = FileTokenStore {
            lock_timeout: Duration::from_millis(50),
            ..first
        };
        let error = first.lock(&TokenKey::new("other")).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::LockTimeout);
        drop(held);
        drop(second.lock(&key).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_of_one_process_queue_for_the_lock_instead_of_failing() {
        let dir = TempDir::new();
        let store = Arc::new(FileTokenStore::builder(dir.file()).build().unwrap());
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tasks = (0..16).map(|i| {
            let store = Arc::clone(&store);
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let key = TokenKey::new(format!("key-{}", i % 2));
                let _lock = store.lock(&key).await.unwrap();
                // Read-modify-write under the lock: lost updates would show in the count.
                let seen = counter.load(std::sync::atomic::Ordering::SeqCst);
                tokio::task::yield_now().await;
                counter.store(seen + 1, std::sync::atomic::Ordering::SeqCst);
            })
        });
        for task in tasks.collect::<Vec<_>>() {
            task.await.unwrap();
        }
        assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 16);
    }

    #[test]
    fn debug_names_the_file_only() {
        let debug = format!(
            "{:?}",
            FileTokenStore::builder("/tmp/x/tokens.json")
                .build()
                .unwrap()
        );
        assert!(debug.contains("/tmp/x/tokens.json"), "{debug}");
    }
}
