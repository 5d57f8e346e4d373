//! Crash-safe replacement of a file: a private temp file in the same directory, fsync, rename
//! over the target, fsync the directory: a crash leaves the old file or the new one, never a
//! torn one.
//!
//! A crash at any point leaves either the old or the new contents under the target name; what
//! it may leave besides is a temp file, which readers never open and [`remove_leftovers`]
//! deletes.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Owner read and write, nothing for anyone else.
pub(super) const PRIVATE_MODE: u32 = 0o600;

/// Names of temp files are unique within a process; the pid makes them unique across processes.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Where a write failed: before the rename (the target is untouched) or after it (the new
/// contents are in place but may not be durable yet).
#[derive(Debug)]
pub(super) enum WriteError {
    /// Nothing was replaced.
    NotReplaced(io::Error),
    /// The target holds the new contents; syncing the directory failed.
    NotDurable(io::Error),
}

/// Replaces `target` (in directory `dir`) with `contents`. Temp files are named
/// `<temp_prefix><pid>-<n>`.
pub(super) fn replace(
    dir: &Path,
    target: &Path,
    temp_prefix: &OsStr,
    contents: &[u8],
) -> Result<(), WriteError> {
    let (temp_path, file) = create_temp(dir, temp_prefix).map_err(WriteError::NotReplaced)?;
    if let Err(error) = fill(file, contents).and_then(|()| fs::rename(&temp_path, target)) {
        // Best effort: a temp file left behind is never read and the next lock removes it.
        let _ = fs::remove_file(&temp_path);
        return Err(WriteError::NotReplaced(error));
    }
    sync_dir(dir).map_err(WriteError::NotDurable)
}

/// Creates a new temp file, exclusively and private from the first instant: the creation mode is
/// 0600 (the umask can only narrow it), then it is set to exactly 0600 whatever the umask.
fn create_temp(dir: &Path, temp_prefix: &OsStr) -> io::Result<(PathBuf, File)> {
    let mut attempts = 0;
    loop {
        let mut name = OsString::from(temp_prefix);
        name.push(format!(
            "{}-{}",
            std::process::id(),
            NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
        ));
        let path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_MODE)
            .open(&path)
        {
            Ok(file) => {
                if let Err(error) = file.set_permissions(Permissions::from_mode(PRIVATE_MODE)) {
                    let _ = fs::remove_file(&path);
                    return Err(error);
                }
                return Ok((path, file));
            }
            // A leftover of a dead process that had our pid; pick the next name.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

fn fill(mut file: File, contents: &[u8]) -> io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Deletes temp files left in `dir` by writers that died mid-write. Call it only while holding
/// the lock that every writer takes, so no live write loses its temp file.
pub(super) fn remove_leftovers(dir: &Path, temp_prefix: &OsStr) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .as_bytes()
            .starts_with(temp_prefix.as_bytes())
            && entry.file_type()?.is_file()
        {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
