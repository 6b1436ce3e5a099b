//! A local Redis Cluster from real binaries: six `redis-server --cluster-enabled yes` nodes
//! (three primaries, one replica each) on free ports, joined by `redis-cli --cluster create`.
//!
//! Every node is a [`RedisServer`], so a test can kill, pause, resume and restart it. The
//! cluster bus of a node listens on its port + 10000, so node ports are at most 55535 and both
//! ports are checked free. Queries of the harness use short timeouts and skip stopped nodes;
//! the waits (`wait_*`, [`reshard`](RedisCluster::reshard)) are async and sleep with tokio, so
//! the test's other tasks keep running meanwhile.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{connect_sync, free_port, tail, Launch, RedisServer};

/// The message of the panic when `redis-cli` cannot be found.
pub const MISSING_REDIS_CLI: &str = "redis-cli not found: install it with `apt-get install redis-tools` (Debian/Ubuntu) or `brew install redis`";

/// Environment variable that may name the `redis-cli` binary to use (default: `redis-cli` on
/// `PATH`).
pub const REDIS_CLI_ENV: &str = "ATOMCACHE_REDIS_CLI";

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// `--cluster-node-timeout` of the nodes, ms: a primary is failed over about this long after
/// it stops answering.
pub const NODE_TIMEOUT_MS: u64 = 2000;

/// How long the cluster may take to form (`cluster_state:ok`, all slots covered, every node
/// agreeing) after `redis-cli --cluster create`.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of one `redis-cli --cluster` run.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Highest port whose cluster bus port (+10000) is a valid port.
const MAX_NODE_PORT: u16 = u16::MAX - 10000;

fn redis_cli_binary() -> String {
    std::env::var(REDIS_CLI_ENV).unwrap_or_else(|_| "redis-cli".to_owned())
}

/// Panics with [`MISSING_REDIS_CLI`] when `redis-cli` cannot be run.
pub fn require_redis_cli() {
    crate::require_binary(&redis_cli_binary(), MISSING_REDIS_CLI);
}

/// A free port at most 55535 whose cluster bus port (port + 10000) is free too.
pub fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if port <= MAX_NODE_PORT && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair (port, port + 10000) on 127.0.0.1")
}

/// The hash slot of `key` computed locally (CRC16/XMODEM of the key or of its `{hash tag}`,
/// modulo 16384), as `CLUSTER KEYSLOT` answers it; for picking keys of given slots.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// Runs `redis-cli` with `args`, killed after `timeout`.
fn run_cli(args: &[String], timeout: Duration) -> Output {
    let mut child = Command::new(redis_cli_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            if err.kind() == ErrorKind::NotFound {
                panic!("{MISSING_REDIS_CLI}")
            }
            panic!("cannot spawn redis-cli: {err}")
        });
    // Drained while it runs: a reshard prints two lines per slot, more than a pipe holds.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = std::io::Read::read_to_end(&mut pipe, &mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<_>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<_>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = Output {
        status: status.unwrap_or_else(|| child.wait().expect("redis-cli status")),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if status.is_none() {
        panic!(
            "`redis-cli {}` did not finish within {timeout:?}; output:\n{}\n{}",
            args.join(" "),
            tail(&String::from_utf8_lossy(&out.stdout), 30),
            tail(&String::from_utf8_lossy(&out.stderr), 30),
        );
    }
    out
}

/// Runs `redis-cli` on a worker thread (it blocks up to [`CLI_TIMEOUT`]) without blocking the
/// async runtime.
async fn run_cli_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || run_cli(&args, CLI_TIMEOUT))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// One line of `CLUSTER NODES`, as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Node id (40 hex digits).
    pub id: String,
    /// Client port.
    pub port: u16,
    /// Whether it is a primary (`master` flag).
    pub primary: bool,
    /// Whether it is flagged `fail` (the cluster agreed it is down).
    pub failed: bool,
    /// Whether it is flagged `fail?` (suspected by the reporting node only).
    pub suspected: bool,
    /// The id of its primary, for a replica.
    pub primary_id: Option<String>,
    /// Slot ranges it serves (inclusive), empty for a replica.
    pub slots: Vec<(u16, u16)>,
    /// Whether it is the node that answered.
    pub myself: bool,
}

