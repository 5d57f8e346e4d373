//! What the Redis test modules share: the key ring, unique key prefixes, the rule for a missing
//! server (a note and a skip, except in CI where it fails), and private `redis-server`
//! processes that a test starts, configures and stops itself.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest_token_refresh::{AccessToken, EncryptionKey, KeyRing, RefreshToken, TokenSet};

pub fn key_ring() -> KeyRing {
    KeyRing::new(EncryptionKey::from_bytes("test-2026", &[7; 32]).unwrap())
}

/// A prefix no other test uses.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "rtr-test:{}:{}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Tokens whose values say which they are (`canary-…`, to look for them in raw bytes).
pub fn tokens(marker: &str) -> TokenSet {
    TokenSet::new(AccessToken::new(format!("canary-at-{marker}")))
        .with_refresh_token(RefreshToken::new(format!("canary-rt-{marker}")))
        .with_expires_in(Duration::from_secs(3600))
}

/// `Some(value)`, or `None` after a note when `what` is missing outside CI; in CI a missing
/// service fails the test.
pub fn required<T, E: std::fmt::Display>(what: &str, connected: Result<T, E>) -> Option<T> {
    match connected {
        Ok(value) => Some(value),
        Err(error) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: {what} is not available ({error})");
            None
        }
        Err(error) => panic!("{what} is required in CI: {error}"),
    }
}

/// The contract suite's lock breaker: deletes the lease `lease` behind its holder's back (as
/// when it expires during a stall).
pub async fn delete_lease(connection: &mut impl redis::aio::ConnectionLike, lease: String) {
    let deleted: i64 = redis::cmd("DEL")
        .arg(lease)
        .query_async(connection)
        .await
        .unwrap();
    assert_eq!(deleted, 1, "the lease existed");
}

/// The contract suite's corrupter: replaces the seal of the record `record` with bytes that
/// are not a sealed envelope.
pub async fn spoil_record(connection: &mut impl redis::aio::ConnectionLike, record: String) {
    let _: () = redis::cmd("HSET")
        .arg(record)
        .arg("sealed")
        .arg("not a sealed envelope")
        .query_async(connection)
        .await
        .unwrap();
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap()
}

/// A `redis-server` (or, with `--sentinel`, a sentinel) of this test's own, on loopback,
/// keeping nothing on disk; killed when dropped.
pub struct PrivateRedis {
    child: Child,
    /// The plain port.
    pub port: u16,
    /// The TLS port, for a server started with [`start_tls`](Self::start_tls).
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
}

/// What a server listens on, for one attempt to start it.
#[derive(Clone, Copy)]
struct Ports {
    plain: u16,
    tls: Option<u16>,
}

impl PrivateRedis {
    /// A plain server, or `None` (skipped) without `redis-server` outside CI.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// A server with extra command-line options (`--requirepass`, `--replicaof`, …).
    pub fn start_with(options: &[String]) -> Option<Self> {
        Self::spawn(false, |ports, _| {
            let mut args = vec!["--port".to_owned(), ports.plain.to_string()];
            args.extend(options.iter().cloned());
            args
        })
    }

    /// A server that also listens with TLS, with `cert` and `key` (on `tls_port`).
    pub fn start_tls(cert: &Path, key: &Path, options: &[String]) -> Option<Self> {
        Self::spawn(true, |ports, _| {
            let mut args: Vec<String> = vec![
                "--port".to_owned(),
                ports.plain.to_string(),
                "--tls-port".to_owned(),
                ports.tls.unwrap().to_string(),
                "--tls-auth-clients".to_owned(),
                "no".to_owned(),
            ];
            for (option, path) in [
                ("--tls-cert-file", cert),
                ("--tls-key-file", key),
                ("--tls-ca-cert-file", cert),
            ] {
                args.push(option.to_owned());
                args.push(path.display().to_string());
            }
            args.extend(options.iter().cloned());
            args
        })
    }

    /// A sentinel watching `master_port` as `master_name` (quorum 1, quick to act).
    pub fn start_sentinel(master_name: &str, master_port: u16) -> Option<Self> {
        Self::spawn(false, |ports, dir| {
            let config = dir.join("sentinel.conf");
            let port = ports.plain;
            std::fs::write(
                &config,
                format!(
                    "port {port}\n\
                     sentinel monitor {master_name} 127.0.0.1 {master_port} 1\n\
                     sentinel down-after-milliseconds {master_name} 1000\n\
                     sentinel failover-timeout {master_name} 5000\n"
                ),
            )
            .unwrap();
            vec![config.display().to_string(), "--sentinel".to_owned()]
        })
    }

    /// Starts the server `args` describes for the ports it is given, on new ports until it is
    /// the one answering there (tests start servers in parallel: a port found free can be
    /// taken before the server binds it).
    fn spawn(tls: bool, args: impl Fn(Ports, &Path) -> Vec<String>) -> Option<Self> {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let ports = Ports {
                plain: free_port(),
                tls: tls.then(free_port),
            };
            let spawned = Command::new("redis-server")
                .args(args(ports, dir.path()))
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn();
            let child = required("redis-server", spawned)?;
            let mut server = Self {
                child,
                port: ports.plain,
                tls_port: ports.tls,
                dir,
            };
            if server.answers() {
                return Some(server);
            }
            server.stop();
        }
        panic!("could not start a private redis-server");
    }

    /// Whether this server, and no other process, answers on its plain port (bounded wait:
    /// startup, not correctness).
    fn answers(&mut self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            let info: redis::RedisResult<String> = redis::Client::open(self.url())
                .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut connection| redis::cmd("INFO").arg("server").query(&mut connection));
            if let Ok(info) = info {
                return info.contains(&format!("process_id:{}\r\n", self.child.id()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A file in this server's own directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Stops the process without ending it (`SIGSTOP`): it keeps its port, answers nothing,
    /// and its connections hang, as with a server that froze or a network partition.
    pub fn freeze(&self) {
        let status = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
