//! auto_refresh across three replica *processes* on one real Redis: one computation per period
//! in total, and the readers' latency stays that of a GET (nobody waits for a computation).

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atomcache_tests::RedisServer;

#[derive(Debug, Default)]
struct Report {
    computations: u64,
    reads: u64,
    distinct: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

fn parse(line: &str) -> Report {
    let mut r = Report::default();
    for pair in line.split_whitespace() {
        let (k, v) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("bad report {line:?}"));
        let v: u64 = v
            .parse()
            .unwrap_or_else(|_| panic!("bad number in {line:?}"));
        match k {
            "computations" => r.computations = v,
            "reads" => r.reads = v,
            "distinct" => r.distinct = v,
            "p50_us" => r.p50_us = v,
            "p99_us" => r.p99_us = v,
            "max_us" => r.max_us = v,
            _ => panic!("unknown field {k} in {line:?}"),
        }
    }
    r
}

#[test]
fn three_processes_refresh_once_per_period() {
    let server = RedisServer::start();
    let read_for = Duration::from_secs(8);
    let start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 1500;
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_refresh_replica"))
                .args([
                    server.url(),
                    start_ms.to_string(),
                    read_for.as_millis().to_string(),
                ])
                .output_spawn()
        })
        .collect();
    let reports: Vec<Report> = children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().expect("replica ran");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "replica failed: {}\n{stdout}",
                String::from_utf8_lossy(&out.stderr)
            );
            parse(stdout.lines().last().expect("replica printed a report"))
        })
        .collect();

    let computations: u64 = reports.iter().map(|r| r.computations).sum();
    // First fill + one per period of about exp - lock_timeout = 1 s.
    let periods = read_for.as_secs_f64() / 1.0;
    let p99 = reports.iter().map(|r| r.p99_us).max().unwrap();
    println!(
        "auto_refresh, 3 processes: {computations} computations (first fill + {:.2} per period over {periods:.0} periods); \
         readers p50 {} us, p99 {} us, max {} us; {reports:?}",
        (computations.saturating_sub(1)) as f64 / periods,
        reports.iter().map(|r| r.p50_us).max().unwrap(),
        p99,
        reports.iter().map(|r| r.max_us).max().unwrap(),
    );
    assert!(
        computations as f64 <= periods + 3.0,
        "{computations} computations in {periods} periods"
    );
    assert!(
        computations as f64 >= periods - 2.0,
        "only {computations} computations in {periods} periods"
    );
    for r in &reports {
        assert!(r.reads > 100, "{r:?}");
        assert!(
            r.distinct >= 4,
            "values did not change between periods: {r:?}"
        );
        // A reader that waited for a computation would take >= 100 ms (the function sleeps 100 ms).
        assert!(r.p99_us < 100_000, "readers waited for computations: {r:?}");
    }
}

trait SpawnPiped {
    fn output_spawn(&mut self) -> std::process::Child;
}

impl SpawnPiped for Command {
    fn output_spawn(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn refresh_replica")
    }
}
