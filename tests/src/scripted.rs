//! The driver of `scripted_replica` processes: one replica of a service per OS process, told
//! what to call and when over stdin, reporting every computation and every answer on stdout.
//! Used by the lease-protocol tests that need real processes (a holder killed with SIGKILL,
//! several connections to Redis through delaying proxies, command counts on the server).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Settings of a [`ScriptedReplica`].
#[derive(Debug, Clone)]
pub struct ScriptedOptions {
    /// Redis URL (e.g. a [`DelayProxy`](crate::DelayProxy)'s), or a [`spec`](crate::spec) of a cluster or Sentinel set.
    pub url: String,
    /// Namespace of the cache.
    pub ns: String,
    /// Value lifetime.
    pub exp: Duration,
    /// Lease length.
    pub lock_timeout: Duration,
    /// Longest wait for another caller's computation.
    pub max_wait: Duration,
    /// Bound on one Redis command.
    pub command_timeout: Duration,
}

impl ScriptedOptions {
    /// Defaults for `url`: namespace `scripted`, exp 60 s, lease 1 s, max_wait 30 s, command
    /// timeout 1 s.
    pub fn new(url: impl Into<String>) -> Self {
        ScriptedOptions {
            url: url.into(),
            ns: "scripted".into(),
            exp: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(1),
            max_wait: Duration::from_secs(30),
            command_timeout: Duration::from_secs(1),
        }
    }
}

/// One `RESULT` line: a call that returned.
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    /// The pid of the replica.
    pub pid: u32,
    /// The batch's tag.
    pub tag: String,
    /// The key.
    pub key: String,
    /// When the call started (Unix ms).
    pub started_unix_ms: f64,
    /// How long it took.
    pub elapsed_ms: f64,
    /// `Ok` or `Err`.
    pub ok: bool,
    /// The value (or the error text).
    pub value: String,
}

/// One `COMPUTING` line: a computation that started.
#[derive(Debug, Clone, PartialEq)]
pub struct Computation {
    /// The pid of the replica.
    pub pid: u32,
    /// The batch's tag.
    pub tag: String,
    /// The key.
    pub key: String,
    /// When it started (Unix ms).
    pub at_unix_ms: f64,
}

/// A running `scripted_replica` process. Killed when dropped.
pub struct ScriptedReplica {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    pid: u32,
    /// Every `RESULT` seen so far.
    pub results: Vec<CallResult>,
    /// Every `COMPUTING` seen so far.
    pub computations: Vec<Computation>,
    /// The tags of the batches whose calls all returned.
    called: std::collections::BTreeSet<String>,
}

