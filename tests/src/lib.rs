//! Test harness: starts real `redis-server` processes on free ports, talks to them with raw
//! commands, and wraps backends to inject events at exact points of the locked path.
//!
//! Every test starts its own server(s) through [`RedisServer::start`]; nothing here ever uses a
//! server that someone else left running. A missing `redis-server` is a hard failure that says
//! how to install it, never a silent skip.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomcache::{Backend, EntryKey, LeaseAttempt, Lookup, Release, Subscription};

pub mod proxy;
pub use proxy::DelayProxy;
pub mod scripted;
pub use scripted::{CallResult, Computation, ScriptedOptions, ScriptedReplica};
pub mod cluster;
pub mod support;
pub use cluster::{key_slot, ClusterNode, RedisCluster};
pub mod sentinel;
pub use sentinel::SentinelSet;
pub mod spec;

/// The message of the panic when `redis-server` cannot be found.
pub const MISSING_REDIS: &str = "redis-server not found: install it with `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis`";

/// Environment variable that may name the `redis-server` binary to use (default: `redis-server`
/// on `PATH`).
pub const REDIS_SERVER_ENV: &str = "ATOMCACHE_REDIS_SERVER";

/// How long a server may take to answer `PING` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a fresh port when a start fails (e.g. someone grabbed the port meanwhile).
const START_ATTEMPTS: usize = 8;

static SERVERS: AtomicUsize = AtomicUsize::new(0);

fn redis_server_binary() -> String {
    std::env::var(REDIS_SERVER_ENV).unwrap_or_else(|_| "redis-server".to_owned())
}

/// Panics with [`MISSING_REDIS`] when `redis-server` cannot be run.
pub fn require_redis_server() {
    require_binary(&redis_server_binary(), MISSING_REDIS);
}

/// Panics with `missing` (how to install it) when `binary --version` cannot be run.
pub(crate) fn require_binary(binary: &str, missing: &str) {
    match Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => panic!("{missing}"),
        Err(err) => panic!("{missing} (running `{binary} --version` failed: {err})"),
    }
}

/// Waits (bounded) for a child that said it is done to exit, and checks it succeeded.
pub(crate) async fn wait_for_exit(child: &mut tokio::process::Child, pid: u32, after: &str) {
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap_or_else(|_| panic!("replica did not exit after {after}"))
        .expect("wait for replica");
    assert!(status.success(), "replica {pid} exited with {status}");
}

/// A port that was free a moment ago (bound on 127.0.0.1, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// A `redis://` URL of a port nothing listens on (for fail-open tests).
pub fn dead_url() -> String {
    format!("redis://127.0.0.1:{}/", free_port())
}

/// A `redis-server` child process on 127.0.0.1, with no persistence and its own directory.
///
/// Dropping it kills the process and removes the directory.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    config: Option<PathBuf>,
}

