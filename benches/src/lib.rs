//! Shared code of the atomcache benchmarks: the value every contender reads, the machine
//! description, and the interleaved A/B measurement that turns timings into ratios.
//!
//! Every scenario starts its own `redis-server` (through the tests crate's harness) and measures
//! atomcache and its baseline in the same run, on the same server. On a shared, noisy machine a
//! ratio of two medians measured minutes apart can say anything, so the ratio tables come from
//! [`Paired`]: the contenders run in alternating rounds of equal size, and each one's median per
//! operation is compared with its baseline's.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size in bytes of the string that scenario 1 and 4 read (before the codec and the header).
pub const VALUE_LEN: usize = 1024;

/// The value every contender reads: `len` printable bytes, the same in every run.
pub fn payload(len: usize) -> String {
    (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// `nproc` and the CPU model (from `/proc/cpuinfo`), for the tables.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs, {model}")
}

/// The runtime the contenders run on: what a small service would use (multi-thread, 2 workers).
pub fn runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    )
}

/// Runs `op` `iters` times, one after the other, on a worker of `rt`, and returns the elapsed
/// time. Every contender of a comparison is timed through this function (or
/// [`timed_callers`]), so they pay the same harness overhead.
pub fn timed<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    rt.block_on(async move {
        tokio::spawn(async move {
            let started = Instant::now();
            for i in 0..iters {
                op(i).await;
            }
            started.elapsed()
        })
        .await
        .expect("benchmark task")
    })
}

/// Starts `callers` tasks that each run `op(caller, i)` for `i` in `0..iters`, one call after
/// the other (concurrent callers, as request handlers of a service are), and returns the time
/// until the last one finished.
pub fn timed_callers<F, Fut>(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    callers: usize,
    op: F,
) -> Duration
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    rt.block_on(async move {
        let start = Arc::new(tokio::sync::Barrier::new(callers + 1));
        let mut tasks = Vec::with_capacity(callers);
        for caller in 0..callers {
            let (op, start) = (op.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                for i in 0..iters {
                    op(caller, i).await;
                }
            }));
        }
        start.wait().await;
        let started = Instant::now();
        for task in tasks {
            task.await.expect("benchmark task");
        }
        started.elapsed()
    })
}

/// A timed loop: given a number of iterations, runs them and returns the elapsed time.
pub type Timed = std::rc::Rc<dyn Fn(u64) -> Duration>;

/// Interleaved A/B measurement of several contenders.
///
/// Each round runs every contender for the same number of iterations, in turn (the order
/// rotates each round), and records its time per iteration; the result of a contender is the
/// median over the rounds. Background noise then hits all contenders alike.
pub struct Paired {
    contenders: Vec<(String, Timed)>,
}

impl Default for Paired {
    fn default() -> Self {
        Self::new()
    }
}

impl Paired {
    /// No contenders yet.
    pub fn new() -> Self {
        Paired {
            contenders: Vec::new(),
        }
    }

    /// Adds a contender under `name`.
    pub fn add(&mut self, name: impl Into<String>, timed: Timed) {
        self.contenders.push((name.into(), timed));
    }

    /// Runs `rounds` rounds of `iters` iterations per contender (after one warm-up round) and
    /// returns each contender's median time per iteration.
    pub fn run(&self, rounds: usize, iters: u64) -> Medians {
        let n = self.contenders.len();
        for (_, timed) in &self.contenders {
            timed(iters.div_ceil(4).max(1));
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); n];
        for round in 0..rounds {
            for k in 0..n {
                let idx = (round + k) % n;
                let elapsed = (self.contenders[idx].1)(iters);
                samples[idx].push(elapsed.as_secs_f64() * 1e9 / iters as f64);
            }
        }
        let mut medians = BTreeMap::new();
        for ((name, _), mut s) in self.contenders.iter().zip(samples) {
            s.sort_by(|a, b| a.total_cmp(b));
            medians.insert(name.clone(), s[s.len() / 2]);
        }
        Medians { ns: medians }
    }
}

/// Median nanoseconds per iteration of each contender of a [`Paired`] run.
#[derive(Debug, Clone, Default)]
pub struct Medians {
    /// Contender name → median ns per iteration.
    pub ns: BTreeMap<String, f64>,
}

