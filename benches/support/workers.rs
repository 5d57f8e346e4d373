//! Worker processes of the load program (sections 5 and 6): this binary re-executed, driven
//! through its standard input and output, one command or reply per line.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The environment variable that tells a worker its index among its siblings.
pub const INDEX_ENV: &str = "RTR_BENCH_WORKER_INDEX";

/// Running workers, each with the pipes to its standard input and output.
pub struct Workers(Vec<(Child, ChildStdin, BufReader<ChildStdout>)>);

impl Workers {
    /// Starts `count` workers with `env` (and [`INDEX_ENV`]) set.
    pub fn spawn(count: usize, env: &[(&str, String)]) -> Self {
        let exe = std::env::current_exe().expect("bench binary");
        Self(
            (0..count)
                .map(|index| {
                    let mut command = Command::new(&exe);
                    command
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::inherit())
                        .env(INDEX_ENV, index.to_string());
                    for (key, value) in env {
                        command.env(key, value);
                    }
                    let mut child = command.spawn().expect("spawn worker");
                    let stdin = child.stdin.take().expect("stdin");
                    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
                    (child, stdin, stdout)
                })
                .collect(),
        )
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sends `command` to worker `index`.
    pub fn send(&mut self, index: usize, command: &str) {
        let (_, stdin, _) = &mut self.0[index];
        writeln!(stdin, "{command}").expect("write to worker");
        stdin.flush().expect("flush");
    }

    /// The next line of worker `index` that starts with `prefix`, without it (other lines are
    /// skipped).
    pub fn read(&mut self, index: usize, prefix: &str) -> String {
        let (_, _, stdout) = &mut self.0[index];
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).expect("read") > 0,
                "worker {index} died"
            );
            if let Some(rest) = line.trim().strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// Asks every worker to exit and waits for it.
    pub fn finish(mut self) {
        for (child, stdin, _) in &mut self.0 {
            let _ = writeln!(stdin, "exit");
            let _ = child.wait();
        }
    }
}