/// How to launch a [`RedisServer`] whose arguments depend on its port and directory (see
/// [`RedisServer::start_launch`]): cluster nodes and sentinels.
pub struct Launch<'a> {
    /// Picks a candidate port (default [`free_port`]); called again for each attempt.
    pub pick_port: &'a dyn Fn() -> u16,
    /// Extra `redis-server` arguments for the server's directory and port.
    pub args: &'a dyn Fn(&Path, u16) -> Vec<String>,
    /// If set, its text for the port is written to `<dir>/redis.conf`, which is passed as the
    /// first argument (a sentinel needs a config file it can rewrite). Written once per
    /// attempt; a [`restart`](RedisServer::restart) reuses the file as the server left it.
    pub config_file: Option<&'a dyn Fn(u16) -> String>,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            pick_port: &free_port,
            args: &|_, _| Vec::new(),
            config_file: None,
        }
    }
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// Panics with an installation hint if `redis-server` is missing, and with the server's log
    /// if it cannot be started.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra `redis-server` arguments (e.g. a TLS port). The
    /// plain port stays open for the harness's own checks; [`restart`](Self::restart) keeps
    /// the arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        Self::start_launch(&Launch {
            args: &|_, _| extra.clone(),
            ..Launch::default()
        })
    }

    /// Starts a server as `launch` says (port picker, per-port arguments, config file) and
    /// waits until it answers `PING`; retries with a fresh port like [`start`](Self::start).
    pub fn start_launch(launch: &Launch<'_>) -> RedisServer {
        require_redis_server();
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "atomcache-redis-{}-{n}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("cannot create the server's temp dir");
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = (launch.pick_port)();
            let extra = (launch.args)(&dir, port);
            let config = match launch.config_file {
                Some(text) => {
                    let path = dir.join("redis.conf");
                    std::fs::write(&path, text(port))
                        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
                    Some(path)
                }
                None => None,
            };
            match spawn_server(port, &dir, config.as_deref(), &extra) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        dir,
                        child: Some(child),
                        extra,
                        config,
                    }
                }
                Err(err) => last_error = err,
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("could not start redis-server after {START_ATTEMPTS} attempts: {last_error}");
    }

    /// The server's own temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port it listens on (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process with SIGKILL (a crash: no shutdown, no save) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts a fresh one (empty: no persistence) on the SAME
    /// port and waits until it answers `PING`.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match spawn_server(self.port, &self.dir, self.config.as_deref(), &self.extra) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(err) if Instant::now() < deadline => {
                    eprintln!("restart on port {} failed, retrying: {err}", self.port);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => panic!(
                    "could not restart redis-server on port {}: {err}",
                    self.port
                ),
            }
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing answers, like a
    /// server stuck in a long command. [`resume`](Self::resume) undoes it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a [`pause`](Self::pause)d process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the server is not running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// A client for raw commands.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("valid URL")
    }

    /// A raw async connection (RESP2, 5 s timeouts), independent of any atomcache backend.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        self.client()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("raw connection to the test server")
    }

    /// `INFO commandstats`, parsed: command name (lower case, `config|resetstat` style for
    /// subcommands) → number of calls. Commands run inside Lua scripts are counted too.
    pub async fn command_stats(&self) -> CommandStats {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.raw().await)
            .await
            .expect("INFO commandstats");
        CommandStats::parse(&info)
    }

    /// `CONFIG RESETSTAT`: zeroes the command statistics.
    pub async fn reset_stats(&self) {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut self.raw().await)
            .await
            .expect("CONFIG RESETSTAT");
    }

    /// Writes raw bytes at a key (e.g. garbage at a value key), with an optional expiry.
    pub async fn set_raw(&self, key: &str, bytes: &[u8], px: Option<Duration>) {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(bytes);
        if let Some(px) = px {
            cmd.arg("PX").arg(px.as_millis() as u64);
        }
        let _: () = cmd
            .query_async(&mut self.raw().await)
            .await
            .expect("raw SET");
    }

    /// Reads the raw bytes at a key.
    pub async fn get_raw(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.raw().await)
            .await
            .expect("raw GET")
    }

    /// Remaining lifetime of a key in ms (`PTTL`: -2 missing, -1 no expiry).
    pub async fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.raw().await)
            .await
            .expect("raw PTTL")
    }

    /// Publishes a message on a channel; returns how many subscribers (connections) got it.
    pub async fn publish(&self, channel: &str, message: &str) -> i64 {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async(&mut self.raw().await)
            .await
            .expect("raw PUBLISH")
    }

    /// `CLIENT KILL TYPE normal` and `pubsub`, skipping the calling connection: drops every
    /// client connection (as a network blip would) while the server keeps its data.
    pub async fn kill_clients(&self) -> i64 {
        let mut conn = self.raw().await;
        let mut killed = 0;
        for kind in ["normal", "pubsub"] {
            killed += redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg(kind)
                .arg("SKIPME")
                .arg("yes")
                .query_async::<i64>(&mut conn)
                .await
                .expect("CLIENT KILL");
        }
        killed
    }

    /// Number of keys in database 0.
    pub async fn dbsize(&self) -> i64 {
        redis::cmd("DBSIZE")
            .query_async(&mut self.raw().await)
            .await
            .expect("DBSIZE")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// `--- <role> <port> (running|stopped):` and the last 15 lines of its log, for the
    /// failure messages of harnesses that run several servers.
    pub fn log_tail(&self, role: &str) -> String {
        format!(
            "--- {role} {} ({}):\n{}",
            self.port(),
            if self.is_running() {
                "running"
            } else {
                "stopped"
            },
            tail(&self.log(), 15)
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Spawns `redis-server` on `port` and waits for `PING`. On failure the child is killed and the
/// log is returned in the error.
fn spawn_server(
    port: u16,
    dir: &Path,
    config: Option<&Path>,
    extra: &[String],
) -> Result<Child, String> {
    let log_path = dir.join("redis.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut command = Command::new(redis_server_binary());
    // A config file must be the first argument.
    if let Some(config) = config {
        command.arg(config);
    }
    let mut child = command
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(["--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .map_err(|err| {
            if err.kind() == ErrorKind::NotFound {
                panic!("{MISSING_REDIS}")
            }
            format!("cannot spawn redis-server: {err}")
        })?;

    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .map_err(|e| format!("bad URL: {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "redis-server on port {port} exited with {status}; log:\n{}",
                tail(&log, 20)
            ));
        }
        // Only our own process counts: a server someone else started on this port in the
        // meantime answers PING too, but with another process id.
        match server_pid(&client) {
            Some(pid) if pid == child.id() => return Ok(child),
            Some(other) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "port {port} is served by another redis-server (pid {other})"
                ));
            }
            None => {}
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "redis-server on port {port} did not answer PING within {START_TIMEOUT:?}; log:\n{}",
                tail(&log, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `process_id` of the server answering on `client`, once it answers `PING`.
fn server_pid(client: &redis::Client) -> Option<u32> {
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(200))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let pong: String = redis::cmd("PING").query(&mut conn).ok()?;
    if pong != "PONG" {
        return None;
    }
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
    info.lines()
        .find_map(|line| line.trim().strip_prefix("process_id:"))
        .and_then(|pid| pid.parse().ok())
}

/// A synchronous connection to `127.0.0.1:port` with short timeouts, or `None` if the process
/// does not answer.
pub(crate) fn connect_sync(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    conn.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
    Some(conn)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Parsed `INFO commandstats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStats {
    /// Command name → calls.
    pub calls: BTreeMap<String, u64>,
}

impl CommandStats {
    /// Parses the text of `INFO commandstats` (`cmdstat_get:calls=3,usec=...`).
    pub fn parse(info: &str) -> Self {
        let mut calls = BTreeMap::new();
        for line in info.lines() {
            let Some(rest) = line.trim().strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, fields)) = rest.split_once(':') else {
                continue;
            };
            let count = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            calls.insert(name.to_ascii_lowercase(), count);
        }
        CommandStats { calls }
    }

    /// Calls of one command (0 if absent).
    pub fn get(&self, name: &str) -> u64 {
        self.calls.get(name).copied().unwrap_or(0)
    }

    /// All calls, except those of commands whose name starts with one of `excluded` (e.g. the
    /// test's own `info` and `config`).
    pub fn total_excluding(&self, excluded: &[&str]) -> u64 {
        self.calls
            .iter()
            .filter(|(name, _)| !excluded.iter().any(|e| name.starts_with(e)))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Where a [`Hooked`] backend runs its action, once, before answering its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    /// After `get_or_lease` answered `Held` for the first time (the waiter has not subscribed
    /// yet).
    LeaseHeld,
    /// After `subscribe` returned (subscribed, the entry not looked at again yet).
    Subscribed,
    /// After the `n`-th look (1-based; a `get` or `get_or_lease`) that found no value: with
    /// `n = 1` the hit path's `GET`, `n = 2` the look that found the lease held, `n = 3` the
    /// waiter's look after subscribing.
    Miss(usize),
    /// After `get_or_lease` answered `Leased` (the holder has not started computing yet).
    Leased,
}

type Action = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A backend that delegates to `inner` and, once, runs an action at a chosen [`HookPoint`]
/// before answering: it lets a test make something happen at an exact point of the path.
pub struct Hooked<B> {
    inner: B,
    point: HookPoint,
    action: Mutex<Option<Action>>,
    misses: AtomicUsize,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl<B: Backend> Hooked<B> {
    /// Runs `action` once when `point` is reached.
    pub fn new(
        inner: B,
        point: HookPoint,
        action: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Hooked {
            inner,
            point,
            action: Mutex::new(Some(Box::pin(action))),
            misses: AtomicUsize::new(0),
            fired: Arc::default(),
        }
    }

    /// A flag that turns true once the action has run.
    pub fn fired(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.fired.clone()
    }

    async fn fire(&self, at: HookPoint) {
        if at != self.point {
            return;
        }
        let action = self.action.lock().unwrap().take();
        if let Some(action) = action {
            action.await;
            self.fired.store(true, Ordering::SeqCst);
        }
    }

    async fn missed(&self) {
        let n = self.misses.fetch_add(1, Ordering::SeqCst) + 1;
        self.fire(HookPoint::Miss(n)).await;
    }
}

#[async_trait::async_trait]
impl<B: Backend> Backend for Hooked<B> {
    async fn get(&self, key: &EntryKey) -> Result<Option<Vec<u8>>, atomcache::Error> {
        let answer = self.inner.get(key).await?;
        if answer.is_none() {
            self.missed().await;
        }
        Ok(answer)
    }
    async fn get_or_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<Lookup, atomcache::Error> {
        let answer = self.inner.get_or_lease(key, token, lease).await?;
        match &answer {
            Lookup::Value(_) => {}
            Lookup::Leased => {
                self.missed().await;
                self.fire(HookPoint::Leased).await;
            }
            Lookup::Held(_) => {
                self.missed().await;
                self.fire(HookPoint::LeaseHeld).await;
            }
        }
        Ok(answer)
    }
    async fn try_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<LeaseAttempt, atomcache::Error> {
        self.inner.try_lease(key, token, lease).await
    }
    async fn renew_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<bool, atomcache::Error> {
        self.inner.renew_lease(key, token, lease).await
    }
    async fn store_leased(
        &self,
        key: &EntryKey,
        token: &str,
        value: &[u8],
        exp: Duration,
    ) -> Result<bool, atomcache::Error> {
        self.inner.store_leased(key, token, value, exp).await
    }
    async fn release_lease(
        &self,
        key: &EntryKey,
        token: &str,
        why: Release,
    ) -> Result<bool, atomcache::Error> {
        self.inner.release_lease(key, token, why).await
    }
    async fn set(
        &self,
        key: &EntryKey,
        value: &[u8],
        exp: Duration,
    ) -> Result<(), atomcache::Error> {
        self.inner.set(key, value, exp).await
    }
    async fn invalidate(&self, key: &EntryKey) -> Result<(), atomcache::Error> {
        self.inner.invalidate(key).await
    }
    async fn remaining_ttl(&self, key: &EntryKey) -> Result<Option<Duration>, atomcache::Error> {
        self.inner.remaining_ttl(key).await
    }
    async fn subscribe(&self, key: &EntryKey) -> Result<Subscription, atomcache::Error> {
        let sub = self.inner.subscribe(key).await?;
        self.fire(HookPoint::Subscribed).await;
        Ok(sub)
    }
    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
    fn key_prefix(&self) -> &str {
        self.inner.key_prefix()
    }
}

/// Settings of one [`ReplicaProcess`] (the `replica` binary of this package).
#[derive(Debug, Clone)]
pub struct ReplicaArgs {
    /// Redis URL.
    pub url: String,
    /// Cache namespace.
    pub ns: String,
    /// Cache id all callers ask for.
    pub id: String,
    /// Concurrent callers in the process.
    pub callers: usize,
    /// How long one computation sleeps.
    pub compute: Duration,
    /// The cache's `lock_timeout`.
    pub lock_timeout: Duration,
}

/// One call made inside a replica process.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaCall {
    /// From the call's start (the common start instant) to its answer, ms.
    pub elapsed_ms: f64,
    /// When it answered, Unix ms.
    pub finished_unix_ms: f64,
    /// What it answered.
    pub value: String,
}

/// What a replica process reported when it finished.
#[derive(Debug, Clone, Default)]
pub struct ReplicaReport {
    /// Operating-system process id.
    pub pid: u32,
    /// Computations it ran (its own counter).
    pub computations: usize,
    /// When each computation started, Unix ms.
    pub computing_at: Vec<f64>,
    /// Every call.
    pub calls: Vec<ReplicaCall>,
    /// The `DONE` line (stats).
    pub done: String,
}

/// A running replica process: `READY` handshake, common start, report.
pub struct ReplicaProcess {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    report: ReplicaReport,
}

impl ReplicaProcess {
    /// Spawns `exe` (pass `env!("CARGO_BIN_EXE_replica")`) and waits for its `READY` (connected
    /// to Redis). The process is killed when this value is dropped.
    pub async fn spawn(exe: &str, args: &ReplicaArgs) -> ReplicaProcess {
        let mut child = tokio::process::Command::new(exe)
            .args(["--url", &args.url, "--ns", &args.ns, "--id", &args.id])
            .args(["--callers", &args.callers.to_string()])
            .args(["--compute-ms", &args.compute.as_millis().to_string()])
            .args([
                "--lock-timeout-ms",
                &args.lock_timeout.as_millis().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {exe}: {e}"));
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut replica = ReplicaProcess {
            child,
            stdin,
            lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)),
            report: ReplicaReport {
                pid,
                ..ReplicaReport::default()
            },
        };
        replica.expect_line("READY", Duration::from_secs(20)).await;
        replica
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.report.pid
    }

    /// Tells the process when to start its calls (Unix ms).
    pub async fn start_at(&mut self, unix_ms: f64) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("start_at called twice");
        stdin
            .write_all(format!("{unix_ms:.3}\n").as_bytes())
            .await
            .expect("write the start instant");
        stdin.flush().await.expect("flush the start instant");
        self.stdin = None;
    }

    /// Reads lines until one starts with `prefix` and returns it (other lines are recorded).
    pub async fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let lines = &mut self.lines;
            let next = async move { lines.next_line().await.expect("read replica stdout") };
            let line = replica_line(self.report.pid, prefix, timeout, deadline, next).await;
            self.record(&line);
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    fn record(&mut self, line: &str) {
        let mut parts = line.split_whitespace();
        match parts.next() {
            Some("COMPUTING") => {
                self.report.computations += 1;
                if let Some(at) = parts.next().and_then(|t| t.parse().ok()) {
                    self.report.computing_at.push(at);
                }
            }
            Some("CALL") => {
                let elapsed_ms = parts
                    .next()
                    .and_then(|t| t.parse().ok())
                    .expect("CALL elapsed");
                let finished_unix_ms = parts
                    .next()
                    .and_then(|t| t.parse().ok())
                    .expect("CALL finish");
                let value = parts.collect::<Vec<_>>().join(" ");
                self.report.calls.push(ReplicaCall {
                    elapsed_ms,
                    finished_unix_ms,
                    value,
                });
            }
            Some("DONE") => self.report.done = line.to_owned(),
            _ => {}
        }
    }

    /// Waits for `DONE` and the exit of the process; returns what it reported.
    pub async fn finish(mut self, timeout: Duration) -> ReplicaReport {
        self.expect_line("DONE", timeout).await;
        wait_for_exit(&mut self.child, self.report.pid, "DONE").await;
        let computations: usize = self
            .report
            .done
            .split_whitespace()
            .find_map(|f| f.strip_prefix("computations="))
            .and_then(|n| n.parse().ok())
            .expect("computations in DONE");
        assert_eq!(
            computations, self.report.computations,
            "the replica's counter and its COMPUTING lines disagree"
        );
        self.report
    }

    /// SIGKILL, then reap: the process dies without running any destructor.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill replica");
    }
}

/// The next line of the replica process `pid`, read by `next` before `deadline`. Panics if the
/// process prints no line by then or exits first, naming what the caller waits for: a line
/// starting with `prefix`, within `timeout`. Shared by the drivers of both replica binaries.
async fn replica_line(
    pid: u32,
    prefix: &str,
    timeout: Duration,
    deadline: tokio::time::Instant,
    next: impl Future<Output = Option<String>>,
) -> String {
    tokio::time::timeout_at(deadline, next)
        .await
        .unwrap_or_else(|_| panic!("replica {pid} did not print {prefix:?} within {timeout:?}"))
        .unwrap_or_else(|| panic!("replica {pid} exited before printing {prefix:?}"))
}

/// A minimal `tracing` subscriber that records events (level and rendered fields), to check
/// that a fault was logged. Install it for the current thread with
/// `tracing::subscriber::set_default(log.clone())` in a current-thread runtime.
#[derive(Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<Vec<(tracing::Level, String)>>>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Recorded events at `level` (rendered as `field=value` pairs).
    pub fn at(&self, level: tracing::Level) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, text)| text.clone())
            .collect()
    }
}

struct Render(String);

impl tracing::field::Visit for Render {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for EventLog {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = Render(String::new());
        event.record(&mut text);
        self.events
            .lock()
            .unwrap()
            .push((*event.metadata().level(), text.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Nearest-rank percentiles of `samples` (ms). Panics on an empty slice.
pub fn percentiles(samples: &[f64]) -> Percentiles {
    assert!(!samples.is_empty(), "no samples");
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| {
        let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[idx.clamp(1, sorted.len()) - 1]
    };
    Percentiles {
        n: sorted.len(),
        p50: rank(50.0),
        p99: rank(99.0),
        max: sorted[sorted.len() - 1],
    }
}

/// Milliseconds since the Unix epoch, as `f64` with microsecond precision.
pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_are_parsed() {
        let info = "# Commandstats\r\ncmdstat_get:calls=3,usec=10,usec_per_call=3.33,rejected_calls=0,failed_calls=0\r\ncmdstat_config|resetstat:calls=1,usec=1\r\ncmdstat_evalsha:calls=2,usec=5\r\n";
        let stats = CommandStats::parse(info);
        assert_eq!(stats.get("get"), 3);
        assert_eq!(stats.get("evalsha"), 2);
        assert_eq!(stats.get("config|resetstat"), 1);
        assert_eq!(stats.total_excluding(&["config"]), 5);
    }

    #[test]
    fn a_missing_redis_server_fails_with_an_install_hint() {
        let err = std::panic::catch_unwind(|| {
            require_binary("redis-server-that-does-not-exist", MISSING_REDIS)
        })
        .expect_err("must panic");
        let message = err
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap();
        assert!(
            message.contains("apt-get install redis-server"),
            "{message}"
        );
        assert!(message.contains("brew install redis"), "{message}");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&samples);
        assert_eq!((p.n, p.p50, p.p99, p.max), (100, 50.0, 99.0, 100.0));
    }
}
