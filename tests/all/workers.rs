//! Real OS processes for cross-process tests: the test binary re-executes itself as workers.
//!
//! The parent writes one command line to every worker's stdin and reads one reply line from
//! each; rounds are synchronized by these pipes, never by sleeps. A worker is an `#[ignore]`d
//! test run with `--ignored --exact NAME`; it learns its configuration from environment
//! variables. Used by the store tests of whichever store features are enabled.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use futures::future::join_all;
use reqwest_middleware::ClientWithMiddleware;
use reqwest_token_refresh::{TokenKey, TokenManager};

use crate::auth_server::AuthServer;

/// How many short-lived processes run one after another in the lock-release-at-exit tests.
const SHORT_LIVED_RUNS: usize = 20;

/// Environment variable that makes an ignored worker test act.
pub const WORKER_ENV: &str = "RTR_TEST_WORKER";

/// Worker processes running one test of this binary.
pub struct Workers {
    workers: Vec<(Child, ChildStdin, BufReader<ChildStdout>)>,
}

impl Workers {
    /// Starts `count` workers running test `name` with the extra environment `env`.
    pub fn spawn(name: &str, count: usize, env: &[(&str, String)]) -> Self {
        let workers = (0..count)
            .map(|index| {
                let mut child = test_process(name, index, env)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn worker");
                let stdin = child.stdin.take().expect("worker stdin");
                let stdout = BufReader::new(child.stdout.take().expect("worker stdout"));
                (child, stdin, stdout)
            })
            .collect();
        Self { workers }
    }

    /// Sends `command` to every worker and returns each one's reply.
    pub fn round(&mut self, command: &str) -> Vec<String> {
        for (_, stdin, _) in &mut self.workers {
            writeln!(stdin, "{command}").expect("write to worker");
            stdin.flush().expect("flush worker stdin");
        }
        self.workers
            .iter_mut()
            .map(|(_, _, stdout)| reply(stdout))
            .collect()
    }

    /// Runs `rounds` rounds of requests, each a new token lifetime (before every round but the
    /// first, `server` rejects all access tokens issued so far), then stops the workers.
    /// Returns how many requests failed. Blocking on the pipes happens off the runtime, so the
    /// loopback server keeps running (needs a multi-thread runtime).
    pub fn run_lifetimes(mut self, server: &AuthServer, rounds: usize) -> usize {
        let mut failed = 0;
        for round in 0..rounds {
            if round > 0 {
                server.reject_current_access_tokens();
            }
            let replies = tokio::task::block_in_place(|| self.round("round"));
            failed += tally(&replies).1;
        }
        tokio::task::block_in_place(|| self.finish());
        failed
    }

    /// Tells every worker to exit and checks that each did so cleanly.
    pub fn finish(mut self) {
        self.round("exit");
        for (child, _, _) in &mut self.workers {
            let status = child.wait().expect("worker exit status");
            assert!(status.success(), "worker failed: {status}");
        }
    }
}

/// This test binary, to run only the ignored test `name` as worker `index` with the extra
/// environment `env` (its standard error shown with the parent's).
fn test_process(name: &str, index: usize, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, index.to_string())
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stderr(Stdio::inherit());
    command
}

/// The next protocol line of a worker (the test harness prints its own lines too).
fn reply(stdout: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let read = stdout.read_line(&mut line).expect("read from worker");
        assert!(read > 0, "worker exited early");
        // libtest may have printed `test NAME ... ` on the same line.
        if let Some((_, reply)) = line.trim().split_once("reply: ") {
            return reply.to_owned();
        }
    }
}

