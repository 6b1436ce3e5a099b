//! Scenario 5: atomcache on a Redis Cluster (issue 11), on a local cluster of three primaries
//! with one replica each (`atomcache_tests::RedisCluster`):
//!
//! - **warm hit**: `Cache::get_or_compute` on `RedisBackend::connect_cluster` against a raw `GET`
//!   of the same bytes on the `redis` crate's async cluster client (`ClusterConnection`), in the
//!   same run, interleaved (see `atomcache_bench::Paired`); one caller, and 64 callers on 64
//!   keys spread evenly over the three primaries;
//! - **stampede**: N replica processes × M concurrent callers on K cold keys spread over the
//!   three primaries (caller `c` asks for key `c % K`), each computation sleeping 300 ms:
//!   computations per key (must be 1) and the waiters' latency.
//!
//! ```text
//! cargo run --release -p atomcache-bench --bin cluster [-- --rounds 3 --replicas 4 --callers 32 --keys 8 --compute-ms 300 --quick]
//! ```
//!
//! The program starts its own cluster and re-runs itself as the replicas (a process that is given
//! `--url` is a replica; `--url` carries the comma-separated node URLs and `--id` the
//! comma-separated ids). The replicas speak the protocol of `atomcache_tests::ReplicaProcess`:
//! `READY`, a common start instant on stdin, `COMPUTING` per computation, `CALL` per call,
//! `DONE` (here with the computations per key).

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::io::{BufRead, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::{Cache, RedisBackend};
use atomcache_bench::{
    payload, print_header, print_ratios, quick, runtime, timed, timed_callers, warn_bimodal,
    Paired, Row, Timed, VALUE_LEN,
};
use atomcache_tests::{key_slot, percentiles, unix_ms, RedisCluster, ReplicaArgs, ReplicaProcess};
use redis::cluster_async::ClusterConnection;

/// Concurrent callers (and distinct keys) of the concurrent hit.
const CALLERS: usize = 64;
const ATOMCACHE: &str = "atomcache Cache::get_or_compute";
const RAW: &str = "redis cluster GET";
/// Namespace of the stampede's entries.
const STAMPEDE_NS: &str = "bench-cluster-stampede";
/// Commands of the harness (`INFO`, `CONFIG RESETSTAT`), of the cluster client's topology
/// queries, and of the cluster's replicas (`REPLCONF ACK`): not counted in a stampede round.
const NOT_COUNTED: [&str; 4] = ["info", "config", "cluster", "replconf"];
/// Allowed waiter p99 above the computation (the goal of scenario 2).
const WAIT_BUDGET_MS: f64 = 100.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--url") {
        replica(&args);
    } else {
        orchestrate(&args);
    }
}

// ---------------------------------------------------------------------------------------------
// The orchestrator.

struct Settings {
    /// Interleaved rounds of the warm hit.
    hit_rounds: usize,
    /// Stampede rounds (a fresh set of keys each).
    rounds: usize,
    replicas: usize,
    callers: usize,
    keys: usize,
    compute: Duration,
}

fn settings(args: &[String]) -> Settings {
    let mut s = Settings {
        hit_rounds: if quick() { 3 } else { 15 },
        rounds: 3,
        replicas: 4,
        callers: 32,
        keys: 8,
        compute: Duration::from_millis(300),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = || -> usize {
            it.clone()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--rounds" => s.rounds = value(),
            "--replicas" => s.replicas = value(),
            "--callers" => s.callers = value(),
            "--keys" => s.keys = value(),
            "--compute-ms" => s.compute = Duration::from_millis(value() as u64),
            "--quick" => {
                s.rounds = 1;
                s.hit_rounds = 3;
                continue;
            }
            other => panic!(
                "unknown flag {other} (known: --rounds --replicas --callers --keys --compute-ms --quick)"
            ),
        }
        it.next();
    }
    assert!(
        s.rounds > 0 && s.replicas > 0 && s.keys > 0 && s.callers >= s.keys,
        "need at least one round, one replica, one key, and at least as many callers as keys"
    );
    s
}

/// The primaries of the cluster: port and slot ranges, in port order.
struct Primaries(Vec<(u16, Vec<(u16, u16)>)>);

impl Primaries {
    fn of(cluster: &RedisCluster) -> Self {
        let mut primaries: Vec<_> = cluster
            .cluster_nodes()
            .into_iter()
            .filter(|n| n.primary && !n.failed && n.slot_count() > 0)
            .map(|n| (n.port, n.slots))
            .collect();
        primaries.sort();
        assert_eq!(primaries.len(), 3, "a 3-primary cluster");
        Primaries(primaries)
    }

