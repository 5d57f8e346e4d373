//! `FileTokenStore` against real files and real OS processes: one refresh across processes,
//! crash-safe private writes, a lock on a stable sibling file.
//!
//! Child processes re-execute this test binary to run one of the ignored `child_*` tests, with
//! `ROLE` naming it (without it they return at once). Parent and children coordinate through pipes.

use std::ffi::OsString;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest_middleware::ClientWithMiddleware;
use reqwest_token_refresh::{
    Event, FileTokenStore, RefreshTokenGrant, StoreErrorKind, TokenKey, TokenManager, TokenRecord,
    TokenStore,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::auth_server::AuthServer;
use crate::helpers::{builder, builder_for, built_with_tokens, client, token_error};
use crate::workers;
use reqwest_token_refresh::test_util::store_contract::StoreContract;

/// Names the `child_*` test a child process runs.
const ROLE: &str = "RTR_FILE_STORE_ROLE";
const FILE: &str = "RTR_FILE_STORE_FILE";
const URL: &str = "RTR_FILE_STORE_URL";
const DROP_TO_UID: &str = "RTR_FILE_STORE_DROP_TO_UID";
/// Children prefix their protocol lines with this; the test harness prints other lines.
const SAY: &str = "@@";

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A fresh directory (mode 0755, as a home directory usually is), removed on drop.
struct TempDir(tempfile::TempDir);

impl TempDir {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rtr-file-store-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn file(&self) -> PathBuf {
        self.path().join("tokens.json")
    }

    fn temp_files(&self) -> Vec<OsString> {
        fs::read_dir(self.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.to_string_lossy().starts_with(".tokens.json.tmp-"))
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A test may have made it read-only; the removal needs it writable again.
        let _ = fs::set_permissions(self.path(), fs::Permissions::from_mode(0o755));
    }
}

fn random() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

/// This test binary, asked to run only the `child_*` test `role`.
fn child_command(role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            &format!("file_store::{role}"),
            "--nocapture",
        ])
        .args(["--test-threads", "1", "-q"])
        .env(ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// Whether this process was started to play `role`.
fn is_child(role: &str) -> bool {
    std::env::var(ROLE).is_ok_and(|wanted| wanted == role)
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by the parent"))
}

/// A middleware on `url`'s loopback server, keeping tokens in `file`.
fn file_client(
    url: &str,
    file: &Path,
    events: Option<Arc<Mutex<Vec<Event>>>>,
) -> ClientWithMiddleware {
    let grant = RefreshTokenGrant::builder(format!("{url}/token"), "test-client")
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let mut builder = TokenManager::builder(grant)
        .allow_origin(url)
        .expect("valid origin")
        .rejection_cooldown(Duration::ZERO)
        .store(
            FileTokenStore::builder(file)
                .build()
                .expect("valid token file path"),
        );
    if let Some(events) = events {
        builder = builder.on_event(move |event| events.lock().unwrap().push(event.clone()));
    }
    client(builder.build()).0
}

/// Logs in once: the server's grant is stored in `file` at generation 1.
async fn log_in(server: &AuthServer, file: &Path) {
    let _ = built_with_tokens(
        builder(server).store(
            FileTokenStore::builder(file)
                .build()
                .expect("valid token file path"),
        ),
        server.issue_grant(),
    )
    .await;
}

/// Sends `count` concurrent requests; returns (200s, others).
async fn fire(client: &ClientWithMiddleware, url: &str, count: usize) -> (usize, usize) {
    let requests = (0..count).map(|i| {
        let client = client.clone();
        let url = format!("{url}/api/item/{i}");
        tokio::spawn(async move { client.get(url).send().await })
    });
    let mut ok = 0;
    for result in join_all(requests).await {
        match result.unwrap() {
            Ok(response) if response.status() == 200 => ok += 1,
            Ok(response) => eprintln!("request failed: {}", response.status()),
            Err(error) => eprintln!("request failed: {error}"),
        }
    }
    (ok, count - ok)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Several processes, one file, one refresh per token lifetime

const PROCESSES: usize = 6;
const ROUNDS: u64 = 5;
const REQUESTS_PER_ROUND: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d5_d7_six_processes_sharing_a_file_refresh_once_per_token_lifetime() {
    // A slow token endpoint widens the window in which other processes see 401s.
    let server = AuthServer::builder()
        .expect_refresh_calls(ROUNDS)
        .token_delay(Duration::from_millis(50))
        .start()
        .await;
    let dir = TempDir::new();
    log_in(&server, &dir.file()).await;

    let mut workers = Vec::new();
    for _ in 0..PROCESSES {
        let mut child = tokio::process::Command::from(child_command("child_refresh_worker"))
            .env(FILE, dir.file())
            .env(URL, server.uri())
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        workers.push((child, stdin, stdout));
    }
    let run = async {
        for (_, _, stdout) in &mut workers {
            assert_eq!(said(stdout).await, "ready");
        }
        for round in 1..=ROUNDS {
            // A new token lifetime: every process's access token is now rejected.
            server.reject_current_access_tokens();
            for (_, stdin, _) in &mut workers {
                stdin
                    .write_all(format!("round {round}\n").as_bytes())
                    .await
                    .unwrap();
            }
            for (_, _, stdout) in &mut workers {
                assert_eq!(
                    said(stdout).await,
                    format!("done {round} ok={REQUESTS_PER_ROUND} failed=0")
                );
            }
        }
        for (mut child, stdin, _) in workers {
            drop(stdin);
            assert!(child.wait().await.unwrap().success());
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("workers finish within 60 s");

    assert_eq!(server.reuse_detections(), 0);
    assert!(!server.is_revoked());
    assert_eq!(server.refresh_calls(), ROUNDS, "one refresh per lifetime");
    let stored = FileTokenStore::builder(dir.file())
        .build()
        .expect("valid token file path")
        .load(&TokenKey::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.generation(), 1 + ROUNDS);
    assert_eq!(
        stored.tokens().unwrap().refresh_token().unwrap().secret(),
        server.current_refresh_token().unwrap()
    );
}

/// The next protocol line of a child.
async fn said(
    stdout: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    loop {
        let line = stdout.next_line().await.unwrap().expect("child exited");
        if let Some(said) = line.strip_prefix(SAY) {
            return said.to_owned();
        }
    }
}

#[test]
#[ignore = "a child process of the file store tests"]
fn child_refresh_worker() {
    if !is_child("child_refresh_worker") {
        return;
    }
    let (url, file) = (env(URL), PathBuf::from(env(FILE)));
    runtime().block_on(async {
        let client = file_client(&url, &file, None);
        println!("{SAY}ready");
        let mut rounds = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = rounds.next_line().await.unwrap() {
            let round = line.strip_prefix("round ").unwrap();
            let (ok, failed) = fire(&client, &url, REQUESTS_PER_ROUND).await;
            println!("{SAY}done {round} ok={ok} failed={failed}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// A writer killed at random moments

const KILLS: usize = 300;

/// The document the crash writer stores at generation `n`: large enough that a torn write
/// would show, and fully determined by `n`.
fn crash_tokens(n: u64) -> TokenRecord {
    serde_json::from_value(serde_json::json!({
        "access_token": format!("at-{n}"),
        "refresh_token": format!("rt-{n}"),
        "token_type": "Bearer",
        "scope": format!("{n} {}", "x".repeat(32 * 1024)),
        "generation": n,
        "revision": format!("crash-{n}"),
    }))
    .unwrap()
}

#[test]
fn d6_a_writer_killed_at_random_moments_leaves_the_old_or_the_new_document() {
    let dir = TempDir::new();
    let runtime = runtime();
    let store = FileTokenStore::builder(dir.file())
        .build()
        .expect("valid token file path");
    let key = TokenKey::default();
    let started = Instant::now();
    let (mut mid_write, mut leftovers) = (0, 0);
    for _ in 0..KILLS {
        let mut child = child_command("child_crash_writer")
            .env(FILE, dir.file())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        // Wait until it is in its write loop, then let it run a random while.
        let mut last_saved = None;
        for line in stdout.by_ref() {
            if let Some(n) = line.unwrap().strip_prefix(&format!("{SAY}saved ")) {
                last_saved = Some(n.parse::<u64>().unwrap());
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(random() % 4_000));
        child.kill().unwrap();
        child.wait().unwrap();
        let mut saving = None;
        for line in stdout {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix(&format!("{SAY}saved ")) {
                last_saved = Some(n.parse().unwrap());
            } else if let Some(n) = line.strip_prefix(&format!("{SAY}saving ")) {
                saving = Some(n.parse::<u64>().unwrap());
            }
        }
        let last_saved = last_saved.expect("the writer saved at least once");
        let stored = runtime
            .block_on(store.load(&key))
            .expect("the file always parses")
            .expect("the file is never removed");
        let n = stored.generation();
        assert!(
            n == last_saved || (saving == Some(last_saved + 1) && n == last_saved + 1),
            "stored generation {n}, last saved {last_saved}, saving {saving:?}"
        );
        assert_eq!(stored, crash_tokens(n));
        if saving > Some(last_saved) {
            mid_write += 1;
        }
        let temp_files = dir.temp_files();
        assert!(temp_files.len() <= 1, "{temp_files:?}");
        leftovers += temp_files.len();
    }
    // Kills landed inside writes (the point of the test), and their temp files were cleaned.
    assert!(mid_write > 0, "no kill landed during a save");
    drop(runtime.block_on(store.lock(&key)).unwrap());
    assert_eq!(dir.temp_files(), Vec::<OsString>::new());
    assert_eq!(mode(&dir.file()), 0o600);
    eprintln!(
        "{KILLS} kills in {:?}: {mid_write} during a save, {leftovers} temp files left and cleaned",
        started.elapsed()
    );
}

#[test]
#[ignore = "a child process of the file store tests"]
fn child_crash_writer() {
    if !is_child("child_crash_writer") {
        return;
    }
    let store = FileTokenStore::builder(env(FILE))
        .build()
        .expect("valid token file path");
    let key = TokenKey::default();
    runtime().block_on(async {
        loop {
            let _lock = store.lock(&key).await.unwrap();
            let current = store.load(&key).await.unwrap();
            let next = current.as_ref().map_or(0, TokenRecord::generation) + 1;
            println!("{SAY}saving {next}");
            let expected = current.as_ref().map(TokenRecord::revision);
            let outcome = store.save(&key, &crash_tokens(next), expected).await;
            assert_eq!(outcome.unwrap(), reqwest_token_refresh::SaveOutcome::Saved);
            println!("{SAY}saved {next}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Permissions and paths

#[test]
fn d6_files_are_created_0600_even_with_umask_000() {
    let dir = TempDir::new();
    let file = dir.path().join("config/app/tokens.json");
    let output = child_command("child_umask_writer")
        .env(FILE, &file)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("{SAY}saved")));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir.path().join("config/app/tokens.json.lock")), 0o600);
    assert_eq!(mode(&dir.path().join("config/app")), 0o700);
}

#[test]
#[ignore = "a child process of the file store tests"]
fn child_umask_writer() {
    if !is_child("child_umask_writer") {
        return;
    }
    // SAFETY: umask has no memory-safety preconditions.
    unsafe { libc::umask(0) };
    let store = FileTokenStore::builder(env(FILE))
        .build()
        .expect("valid token file path");
    let key = TokenKey::default();
    runtime().block_on(async {
        let _lock = store.lock(&key).await.unwrap();
        let first = crash_tokens(1);
        let _ = store.save(&key, &first, None).await.unwrap();
        let _ = store
            .save(&key, &crash_tokens(2), Some(first.revision()))
            .await
            .unwrap();
    });
    // Prove the umask was in force: a file created without an explicit mode is world-writable.
    let probe = PathBuf::from(env(FILE)).with_file_name("probe");
    fs::write(&probe, b"").unwrap();
    assert_eq!(mode(&probe), 0o666);
    println!("{SAY}saved");
}

/// The `TokenStore` contract suite, with the file store's ways of losing a lock (the lock file
/// removed behind its holder's back) and of spoiling a record (garbage in the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_store_contract() {
    let dir = TempDir::new();
    let (file, lock) = (dir.file(), dir.path().join("tokens.json.lock"));
    let make = {
        let file = file.clone();
        move || {
            let store = FileTokenStore::builder(&file)
                .build()
                .expect("valid token file path");
            async move { store }
        }
    };
    let breaker = move |_key: TokenKey| {
        let lock = lock.clone();
        async move { fs::remove_file(lock).expect("remove the lock file") }
    };
    let corrupter = move |_key: TokenKey| {
        let file = file.clone();
        async move { fs::write(file, b"{\"version\":2,\"tok").expect("spoil the file") }
    };
    StoreContract::new(make)
        .lock_breaker(breaker)
        .corrupter(corrupter)
        .run()
        .await;
}

#[tokio::test]
async fn d6_a_world_readable_token_file_is_refused_and_left_alone() {
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(0)
        .start()
        .await;
    let dir = TempDir::new();
    log_in(&server, &dir.file()).await;
    fs::set_permissions(dir.file(), fs::Permissions::from_mode(0o644)).unwrap();
    let before = fs::read(dir.file()).unwrap();

    let client = file_client(&server.uri(), &dir.file(), None);
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    let reqwest_token_refresh::Error::Store(error) = token_error(&error) else {
        panic!("expected a store error, got {error}");
    };
    assert_eq!(error.kind(), StoreErrorKind::Refused);
    let message = error.to_string();
    assert!(
        message.contains(&*dir.file().to_string_lossy()),
        "{message}"
    );
    assert!(message.contains("chmod 600"), "{message}");
    assert!(!message.contains("at-1") && !message.contains("rt-1"));
    assert_eq!(fs::read(dir.file()).unwrap(), before);
    assert_eq!(mode(&dir.file()), 0o644);
}

#[tokio::test]
async fn d6_a_symlinked_token_file_is_refused() {
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(0)
        .start()
        .await;
    let dir = TempDir::new();
    let real = dir.path().join("elsewhere.json");
    log_in(&server, &real).await;
    std::os::unix::fs::symlink(&real, dir.file()).unwrap();

    let client = file_client(&server.uri(), &dir.file(), None);
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    let reqwest_token_refresh::Error::Store(error) = token_error(&error) else {
        panic!("expected a store error, got {error}");
    };
    assert_eq!(error.kind(), StoreErrorKind::Refused);
    assert!(error.to_string().contains("symbolic link"), "{error}");
    assert!(fs::symlink_metadata(dir.file())
        .unwrap()
        .file_type()
        .is_symlink());
}

#[tokio::test]
async fn d6_a_corrupt_token_file_is_reported_and_kept_byte_for_byte() {
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(0)
        .start()
        .await;
    let dir = TempDir::new();
    log_in(&server, &dir.file()).await;
    let mut bytes = fs::read(dir.file()).unwrap();
    bytes.truncate(bytes.len() / 2);
    fs::write(dir.file(), &bytes).unwrap();

    let client = file_client(&server.uri(), &dir.file(), None);
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    let reqwest_token_refresh::Error::Store(error) = token_error(&error) else {
        panic!("expected a store error, got {error}");
    };
    assert_eq!(error.kind(), StoreErrorKind::Corrupt);
    assert!(!format!("{error:?}").contains("at-1"), "{error:?}");
    // Not even a new login overwrites it: the user decides what to do with the file.
    let (_, manager) = client_for_file(&server, &dir.file());
    let error = manager
        .set_tokens(&TokenKey::default(), server.issue_grant())
        .await
        .unwrap_err();
    assert!(
        matches!(error, reqwest_token_refresh::Error::Store(ref e) if e.kind() == StoreErrorKind::Corrupt)
    );
    assert_eq!(fs::read(dir.file()).unwrap(), bytes);
}

fn client_for_file(
    server: &AuthServer,
    file: &Path,
) -> (ClientWithMiddleware, reqwest_token_refresh::TokenManager) {
    client(
        builder(server)
            .store(
                FileTokenStore::builder(file)
                    .build()
                    .expect("valid token file path"),
            )
            .build(),
    )
}

// ---------------------------------------------------------------------------------------------
// A write that fails leaves the old file, and the tokens keep working from memory

/// The unprivileged user the child becomes when the tests run as root.
const NOBODY: u32 = 65534;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d6_an_unwritable_directory_keeps_the_old_file_and_the_new_tokens_serve_from_memory() {
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(1)
        .start()
        .await;
    let dir = TempDir::new();
    log_in(&server, &dir.file()).await;
    let before = fs::read(dir.file()).unwrap();
    // Root ignores directory permissions, so a root run hands the files to an unprivileged
    // child and keeps the directory root-owned (0755); otherwise the directory becomes 0500.
    // The child proves the fault is real by failing to create a file there.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut command = child_command("child_unwritable_dir");
    if root {
        for path in [dir.file(), dir.path().join("tokens.json.lock")] {
            std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        command.env(DROP_TO_UID, NOBODY.to_string());
    } else {
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
    }
    // The access token in the file is rejected: the child must refresh and then fail to save.
    server.reject_current_access_tokens();
    let mut child = tokio::process::Command::from(command)
        .env(FILE, dir.file())
        .env(URL, server.uri())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let said = tokio::time::timeout(Duration::from_secs(30), said(&mut stdout))
        .await
        .expect("child finishes within 30 s");
    assert_eq!(said, "served ok=21 failed=0 persist_failed=unavailable");
    assert!(child.wait().await.unwrap().success());

    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(fs::read(dir.file()).unwrap(), before, "old file intact");
    assert_eq!(dir.temp_files(), Vec::<OsString>::new());
    assert_eq!(server.refresh_calls(), 1);
    assert_eq!(server.reuse_detections(), 0);
}

#[test]
#[ignore = "a child process of the file store tests"]
fn child_unwritable_dir() {
    if !is_child("child_unwritable_dir") {
        return;
    }
    if let Ok(uid) = std::env::var(DROP_TO_UID) {
        let uid: u32 = uid.parse().unwrap();
        // SAFETY: plain syscalls; glibc applies them to every thread of the process.
        unsafe {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setgid(uid), 0);
            assert_eq!(libc::setuid(uid), 0);
        }
    }
    let (url, file) = (env(URL), PathBuf::from(env(FILE)));
    let probe = file.with_file_name("probe");
    assert!(fs::write(&probe, b"").is_err(), "the directory is writable");
    let events = Arc::new(Mutex::new(Vec::new()));
    runtime().block_on(async {
        let client = file_client(&url, &file, Some(Arc::clone(&events)));
        // The first request is rejected, refreshes, fails to save and is replayed.
        let (ok_first, _) = fire(&client, &url, 1).await;
        let (ok_rest, _) = fire(&client, &url, 20).await;
        let ok = ok_first + ok_rest;
        let persist_failed = events
            .lock()
            .unwrap()
            .iter()
            .find_map(|event| match event {
                Event::PersistFailed { error, .. } => Some(format!("{:?}", error.kind())),
                _ => None,
            })
            .unwrap_or_default()
            .to_lowercase();
        println!(
            "{SAY}served ok={ok} failed={} persist_failed={persist_failed}",
            21 - ok
        );
    });
}

#[tokio::test]
async fn a_fifo_or_symlink_in_place_of_the_token_or_lock_file_is_refused_without_hanging() {
    let dir = TempDir::new();
    let file = dir.path().join("tokens.json");
    let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file system node.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let store = FileTokenStore::builder(&file)
        .build()
        .expect("valid token file path");
    let loaded = tokio::time::timeout(Duration::from_secs(5), store.load(&TokenKey::default()))
        .await
        .expect("a FIFO must not hang the load");
    assert_eq!(loaded.unwrap_err().kind(), StoreErrorKind::Refused);

    // A dangling symlink where the lock file goes: refused, and nothing created at its target.
    let other = TempDir::new();
    let target = other.path().join("created-through-the-link");
    let lock_dir = TempDir::new();
    std::os::unix::fs::symlink(&target, lock_dir.path().join("tokens.json.lock")).unwrap();
    let store = FileTokenStore::builder(lock_dir.path().join("tokens.json"))
        .build()
        .expect("valid token file path");
    let error = store.lock(&TokenKey::default()).await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Refused);
    assert!(!target.exists());
}

// ---------------------------------------------------------------------------------------------
// A process that refreshes and exits at once leaves no lock behind

/// One run of a CLI: one request that refreshes, then exit.
#[tokio::test]
#[ignore = "a short-lived process of a_process_that_refreshes_and_exits_leaves_no_lock_behind"]
async fn short_lived_file_process() {
    if !workers::is_worker() {
        return;
    }
    let env = |name: &str| std::env::var(name).expect(name);
    let store = FileTokenStore::builder(env("RTR_FILE"))
        .build()
        .expect("valid token file path");
    let middleware = builder_for(&env("RTR_TOKEN_URL"), &env("RTR_ORIGIN"))
        .store(store)
        .build();
    workers::one_request_and_exit(client(middleware), env("RTR_API_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_refreshes_and_exits_leaves_no_lock_behind() {
    let dir = TempDir::new();
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    built_with_tokens(
        builder(&server).store(
            FileTokenStore::builder(dir.file())
                .build()
                .expect("valid token file path"),
        ),
        server.issue_grant(),
    )
    .await;
    let env = [
        ("RTR_FILE", dir.file().display().to_string()),
        ("RTR_TOKEN_URL", server.token_url()),
        ("RTR_ORIGIN", server.uri()),
        ("RTR_API_URL", server.api_url("me")),
    ];
    workers::assert_short_lived_runs_leave_no_lock(
        &server,
        "file_store::short_lived_file_process",
        &env,
    );
}

/// A process that reads back its own save must not take it for another process's refresh
/// (stores once kept whole seconds, so the record read back differed from the one saved).
#[tokio::test]
async fn a_process_never_adopts_its_own_saves() {
    let dir = TempDir::new();
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let (builder, mut events) = crate::helpers::events(
        builder(&server)
            .store(
                FileTokenStore::builder(dir.file())
                    .build()
                    .expect("valid token file path"),
            )
            .rejection_cooldown(Duration::ZERO),
    );
    let (client, _) = built_with_tokens(builder, server.issue_expired_grant()).await;
    for round in 0..3 {
        if round > 0 {
            server.reject_current_access_tokens();
        }
        let response = client.get(server.api_url("me")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(server.refresh_calls(), 3);
    while let Ok(event) = events.try_recv() {
        assert!(!matches!(event, Event::Adopted { .. }), "{event:?}");
    }
}