impl ScriptedReplica {
    /// Spawns `exe` (pass `env!("CARGO_BIN_EXE_scripted_replica")`) and waits for `READY`.
    pub async fn spawn(exe: &str, options: &ScriptedOptions) -> ScriptedReplica {
        let ms = |d: Duration| d.as_millis().to_string();
        let mut child = tokio::process::Command::new(exe)
            .args(["--url", &options.url, "--ns", &options.ns])
            .args(["--exp-ms", &ms(options.exp)])
            .args(["--lock-timeout-ms", &ms(options.lock_timeout)])
            .args(["--max-wait-ms", &ms(options.max_wait)])
            .args(["--command-timeout-ms", &ms(options.command_timeout)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {exe}: {e}"));
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        // A reader of its own, so a replica never blocks on a full pipe while the test waits
        // on another one.
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut replica = ScriptedReplica {
            child,
            stdin,
            lines,
            pid,
            results: Vec::new(),
            computations: Vec::new(),
            called: Default::default(),
        };
        replica.expect_line("READY", Duration::from_secs(20)).await;
        replica
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write to replica {}: {e}", self.pid));
        self.stdin.flush().await.expect("flush replica stdin");
    }

    /// Starts a batch of `callers` concurrent calls of `key` at `start_unix_ms`; each
    /// computation takes `compute` and succeeds unless `fail`.
    pub async fn call(
        &mut self,
        tag: &str,
        key: &str,
        callers: usize,
        compute: Duration,
        fail: bool,
        start_unix_ms: f64,
    ) {
        let mode = if fail { "err" } else { "ok" };
        let line = format!(
            "CALL {tag} {key} {callers} {} {mode} {start_unix_ms:.3}",
            compute.as_millis()
        );
        self.send(&line).await;
    }

    /// Waits until every call of the batch `tag` returned.
    pub async fn wait_called(&mut self, tag: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.called.contains(tag) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.expect_line("CALLED ", left).await;
        }
    }

    /// Invalidates `key`; returns when the call started and returned (Unix ms).
    pub async fn invalidate(&mut self, key: &str) -> (f64, f64) {
        self.send(&format!("INVALIDATE {key}")).await;
        let line = self
            .expect_line(&format!("INVALIDATED {key} "), Duration::from_secs(10))
            .await;
        two_times(&line)
    }

    /// Sets `key` to `value` (no spaces); returns when the call started and returned.
    pub async fn set(&mut self, key: &str, value: &str) -> (f64, f64) {
        self.send(&format!("SET {key} {value}")).await;
        let line = self
            .expect_line(&format!("SET {key} "), Duration::from_secs(10))
            .await;
        two_times(&line)
    }

    /// The replica's counters (`computations`, `hits`, `own_attempts`, ...).
    pub async fn stats(&mut self) -> BTreeMap<String, u64> {
        self.send("STATS").await;
        let line = self.expect_line("STATS ", Duration::from_secs(10)).await;
        line.split_whitespace()
            .skip(1)
            .filter_map(|field| {
                let (name, value) = field.split_once('=')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// Asks the replica to finish its calls and exit; waits for it.
    pub async fn quit(mut self, timeout: Duration) -> (Vec<CallResult>, Vec<Computation>) {
        self.send("QUIT").await;
        self.expect_line("BYE", timeout).await;
        crate::wait_for_exit(&mut self.child, self.pid, "BYE").await;
        (
            std::mem::take(&mut self.results),
            std::mem::take(&mut self.computations),
        )
    }

    /// [`quit`](Self::quit)s each of `procs` in turn (each within `timeout`); all their answers
    /// and computations.
    pub async fn quit_all(
        procs: Vec<ScriptedReplica>,
        timeout: Duration,
    ) -> (Vec<CallResult>, Vec<Computation>) {
        let mut results = Vec::new();
        let mut computations = Vec::new();
        for p in procs {
            let (r, c) = p.quit(timeout).await;
            results.extend(r);
            computations.extend(c);
        }
        (results, computations)
    }

    /// SIGKILL, then reap: the process dies mid-whatever, without running any destructor.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill replica");
    }

    /// Reads lines until one starts with `prefix` and returns it (others are recorded).
    pub async fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = self.lines.recv();
            let line = crate::replica_line(self.pid, prefix, timeout, deadline, next).await;
            self.record(&line);
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Waits for the next `COMPUTING` line (any tag) and returns it.
    pub async fn wait_computing(&mut self, timeout: Duration) -> Computation {
        let before = self.computations.len();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.computations.len() == before {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.expect_line("COMPUTING ", left).await;
        }
        self.computations[before].clone()
    }

    fn record(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["COMPUTING", tag, key, at] => self.computations.push(Computation {
                pid: self.pid,
                tag: tag.to_string(),
                key: key.to_string(),
                at_unix_ms: at.parse().expect("COMPUTING time"),
            }),
            ["CALLED", tag] => {
                self.called.insert(tag.to_string());
            }
            ["RESULT", tag, key, started, elapsed, kind, value @ ..] => {
                self.results.push(CallResult {
                    pid: self.pid,
                    tag: tag.to_string(),
                    key: key.to_string(),
                    started_unix_ms: started.parse().expect("RESULT start"),
                    elapsed_ms: elapsed.parse().expect("RESULT elapsed"),
                    ok: *kind == "ok",
                    value: value.join(" "),
                })
            }
            _ => {}
        }
    }
}

fn two_times(line: &str) -> (f64, f64) {
    let mut times = line
        .split_whitespace()
        .skip(2)
        .map(|t| t.parse::<f64>().expect("unix ms"));
    (
        times.next().expect("started"),
        times.next().expect("returned"),
    )
}