    /// Index (in [`Self::0`]) of the primary serving `key`.
    fn index_of(&self, key: &str) -> usize {
        let slot = key_slot(key.as_bytes());
        self.0
            .iter()
            .position(|(_, ranges)| ranges.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    fn ports(&self) -> Vec<u16> {
        self.0.iter().map(|(port, _)| *port).collect()
    }

    /// How many of `keys` each primary serves, as `22 on :port, ...`.
    fn spread(&self, keys: &[String]) -> String {
        let mut counts = vec![0usize; self.0.len()];
        let mut slots = BTreeSet::new();
        for key in keys {
            counts[self.index_of(key)] += 1;
            slots.insert(key_slot(key.as_bytes()));
        }
        let per: Vec<String> = counts
            .iter()
            .zip(&self.0)
            .map(|(n, (port, _))| format!("{n} on :{port}"))
            .collect();
        format!("{} ({} distinct slots)", per.join(", "), slots.len())
    }
}

/// `n` ids `<prefix><j>` whose entries in `cache` land on the primaries in turn (id `i` on
/// primary `i % 3`), so the load is spread evenly over the cluster.
fn spread_ids(cache: &Cache, primaries: &Primaries, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    let mut candidate = 0u64;
    for i in 0..n {
        loop {
            let id = format!("{prefix}{candidate}");
            candidate += 1;
            if primaries.index_of(cache.key(&id).value()) == i % primaries.0.len() {
                ids.push(id);
                break;
            }
        }
    }
    ids
}

fn missed<T>() -> T {
    panic!("a warm key missed: the benchmark would measure computations, not hits")
}

/// The raw baseline's cluster client: RESP3, the timeouts atomcache uses, `TCP_NODELAY` as
/// atomcache sets it.
async fn raw_cluster_connection(urls: &[String]) -> ClusterConnection {
    redis::cluster::ClusterClientBuilder::new(urls.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(atomcache::backend::redis::DEFAULT_CONNECT_TIMEOUT)
        .response_timeout(atomcache::backend::redis::DEFAULT_COMMAND_TIMEOUT)
        .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
        .build()
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("raw cluster connection")
}

async fn connect_cluster(urls: &[String]) -> RedisBackend {
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    RedisBackend::connect_cluster(&urls)
        .await
        .expect("connect atomcache to the cluster")
}

fn orchestrate(args: &[String]) {
    let s = settings(args);
    print_header("Scenario 5: Redis Cluster (issue 11)");
    let started = Instant::now();
    let cluster = RedisCluster::start();
    let primaries = Primaries::of(&cluster);
    println!(
        "cluster: 3 primaries × 1 replica on 127.0.0.1, primaries on ports {:?}, formed in {:.1} s",
        primaries.ports(),
        started.elapsed().as_secs_f64()
    );
    let rt = runtime();
    warm_hit(&cluster, &primaries, &rt, &s);
    stampede(&cluster, &primaries, &rt, &s);
    drop(rt);
    drop(cluster);
    println!(
        "total: {:.1} s (cluster start included)",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Warm hit.

fn warm_hit(
    cluster: &RedisCluster,
    primaries: &Primaries,
    rt: &Arc<tokio::runtime::Runtime>,
    s: &Settings,
) {
    let urls = cluster.urls();
    let value = payload(VALUE_LEN);

    // atomcache on the cluster, with 64 warm entries spread over the primaries.
    let (cache, ids) = rt.block_on(async {
        let cache = Cache::builder("bench-cluster-hit")
            .exp(Duration::from_secs(3600))
            .backend(connect_cluster(&urls).await)
            .build()
            .expect("cache settings");
        let ids = spread_ids(&cache, primaries, "hit-", CALLERS);
        for id in &ids {
            let v = value.clone();
            let _: String = cache.get_or_compute(id, || async { v }).await;
        }
        (cache, ids)
    });
    let computed = cache.stats().computations;
    assert_eq!(
        computed as usize, CALLERS,
        "the warm-up computes every entry once"
    );
    let value_keys: Vec<String> = ids
        .iter()
        .map(|id| cache.key(id).value().to_owned())
        .collect();
    // The raw baseline reads the very bytes atomcache stored (header + bincode), at a key of the
    // same length in the same slot (the entry's hash tag, role `r`).
    let raw_keys: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .map(|id| format!("{}r", cache.key(id).base()))
            .collect(),
    );
    let conn = rt.block_on(raw_cluster_connection(&urls));
    let stored_len = rt.block_on(async {
        let mut conn = conn.clone();
        let mut len = 0;
        for (value_key, raw_key) in value_keys.iter().zip(raw_keys.iter()) {
            let bytes: Vec<u8> = redis::cmd("GET")
                .arg(value_key)
                .query_async::<Option<Vec<u8>>>(&mut conn)
                .await
                .expect("GET of a warm entry")
                .expect("the warm-up stored a value");
            len = bytes.len();
            let () = redis::cmd("SET")
                .arg(raw_key)
                .arg(&bytes)
                .query_async(&mut conn)
                .await
                .expect("SET of a raw key");
        }
        len
    });
    println!();
    println!("### Warm hit");
    println!();
    println!(
        "value: a {VALUE_LEN}-byte String, {stored_len} bytes stored (header + bincode); the raw GET reads the same {stored_len} bytes from a key of the same length in the same slot"
    );
    println!(
        "64 keys: {}; the one-caller rows read key 0 (on :{})",
        primaries.spread(&value_keys),
        primaries.0[primaries.index_of(&value_keys[0])].0
    );

    let ids = Arc::new(ids);
    let seq_raw: Timed = {
        let (rt, conn, keys) = (rt.clone(), conn.clone(), raw_keys.clone());
        Rc::new(move |iters| {
            let (conn, keys) = (conn.clone(), keys.clone());
            timed(&rt, iters, move |_| {
                let mut conn = conn.clone();
                let keys = keys.clone();
                async move {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&keys[0])
                        .query_async(&mut conn)
                        .await
                        .expect("raw GET");
                    black_box(v.unwrap_or_else(missed));
                }
            })
        })
    };
    let seq_atomcache: Timed = {
        let (rt, cache, ids) = (rt.clone(), cache.clone(), ids.clone());
        Rc::new(move |iters| {
            let (cache, ids) = (cache.clone(), ids.clone());
            timed(&rt, iters, move |_| {
                let cache = cache.clone();
                let ids = ids.clone();
                async move {
                    let v: String = cache.get_or_compute(&ids[0], || async { missed() }).await;
                    black_box(v);
                }
            })
        })
    };
    let conc_raw: Timed = {
        let (rt, conn, keys) = (rt.clone(), conn.clone(), raw_keys.clone());
        Rc::new(move |iters| {
            let (conn, keys) = (conn.clone(), keys.clone());
            timed_callers(&rt, iters, CALLERS, move |caller, _| {
                let mut conn = conn.clone();
                let keys = keys.clone();
                async move {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&keys[caller])
                        .query_async(&mut conn)
                        .await
                        .expect("raw GET");
                    black_box(v.unwrap_or_else(missed));
                }
            })
        })
    };
    let conc_atomcache: Timed = {
        let (rt, cache, ids) = (rt.clone(), cache.clone(), ids.clone());
        Rc::new(move |iters| {
            let (cache, ids) = (cache.clone(), ids.clone());
            timed_callers(&rt, iters, CALLERS, move |caller, _| {
                let cache = cache.clone();
                let ids = ids.clone();
                async move {
                    let v: String = cache
                        .get_or_compute(&ids[caller], || async { missed() })
                        .await;
                    black_box(v);
                }
            })
        })
    };

    let mut sequential = Paired::new();
    sequential.add(RAW, seq_raw);
    sequential.add(ATOMCACHE, seq_atomcache);
    let mut concurrent = Paired::new();
    concurrent.add(RAW, conc_raw);
    concurrent.add(ATOMCACHE, conc_atomcache);
    let seq = sequential.run(s.hit_rounds, 2_000);
    let conc = concurrent.run(s.hit_rounds, 200);
    print_ratios(
        &format!(
            "Scenario 5: warm hit on a Redis Cluster, atomcache / raw cluster-client GET of the same bytes ({} interleaved rounds)",
            s.hit_rounds
        ),
        &seq,
        &[Row::new("one caller, one key", ATOMCACHE, RAW)],
    );
    warn_bimodal(&seq, &[RAW, ATOMCACHE]);
    print_ratios(
        "Scenario 5: warm hit on a Redis Cluster, 64 concurrent callers",
        &conc,
        &[Row::new("64 callers, 64 keys on 3 primaries", ATOMCACHE, RAW).ops(CALLERS)],
    );
    println!(
        "throughput, 64 callers: {} {:.0} ops/s, {} {:.0} ops/s",
        RAW,
        1e9 * CALLERS as f64 / conc.get(RAW),
        ATOMCACHE,
        1e9 * CALLERS as f64 / conc.get(ATOMCACHE)
    );
    let stats = cache.stats();
    assert_eq!(
        stats.computations, computed,
        "a warm get_or_compute computed"
    );
    println!("atomcache stats, Cache: {stats:?}");
}

// ---------------------------------------------------------------------------------------------
// Stampede.

/// What one round did.
struct RoundTally {
    /// Computations of each key, over all replicas.
    per_key: Vec<usize>,
    /// Distinct values answered for each key.
    values_per_key: Vec<usize>,
    commands: u64,
    waiters_ms: Vec<f64>,
    computers_ms: Vec<f64>,
    /// Calls that went to the backend and failed open, over all replicas.
    backend_errors: u64,
}

fn stampede(
    cluster: &RedisCluster,
    primaries: &Primaries,
    rt: &Arc<tokio::runtime::Runtime>,
    s: &Settings,
) {
    let exe = std::env::current_exe().expect("path of this program");
    let exe = exe.to_str().expect("UTF-8 path").to_owned();
    let urls = cluster.urls();
    println!();
    println!("### Stampede");
    println!();
    println!(
        "{} replica processes × {} concurrent callers on {} cold keys (caller c asks for key c % {}: {} callers per key in {} processes), a {} ms computation, {} round(s), fresh keys each round",
        s.replicas,
        s.callers,
        s.keys,
        s.keys,
        s.replicas * s.callers / s.keys,
        s.replicas,
        s.compute.as_millis(),
        s.rounds
    );
    let rounds: Vec<RoundTally> = rt.block_on(async {
        // Only to name the replicas' keys (the same namespace and default prefix).
        let namer = Cache::builder(STAMPEDE_NS)
            .backend(connect_cluster(&urls).await)
            .build()
            .expect("cache settings");
        let mut rounds = Vec::new();
        for round in 0..s.rounds {
            let round = Round {
                cluster,
                primaries,
                namer: &namer,
                exe: &exe,
                urls: &urls,
                number: round,
            };
            rounds.push(round.run(s).await);
        }
        rounds
    });

    let compute_ms = s.compute.as_secs_f64() * 1000.0;
    println!();
    println!(
        "### Scenario 5: stampede on a Redis Cluster, {} replicas × {} callers on {} cold keys, {} ms computation ({} rounds)",
        s.replicas,
        s.callers,
        s.keys,
        s.compute.as_millis(),
        s.rounds
    );
    println!();
    println!("| round | computations per key | distinct values per key | Redis commands (3 primaries) | waiters | waiters p50 | waiters p99 | waiters max | computing callers p50 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let row = |label: &str,
               per_key: &[usize],
               values: &[usize],
               commands: String,
               waiters: &[f64],
               computers: &[f64]| {
        let (lo, hi) = min_max(per_key);
        let (vlo, vhi) = min_max(values);
        let (w50, w99, wmax) = if waiters.is_empty() {
            ("—".to_owned(), "—".to_owned(), "—".to_owned())
        } else {
            let p = percentiles(waiters);
            (
                format!("{:.1} ms", p.p50),
                format!("{:.1} ms", p.p99),
                format!("{:.1} ms", p.max),
            )
        };
        let c50 = if computers.is_empty() {
            "—".to_owned()
        } else {
            format!("{:.1} ms", percentiles(computers).p50)
        };
        println!(
            "| {label} | {} | {} | {commands} | {} | {w50} | {w99} | {wmax} | {c50} |",
            range(lo, hi),
            range(vlo, vhi),
            waiters.len(),
        );
    };
    for (i, t) in rounds.iter().enumerate() {
        row(
            &(i + 1).to_string(),
            &t.per_key,
            &t.values_per_key,
            t.commands.to_string(),
            &t.waiters_ms,
            &t.computers_ms,
        );
    }
    let all_per_key: Vec<usize> = rounds.iter().flat_map(|t| t.per_key.clone()).collect();
    let all_values: Vec<usize> = rounds
        .iter()
        .flat_map(|t| t.values_per_key.clone())
        .collect();
    let all_waiters: Vec<f64> = rounds.iter().flat_map(|t| t.waiters_ms.clone()).collect();
    let all_computers: Vec<f64> = rounds.iter().flat_map(|t| t.computers_ms.clone()).collect();
    let commands: Vec<u64> = rounds.iter().map(|t| t.commands).collect();
    row(
        "**all**",
        &all_per_key,
        &all_values,
        list(&commands),
        &all_waiters,
        &all_computers,
    );
    println!();
    let once = all_per_key.iter().all(|&n| n == 1) && all_values.iter().all(|&n| n == 1);
    println!(
        "goal: exactly 1 computation (and 1 value) per key per round: {} ({} keys × {} rounds)",
        if once { "met" } else { "MISSED" },
        s.keys,
        s.rounds
    );
    if !all_waiters.is_empty() {
        let p99 = percentiles(&all_waiters).p99;
        println!(
            "goal: waiters' p99 ≤ computation + {WAIT_BUDGET_MS:.0} ms = {:.0} ms: {} (p99 {p99:.1} ms, i.e. computation + {:.1} ms)",
            compute_ms + WAIT_BUDGET_MS,
            if p99 <= compute_ms + WAIT_BUDGET_MS {
                "met"
            } else {
                "MISSED"
            },
            p99 - compute_ms
        );
    }
    let errors: u64 = rounds.iter().map(|t| t.backend_errors).sum();
    println!("backend errors (fail-open calls) over all rounds: {errors}");
}

/// One stampede round, on fresh keys.
struct Round<'a> {
    cluster: &'a RedisCluster,
    primaries: &'a Primaries,
    /// A cache of the replicas' namespace, to name their keys.
    namer: &'a Cache,
    /// This program, run as the replicas.
    exe: &'a str,
    urls: &'a [String],
    /// 0-based.
    number: usize,
}

impl Round<'_> {
    async fn run(&self, s: &Settings) -> RoundTally {
        let (cluster, primaries, namer, round) =
            (self.cluster, self.primaries, self.namer, self.number);
        let (exe, urls, primary_ports) = (self.exe, self.urls, primaries.ports());
        let ids = spread_ids(
            namer,
            primaries,
            &format!("cold-{}-{round}-", std::process::id()),
            s.keys,
        );
        let keys: Vec<String> = ids
            .iter()
            .map(|id| namer.key(id).value().to_owned())
            .collect();
        println!("round {}: keys {}", round + 1, primaries.spread(&keys));
        let replica_args = ReplicaArgs {
            url: urls.join(","),
            ns: STAMPEDE_NS.to_owned(),
            id: ids.join(","),
            callers: s.callers,
            compute: s.compute,
            lock_timeout: Duration::from_secs(5),
        };
        let mut replicas = futures::future::join_all(
            (0..s.replicas).map(|_| ReplicaProcess::spawn(exe, &replica_args)),
        )
        .await;
        for port in &primary_ports {
            cluster.node(*port).reset_stats().await;
        }
        let start = unix_ms() + 300.0;
        for r in &mut replicas {
            r.start_at(start).await;
        }
        let reports = futures::future::join_all(
            replicas
                .into_iter()
                .map(|r| r.finish(Duration::from_secs(60))),
        )
        .await;
        // Summed over the primaries (the replicas of the cluster only replay writes).
        let mut breakdown: BTreeMap<String, u64> = BTreeMap::new();
        for port in &primary_ports {
            for (name, calls) in cluster.node(*port).command_stats().await.calls {
                if !NOT_COUNTED.iter().any(|e| name.starts_with(e)) {
                    *breakdown.entry(name).or_default() += calls;
                }
            }
        }
        let commands = breakdown.values().sum();
        let mut tally = RoundTally {
            per_key: vec![0; s.keys],
            values_per_key: vec![0; s.keys],
            commands,
            waiters_ms: Vec::new(),
            computers_ms: Vec::new(),
            backend_errors: 0,
        };
        let mut values: Vec<BTreeSet<String>> = vec![BTreeSet::new(); s.keys];
        for report in &reports {
            let done = done_fields(&report.done);
            for (k, n) in done["per_key"].split(',').enumerate() {
                tally.per_key[k] += n.parse::<usize>().expect("per_key count");
            }
            tally.backend_errors += done["backend_errors"]
                .parse::<u64>()
                .expect("backend_errors");
            for call in &report.calls {
                // `<key index>=<value> <role>`
                let (value, role) = call.value.rsplit_once(' ').expect("CALL <value> <role>");
                let (k, _) = value.split_once('=').expect("<key index>=<value>");
                values[k.parse::<usize>().expect("key index")].insert(value.to_owned());
                match role {
                    "computer" => tally.computers_ms.push(call.elapsed_ms),
                    _ => tally.waiters_ms.push(call.elapsed_ms),
                }
            }
        }
        tally.values_per_key = values.iter().map(BTreeSet::len).collect();
        println!(
        "round {}: computations per key {}, distinct values per key {}, {} backend errors, {} Redis commands on the primaries ({})",
        round + 1,
        list(&tally.per_key),
        list(&tally.values_per_key),
        tally.backend_errors,
        tally.commands,
        breakdown
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
        tally
    }
}

/// The `name=value` fields of a `DONE` line.
fn done_fields(done: &str) -> BTreeMap<&str, &str> {
    done.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect()
}

fn min_max(v: &[usize]) -> (usize, usize) {
    (
        v.iter().copied().min().unwrap_or(0),
        v.iter().copied().max().unwrap_or(0),
    )
}

fn range(lo: usize, hi: usize) -> String {
    if lo == hi {
        format!("**{lo}**")
    } else {
        format!("**{lo}–{hi}**")
    }
}

fn list(v: &[impl std::fmt::Display]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// A replica.

struct ReplicaSettings {
    urls: Vec<String>,
    ns: String,
    ids: Vec<String>,
    callers: usize,
    compute: Duration,
    lock_timeout: Duration,
}

fn replica_settings(args: &[String]) -> ReplicaSettings {
    let mut s = ReplicaSettings {
        urls: Vec::new(),
        ns: String::new(),
        ids: Vec::new(),
        callers: 1,
        compute: Duration::from_millis(300),
        lock_timeout: Duration::from_secs(5),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| panic!("missing value after {flag}"));
        let ms = || Duration::from_millis(value.parse().expect("milliseconds"));
        match flag.as_str() {
            "--url" => s.urls = value.split(',').map(str::to_owned).collect(),
            "--ns" => s.ns = value.clone(),
            "--id" => s.ids = value.split(',').map(str::to_owned).collect(),
            "--callers" => s.callers = value.parse().expect("number of callers"),
            "--compute-ms" => s.compute = ms(),
            "--lock-timeout-ms" => s.lock_timeout = ms(),
            other => panic!("unknown replica flag {other}"),
        }
    }
    assert!(!s.urls.is_empty() && !s.ids.is_empty(), "--url and --id");
    s
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn replica(args: &[String]) {
    let s = replica_settings(args);
    let cache = Cache::builder(s.ns.clone())
        .exp(Duration::from_secs(60))
        .lock_timeout(s.lock_timeout)
        .backend(connect_cluster(&s.urls).await)
        .build()
        .expect("cache settings");
    let per_key: Arc<Vec<AtomicUsize>> =
        Arc::new(s.ids.iter().map(|_| AtomicUsize::new(0)).collect());
    let ids = Arc::new(s.ids);
    say("READY");

    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("start instant on stdin");
    let start_ms: f64 = line.trim().parse().expect("start instant (unix ms)");
    let wait = start_ms - unix_ms();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
    }

    let mut calls = Vec::with_capacity(s.callers);
    for caller in 0..s.callers {
        let (cache, ids, per_key) = (cache.clone(), ids.clone(), per_key.clone());
        let compute = s.compute;
        calls.push(tokio::spawn(async move {
            let k = caller % ids.len();
            let computed_here = AtomicBool::new(false);
            let started = Instant::now();
            let value: String = cache
                .get_or_compute(&ids[k], || async {
                    per_key[k].fetch_add(1, Ordering::SeqCst);
                    computed_here.store(true, Ordering::SeqCst);
                    say(&format!("COMPUTING {:.3}", unix_ms()));
                    tokio::time::sleep(compute).await;
                    format!("{k}=computed-by-pid-{}", std::process::id())
                })
                .await;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            let role = if computed_here.load(Ordering::SeqCst) {
                "computer"
            } else {
                "waiter"
            };
            (elapsed, unix_ms(), value, role)
        }));
    }
    for call in calls {
        let (elapsed, finished, value, role) = call.await.expect("caller task");
        say(&format!("CALL {elapsed:.3} {finished:.3} {value} {role}"));
    }
    let counts: Vec<usize> = per_key.iter().map(|n| n.load(Ordering::SeqCst)).collect();
    let st = cache.stats();
    say(&format!(
        "DONE computations={} per_key={} hits={} coalesced={} lock_waits={} backend_errors={}",
        counts.iter().sum::<usize>(),
        counts
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(","),
        st.hits,
        st.coalesced,
        st.lock_waits,
        st.backend_errors,
    ));
}