impl ClusterNode {
    /// Parses the text of `CLUSTER NODES`.
    pub fn parse_all(text: &str) -> Vec<ClusterNode> {
        text.lines().filter_map(Self::parse).collect()
    }

    fn parse(line: &str) -> Option<ClusterNode> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return None;
        }
        // 127.0.0.1:7000@17000[,hostname]
        let addr = fields[1].split(['@', ',']).next()?;
        let port = addr.rsplit_once(':')?.1.parse().ok()?;
        let flags: Vec<&str> = fields[2].split(',').collect();
        let slots = fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|n| (n, n)),
            })
            .collect();
        Some(ClusterNode {
            id: fields[0].to_owned(),
            port,
            primary: flags.contains(&"master"),
            failed: flags.contains(&"fail"),
            suspected: flags.contains(&"fail?"),
            primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
            slots,
            myself: flags.contains(&"myself"),
        })
    }

    /// Number of slots it serves.
    pub fn slot_count(&self) -> usize {
        self.slots.iter().map(|(a, b)| usize::from(b - a) + 1).sum()
    }

    /// Whether it serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// Three primaries with one replica each, started from real `redis-server` processes. Dropping
/// it kills every node and removes their directories.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes, joins them with `redis-cli --cluster create ... --cluster-replicas 1`,
    /// and waits until every node reports `cluster_state:ok` with all 16384 slots covered and
    /// sees the same primaries.
    ///
    /// Panics with an installation hint if `redis-server` or `redis-cli` is missing, and with
    /// the nodes' logs if the cluster does not form in time.
    pub fn start() -> RedisCluster {
        require_redis_cli();
        let args = |dir: &std::path::Path, port: u16| -> Vec<String> {
            vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                dir.join(format!("nodes-{port}.conf"))
                    .to_string_lossy()
                    .into_owned(),
                "--cluster-node-timeout".into(),
                NODE_TIMEOUT_MS.to_string(),
                // A replica's first full sync starts at once (the default waits 5 s for more
                // replicas); a replica that never synced cannot take over.
                "--repl-diskless-sync-delay".into(),
                "0".into(),
            ]
        };
        let launch = Launch {
            pick_port: &free_cluster_port,
            args: &args,
            config_file: None,
        };
        let nodes: Vec<RedisServer> = (0..6).map(|_| RedisServer::start_launch(&launch)).collect();
        let cluster = RedisCluster { nodes };

        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port())),
        );
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let out = run_cli(&create, CLI_TIMEOUT);
        if !out.status.success() {
            panic!(
                "`redis-cli {}` failed ({}):\n{}\n{}\n{}",
                create.join(" "),
                out.status,
                tail(&String::from_utf8_lossy(&out.stdout), 30),
                tail(&String::from_utf8_lossy(&out.stderr), 30),
                cluster.logs(),
            );
        }
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let ready = || {
                cluster
                    .check_stable(3, 3)
                    .and_then(|()| cluster.check_links())
            };
            if let Ok(()) = ready() {
                return cluster;
            }
            if Instant::now() >= deadline {
                let why = ready().err().unwrap_or_default();
                panic!(
                    "the cluster did not form within {FORM_TIMEOUT:?}: {why}\n{}",
                    cluster.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// All six nodes, running or not, in start order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// The node listening on `port`, to kill, restart, pause or resume it.
    pub fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// Seed URLs (`redis://127.0.0.1:<port>/`) of the running nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(RedisServer::url)
            .collect()
    }

    /// An atomcache backend builder on [`urls`](Self::urls) (the default settings).
    pub fn backend_builder(&self) -> atomcache::RedisBackendBuilder {
        let urls = self.urls();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        atomcache::RedisBackend::cluster_builder(&urls)
    }

    /// An atomcache backend on this cluster, with the default settings.
    pub async fn backend(&self) -> atomcache::RedisBackend {
        self.backend_builder()
            .connect()
            .await
            .expect("connect to the test cluster")
    }

    /// A cluster client on [`urls`](Self::urls), RESP3.
    pub fn client(&self) -> redis::cluster::ClusterClient {
        redis::cluster::ClusterClientBuilder::new(self.urls())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5))
            .build()
            .expect("cluster client")
    }

    /// `CLUSTER NODES` as the first running node that answers sees it.
    ///
    /// Panics if no node answers.
    pub fn cluster_nodes(&self) -> Vec<ClusterNode> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .find_map(|n| cluster_nodes_of(n.port()))
            .unwrap_or_else(|| panic!("no cluster node answers CLUSTER NODES\n{}", self.logs()))
    }

    /// The running nodes that the cluster (per [`cluster_nodes`](Self::cluster_nodes)) has as
    /// primaries serving slots, not flagged failed.
    pub fn primaries(&self) -> Vec<&RedisServer> {
        let view = self.cluster_nodes();
        self.running_with(|port| {
            view.iter()
                .any(|n| n.port == port && n.primary && !n.failed && n.slot_count() > 0)
        })
    }

    /// The running nodes that the cluster has as replicas, not flagged failed.
    pub fn replicas(&self) -> Vec<&RedisServer> {
        let view = self.cluster_nodes();
        self.running_with(|port| {
            view.iter()
                .any(|n| n.port == port && !n.primary && !n.failed)
        })
    }

    fn running_with(&self, keep: impl Fn(u16) -> bool) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .filter(|n| n.is_running() && keep(n.port()))
            .collect()
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .find_map(|n| {
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query(&mut connect_sync(n.port())?)
                    .ok()
            })
            .expect("no cluster node answers CLUSTER KEYSLOT")
    }

    /// The running node the cluster has as the (healthy) primary of `slot`.
    ///
    /// Panics if no such node is known (e.g. during a failover).
    pub fn primary_for_slot(&self, slot: u16) -> &RedisServer {
        let view = self.cluster_nodes();
        let owner = view
            .iter()
            .find(|n| n.primary && !n.failed && n.serves(slot))
            .unwrap_or_else(|| panic!("no healthy primary serves slot {slot}: {view:?}"));
        self.node(owner.port)
    }

    /// Kills (SIGKILL) the primary of `key`'s slot; returns its port (see
    /// [`node_mut`](Self::node_mut) to restart it).
    pub fn kill_primary_of(&mut self, key: &str) -> u16 {
        let slot = self.slot_of(key);
        let port = self.primary_for_slot(slot).port();
        self.node_mut(port).kill();
        port
    }

    /// Waits until a replica took over the slots of the (killed or frozen) primary on
    /// `old_primary_port` and every running node reports `cluster_state:ok`; returns the new
    /// primary's port. Panics with the nodes' logs after `timeout`.
    pub async fn wait_for_failover(&self, old_primary_port: u16, timeout: Duration) -> u16 {
        let start = Instant::now();
        let view = self.cluster_nodes();
        let old = view
            .iter()
            .find(|n| n.port == old_primary_port)
            .unwrap_or_else(|| panic!("port {old_primary_port} is not a cluster node"))
            .clone();
        // Its slots as the cluster knew them (a failed primary keeps its slots in the view
        // until a replica takes them over).
        let slots: Vec<u16> = old.slots.iter().map(|&(a, _)| a).collect();
        assert!(
            !slots.is_empty(),
            "port {old_primary_port} serves no slots: {view:?}"
        );
        loop {
            match self.failover_done(old_primary_port, &slots) {
                Ok(new) => return new,
                Err(why) if start.elapsed() >= timeout => panic!(
                    "no failover of the primary on port {old_primary_port} within {timeout:?}: {why}\n{}",
                    self.logs()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn failover_done(&self, old_port: u16, slots: &[u16]) -> Result<u16, String> {
        self.check_stable(3, 0)?;
        let view = self.cluster_nodes();
        let mut new = None;
        for &slot in slots {
            let owner = view
                .iter()
                .find(|n| n.primary && !n.failed && n.serves(slot))
                .ok_or(format!("slot {slot} has no healthy primary"))?;
            if owner.port == old_port {
                return Err(format!("slot {slot} is still served by port {old_port}"));
            }
            new = Some(owner.port);
        }
        new.ok_or_else(|| "no slots".to_owned())
    }

    /// Moves `slots` slots from the primary on port `from` to the primary on port `to` with
    /// `redis-cli --cluster reshard`, then waits until every running node agrees and reports
    /// `cluster_state:ok`.
    pub async fn reshard(&self, from: u16, to: u16, slots: u16) {
        let view = self.cluster_nodes();
        let id = |port: u16| {
            view.iter()
                .find(|n| n.port == port && n.primary)
                .unwrap_or_else(|| panic!("port {port} is not a primary: {view:?}"))
                .clone()
        };
        let (from_node, to_node) = (id(from), id(to));
        let args: Vec<String> = vec![
            "--cluster".into(),
            "reshard".into(),
            format!("127.0.0.1:{to}"),
            "--cluster-from".into(),
            from_node.id.clone(),
            "--cluster-to".into(),
            to_node.id.clone(),
            "--cluster-slots".into(),
            slots.to_string(),
            "--cluster-yes".into(),
        ];
        let out = run_cli_async(args.clone()).await;
        if !out.status.success() {
            panic!(
                "`redis-cli {}` failed ({}):\n{}\n{}",
                args.join(" "),
                out.status,
                tail(&String::from_utf8_lossy(&out.stdout), 30),
                tail(&String::from_utf8_lossy(&out.stderr), 30),
            );
        }
        let want = to_node.slot_count() + usize::from(slots);
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let agreed = self.check_stable(3, 0).and_then(|()| {
                self.views().into_iter().try_for_each(|(port, view)| {
                    match view.iter().find(|n| n.port == to) {
                        Some(n) if n.slot_count() == want => Ok(()),
                        other => Err(format!(
                            "node {port} sees {} slots at {to}, want {want}",
                            other.map_or(0, ClusterNode::slot_count)
                        )),
                    }
                })
            });
            match agreed {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => panic!(
                    "the reshard of {slots} slots from {from} to {to} did not settle within {FORM_TIMEOUT:?}: {why}\n{}",
                    self.logs()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Moves the one hash slot `slot`, with its keys, from the primary that serves it to the
    /// primary on port `to`, as `redis-cli --cluster reshard` moves each slot (but choosing the
    /// slot): [`begin_slot_migration`](Self::begin_slot_migration), then
    /// [`finish_slot_migration`](Self::finish_slot_migration). Returns the source's port.
    pub async fn migrate_slot(&self, slot: u16, to: u16) -> u16 {
        let from = self.begin_slot_migration(slot, to).await;
        self.finish_slot_migration(slot, from, to).await;
        from
    }

    /// Starts moving `slot` from the primary that serves it to the primary on port `to`:
    /// `CLUSTER SETSLOT slot IMPORTING <source>` on the target, then `MIGRATING <target>` on the
    /// source. No key moves yet: the source keeps serving the slot's keys it holds, answers
    /// `ASK` for the others and `TRYAGAIN` for a multi-key command that names both. Returns the
    /// source's port.
    ///
    /// Panics (with the nodes' logs) if a step fails, if `to` already serves `slot` or is not a
    /// healthy primary.
    pub async fn begin_slot_migration(&self, slot: u16, to: u16) -> u16 {
        let view = self.cluster_nodes();
        let source = view
            .iter()
            .find(|n| n.primary && !n.failed && n.serves(slot))
            .unwrap_or_else(|| panic!("no healthy primary serves slot {slot}: {view:?}"))
            .clone();
        let target = self.node_id(&view, to);
        assert_ne!(source.port, to, "port {to} already serves slot {slot}");
        let mut dst = self.node(to).raw().await;
        self.setslot(&mut dst, slot, "IMPORTING", &source.id, to)
            .await;
        let mut src = self.node(source.port).raw().await;
        self.setslot(&mut src, slot, "MIGRATING", &target, source.port)
            .await;
        source.port
    }

    /// Finishes a [`begin_slot_migration`](Self::begin_slot_migration) of `slot` from `from`
    /// to `to`: [`move_slot_keys`](Self::move_slot_keys), then [`assign_slot`](Self::assign_slot)
    /// on the target, the source (which drops the slot's shard channels: their subscribers get
    /// an unsolicited `SUNSUBSCRIBE`) and the other primaries, then
    /// [`wait_for_slot_owner`](Self::wait_for_slot_owner).
    pub async fn finish_slot_migration(&self, slot: u16, from: u16, to: u16) {
        self.move_slot_keys(slot, from, to).await;
        // The target first, so that the slot never lacks an owner that accepts it; then the
        // source; then everyone else.
        let mut order = vec![to, from];
        order.extend(
            self.cluster_nodes()
                .iter()
                .filter(|n| n.primary && !n.failed && n.port != to && n.port != from)
                .map(|n| n.port),
        );
        for port in order {
            if self.node(port).is_running() {
                self.assign_slot(slot, to, port).await;
            }
        }
        self.wait_for_slot_owner(slot, to).await;
    }

    /// `MIGRATE`s every key of `slot` from the node on `from` to the node on `to`, in batches
    /// of 100 (the slot must be migrating: see
    /// [`begin_slot_migration`](Self::begin_slot_migration)).
    ///
    /// Panics (with the nodes' logs) if a command fails.
    pub async fn move_slot_keys(&self, slot: u16, from: u16, to: u16) {
        let mut src = self.node(from).raw().await;
        loop {
            let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut src)
                .await
                .unwrap_or_else(|err| {
                    panic!(
                        "CLUSTER GETKEYSINSLOT {slot} on {from}: {err}\n{}",
                        self.logs()
                    )
                });
            if keys.is_empty() {
                return;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(&keys);
            if let Err(err) = migrate.query_async::<()>(&mut src).await {
                panic!(
                    "MIGRATE of slot {slot} from {from} to {to}: {err}\n{}",
                    self.logs()
                );
            }
        }
    }

    /// Tells the node on port `on` that the primary on port `to` serves `slot`
    /// (`CLUSTER SETSLOT slot NODE <id of to>`); returns once that node answered.
    ///
    /// Panics (with the nodes' logs) if the command fails.
    pub async fn assign_slot(&self, slot: u16, to: u16, on: u16) {
        let target = self.node_id(&self.cluster_nodes(), to);
        let mut conn = self.node(on).raw().await;
        self.setslot(&mut conn, slot, "NODE", &target, on).await;
    }

    /// Waits until every running node sees the primary on port `to` serving `slot` and the
    /// cluster is stable. Panics with the nodes' logs after the formation timeout.
    pub async fn wait_for_slot_owner(&self, slot: u16, to: u16) {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let agreed = self.check_stable(3, 0).and_then(|()| {
                self.views().into_iter().try_for_each(|(port, view)| {
                    match view.iter().find(|n| n.serves(slot)) {
                        Some(n) if n.port == to => Ok(()),
                        other => Err(format!(
                            "node {port} sees slot {slot} at {:?}",
                            other.map(|n| n.port)
                        )),
                    }
                })
            });
            match agreed {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => panic!(
                    "slot {slot} did not settle at {to} within {FORM_TIMEOUT:?}: {why}\n{}",
                    self.logs()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The node id of the healthy primary on `port` in `view`.
    fn node_id(&self, view: &[ClusterNode], port: u16) -> String {
        view.iter()
            .find(|n| n.port == port && n.primary && !n.failed)
            .unwrap_or_else(|| panic!("port {port} is not a healthy primary: {view:?}"))
            .id
            .clone()
    }

    /// `CLUSTER SETSLOT slot <state> <id>` on `conn` (the node on `port`).
    async fn setslot(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        slot: u16,
        state: &str,
        id: &str,
        port: u16,
    ) {
        let result: redis::RedisResult<()> = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(state)
            .arg(id)
            .query_async(conn)
            .await;
        if let Err(err) = result {
            panic!(
                "CLUSTER SETSLOT {slot} {state} {id} on {port}: {err}\n{}",
                self.logs()
            );
        }
    }

    /// Waits until every running node reports `cluster_state:ok`, all slots covered, the same
    /// `primaries` healthy primaries (with slots) and at least `replicas` healthy replicas.
    /// Panics with the logs after `timeout`.
    pub async fn wait_until_ok(&self, primaries: usize, replicas: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            match self.check_stable(primaries, replicas) {
                Ok(()) => return,
                Err(why) if start.elapsed() >= timeout => panic!(
                    "the cluster is not ok within {timeout:?}: {why}\n{}",
                    self.logs()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Ok when every running replica reports `master_link_status:up` (its first sync is done,
    /// so it may take over from its primary).
    fn check_links(&self) -> Result<(), String> {
        for node in self.replicas() {
            let port = node.port();
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut connect_sync(port).ok_or(format!("node {port} does not answer"))?)
                .map_err(|e| format!("INFO replication on {port}: {e}"))?;
            if !info.contains("master_link_status:up") {
                return Err(format!("replica {port}: the link to its primary is not up"));
            }
        }
        Ok(())
    }

    /// `CLUSTER NODES` of every running node that answers.
    fn views(&self) -> Vec<(u16, Vec<ClusterNode>)> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .filter_map(|n| Some((n.port(), cluster_nodes_of(n.port())?)))
            .collect()
    }

    /// Ok when every running node answers, reports `cluster_state:ok` and 16384 slots ok, and
    /// sees the same set of `primaries` healthy primaries covering all slots, at least
    /// `replicas` healthy replicas, and no healthy primary without slots (a node that joined but
    /// was not yet told to replicate).
    fn check_stable(&self, primaries: usize, replicas: usize) -> Result<(), String> {
        let mut agreed: Option<BTreeSet<u16>> = None;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let port = node.port();
            let mut conn = connect_sync(port).ok_or(format!("node {port} does not answer"))?;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut conn)
                .map_err(|e| format!("CLUSTER INFO on {port}: {e}"))?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
                    .unwrap_or("")
                    .to_owned()
            };
            if field("cluster_state") != "ok" {
                return Err(format!(
                    "node {port}: cluster_state:{}",
                    field("cluster_state")
                ));
            }
            if field("cluster_slots_ok") != SLOTS.to_string() {
                return Err(format!(
                    "node {port}: cluster_slots_ok:{}",
                    field("cluster_slots_ok")
                ));
            }
            let text: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut conn)
                .map_err(|e| format!("CLUSTER NODES on {port}: {e}"))?;
            let view = ClusterNode::parse_all(&text);
            let healthy: BTreeSet<u16> = view
                .iter()
                .filter(|n| n.primary && !n.failed && !n.suspected && n.slot_count() > 0)
                .map(|n| n.port)
                .collect();
            let covered: usize = view
                .iter()
                .filter(|n| healthy.contains(&n.port))
                .map(ClusterNode::slot_count)
                .sum();
            let idle = view
                .iter()
                .filter(|n| n.primary && !n.failed && !n.suspected && n.slot_count() == 0)
                .count();
            let following = view
                .iter()
                .filter(|n| !n.primary && !n.failed && !n.suspected)
                .count();
            if idle > 0 || following < replicas {
                return Err(format!(
                    "node {port} sees {idle} primaries without slots and {following} replicas"
                ));
            }
            if healthy.len() != primaries || covered != usize::from(SLOTS) {
                return Err(format!(
                    "node {port} sees primaries {healthy:?} covering {covered} slots"
                ));
            }
            match &agreed {
                None => agreed = Some(healthy),
                Some(first) if *first != healthy => {
                    return Err(format!(
                        "nodes disagree on the primaries: {first:?} vs {healthy:?} (node {port})"
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The last lines of every node's log (for failure messages).
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.log_tail("node"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn cluster_nodes_of(port: u16) -> Option<Vec<ClusterNode>> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut connect_sync(port)?)
        .ok()?;
    Some(ClusterNode::parse_all(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_parsed() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host replica e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master,fail? - 0 0 1 connected 0-5460 12000 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
";
        let nodes = ClusterNode::parse_all(text);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].port, 30004);
        assert!(!nodes[0].primary);
        assert_eq!(
            nodes[0].primary_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(nodes[1].slots, vec![(5461, 10922)]);
        assert_eq!(nodes[1].slot_count(), 5462);
        assert!(nodes[2].myself && nodes[2].primary && nodes[2].suspected && !nodes[2].failed);
        assert_eq!(nodes[2].slots, vec![(0, 5460), (12000, 12000)]);
        assert!(nodes[2].serves(12000) && !nodes[2].serves(11999));
    }

    #[test]
    fn key_slots_match_the_cluster_spec() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn a_missing_redis_cli_fails_with_an_install_hint() {
        let err = std::panic::catch_unwind(|| {
            crate::require_binary("redis-cli-that-does-not-exist", MISSING_REDIS_CLI)
        })
        .expect_err("must panic");
        let message = err
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap();
        assert!(message.contains("apt-get install redis-tools"), "{message}");
    }
}
