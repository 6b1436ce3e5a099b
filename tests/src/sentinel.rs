//! A local Redis Sentinel set from real binaries: one primary, one replica (`--replicaof`) and
//! three sentinels (`redis-server <config> --sentinel`, so the server binary alone suffices),
//! all [`RedisServer`]s on free ports.
//!
//! Each sentinel gets its own config file in its temp dir (sentinels rewrite it, so it must be
//! writable). Queries of the harness use short timeouts and skip stopped processes; the waits
//! are async and sleep with tokio, so the test's other tasks keep running meanwhile.

use std::time::{Duration, Instant};

use crate::{connect_sync, Launch, RedisServer};

/// Sentinels that must agree a primary is down (`sentinel monitor ... <quorum>`).
pub const QUORUM: usize = 2;
/// `sentinel down-after-milliseconds`: a primary is subjectively down after this much silence.
pub const DOWN_AFTER_MS: u64 = 1000;
/// `sentinel failover-timeout`, ms.
pub const FAILOVER_TIMEOUT_MS: u64 = 5000;

/// How long the set may take until every sentinel knows the primary, the replica and the other
/// sentinels.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A flat `[field, value, field, value, ...]` reply (RESP2 `SENTINEL master`) as pairs.
fn pairs(flat: Vec<String>) -> Vec<(String, String)> {
    flat.chunks(2)
        .filter_map(|c| Some((c.first()?.clone(), c.get(1)?.clone())))
        .collect()
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The first line of `ROLE` on `port` (`master`, `slave`, `sentinel`), if it answers.
pub fn role(port: u16) -> Option<String> {
    let reply: redis::Value = redis::cmd("ROLE").query(&mut connect_sync(port)?).ok()?;
    match reply {
        redis::Value::Array(items) => match items.first()? {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// One primary, one replica and three sentinels monitoring them as one service. Dropping it
/// kills every process and removes their directories.
#[derive(Debug)]
pub struct SentinelSet {
    service: String,
    primary: RedisServer,
    replica: RedisServer,
    sentinels: Vec<RedisServer>,
    killed: Option<u16>,
}

impl SentinelSet {
    /// Starts the primary, the replica (and waits for its link), then three sentinels
    /// monitoring `service` with quorum 2; waits until every sentinel sees the primary as ok,
    /// knows the replica and the two other sentinels.
    ///
    /// Panics with the processes' logs if that takes longer than 30 s.
    pub fn start(service: &str) -> SentinelSet {
        // Diskless full syncs start at once (the default waits 5 s for more replicas).
        let primary = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
        let replica_of = ["--replicaof", "127.0.0.1", &primary.port().to_string()]
            .map(String::from)
            .to_vec();
        let replica = RedisServer::start_launch(&Launch {
            args: &|_, _| replica_of.clone(),
            ..Launch::default()
        });
        let mut set = SentinelSet {
            service: service.to_owned(),
            primary,
            replica,
            sentinels: Vec::new(),
            killed: None,
        };
        // A sentinel learns the replicas from the primary's INFO, which it asks once on
        // connecting and then every 10 s: let the replica link be up before.
        set.wait_sync(|| {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut connect_sync(set.replica.port()).ok_or("the replica does not answer")?)
                .map_err(|e| e.to_string())?;
            if info.contains("master_link_status:up") {
                Ok(())
            } else {
                Err("the replica's link to the primary is not up".to_owned())
            }
        });

        let primary_port = set.primary.port();
        let config = |port: u16| {
            format!(
                "port {port}\n\
                 sentinel monitor {service} 127.0.0.1 {primary_port} {QUORUM}\n\
                 sentinel down-after-milliseconds {service} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {service} {FAILOVER_TIMEOUT_MS}\n\
                 sentinel parallel-syncs {service} 1\n"
            )
        };
        let sentinel_args = |_: &std::path::Path, _: u16| vec!["--sentinel".to_owned()];
        for _ in 0..3 {
            set.sentinels.push(RedisServer::start_launch(&Launch {
                args: &sentinel_args,
                config_file: Some(&config),
                ..Launch::default()
            }));
        }
        set.wait_sync(|| set.check_ready());
        set
    }

    /// Polls `check` (blocking) until it is ok; panics with the logs after [`READY_TIMEOUT`].
    fn wait_sync(&self, check: impl Fn() -> Result<(), String>) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match check() {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => panic!(
                    "the sentinel set is not ready within {READY_TIMEOUT:?}: {why}\n{}",
                    self.logs()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn check_ready(&self) -> Result<(), String> {
        for sentinel in &self.sentinels {
            let port = sentinel.port();
            let mut conn = connect_sync(port).ok_or(format!("sentinel {port} does not answer"))?;
            let master: Vec<String> = redis::cmd("SENTINEL")
                .arg("MASTER")
                .arg(&self.service)
                .query(&mut conn)
                .map_err(|e| format!("SENTINEL MASTER on {port}: {e}"))?;
            let master = pairs(master);
            let flags = field(&master, "flags").unwrap_or("");
            if flags != "master" {
                return Err(format!("sentinel {port}: primary flags {flags:?}"));
            }
            let others = field(&master, "num-other-sentinels").unwrap_or("0");
            if others != "2" {
                return Err(format!("sentinel {port} knows {others} other sentinels"));
            }
            let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(&self.service)
                .query(&mut conn)
                .map_err(|e| format!("SENTINEL REPLICAS on {port}: {e}"))?;
            let known = replicas.into_iter().map(pairs).any(|r| {
                field(&r, "port") == Some(&self.replica.port().to_string())
                    && field(&r, "flags") == Some("slave")
            });
            if !known {
                return Err(format!("sentinel {port} does not know the replica yet"));
            }
        }
        Ok(())
    }

    /// The monitored service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// `redis://127.0.0.1:<port>/` of the running sentinels.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .filter(|s| s.is_running())
            .map(RedisServer::url)
            .collect()
    }

    /// The three sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The sentinels, to kill, pause or restart one.
    pub fn sentinels_mut(&mut self) -> &mut [RedisServer] {
        &mut self.sentinels
    }

    /// The server started as the primary (it stays this handle after a failover).
    pub fn primary(&self) -> &RedisServer {
        &self.primary
    }

    /// The server started as the primary, to kill, pause or restart it.
    pub fn primary_mut(&mut self) -> &mut RedisServer {
        &mut self.primary
    }

    /// The server started as the replica.
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// The server started as the replica, to kill, pause or restart it.
    pub fn replica_mut(&mut self) -> &mut RedisServer {
        &mut self.replica
    }

    /// The primary's port as the first running sentinel that answers names it
    /// (`SENTINEL get-master-addr-by-name`). Panics if none answers.
    pub fn current_primary_port(&self) -> u16 {
        self.sentinels
            .iter()
            .filter(|s| s.is_running())
            .find_map(|s| self.primary_named_by(s.port()))
            .unwrap_or_else(|| panic!("no sentinel names a primary\n{}", self.logs()))
    }

    fn primary_named_by(&self, sentinel_port: u16) -> Option<u16> {
        let (_host, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.service)
            .query(&mut connect_sync(sentinel_port)?)
            .ok()?;
        Some(port)
    }

    /// Kills (SIGKILL) the server the sentinels currently name as the primary; returns its
    /// port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.current_primary_port();
        self.server_mut(port).kill();
        self.killed = Some(port);
        port
    }

    /// The primary or the replica, by port.
    pub fn server_mut(&mut self, port: u16) -> &mut RedisServer {
        if self.primary.port() == port {
            &mut self.primary
        } else if self.replica.port() == port {
            &mut self.replica
        } else {
            panic!("port {port} is neither the primary nor the replica")
        }
    }

    /// The primary or the replica, by port (read-only; see [`server_mut`](Self::server_mut)).
    pub fn server(&self, port: u16) -> &RedisServer {
        if self.primary.port() == port {
            &self.primary
        } else if self.replica.port() == port {
            &self.replica
        } else {
            panic!("port {port} is neither the primary nor the replica")
        }
    }

    /// Waits until the server on `port` answers `ROLE` as `expected` (`master`, `slave`) and,
    /// as a replica, reports its link to its primary up (`master_link_status:up`); panics with
    /// the logs after `timeout`. E.g. an old primary restarted after a failover, until the
    /// sentinels have made it a replica of the new one and it has synced.
    pub async fn wait_for_role(&self, port: u16, expected: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let now = role(port);
            let linked = expected != "slave"
                || connect_sync(port)
                    .and_then(|mut conn| {
                        redis::cmd("INFO")
                            .arg("replication")
                            .query::<String>(&mut conn)
                            .ok()
                    })
                    .is_some_and(|info| info.contains("master_link_status:up"));
            if now.as_deref() == Some(expected) && linked {
                return;
            }
            if start.elapsed() >= timeout {
                panic!(
                    "port {port} does not answer ROLE {expected:?} (linked) within {timeout:?}: \
                     it answers {now:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running sentinel names a primary other than the old one, and that
    /// server answers `ROLE` as `master`; returns its port. The old primary is the one the last
    /// [`kill_primary`](Self::kill_primary) killed, else the one named when the wait began
    /// (e.g. after pausing it). Panics with the logs after `timeout`.
    pub async fn wait_for_failover(&self, timeout: Duration) -> u16 {
        let start = Instant::now();
        let old = self.killed.unwrap_or_else(|| self.current_primary_port());
        loop {
            match self.failed_over_from(old) {
                Ok(new) => return new,
                Err(why) if start.elapsed() >= timeout => panic!(
                    "no failover from port {old} within {timeout:?}: {why}\n{}",
                    self.logs()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn failed_over_from(&self, old: u16) -> Result<u16, String> {
        let mut named = None;
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            let port = self
                .primary_named_by(sentinel.port())
                .ok_or(format!("sentinel {} does not answer", sentinel.port()))?;
            if port == old {
                return Err(format!("sentinel {} still names {old}", sentinel.port()));
            }
            match named {
                None => named = Some(port),
                Some(other) if other != port => {
                    return Err(format!("sentinels name {other} and {port}"))
                }
                Some(_) => {}
            }
        }
        let new = named.ok_or("no sentinel runs")?;
        match role(new).as_deref() {
            Some("master") => Ok(new),
            other => Err(format!("{new} answers ROLE {other:?}")),
        }
    }

    /// The last lines of every process's log (for failure messages).
    pub fn logs(&self) -> String {
        let servers = [("primary", &self.primary), ("replica", &self.replica)]
            .into_iter()
            .chain(self.sentinels.iter().map(|s| ("sentinel", s)));
        servers
            .map(|(what, s)| s.log_tail(what))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