/// CLI-style use, one process after another: before each of [`SHORT_LIVED_RUNS`] processes, `server`
/// rejects the access tokens issued so far, so that the process's one request refreshes; the
/// process (test `name`, see [`one_request_and_exit`]) then exits. Returns how long each
/// process's request took: a lock left behind by the previous process shows there.
fn short_lived_runs(server: &AuthServer, name: &str, env: &[(&str, String)]) -> Vec<Duration> {
    (0..SHORT_LIVED_RUNS)
        .map(|_| {
            server.reject_current_access_tokens();
            let output = tokio::task::block_in_place(|| {
                test_process(name, 0, env)
                    .output()
                    .expect("run a short-lived process")
            });
            assert!(
                output.status.success(),
                "the process failed: {}",
                output.status
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            let reply = stdout
                .lines()
                .find_map(|line| {
                    line.split_once("reply: ")
                        .map(|(_, reply)| reply.to_owned())
                })
                .expect("the process replied");
            let (millis, status) = reply.split_once(' ').expect("`millis status`");
            assert_eq!(status, "200", "the process's request failed");
            Duration::from_millis(millis.parse().expect("millis"))
        })
        .collect()
}

/// [`SHORT_LIVED_RUNS`] short-lived processes running test `name` (see [`short_lived_runs`])
/// with `env`: none waits for a lock left behind by the one before (each request within a
/// second), each refreshes once, and no refresh token is reused.
pub fn assert_short_lived_runs_leave_no_lock(
    server: &AuthServer,
    name: &str,
    env: &[(&str, String)],
) {
    let times = short_lived_runs(server, name, env);
    assert!(
        times.iter().all(|time| *time < Duration::from_secs(1)),
        "{times:?}"
    );
    assert_eq!(server.refresh_calls(), SHORT_LIVED_RUNS as u64);
    assert_eq!(server.reuse_detections(), 0);
}

/// A short-lived process's whole life (see [`short_lived_runs`]): one request, its time and
/// status printed; then, as a CLI's last step might be, the tokens handed over again (a run
/// that takes and releases the store's lock), and the process exits at once.
pub async fn one_request_and_exit(
    (client, manager): (ClientWithMiddleware, TokenManager),
    url: String,
) {
    let started = std::time::Instant::now();
    let status = match client.get(url).send().await {
        Ok(response) => response.status().as_u16(),
        Err(error) => {
            eprintln!("request failed: {error}");
            0
        }
    };
    println!("reply: {} {status}", started.elapsed().as_millis());
    let key = TokenKey::default();
    if let Ok(Some(tokens)) = manager.tokens(&key).await {
        manager
            .set_tokens(&key, tokens)
            .await
            .expect("tokens handed over");
    }
    // Exit now, as a CLI's `main` returning would: nothing left running gets to finish.
    std::io::Write::flush(&mut std::io::stdout()).expect("flush");
    std::process::exit(0);
}

/// Whether this process is a worker.
pub fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

/// A worker's loop: on each `round` command, fires `per_round` concurrent requests at `url`
/// and replies `ok failed`; returns on `exit`.
pub async fn serve_rounds(client: ClientWithMiddleware, url: String, per_round: usize) {
    loop {
        // Read off the runtime so background tasks (lock releases, saves) keep running.
        let line = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        })
        .await
        .expect("stdin reader")
        .expect("read command");
        if line.trim() == "exit" || line.is_empty() {
            println!("reply: bye");
            return;
        }
        let requests =
            (0..per_round).map(|_| {
                let client = client.clone();
                let url = url.clone();
                async move {
                    tokio::time::timeout(Duration::from_secs(30), client.get(url).send()).await
                }
            });
        let results = join_all(requests).await;
        let ok = results
            .iter()
            .filter(|result| matches!(result, Ok(Ok(response)) if response.status() == 200))
            .count();
        println!("reply: {ok} {}", per_round - ok);
    }
}

/// Sums the `ok failed` replies of a round.
pub fn tally(replies: &[String]) -> (usize, usize) {
    replies.iter().fold((0, 0), |(ok, failed), reply| {
        let mut parts = reply
            .split_whitespace()
            .map(|n| n.parse::<usize>().expect("count"));
        (
            ok + parts.next().expect("ok"),
            failed + parts.next().expect("failed"),
        )
    })
}