impl Medians {
    /// The median of one contender.
    pub fn get(&self, name: &str) -> f64 {
        *self
            .ns
            .get(name)
            .unwrap_or_else(|| panic!("no contender named {name:?}"))
    }

    /// Adds the contenders of another run.
    pub fn extend(&mut self, other: Medians) {
        self.ns.extend(other.ns);
    }
}

/// One line of a ratio table: `candidate / baseline`, with an optional goal (maximum ratio).
#[derive(Debug, Clone)]
pub struct Row {
    /// What is compared, for the reader.
    pub label: String,
    /// Contender measured.
    pub candidate: String,
    /// Contender it is compared with.
    pub baseline: String,
    /// The ratio must not exceed this.
    pub goal: Option<f64>,
    /// How many operations one iteration holds (for the per-operation column).
    pub ops_per_iter: f64,
}

impl Row {
    /// `candidate / baseline` for `label`, one operation per iteration, no goal.
    pub fn new(label: impl Into<String>, candidate: &str, baseline: &str) -> Self {
        Row {
            label: label.into(),
            candidate: candidate.to_owned(),
            baseline: baseline.to_owned(),
            goal: None,
            ops_per_iter: 1.0,
        }
    }

    /// Sets the goal (largest acceptable ratio).
    pub fn goal(mut self, max_ratio: f64) -> Self {
        self.goal = Some(max_ratio);
        self
    }

    /// Sets how many operations one iteration holds.
    pub fn ops(mut self, ops_per_iter: usize) -> Self {
        self.ops_per_iter = ops_per_iter as f64;
        self
    }
}

/// Warns when one-caller round trips of the contenders differ by more than 3×: on a virtual
/// machine an idle vCPU halts between round trips, and a connection then answers in ~60 µs
/// instead of ~9 µs depending on which threads its tasks landed on. Such a ratio measures task
/// placement, not the library; the CPU-bound rows and the instruction counts
/// (`profile_hit` under callgrind) still hold.
pub fn warn_bimodal(medians: &Medians, names: &[&str]) {
    let times: Vec<f64> = names.iter().map(|n| medians.get(n)).collect();
    let (min, max) = times
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    if max > 3.0 * min {
        println!(
            "WARNING: the one-caller round trips differ by {:.1}× ({}): a placement artifact of this machine (see BENCHMARKS.md), not a property of the contenders; run again",
            max / min,
            names
                .iter()
                .zip(&times)
                .map(|(n, t)| format!("{n} {}", fmt_ns(*t)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Formats nanoseconds for a table.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Prints a Markdown table of ratios (what BENCHMARKS.md shows) and returns whether every goal
/// was met.
pub fn print_ratios(title: &str, medians: &Medians, rows: &[Row]) -> bool {
    println!();
    println!("### {title}");
    println!();
    println!("| scenario | measured (per op) | baseline (per op) | ratio | goal |");
    println!("|---|---|---|---|---|");
    let mut all_met = true;
    for row in rows {
        let c = medians.get(&row.candidate) / row.ops_per_iter;
        let b = medians.get(&row.baseline) / row.ops_per_iter;
        let ratio = c / b;
        let goal = match row.goal {
            Some(max) if ratio <= max => format!("≤ {max:.2}× met"),
            Some(max) => {
                all_met = false;
                format!("≤ {max:.2}× **missed**")
            }
            None => "—".to_owned(),
        };
        println!(
            "| {} | {} `{}` | {} `{}` | **{ratio:.2}×** | {goal} |",
            row.label,
            fmt_ns(c),
            row.candidate,
            fmt_ns(b),
            row.baseline
        );
    }
    println!();
    all_met
}

/// Prints the header every scenario starts with: what, where, when.
pub fn print_header(scenario: &str) {
    println!("## {scenario}");
    println!();
    println!("machine: {}", machine());
    println!("redis-server: {}", redis_version());
    println!("unix time: {}", unix_secs());
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn redis_version() -> String {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A raw multiplexed connection (the baseline client), with the same timeouts atomcache uses.
pub async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    redis::Client::open(url)
        .expect("redis URL")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("raw connection")
}

/// Whether the benchmark binary was asked for a quick smoke run (`--quick` or
/// `ATOMCACHE_BENCH_QUICK=1`): fewer rounds, for checking that everything still runs.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
        || std::env::var("ATOMCACHE_BENCH_QUICK").is_ok_and(|v| v == "1")
}
