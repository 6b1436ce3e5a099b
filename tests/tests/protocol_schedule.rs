//! Seeded, randomized schedules of the lease protocol, checked against its invariants.
//!
//! Every schedule builds 2–5 simulated replicas over ONE [`MemoryBackend`] (the shared
//! "Redis"; its wake-up hub plays pub/sub). Each replica is its own [`Cache`] (so its own
//! single-flight table, like a separate process) over its own [`Delayed`] backend, which sleeps
//! a random latency before and after every call (the request and the response legs, sometimes
//! zero, sometimes a spike) drawn from an RNG stream derived from the schedule's seed. Callers
//! (1–8 per replica and key, 1–3 keys) arrive at random times, often right around the end of
//! the computation; computations take from a twentieth of `lock_timeout` to four times it.
//!
//! Time is virtual: each schedule runs on its own current-thread runtime with tokio's clock
//! paused, so latencies, computations, leases and `max_wait` are sleeps and deadlines that cost
//! nothing, and thousands of schedules run in seconds (the memory backend and the locked path
//! measure lease lifetimes and `max_wait` on tokio's clock, so they follow the paused clock).
//!
//! `lock_timeout` is random from 50 ms to 3 s (log-uniform), so it is sometimes short relative
//! to the latency (legs of up to 5 ms, with spikes of up to 100 ms in some schedules). A lease
//! of at least 10 one-way latencies cannot lapse under a live holder (it renews every third of
//! it): with such a *long lease* the scenarios assert exactly the computations the protocol
//! promises. With a *short lease* a live holder may lose its lease to a latency spike (its
//! renewal or its store arrives after the lease lapsed): then one waiter takes over and
//! computes again, and the first value is refused by the store (`Stats::leases_lost`). So with
//! a short lease the scenarios assert instead that every extra computation is accounted for by
//! a lapsed lease, that a value reaches other callers only if it was stored, and the time
//! bounds, widened by one computation per lapsed lease. In every schedule, the shared store's
//! answers are checked against a log of the leases as the store saw them: a lease is granted
//! only when the previous one ended or lapsed, and a renewal or a store is accepted exactly
//! when the caller's lease is current (so at most one value is stored per lease).
//!
//! The scenarios (one `#[test]` each) and what they check:
//!
//! - `all_succeed`: exactly one computation per key (long leases), every caller gets its value,
//!   and every caller is answered within a few latencies of the end of that computation (no
//!   lost wake-up, no wait for a lease to lapse).
//! - `invalidate_or_set_mid_flight`: a controller changes the data (a generation counter) and
//!   then calls `invalidate` or `set` while computations may be in flight. A caller that starts
//!   after that returned never gets a value computed from older data, a refused value reaches
//!   no caller but its own, and the entry left at the end is absent or of the latest
//!   generation. Extra computations are counted, not limited (a revoked lease legitimately
//!   costs one).
//! - `failures_do_not_queue`: computations fail (always, or at random); in one wave of callers
//!   each replica computes at most once (plus one per lease of its that lapsed), everyone is
//!   answered within about two computation times, and `Ok` answers are values that were
//!   computed.
//! - `cancelled_holder`: the first holder's caller is cancelled mid-computation: exactly one
//!   takeover computation, which starts only after the cancellation, everyone else gets its
//!   value, promptly.
//! - `frozen_holder`: a lease is taken and never renewed, stored nor released: exactly one
//!   takeover, never before the lease lapsed, everyone gets its value within the lapse +
//!   `WAIT_MARGIN` + one computation + a few latencies.
//! - `max_wait_bounds_every_wait`: a live holder renews its lease forever (its computation
//!   takes 10 × `max_wait`, `max_wait` 100 ms–2 s): every other caller, in any replica, gives
//!   up after `max_wait` (never before) and is answered within `max_wait` + one computation of
//!   its own + a few latencies; `Stats::max_waits` counts the flights that gave up; their
//!   values are not stored, the holder's is.
//!
//! Reproducing: a failure panics with the seed, the schedule's parameters and the trace of the
//! failing key (virtual milliseconds since the start; `db` lines are backend calls as the shared
//! store saw them, tokens shortened). Re-run one seed with
//! `ATOMCACHE_SCHEDULE_SEED=0x… cargo test -p atomcache-tests --test protocol_schedule
//! <scenario> -- --nocapture`. `ATOMCACHE_SCHEDULES=n` sets the number of schedules per
//! scenario (default 1000, half of it for `max_wait_bounds_every_wait`, whose holders run
//! long); `ATOMCACHE_SCHEDULE_BASE=n` explores another family of seeds (the default is fixed,
//! so a run is repeatable). A replay is exact up to tokio's random tie-breaking in `select!`.

// `k` is a key's index into several per-key tables at once (shape, plans, stores).
#![allow(clippy::needless_range_loop)]

use std::fmt::Write as _;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atomcache::codec::HEADER_LEN;
use atomcache::{
    Backend, Bincode, Cache, Codec, EntryKey, Error, LeaseAttempt, Lookup, MemoryBackend, Release,
    Subscription,
};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

/// What every computation returns: `(key, computation number)`, or `(generation, number)` in
/// the invalidation scenario.
type Val = (u64, u64);

const NAMESPACE: &str = "sched";
const MAX_KEYS: usize = 3;
/// Values never expire during a schedule.
const EXP: Duration = Duration::from_secs(3600);
/// Nobody gives up waiting during a schedule (except in `max_wait_bounds_every_wait`).
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// The range of `lock_timeout` (log-uniform).
const MIN_LEASE: Duration = Duration::from_millis(50);
const MAX_LEASE: Duration = Duration::from_secs(3);
/// A lease of at least this many one-way latencies cannot lapse under a live holder: it renews
/// every third of the lease, and in the worst case (the response granting the lease, a renewal
/// cut short by the end of the computation, and the store, each one latency) the store reaches
/// the backend 4.5 latencies + a third of the lease after the lease was granted or renewed.
const LONG_LEASE_LATENCIES: u32 = 10;
/// A virtual schedule that has not finished after this long hangs.
const VIRTUAL_CAP: Duration = Duration::from_secs(3 * 3600);
/// Tokio's timer fires on millisecond ticks: a sleep may end up to one tick late.
const TIMER_TICK: Duration = Duration::from_millis(1);
/// The waiter's margin after a holder's lease (`WAIT_MARGIN` in `store.rs`).
const WAIT_MARGIN: Duration = Duration::from_millis(25);

const DEFAULT_SCHEDULES: usize = 1000;
const DEFAULT_BASE: u64 = 0x5EED_A70C_CAC4_E001;
const SEED_ENV: &str = "ATOMCACHE_SCHEDULE_SEED";
const COUNT_ENV: &str = "ATOMCACHE_SCHEDULES";
const BASE_ENV: &str = "ATOMCACHE_SCHEDULE_BASE";
/// A scenario stops after this many failing seeds (each printed).
const MAX_FAILING_SEEDS: usize = 3;
/// Trace lines printed for a failure.
const TRACE_LINES: usize = 160;

// ---------------------------------------------------------------------------------------------
// The scenarios.

#[test]
fn all_succeed() {
    run_virtual("all_succeed", 1, schedule_count(), schedule_all_succeed);
}

#[test]
fn invalidate_or_set_mid_flight() {
    run_virtual(
        "invalidate_or_set_mid_flight",
        2,
        schedule_count(),
        schedule_invalidate_or_set,
    );
}

#[test]
fn failures_do_not_queue() {
    run_virtual(
        "failures_do_not_queue",
        3,
        schedule_count(),
        schedule_failures,
    );
}

#[test]
fn cancelled_holder() {
    run_virtual(
        "cancelled_holder",
        4,
        schedule_count(),
        schedule_cancelled_holder,
    );
}

#[test]
fn frozen_holder() {
    run_virtual("frozen_holder", 5, schedule_count(), schedule_frozen_holder);
}

#[test]
fn max_wait_bounds_every_wait() {
    // Half as many: its holders compute long, and the waiters look again at every renewal.
    let count = schedule_count().div_ceil(2);
    run_virtual("max_wait_bounds_every_wait", 6, count, schedule_max_wait);
}

/// All computations succeed, nothing is invalidated.
async fn schedule_all_succeed(seed: u64, trace: Arc<Trace>) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let shape = Shape::random(&mut rng);
    let world = World::new(seed, &shape, &trace);
    let ctx = Ctx::new(&trace);
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for k in 0..shape.keys {
        let c = shape.compute[k];
        for r in 0..shape.replicas {
            for i in 0..shape.callers[r][k] {
                // A third arrive right around the end of the computation (the store races
                // with their lookups), the others anywhere until well after it.
                let at = if rng.chance(0.3) {
                    (c + ms(10.0)).saturating_sub(rng.between(Duration::ZERO, ms(20.0)))
                } else {
                    rng.between(Duration::ZERO, c.mul_f64(1.3) + ms(50.0))
                };
                let (cache, ctx, who) = (world.caches[r].clone(), ctx.clone(), who(r, i));
                let name = who.clone();
                handles.push(spawn_caller(
                    &trace,
                    k,
                    r,
                    who,
                    t0 + at,
                    move || async move {
                        cache
                            .get_or_compute(&key_id(k), move || compute_value(ctx, k, name, c))
                            .await
                    },
                ));
            }
        }
    }
    let calls = join_all(handles).await?;

    let mut problems = Problems::default();
    world.check_stats(&shape, &mut problems);
    let legs = |n| shape.latency.legs(n);
    let mut computations = 0;
    let mut lapsed_total = 0;
    for k in 0..shape.keys {
        let c = shape.compute[k];
        let runs = ctx.runs_of(k);
        computations += runs.len();
        let lapsed = world.lapsed(k).len();
        lapsed_total += lapsed;
        // Every computation holds a lease, and every lease but the one that stored lapsed
        // under its live holder (with a long lease, none does: `check_stats`).
        check_runs_per_lapse(&mut problems, k, &shape, runs.len(), 1, lapsed);
        let stored = world.stored_values(k);
        // Values never expire: exactly one store, whatever lapsed before it.
        problems.check(Some(k), stored.len() == 1, || {
            format!("{} values stored ({stored:?}), expected 1", stored.len())
        });
        let Some(&value) = stored.first() else {
            continue;
        };
        problems.check(
            Some(k),
            !shape.long_lease() || value == (k as u64, 0),
            || format!("the value stored is {value:?}, expected {:?}", (k, 0)),
        );
        let Some(run) = runs.iter().find(|r| r.n as u64 == value.1) else {
            problems.push(
                Some(k),
                format!("no computation produced the stored {value:?}"),
            );
            continue;
        };
        let end = run.end.unwrap_or(Duration::MAX);
        let mine: Vec<&Call<Val>> = calls.iter().filter(|c| c.key == k).collect();
        let first = mine.iter().map(|c| c.arrive).min().unwrap_or_default();
        // The first caller's GET and lease look are two round trips.
        if let Some(first_run) = runs.first() {
            problems.check(Some(k), first_run.start <= first + legs(4), || {
                format!(
                    "the computation started at {}, more than 4 latencies after the first \
                     caller ({})",
                    show(first_run.start),
                    show(first)
                )
            });
        }
        for call in &mine {
            check_provenance(&mut problems, k, call, &runs, &stored);
            // After the computation ends: the store reaches the backend and wakes the waiters
            // (1 leg); a waiter finishes the call it is in (1), subscribes if it had not yet
            // (2) and looks again (2); a caller that arrives at that moment also pays its GET
            // (2). So 8 latencies after the end of the computation, or after the caller's
            // arrival if later, everyone has the value. A lost wake-up would cost a whole
            // lease, more. Each lease that lapsed under a live holder may have cost a takeover.
            let bound =
                end.saturating_sub(call.arrive) + legs(8) + shape.per_lapse(c) * lapsed as u32;
            problems.check(Some(k), call.waited() <= bound, || {
                format!(
                    "{} (arrived {}) waited {}, more than {} (the stored computation ended at \
                     {}; {lapsed} lease(s) lapsed)",
                    call.who,
                    show(call.arrive),
                    show(call.waited()),
                    show(bound),
                    show(end)
                )
            });
        }
        let last = world.stored(k).await?;
        problems.check(Some(k), last == Some(value), || {
            format!("the entry left is {last:?}, expected {value:?}")
        });
    }
    // Every lapsed lease was a value refused by the store, counted as lost.
    let lost = world.stat(|s| s.leases_lost);
    problems.check(None, lost == lapsed_total as u64, || {
        format!(
            "Stats::leases_lost sums to {lost}, but {lapsed_total} leases lapsed under their \
             holder"
        )
    });
    let summary = world.summary(&shape, calls.len(), computations, shape.keys);
    problems.finish(&trace, &shape.describe(), summary)
}

/// With a long lease, exactly `expected` computations; with a short one, one more per lease
/// that lapsed under its live holder (a lapsed lease is taken over and computed again).
fn check_runs_per_lapse(
    problems: &mut Problems,
    k: usize,
    shape: &Shape,
    runs: usize,
    expected: usize,
    lapsed: usize,
) {
    problems.check(Some(k), runs == expected + lapsed, || {
        if shape.long_lease() {
            format!("{runs} computations, expected exactly {expected}")
        } else {
            format!(
                "{runs} computations, expected {expected} + one per lease that lapsed under \
                 its holder ({lapsed})"
            )
        }
    });
}

/// A value reaches a caller only if it was stored, or if the caller computed it itself (a
/// holder whose store was refused gets its own value; its followers look again).
fn check_provenance(
    problems: &mut Problems,
    k: usize,
    call: &Call<Val>,
    runs: &[Run],
    stored: &[Val],
) {
    if stored.contains(&call.out) {
        return;
    }
    let own = runs
        .iter()
        .any(|r| r.n as u64 == call.out.1 && r.who == call.who);
    problems.check(Some(k), own, || {
        format!(
            "{} got {:?}, which was never stored and is not its own computation (a value the \
             store refused reached another caller)",
            call.who, call.out
        )
    });
}

/// `invalidate`/`set` while computations are in flight.
async fn schedule_invalidate_or_set(seed: u64, trace: Arc<Trace>) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let shape = Shape::random(&mut rng);
    let world = World::new(seed, &shape, &trace);
    let ctx = Ctx::new(&trace);
    let gens: Vec<Arc<AtomicU64>> = (0..shape.keys).map(|_| Arc::default()).collect();
    let actions: Arc<Mutex<Vec<Action>>> = Arc::default();
    let t0 = Instant::now();
    let mut controllers = Vec::new();
    let mut handles = Vec::new();
    let mut action_params = Vec::new();
    for k in 0..shape.keys {
        let c = shape.compute[k];
        let mut plan: Vec<(Duration, ActionKind, usize)> = (0..rng.range(1, 2))
            .map(|_| {
                let at = rng.between(Duration::ZERO, c.mul_f64(1.5) + ms(20.0));
                let kind = if rng.chance(0.5) {
                    ActionKind::Invalidate
                } else {
                    ActionKind::Set
                };
                (at, kind, rng.range(0, shape.replicas - 1))
            })
            .collect();
        plan.sort_by_key(|p| p.0);
        action_params.push(format!(
            "k{k}: {}",
            plan.iter()
                .map(|(at, kind, r)| format!("{kind} via r{r} at {}", show(*at)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let last = plan.last().map(|p| p.0).unwrap_or_default();
        let caches = world.caches.clone();
        let (gen, actions, trace2) = (gens[k].clone(), actions.clone(), trace.clone());
        let times: Vec<Duration> = plan.iter().map(|p| p.0).collect();
        controllers.push(tokio::spawn(async move {
            for (at, kind, r) in plan {
                sleep_until(t0 + at).await;
                // The data changes first, then the cache is told.
                let gen = gen.fetch_add(1, SeqCst) + 1;
                let who = format!("ctl@r{r}");
                trace2.log(Some(k), &who, format!("data changes to gen {gen}; {kind}"));
                let id = key_id(k);
                let done = match kind {
                    ActionKind::Invalidate => caches[r].invalidate(&id).await,
                    ActionKind::Set => caches[r].set(&id, &(gen, SET_MARK + gen)).await,
                };
                done.map_err(|e| format!("{kind} failed: {e}"))?;
                let done_seq = trace2.log(Some(k), &who, format!("{kind} returned"));
                actions.lock().unwrap().push(Action {
                    key: k,
                    gen,
                    kind,
                    replica: r,
                    done: trace2.now(),
                    done_seq,
                });
            }
            Ok::<(), String>(())
        }));
        for r in 0..shape.replicas {
            for i in 0..shape.callers[r][k] {
                // A quarter arrive right around an invalidation (the racy window), the others
                // anywhere until well after the last one.
                let at = if rng.chance(0.25) {
                    let near = times[rng.range(0, times.len() - 1)];
                    (near + ms(8.0)).saturating_sub(rng.between(Duration::ZERO, ms(16.0)))
                } else {
                    rng.between(Duration::ZERO, last + c.mul_f64(1.2) + ms(50.0))
                };
                let (cache, ctx, who) = (world.caches[r].clone(), ctx.clone(), who(r, i));
                let (name, gen) = (who.clone(), gens[k].clone());
                handles.push(spawn_caller(
                    &trace,
                    k,
                    r,
                    who,
                    t0 + at,
                    move || async move {
                        cache
                            .get_or_compute(&key_id(k), move || {
                                compute_from_data(ctx, k, name, c, gen)
                            })
                            .await
                    },
                ));
            }
        }
    }
    for outcome in join_all(controllers).await? {
        outcome?;
    }
    let calls = join_all(handles).await?;
    let actions = actions.lock().unwrap().clone();

    let mut problems = Problems::default();
    world.check_stats(&shape, &mut problems);
    let mut stale_window = 0;
    let mut computations = 0;
    let leg = shape.latency.legs(1);
    for k in 0..shape.keys {
        let runs = ctx.runs_of(k);
        computations += runs.len();
        let stored = world.stored_values(k);
        for call in calls.iter().filter(|c| c.key == k) {
            check_provenance(&mut problems, k, call, &runs, &stored);
            let (gen, _) = call.out;
            for a in actions
                .iter()
                .filter(|a| a.key == k && a.done_seq < call.arrive_seq)
            {
                if gen >= a.gen {
                    continue;
                }
                // In the replica that invalidated, its flight was detached: strict. In another
                // replica, a caller that starts during the response leg of a GET (or store)
                // that reached the backend just BEFORE the invalidation can join that flight
                // and get its pre-invalidation value: the protocol does not (cannot, without a
                // cross-replica detach) prevent it, and the window ends one latency after the
                // invalidation returned. Such answers are counted and reported, not failed.
                if a.replica == call.replica || call.arrive > a.done + leg {
                    problems.push(
                        Some(k),
                        format!(
                            "{} started at {} (after {} of gen {} via r{} returned at {}) and got \
                             {:?}, computed from gen {gen}",
                            call.who,
                            show(call.arrive),
                            a.kind,
                            a.gen,
                            a.replica,
                            show(a.done),
                            call.out
                        ),
                    );
                } else {
                    stale_window += 1;
                }
            }
        }
        let latest = gens[k].load(SeqCst);
        let last = world.stored(k).await?;
        problems.check(Some(k), last.is_none_or(|(g, _)| g == latest), || {
            format!("the entry left is {last:?}, but the data is at gen {latest}")
        });
    }
    let mut summary = world.summary(&shape, calls.len(), computations, shape.keys);
    summary.stale_window = stale_window;
    let describe = format!(
        "{}; actions: {}",
        shape.describe(),
        action_params.join("; ")
    );
    problems.finish(&trace, &describe, summary)
}

/// Failing computations, one wave of callers.
async fn schedule_failures(seed: u64, trace: Arc<Trace>) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let shape = Shape::random(&mut rng);
    let p_fail = [1.0, 1.0, 0.7, 0.3][rng.range(0, 3)];
    let world = World::new(seed, &shape, &trace);
    let ctx = Ctx::new(&trace);
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for k in 0..shape.keys {
        let c = shape.compute[k];
        let fate = Arc::new(Mutex::new(rng.fork(100 + k as u64)));
        for r in 0..shape.replicas {
            for i in 0..shape.callers[r][k] {
                // One wave: everyone arrives before the first computation can end.
                let at = rng.between(Duration::ZERO, c);
                let (cache, ctx, who) = (world.caches[r].clone(), ctx.clone(), who(r, i));
                let (name, fate) = (who.clone(), fate.clone());
                handles.push(spawn_caller(
                    &trace,
                    k,
                    r,
                    who,
                    t0 + at,
                    move || async move {
                        cache
                            .try_get_or_compute(&key_id(k), move || {
                                compute_fallible(ctx, k, name, c, p_fail, fate)
                            })
                            .await
                    },
                ));
            }
        }
    }
    let calls = join_all(handles).await?;

    let mut problems = Problems::default();
    world.check_stats(&shape, &mut problems);
    let mut computations = 0;
    let legs = |n| shape.latency.legs(n);
    for k in 0..shape.keys {
        let c = shape.compute[k];
        let runs = ctx.runs_of(k);
        computations += runs.len();
        let lapsed = world.lapsed(k);
        // Every replica's callers all joined one flight (they arrived before any computation
        // could end); a flight computes once: under the lease, or on its own after the lease
        // it followed failed (never queueing behind the next holder); its followers share the
        // `Err`. So at most one computation per replica, and at most `replicas` in all. A
        // lease that lapsed under its live holder (short leases only) sends the followers of
        // its successful computation round again: one more in that replica.
        problems.check(Some(k), runs.len() <= shape.replicas + lapsed.len(), || {
            format!(
                "{} computations for {} replicas in one wave ({} lease(s) lapsed)",
                runs.len(),
                shape.replicas,
                lapsed.len()
            )
        });
        for r in 0..shape.replicas {
            let prefix = format!("r{r}c");
            let here = runs
                .iter()
                .filter(|run| run.who.starts_with(&prefix))
                .count();
            let lapsed_here = lapsed.iter().filter(|l| l.replica == Some(r)).count();
            problems.check(Some(k), here <= 1 + lapsed_here, || {
                format!(
                    "replica r{r} computed {here} times in one wave ({lapsed_here} of its \
                     leases lapsed)"
                )
            });
        }
        let ok_values: Vec<Val> = runs
            .iter()
            .filter(|run| run.ok == Some(true))
            .map(|run| (k as u64, run.n as u64))
            .collect();
        for call in calls.iter().filter(|c| c.key == k) {
            match &call.out {
                Ok(v) => problems.check(Some(k), ok_values.contains(v), || {
                    format!("{} got Ok({v:?}), which no computation returned", call.who)
                }),
                Err(e) => problems.check(Some(k), runs.iter().any(|r| r.error() == *e), || {
                    format!("{} got Err({e:?}), which no computation returned", call.who)
                }),
            }
            // The computation a caller waits for ends within one computation time of its
            // arrival (plus its GET and look, 4 latencies); the failure reaches the backend
            // and wakes the waiters (1), who finish their call (1), subscribe (2) and look (2);
            // then one more computation (under the next lease or on their own) and its store
            // (2). A queue behind the next holder would cost a third computation time. Each
            // lease that lapsed under its live holder may have cost a takeover.
            let bound = c * 2 + legs(14) + shape.per_lapse(c) * lapsed.len() as u32;
            problems.check(Some(k), call.waited() <= bound, || {
                format!(
                    "{} (arrived {}) waited {}, more than 2 × {} + 14 latencies{} = {}",
                    call.who,
                    show(call.arrive),
                    show(call.waited()),
                    show(c),
                    if lapsed.is_empty() {
                        String::new()
                    } else {
                        format!(" + {} × a takeover", lapsed.len())
                    },
                    show(bound)
                )
            });
        }
        let stores = world.stores(k);
        problems.check(Some(k), stores <= 1, || {
            format!("{stores} values stored in one wave, expected at most 1")
        });
        let last = world.stored(k).await?;
        problems.check(
            Some(k),
            match last {
                None => stores == 0,
                Some(v) => stores == 1 && ok_values.contains(&v),
            },
            || format!("the entry left is {last:?} after {stores} stores"),
        );
    }
    let summary = world.summary(&shape, calls.len(), computations, shape.keys);
    problems.finish(
        &trace,
        &format!("{}; p_fail {p_fail}", shape.describe()),
        summary,
    )
}

/// The first holder's caller is cancelled during its computation.
async fn schedule_cancelled_holder(seed: u64, trace: Arc<Trace>) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let shape = Shape::random(&mut rng);
    let world = World::new(seed, &shape, &trace);
    let ctx = Ctx::new(&trace);
    let mut orchestrators = Vec::new();
    let mut plans = Vec::new();
    for k in 0..shape.keys {
        let c = shape.compute[k];
        let doomed_replica = rng.range(0, shape.replicas - 1);
        // Cancelled strictly before the computation would end (with room for the timer tick).
        let cancel_after = rng.between(Duration::ZERO, c.saturating_sub(ms(2.0)));
        plans.push(format!(
            "k{k}: holder r{doomed_replica}c0 cancelled {} into its computation",
            show(cancel_after)
        ));
        // The others arrive once the doomed caller holds the lease and computes: some right
        // around the cancellation, the others until well after the takeover.
        let mut others = Vec::new();
        for r in 0..shape.replicas {
            let first = usize::from(r == doomed_replica);
            for i in first..first + shape.callers[r][k] {
                let at = if rng.chance(0.3) {
                    (cancel_after + ms(5.0)).saturating_sub(rng.between(Duration::ZERO, ms(10.0)))
                } else {
                    rng.between(Duration::ZERO, cancel_after + c.mul_f64(1.2) + ms(20.0))
                };
                others.push((r, i, at));
            }
        }
        let (caches, ctx, trace) = (world.caches.clone(), ctx.clone(), trace.clone());
        orchestrators.push(tokio::spawn(async move {
            let (started_tx, started_rx) = tokio::sync::oneshot::channel();
            let doomed = {
                let (cache, ctx) = (caches[doomed_replica].clone(), ctx.clone());
                let who = who(doomed_replica, 0);
                let trace = trace.clone();
                tokio::spawn(async move {
                    trace.log(Some(k), &who, "calls (will be cancelled)");
                    cache
                        .get_or_compute(&key_id(k), move || async move {
                            let n = ctx.start_run(k, &who);
                            let _ = started_tx.send(());
                            sleep(c).await;
                            ctx.end_run(k, n, true, "returns (it should have been cancelled)");
                            (k as u64, n as u64)
                        })
                        .await
                })
            };
            if started_rx.await.is_err() {
                return Err("the doomed caller never computed (did it not get the lease?)".into());
            }
            let started = Instant::now();
            let mut handles = Vec::new();
            for (r, i, at) in others {
                let (cache, ctx, who) = (caches[r].clone(), ctx.clone(), who(r, i));
                let name = who.clone();
                handles.push(spawn_caller(
                    &trace,
                    k,
                    r,
                    who,
                    started + at,
                    move || async move {
                        cache
                            .get_or_compute(&key_id(k), move || compute_value(ctx, k, name, c))
                            .await
                    },
                ));
            }
            sleep(cancel_after).await;
            doomed.abort();
            let cancelled = trace.now();
            trace.log(Some(k), "ctl", "cancels the holder's caller");
            if let Ok(out) = doomed.await {
                return Err(format!(
                    "the doomed caller returned {out:?} before it was cancelled"
                ));
            }
            Ok((join_all(handles).await?, cancelled))
        }));
    }
    let mut calls = Vec::new();
    let mut cancelled_at = Vec::new();
    for outcome in join_all(orchestrators).await? {
        let (mine, at) = outcome?;
        calls.extend(mine);
        cancelled_at.push(at);
    }

    let mut problems = Problems::default();
    world.check_stats(&shape, &mut problems);
    let legs = |n| shape.latency.legs(n);
    let mut computations = 0;
    for k in 0..shape.keys {
        let c = shape.compute[k];
        let runs = ctx.runs_of(k);
        computations += runs.len();
        let cancelled = cancelled_at[k];
        // The doomed holder took the first lease (the others started after it computed). It
        // is released when the holder is cancelled, unless it lapsed first (short leases).
        let leases = world.books.leases_of(k);
        let doomed_lapse = leases
            .first()
            .and_then(|l| l.end)
            .filter(|(_, how)| *how == LeaseEnd::Lapsed)
            .map(|(at, _)| at);
        let lapsed = world.lapsed(k).len() - usize::from(doomed_lapse.is_some());
        check_runs_per_lapse(&mut problems, k, &shape, runs.len(), 2, lapsed);
        problems.check(
            Some(k),
            runs.first().is_some_and(|r| r.end.is_none()),
            || "the cancelled computation ran to its end".to_string(),
        );
        let Some(takeover) = runs.get(1) else {
            continue;
        };
        let mine: Vec<&Call<Val>> = calls.iter().filter(|c| c.key == k).collect();
        let first = mine.iter().map(|c| c.arrive).min().unwrap_or_default();
        // Nobody computes while the holder is alive; once it is cancelled, its lease is
        // released (1 latency) and wakes the waiters, who finish their call (1), subscribe
        // (2) and look (2), one taking the lease (its answer: 1 more); the cancelled holder's
        // in-process followers also pay a GET (2). With no waiter yet, the first caller
        // after the cancellation takes it within its GET and look (4). If its lease lapsed
        // instead, nobody is woken: the waiters look `WAIT_MARGIN` after the lapse.
        let (not_before, latest_start) = match doomed_lapse {
            None => (cancelled, cancelled.max(first) + legs(10)),
            Some(lapse) => (
                lapse,
                first.max(lapse + WAIT_MARGIN + TIMER_TICK * 2) + legs(10),
            ),
        };
        problems.check(Some(k), takeover.start >= not_before, || {
            format!(
                "the takeover started at {}, before the holder was cancelled at {} (its lease \
                 lapsed at {:?})",
                show(takeover.start),
                show(cancelled),
                doomed_lapse.map(show)
            )
        });
        problems.check(Some(k), takeover.start <= latest_start, || {
            format!(
                "the takeover started at {}, later than {} (cancelled at {}, first other caller \
                 at {})",
                show(takeover.start),
                show(latest_start),
                show(cancelled),
                show(first)
            )
        });
        let stored = world.stored_values(k);
        problems.check(Some(k), stored.len() == 1, || {
            format!("{} values stored ({stored:?}), expected 1", stored.len())
        });
        let Some(&value) = stored.first() else {
            continue;
        };
        problems.check(
            Some(k),
            !shape.long_lease() || value == (k as u64, 1),
            || {
                format!(
                    "the value stored is {value:?}, expected the takeover's {:?}",
                    (k, 1)
                )
            },
        );
        let end = runs
            .iter()
            .find(|r| r.n as u64 == value.1)
            .and_then(|r| r.end)
            .unwrap_or(Duration::MAX);
        for call in &mine {
            check_provenance(&mut problems, k, call, &runs, &stored);
            let bound =
                end.saturating_sub(call.arrive) + legs(8) + shape.per_lapse(c) * lapsed as u32;
            problems.check(Some(k), call.waited() <= bound, || {
                format!(
                    "{} (arrived {}) waited {}, more than {} (the stored computation ended at \
                     {}; {lapsed} lease(s) lapsed)",
                    call.who,
                    show(call.arrive),
                    show(call.waited()),
                    show(bound),
                    show(end)
                )
            });
        }
        let last = world.stored(k).await?;
        problems.check(Some(k), last == Some(value), || {
            format!("the entry left is {last:?}, expected {value:?}")
        });
    }
    let summary = world.summary(&shape, calls.len(), computations, 2 * shape.keys);
    problems.finish(
        &trace,
        &format!("{}; {}", shape.describe(), plans.join("; ")),
        summary,
    )
}

/// A holder that took the lease and froze: it never renews, stores nor releases it.
async fn schedule_frozen_holder(seed: u64, trace: Arc<Trace>) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let shape = Shape::random(&mut rng);
    let world = World::new(seed, &shape, &trace);
    let ctx = Ctx::new(&trace);
    let lease = shape.lease;
    let t0 = Instant::now();
    let mut frozen_at = Vec::new();
    for k in 0..shape.keys {
        frozen_at.push(world.freeze(k, lease).await?);
    }
    let mut handles = Vec::new();
    for k in 0..shape.keys {
        let c = shape.compute[k];
        for r in 0..shape.replicas {
            for i in 0..shape.callers[r][k] {
                // Most arrive while the frozen lease lives, some right around its lapse, the
                // others after it (before, during and after the takeover).
                let at = match rng.range(0, 9) {
                    0..=6 => rng.between(Duration::ZERO, lease.mul_f64(0.95)),
                    7 => (lease + ms(5.0)).saturating_sub(rng.between(Duration::ZERO, ms(10.0))),
                    _ => rng.between(lease, lease + WAIT_MARGIN + c.mul_f64(1.2) + ms(20.0)),
                };
                let (cache, ctx, who) = (world.caches[r].clone(), ctx.clone(), who(r, i));
                let name = who.clone();
                handles.push(spawn_caller(
                    &trace,
                    k,
                    r,
                    who,
                    t0 + at,
                    move || async move {
                        cache
                            .get_or_compute(&key_id(k), move || compute_value(ctx, k, name, c))
                            .await
                    },
                ));
            }
        }
    }
    let calls = join_all(handles).await?;

    let mut problems = Problems::default();
    world.check_stats(&shape, &mut problems);
    let legs = |n| shape.latency.legs(n);
    let mut computations = 0;
    let mut lapsed_total = 0;
    for k in 0..shape.keys {
        let c = shape.compute[k];
        let runs = ctx.runs_of(k);
        computations += runs.len();
        let lapse = frozen_at[k] + lease;
        let frozen_end = world.books.leases_of(k).first().and_then(|l| l.end);
        problems.check(
            Some(k),
            frozen_end == Some((lapse, LeaseEnd::Lapsed)),
            || {
                format!(
                    "the frozen lease ended {frozen_end:?}, expected to lapse at {}",
                    show(lapse)
                )
            },
        );
        // Exactly one takeover; with a short lease, one more per takeover whose lease lapsed.
        let lapsed = world.lapsed(k).len();
        lapsed_total += lapsed;
        check_runs_per_lapse(&mut problems, k, &shape, runs.len(), 1, lapsed);
        let Some(takeover) = runs.first() else {
            continue;
        };
        problems.check(Some(k), takeover.start >= lapse, || {
            format!(
                "the takeover started at {}, before the frozen lease lapsed at {}",
                show(takeover.start),
                show(lapse)
            )
        });
        let stored = world.stored_values(k);
        problems.check(Some(k), stored.len() == 1, || {
            format!("{} values stored ({stored:?}), expected 1", stored.len())
        });
        let Some(&value) = stored.first() else {
            continue;
        };
        problems.check(
            Some(k),
            !shape.long_lease() || value == (k as u64, 0),
            || {
                format!(
                    "the value stored is {value:?}, expected the takeover's {:?}",
                    (k, 0)
                )
            },
        );
        for call in calls.iter().filter(|c| c.key == k) {
            check_provenance(&mut problems, k, call, &runs, &stored);
            // A waiter's last look saw the frozen lease's remaining lifetime; it looks again
            // `WAIT_MARGIN` after the lapse (its timer started after the answer came back, 1
            // latency, and fires on a tick) and takes the lease (1 latency there, 1 back). A
            // caller that arrives after the lapse takes it within its GET and look (4). Then
            // the takeover computes, and everyone has the value within 8 latencies of its end
            // (see `all_succeed`). Waiting for one more lease period would exceed it.
            let takeover_by =
                (lapse + WAIT_MARGIN + legs(3) + TIMER_TICK * 2).max(call.arrive + legs(4));
            let bound = (takeover_by + c + legs(8) + shape.per_lapse(c) * lapsed as u32)
                .saturating_sub(call.arrive);
            problems.check(Some(k), call.waited() <= bound, || {
                format!(
                    "{} (arrived {}) waited {}, more than {} (the frozen lease lapsed at {}, \
                     computation {}; {lapsed} later lease(s) lapsed)",
                    call.who,
                    show(call.arrive),
                    show(call.waited()),
                    show(bound),
                    show(lapse),
                    show(c)
                )
            });
        }
        let last = world.stored(k).await?;
        problems.check(Some(k), last == Some(value), || {
            format!("the entry left is {last:?}, expected {value:?}")
        });
    }
    let lost = world.stat(|s| s.leases_lost);
    problems.check(None, lost == lapsed_total as u64, || {
        format!(
            "Stats::leases_lost sums to {lost}, but {lapsed_total} leases lapsed under their \
             (live) holder"
        )
    });
    let summary = world.summary(&shape, calls.len(), computations, shape.keys);
    problems.finish(&trace, &shape.describe(), summary)
}

/// A live holder that renews its lease for 10 × `max_wait`: everyone else gives up waiting.
async fn schedule_max_wait(seed: u64, trace: Arc<Trace>) -> Result<Summary, String> {
    let mut rng = Rng::new(seed);
    let mut shape = Shape::random(&mut rng);
    let max_wait = rng.log_between(ms(100.0), ms(2000.0));
    shape.max_wait = max_wait;
    // The holder must keep its lease: a long one (but as short as 50 ms: the waiters then look
    // again at every renewal, and `max_wait` has to cut that loop).
    let min_lease = MIN_LEASE.max(shape.latency.max_one_way() * LONG_LEASE_LATENCIES);
    shape.lease = rng.log_between(min_lease, MAX_LEASE.max(min_lease * 2));
    let holder_time = max_wait * 10;
    // The others' computations.
    for c in shape.compute.iter_mut() {
        *c = rng.between(max_wait.mul_f64(0.05), max_wait);
    }
    let world = World::new(seed, &shape, &trace);
    let ctx = Ctx::new(&trace);
    let mut orchestrators = Vec::new();
    let mut plans = Vec::new();
    let mut holder_replicas = Vec::new();
    for k in 0..shape.keys {
        let c = shape.compute[k];
        let holder_replica = rng.range(0, shape.replicas - 1);
        holder_replicas.push(holder_replica);
        plans.push(format!(
            "k{k}: holder r{holder_replica}c0 computes {}",
            show(holder_time)
        ));
        // The others arrive once the holder computes: most while it does, so that they wait
        // for it (in its replica too), the others once it stored.
        let mut others = Vec::new();
        for r in 0..shape.replicas {
            let first = usize::from(r == holder_replica);
            for i in first..first + shape.callers[r][k] {
                let at = if rng.chance(0.85) {
                    rng.between(Duration::ZERO, max_wait * 8)
                } else {
                    rng.between(holder_time, holder_time + max_wait)
                };
                others.push((r, i, at));
            }
        }
        let (caches, ctx, trace) = (world.caches.clone(), ctx.clone(), trace.clone());
        orchestrators.push(tokio::spawn(async move {
            let (started_tx, started_rx) = tokio::sync::oneshot::channel();
            let holder = {
                let (cache, ctx) = (caches[holder_replica].clone(), ctx.clone());
                let name = who(holder_replica, 0);
                spawn_caller(
                    &trace,
                    k,
                    holder_replica,
                    name.clone(),
                    Instant::now(),
                    move || async move {
                        cache
                            .get_or_compute(&key_id(k), move || async move {
                                let n = ctx.start_run(k, &name);
                                let _ = started_tx.send(());
                                sleep(holder_time).await;
                                ctx.end_run(k, n, true, "ends");
                                (k as u64, n as u64)
                            })
                            .await
                    },
                )
            };
            if started_rx.await.is_err() {
                return Err("the holder never computed (did it not get the lease?)".to_string());
            }
            let started = Instant::now();
            let mut handles = vec![holder];
            for (r, i, at) in others {
                let (cache, ctx, who) = (caches[r].clone(), ctx.clone(), who(r, i));
                let name = who.clone();
                handles.push(spawn_caller(
                    &trace,
                    k,
                    r,
                    who,
                    started + at,
                    move || async move {
                        cache
                            .get_or_compute(&key_id(k), move || compute_value(ctx, k, name, c))
                            .await
                    },
                ));
            }
            join_all(handles).await
        }));
    }
    let mut calls = Vec::new();
    for outcome in join_all(orchestrators).await? {
        calls.extend(outcome?);
    }

    let mut problems = Problems::default();
    world.check_stats(&shape, &mut problems);
    let legs = |n| shape.latency.legs(n);
    let mut computations = 0;
    for k in 0..shape.keys {
        let c = shape.compute[k];
        let runs = ctx.runs_of(k);
        computations += runs.len();
        let Some(holder) = runs.first() else {
            problems.push(Some(k), "nobody computed".into());
            continue;
        };
        let holder_value = (k as u64, 0);
        // Only the holder's value is stored: the others computed outside the lease.
        let stored = world.stored_values(k);
        problems.check(Some(k), stored == [holder_value], || {
            format!("the values stored are {stored:?}, expected only the holder's {holder_value:?}")
        });
        let mine: Vec<&Call<Val>> = calls.iter().filter(|c| c.key == k).collect();
        for run in &runs[1..] {
            // A caller that gave up waiting: it waited `max_wait` from its miss (its GET), so
            // at least `max_wait` since it arrived.
            let Some(runner) = mine.iter().find(|c| c.who == run.who) else {
                problems.push(Some(k), format!("{} computed, but is no caller", run.who));
                continue;
            };
            problems.check(Some(k), run.start >= runner.arrive + max_wait, || {
                format!(
                    "{} arrived at {} and computed on its own at {}, before max_wait ({}) passed",
                    run.who,
                    show(runner.arrive),
                    show(run.start),
                    show(max_wait)
                )
            });
        }
        for call in &mine {
            if call.who == holder.who {
                problems.check(Some(k), call.out == holder_value, || {
                    format!(
                        "the holder got {:?}, expected its own {holder_value:?}",
                        call.out
                    )
                });
                continue;
            }
            // The holder's stored value, or the value of a computation that gave up waiting
            // in the caller's replica (its own, or its flight leader's).
            let prefix = format!("r{}c", call.replica);
            let from_here = runs[1..]
                .iter()
                .any(|r| r.n as u64 == call.out.1 && r.who.starts_with(&prefix));
            problems.check(
                Some(k),
                call.out == holder_value || (call.out.0 == k as u64 && from_here),
                || {
                    format!(
                        "{} got {:?}: neither the holder's value nor a computation of its replica",
                        call.who, call.out
                    )
                },
            );
            // Its GET (2 latencies) and looks until `max_wait` passed since the miss (the look
            // in flight then: 2; the timer's tick), then its own computation. A caller in the
            // holder's replica waits for the holder's computation in this process: the same
            // bound (`max_wait` bounds a wait "in this replica or another").
            let bound = max_wait + c + legs(6) + TIMER_TICK * 3;
            problems.check(Some(k), call.waited() <= bound, || {
                format!(
                    "{} (arrived {}, {} replica) waited {}, more than max_wait {} + its \
                     computation {} + 6 latencies = {}",
                    call.who,
                    show(call.arrive),
                    if call.replica == holder_replicas[k] {
                        "the holder's"
                    } else {
                        "another"
                    },
                    show(call.waited()),
                    show(max_wait),
                    show(c),
                    show(bound)
                )
            });
        }
        let last = world.stored(k).await?;
        problems.check(Some(k), last == Some(holder_value), || {
            format!("the entry left is {last:?}, expected the holder's {holder_value:?}")
        });
    }
    // Each flight that gave up waiting counted one max wait and ran one own attempt.
    let own_runs = (computations - shape.keys) as u64;
    let (max_waits, own_attempts) = (world.stat(|s| s.max_waits), world.stat(|s| s.own_attempts));
    problems.check(
        None,
        max_waits == own_runs && own_attempts == own_runs,
        || {
            format!(
                "{own_runs} computations besides the holders', but Stats::max_waits sums to \
             {max_waits} and own_attempts to {own_attempts}"
            )
        },
    );
    let summary = world.summary(&shape, calls.len(), computations, shape.keys);
    problems.finish(
        &trace,
        &format!("{}; {}", shape.describe(), plans.join("; ")),
        summary,
    )
}

// ---------------------------------------------------------------------------------------------
// Computations: each one is numbered per key (from 0, in start order) and logged.

#[derive(Debug, Clone)]
struct Run {
    key: usize,
    n: usize,
    who: String,
    start: Duration,
    end: Option<Duration>,
    ok: Option<bool>,
}

impl Run {
    /// The error a failed computation returns.
    fn error(&self) -> String {
        format!("k{} computation #{} failed", self.key, self.n)
    }
}

struct Ctx {
    trace: Arc<Trace>,
    runs: Mutex<Vec<Run>>,
}

impl Ctx {
    fn new(trace: &Arc<Trace>) -> Arc<Self> {
        Arc::new(Ctx {
            trace: trace.clone(),
            runs: Mutex::default(),
        })
    }

    fn start_run(&self, key: usize, who: &str) -> usize {
        let mut runs = self.runs.lock().unwrap();
        let n = runs.iter().filter(|r| r.key == key).count();
        runs.push(Run {
            key,
            n,
            who: who.to_owned(),
            start: self.trace.now(),
            end: None,
            ok: None,
        });
        self.trace
            .log(Some(key), who, format!("computation #{n} starts"));
        n
    }

    fn end_run(&self, key: usize, n: usize, ok: bool, what: &str) {
        let now = self.trace.now();
        let mut who = String::new();
        if let Some(run) = self
            .runs
            .lock()
            .unwrap()
            .iter_mut()
            .find(|r| r.key == key && r.n == n)
        {
            run.end = Some(now);
            run.ok = Some(ok);
            who.clone_from(&run.who);
        }
        self.trace
            .log(Some(key), &who, format!("computation #{n} {what}"));
    }

    fn runs_of(&self, key: usize) -> Vec<Run> {
        let runs = self.runs.lock().unwrap();
        runs.iter().filter(|r| r.key == key).cloned().collect()
    }
}

async fn compute_value(ctx: Arc<Ctx>, key: usize, who: String, time: Duration) -> Val {
    let n = ctx.start_run(key, &who);
    sleep(time).await;
    ctx.end_run(key, n, true, "ends");
    (key as u64, n as u64)
}

/// Reads the data's generation when it starts, as a real computation reads its inputs.
async fn compute_from_data(
    ctx: Arc<Ctx>,
    key: usize,
    who: String,
    time: Duration,
    gen: Arc<AtomicU64>,
) -> Val {
    let n = ctx.start_run(key, &who);
    let g = gen.load(SeqCst);
    ctx.trace
        .log(Some(key), &who, format!("computation #{n} reads gen {g}"));
    sleep(time).await;
    ctx.end_run(key, n, true, &format!("ends with gen {g}"));
    (g, n as u64)
}

async fn compute_fallible(
    ctx: Arc<Ctx>,
    key: usize,
    who: String,
    time: Duration,
    p_fail: f64,
    fate: Arc<Mutex<Rng>>,
) -> Result<Val, String> {
    let n = ctx.start_run(key, &who);
    let fails = fate.lock().unwrap().chance(p_fail);
    sleep(time).await;
    if fails {
        ctx.end_run(key, n, false, "fails");
        Err(format!("k{key} computation #{n} failed"))
    } else {
        ctx.end_run(key, n, true, "succeeds");
        Ok((key as u64, n as u64))
    }
}

/// The marker in the second field of a value written by `set` (its generation is the first).
const SET_MARK: u64 = 1 << 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionKind {
    Invalidate,
    Set,
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ActionKind::Invalidate => "invalidate",
            ActionKind::Set => "set",
        })
    }
}

#[derive(Debug, Clone)]
struct Action {
    key: usize,
    gen: u64,
    kind: ActionKind,
    replica: usize,
    done: Duration,
    done_seq: usize,
}

// ---------------------------------------------------------------------------------------------
// Callers.

#[derive(Debug, Clone)]
struct Call<T> {
    key: usize,
    replica: usize,
    who: String,
    arrive: Duration,
    /// The trace position of the arrival (orders events at the same virtual instant).
    arrive_seq: usize,
    done: Duration,
    out: T,
}

impl<T> Call<T> {
    fn waited(&self) -> Duration {
        self.done - self.arrive
    }
}

fn who(replica: usize, caller: usize) -> String {
    format!("r{replica}c{caller}")
}

fn key_id(key: usize) -> String {
    format!("k{key}")
}

/// A caller task: arrives at `at`, calls, records what it got and when.
fn spawn_caller<T, F, Fut>(
    trace: &Arc<Trace>,
    key: usize,
    replica: usize,
    who: String,
    at: Instant,
    call: F,
) -> JoinHandle<Call<T>>
where
    T: std::fmt::Debug + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
{
    let trace = trace.clone();
    tokio::spawn(async move {
        sleep_until(at).await;
        let arrive = trace.now();
        let arrive_seq = trace.log(Some(key), &who, "calls");
        let out = call().await;
        let done = trace.now();
        trace.log(
            Some(key),
            &who,
            format!("← {out:?} after {}", show(done - arrive)),
        );
        Call {
            key,
            replica,
            who,
            arrive,
            arrive_seq,
            done,
            out,
        }
    })
}

async fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.map_err(|e| format!("a task failed: {e}"))?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The replicas and the shared store.

/// The random shape of one schedule.
struct Shape {
    replicas: usize,
    keys: usize,
    /// Callers per replica and key.
    callers: Vec<Vec<usize>>,
    lease: Duration,
    max_wait: Duration,
    /// Computation time per key.
    compute: Vec<Duration>,
    latency: Latency,
}

impl Shape {
    fn random(rng: &mut Rng) -> Self {
        let replicas = rng.range(2, 5);
        let keys = rng.range(1, MAX_KEYS);
        let lease = rng.log_between(MIN_LEASE, MAX_LEASE);
        Shape {
            replicas,
            keys,
            callers: (0..replicas)
                .map(|_| (0..keys).map(|_| rng.range(1, 8)).collect())
                .collect(),
            lease,
            max_wait: MAX_WAIT,
            compute: (0..keys)
                .map(|_| match rng.range(0, 9) {
                    0..=3 => rng.between(lease.mul_f64(0.05), lease.mul_f64(0.9)),
                    4..=6 => rng.between(lease.mul_f64(0.9), lease * 2),
                    _ => rng.between(lease * 2, lease * 4),
                })
                .collect(),
            latency: Latency::random(rng),
        }
    }

    /// Whether the lease is long enough that a live holder cannot lose it (see
    /// `LONG_LEASE_LATENCIES`).
    fn long_lease(&self) -> bool {
        self.lease >= self.latency.max_one_way() * LONG_LEASE_LATENCIES
    }

    /// The longest a chain of takeovers can add to a wait, per lease that lapsed under a live
    /// holder: the waiters notice the lapse (`WAIT_MARGIN`), one takes over and computes again,
    /// plus the latencies of the looks, subscriptions and the store.
    fn per_lapse(&self, c: Duration) -> Duration {
        c + WAIT_MARGIN + self.latency.legs(12) + TIMER_TICK * 2
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "{} replicas, callers per replica and key {:?}, lock_timeout {} ({} lease), \
             computation per key [{}], latency per leg {}",
            self.replicas,
            self.callers,
            show(self.lease),
            if self.long_lease() { "long" } else { "short" },
            self.compute
                .iter()
                .map(|c| show(*c))
                .collect::<Vec<_>>()
                .join(", "),
            self.latency.describe()
        );
        if self.max_wait != MAX_WAIT {
            let _ = write!(s, ", max_wait {}", show(self.max_wait));
        }
        s
    }
}

#[derive(Debug, Clone, Copy)]
struct Latency {
    max_leg: Duration,
    zero_chance: f64,
    spike_chance: f64,
    max_spike: Duration,
}

impl Latency {
    fn random(rng: &mut Rng) -> Self {
        let max_leg = rng.between(ms(0.2), ms(5.0));
        let spikes = rng.chance(0.3);
        Latency {
            max_leg,
            zero_chance: 0.2,
            spike_chance: if spikes {
                [0.02, 0.05, 0.15][rng.range(0, 2)]
            } else {
                0.0
            },
            max_spike: if spikes {
                rng.between(ms(20.0), ms(100.0))
            } else {
                Duration::ZERO
            },
        }
    }

    fn sample(&self, rng: &mut Rng) -> Duration {
        if rng.chance(self.zero_chance) {
            Duration::ZERO
        } else if self.spike_chance > 0.0 && rng.chance(self.spike_chance) {
            rng.between(self.max_leg, self.max_spike)
        } else {
            rng.between(Duration::ZERO, self.max_leg)
        }
    }

    /// The longest one leg can take (a spike, if there are any).
    fn max_one_way(&self) -> Duration {
        if self.spike_chance > 0.0 {
            self.max_spike.max(self.max_leg)
        } else {
            self.max_leg
        }
    }

    /// The longest `n` legs can take, timer ticks included.
    fn legs(&self, n: u32) -> Duration {
        (self.max_one_way() + TIMER_TICK) * n
    }

    fn describe(&self) -> String {
        let mut s = format!("0–{}", show(self.max_leg));
        if self.spike_chance > 0.0 {
            let _ = write!(
                s,
                ", spikes to {} ({}%)",
                show(self.max_spike),
                self.spike_chance * 100.0
            );
        }
        s
    }
}

/// How a lease ended, as the shared store saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseEnd {
    /// Its holder stored a value with it.
    Stored,
    /// Its holder released it (failed or cancelled).
    Released,
    /// `set` or `invalidate` revoked it.
    Revoked,
    /// It was not renewed in time.
    Lapsed,
}

/// One lease, as the shared store saw it (times since the start of the schedule).
#[derive(Debug, Clone)]
struct LeaseRec {
    key: usize,
    /// The replica of the holder; `None` for one taken directly on the store (frozen holder).
    replica: Option<usize>,
    token: String,
    expires: Duration,
    end: Option<(Duration, LeaseEnd)>,
}

/// What the shared store did, recorded by the replicas' connections at the instant each call
/// reached it, and checked against the lease rules as it goes.
#[derive(Default)]
struct Books {
    /// Values written per key (`store_leased` that stored, and `set`), in order.
    stored: Mutex<Vec<(usize, Val)>>,
    leases: Mutex<Vec<LeaseRec>>,
    /// Answers of the store that break the lease rules.
    violations: Mutex<Vec<(usize, String)>>,
}

impl Books {
    fn violation(&self, key: usize, what: String) {
        self.violations.lock().unwrap().push((key, what));
    }

    fn stored(&self, key: usize, value: Val) {
        self.stored.lock().unwrap().push((key, value));
    }

    /// A lease was granted at `now`: the previous one must have ended or lapsed.
    fn acquired(
        &self,
        key: usize,
        replica: Option<usize>,
        token: &str,
        now: Duration,
        lease: Duration,
    ) {
        let mut leases = self.leases.lock().unwrap();
        if let Some(prev) = leases.iter_mut().rev().find(|l| l.key == key) {
            if prev.end.is_none() {
                if prev.expires > now {
                    self.violation(
                        key,
                        format!(
                            "lease {} granted at {} while lease {} was live until {}",
                            short(token),
                            show(now),
                            short(&prev.token),
                            show(prev.expires)
                        ),
                    );
                }
                prev.end = Some((prev.expires, LeaseEnd::Lapsed));
            }
        }
        leases.push(LeaseRec {
            key,
            replica,
            token: token.to_owned(),
            expires: now + lease,
            end: None,
        });
    }

    /// A call with `token` that needs the lease (renew, store, release) reached the store at
    /// `now` and was `accepted` or not. Accepted ⇔ the lease is current and has not lapsed.
    /// `extend`: a renewal's new lifetime; `ends`: how an accepted call ends the lease.
    #[allow(clippy::too_many_arguments)] // one record of the store's books, field by field
    fn holder_call(
        &self,
        key: usize,
        token: &str,
        now: Duration,
        accepted: bool,
        what: &str,
        extend: Option<Duration>,
        ends: Option<LeaseEnd>,
    ) {
        let mut leases = self.leases.lock().unwrap();
        let Some(current) = leases.iter_mut().rev().find(|l| l.key == key) else {
            if accepted {
                self.violation(
                    key,
                    format!("{what}({}) accepted without any lease", short(token)),
                );
            }
            return;
        };
        let live = current.token == token && current.end.is_none() && current.expires > now;
        if current.end.is_none() && current.expires <= now {
            current.end = Some((current.expires, LeaseEnd::Lapsed));
        }
        if accepted != live {
            let state = if current.token != token {
                format!("the current lease is {}", short(&current.token))
            } else {
                match current.end {
                    Some((at, how)) => format!("the lease ended at {} ({how:?})", show(at)),
                    None => format!("the lease lives until {}", show(current.expires)),
                }
            };
            let verdict = if accepted { "accepted" } else { "refused" };
            self.violation(
                key,
                format!(
                    "{what}({}) {verdict} at {}, but {state}",
                    short(token),
                    show(now)
                ),
            );
            return;
        }
        if accepted {
            if let Some(lease) = extend {
                current.expires = now + lease;
            }
            if let Some(how) = ends {
                current.end = Some((now, how));
            }
        }
    }

    /// `set`/`invalidate` reached the store at `now`: the current lease, if live, is revoked.
    fn revoked(&self, key: usize, now: Duration) {
        let mut leases = self.leases.lock().unwrap();
        if let Some(current) = leases.iter_mut().rev().find(|l| l.key == key) {
            if current.end.is_none() {
                current.end = Some(if current.expires > now {
                    (now, LeaseEnd::Revoked)
                } else {
                    (current.expires, LeaseEnd::Lapsed)
                });
            }
        }
    }

    /// At the end of a schedule: leases that were left to lapse.
    fn close(&self, now: Duration) {
        for lease in self.leases.lock().unwrap().iter_mut() {
            if lease.end.is_none() && lease.expires <= now {
                lease.end = Some((lease.expires, LeaseEnd::Lapsed));
            }
        }
    }

    fn leases_of(&self, key: usize) -> Vec<LeaseRec> {
        let leases = self.leases.lock().unwrap();
        leases.iter().filter(|l| l.key == key).cloned().collect()
    }
}

/// The replicas of one schedule over their one shared store.
struct World {
    backend: MemoryBackend,
    caches: Vec<Cache>,
    books: Arc<Books>,
    trace: Arc<Trace>,
}

impl World {
    fn new(seed: u64, shape: &Shape, trace: &Arc<Trace>) -> Self {
        let backend = MemoryBackend::new();
        let books: Arc<Books> = Arc::default();
        let caches = (0..shape.replicas)
            .map(|r| {
                let delayed = Delayed {
                    inner: backend.clone(),
                    replica: r,
                    who: format!("r{r} db"),
                    rng: Mutex::new(Rng::new(mix(seed ^ mix(0xD1B5_4A32_D192_ED03 + r as u64)))),
                    latency: shape.latency,
                    trace: trace.clone(),
                    books: books.clone(),
                };
                Cache::builder(NAMESPACE)
                    .exp(EXP)
                    .lock_timeout(shape.lease)
                    .max_wait(shape.max_wait)
                    .backend(delayed)
                    .build()
                    .expect("valid cache settings")
            })
            .collect();
        World {
            backend,
            caches,
            books,
            trace: trace.clone(),
        }
    }

    /// Takes the lease of `key` directly on the shared store for a holder that never answers.
    async fn freeze(&self, key: usize, lease: Duration) -> Result<Duration, String> {
        let entry = self.caches[0].key(&key_id(key));
        let at = self.trace.now();
        let taken = self
            .backend
            .try_lease(&entry, "frozen", lease)
            .await
            .map_err(|e| format!("try_lease: {e}"))?;
        if taken != LeaseAttempt::Acquired {
            return Err(format!(
                "the frozen holder could not take the lease: {taken:?}"
            ));
        }
        self.books.acquired(key, None, "frozen", at, lease);
        self.trace
            .log(Some(key), "frozen", "takes the lease and never answers");
        Ok(at)
    }

    /// The values written for `key`, in order.
    fn stored_values(&self, key: usize) -> Vec<Val> {
        let stored = self.books.stored.lock().unwrap();
        stored
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    }

    fn stores(&self, key: usize) -> usize {
        self.stored_values(key).len()
    }

    /// The leases of `key` held by a replica that lapsed (their holder was alive).
    fn lapsed(&self, key: usize) -> Vec<LeaseRec> {
        self.books
            .leases_of(key)
            .into_iter()
            .filter(|l| l.replica.is_some() && l.end.map(|(_, how)| how) == Some(LeaseEnd::Lapsed))
            .collect()
    }

    /// The entry left at the end (read through replica 0).
    async fn stored(&self, key: usize) -> Result<Option<Val>, String> {
        self.caches[0]
            .get::<Val>(&key_id(key))
            .await
            .map_err(|e| format!("final get of k{key}: {e}"))
    }

    /// A counter summed over the replicas.
    fn stat(&self, counter: impl Fn(&atomcache::Stats) -> u64) -> u64 {
        self.caches.iter().map(|c| counter(&c.stats())).sum()
    }

    /// The store kept the lease rules; no backend call failed and every stored value decoded;
    /// nobody gave up waiting (unless the schedule has a `max_wait`); with a long lease, no
    /// live holder lost its lease. Call it after the schedule's calls are done.
    fn check_stats(&self, shape: &Shape, problems: &mut Problems) {
        self.books.close(self.trace.now());
        for (k, what) in self.books.violations.lock().unwrap().iter() {
            problems.push(Some(*k), format!("the store broke a lease rule: {what}"));
        }
        for (r, cache) in self.caches.iter().enumerate() {
            let s = cache.stats();
            let waits_ok = s.max_waits == 0 || shape.max_wait != MAX_WAIT;
            problems.check(
                None,
                waits_ok && s.backend_errors == 0 && s.decode_errors == 0,
                || format!("replica r{r}: unexpected stats {s:?}"),
            );
        }
        if shape.long_lease() {
            for k in 0..shape.keys {
                let lapsed = self.lapsed(k);
                problems.check(Some(k), lapsed.is_empty(), || {
                    format!(
                        "with a long lease, live holders lost {} lease(s): {}",
                        lapsed.len(),
                        lapsed
                            .iter()
                            .map(|l| format!(
                                "{} of r{} lapsed at {}",
                                short(&l.token),
                                l.replica.unwrap_or_default(),
                                show(l.expires)
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            }
        }
    }

    fn summary(
        &self,
        shape: &Shape,
        callers: usize,
        computations: usize,
        expected: usize,
    ) -> Summary {
        let lapsed: usize = (0..shape.keys).map(|k| self.lapsed(k).len()).sum();
        let short = !shape.long_lease();
        Summary {
            schedules: 1,
            callers: callers as u64,
            keys: shape.keys as u64,
            computations: computations as u64,
            extra: computations.saturating_sub(expected) as u64,
            lapsed: lapsed as u64,
            short_lease: u64::from(short),
            short_lease_lapsed: u64::from(short && lapsed > 0),
            time: self.trace.now(),
            leases_lost: self.stat(|s| s.leases_lost),
            own_attempts: self.stat(|s| s.own_attempts),
            max_waits: self.stat(|s| s.max_waits),
            coalesced: self.stat(|s| s.coalesced),
            lock_waits: self.stat(|s| s.lock_waits),
            shared_failures: self.stat(|s| s.shared_failures),
            ..Summary::default()
        }
    }
}

/// A replica's connection to the shared store: a random latency before the call (request) and
/// after it (response); the call itself is atomic in the shared [`MemoryBackend`], where it is
/// logged and entered in the [`Books`].
struct Delayed {
    inner: MemoryBackend,
    replica: usize,
    who: String,
    rng: Mutex<Rng>,
    latency: Latency,
    trace: Arc<Trace>,
    books: Arc<Books>,
}

impl Delayed {
    async fn leg(&self) {
        let d = self.latency.sample(&mut self.rng.lock().unwrap());
        if !d.is_zero() {
            sleep(d).await;
        }
    }

    fn note(&self, key: &EntryKey, what: impl FnOnce() -> String) {
        self.trace.log(key_index(key), &self.who, what());
    }

    fn stored(&self, key: &EntryKey, bytes: &[u8]) {
        if let (Some(k), Some(value)) = (key_index(key), decode_val(bytes)) {
            self.books.stored(k, value);
        }
    }

    fn acquired(&self, key: &EntryKey, token: &str, lease: Duration) {
        if let Some(k) = key_index(key) {
            self.books
                .acquired(k, Some(self.replica), token, self.trace.now(), lease);
        }
    }

    fn holder_call(
        &self,
        key: &EntryKey,
        token: &str,
        out: &Result<bool, Error>,
        what: &str,
        extend: Option<Duration>,
        ends: Option<LeaseEnd>,
    ) {
        if let (Some(k), Ok(accepted)) = (key_index(key), out) {
            self.books
                .holder_call(k, token, self.trace.now(), *accepted, what, extend, ends);
        }
    }

    fn revoked(&self, key: &EntryKey) {
        if let Some(k) = key_index(key) {
            self.books.revoked(k, self.trace.now());
        }
    }
}

#[async_trait]
impl Backend for Delayed {
    async fn get(&self, key: &EntryKey) -> Result<Option<Vec<u8>>, Error> {
        self.leg().await;
        let out = self.inner.get(key).await;
        self.note(key, || match &out {
            Ok(Some(bytes)) => format!("get → {}", show_bytes(bytes)),
            Ok(None) => "get → miss".into(),
            Err(e) => format!("get → error {e}"),
        });
        self.leg().await;
        out
    }

    async fn get_or_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<Lookup, Error> {
        self.leg().await;
        let out = self.inner.get_or_lease(key, token, lease).await;
        if matches!(out, Ok(Lookup::Leased)) {
            self.acquired(key, token, lease);
        }
        self.note(key, || {
            let answer = match &out {
                Ok(Lookup::Value(bytes)) => show_bytes(bytes),
                Ok(Lookup::Leased) => "LEASED".into(),
                Ok(Lookup::Held(h)) => format!(
                    "held by {} ({} left, last failed {:?})",
                    short(&h.token),
                    show(h.remaining),
                    h.last_failed.as_deref().map(short)
                ),
                Err(e) => format!("error {e}"),
            };
            format!("get_or_lease({}) → {answer}", short(token))
        });
        self.leg().await;
        out
    }

    async fn try_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<LeaseAttempt, Error> {
        self.leg().await;
        let out = self.inner.try_lease(key, token, lease).await;
        if matches!(out, Ok(LeaseAttempt::Acquired)) {
            self.acquired(key, token, lease);
        }
        self.note(key, || format!("try_lease({}) → {out:?}", short(token)));
        self.leg().await;
        out
    }

    async fn renew_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<bool, Error> {
        self.leg().await;
        let out = self.inner.renew_lease(key, token, lease).await;
        self.holder_call(key, token, &out, "renew_lease", Some(lease), None);
        self.note(key, || format!("renew_lease({}) → {out:?}", short(token)));
        self.leg().await;
        out
    }

    async fn store_leased(
        &self,
        key: &EntryKey,
        token: &str,
        value: &[u8],
        exp: Duration,
    ) -> Result<bool, Error> {
        self.leg().await;
        let out = self.inner.store_leased(key, token, value, exp).await;
        if matches!(out, Ok(true)) {
            self.stored(key, value);
        }
        self.holder_call(
            key,
            token,
            &out,
            "store_leased",
            None,
            Some(LeaseEnd::Stored),
        );
        self.note(key, || {
            format!(
                "store_leased({}, {}) → {out:?}",
                short(token),
                show_bytes(value)
            )
        });
        self.leg().await;
        out
    }

    async fn release_lease(
        &self,
        key: &EntryKey,
        token: &str,
        why: Release,
    ) -> Result<bool, Error> {
        self.leg().await;
        let out = self.inner.release_lease(key, token, why).await;
        self.holder_call(
            key,
            token,
            &out,
            "release_lease",
            None,
            Some(LeaseEnd::Released),
        );
        self.note(key, || {
            format!("release_lease({}, {why:?}) → {out:?}", short(token))
        });
        self.leg().await;
        out
    }

    async fn set(&self, key: &EntryKey, value: &[u8], exp: Duration) -> Result<(), Error> {
        self.leg().await;
        let out = self.inner.set(key, value, exp).await;
        if out.is_ok() {
            self.stored(key, value);
            self.revoked(key);
        }
        self.note(key, || format!("set({}) → {out:?}", show_bytes(value)));
        self.leg().await;
        out
    }

    async fn invalidate(&self, key: &EntryKey) -> Result<(), Error> {
        self.leg().await;
        let out = self.inner.invalidate(key).await;
        if out.is_ok() {
            self.revoked(key);
        }
        self.note(key, || format!("invalidate → {out:?}"));
        self.leg().await;
        out
    }

    async fn remaining_ttl(&self, key: &EntryKey) -> Result<Option<Duration>, Error> {
        self.leg().await;
        let out = self.inner.remaining_ttl(key).await;
        self.leg().await;
        out
    }

    /// The memory backend's wake-up hub is shared by all replicas: it models pub/sub. The
    /// subscription is registered when the request reaches the store; a wake-up during the
    /// response leg is kept (like a confirmed SUBSCRIBE).
    async fn subscribe(&self, key: &EntryKey) -> Result<Subscription, Error> {
        self.leg().await;
        let out = self.inner.subscribe(key).await;
        self.note(key, || "subscribe".into());
        self.leg().await;
        out
    }
}

/// The key number of an entry key of this test (`…:=k<n>:v`).
fn key_index(key: &EntryKey) -> Option<usize> {
    let (_, rest) = key.value().rsplit_once(":=k")?;
    rest.strip_suffix(":v")?.parse().ok()
}

/// A token, shortened for the trace.
fn short(token: &str) -> &str {
    &token[..token.len().min(6)]
}

/// The value in stored bytes (header + payload).
fn decode_val(bytes: &[u8]) -> Option<Val> {
    bytes
        .get(HEADER_LEN..)
        .and_then(|payload| Bincode::decode::<Val>(payload).ok())
}

fn show_bytes(bytes: &[u8]) -> String {
    decode_val(bytes)
        .map(|v| format!("{v:?}"))
        .unwrap_or_else(|| format!("{} bytes", bytes.len()))
}

// ---------------------------------------------------------------------------------------------
// The seeded PRNG (SplitMix64: tiny, and good enough to pick schedules).

#[derive(Debug, Clone)]
struct Rng(u64);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// In `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// In `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// In `[lo, hi)` (or `lo` when they are equal).
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + hi.saturating_sub(lo).mul_f64(self.unit())
    }

    /// In `[lo, hi)`, log-uniform (as many short durations as long ones).
    fn log_between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let ratio = hi.as_secs_f64() / lo.as_secs_f64();
        lo.mul_f64(ratio.max(1.0).powf(self.unit()))
    }

    /// An independent stream.
    fn fork(&mut self, stream: u64) -> Rng {
        Rng(mix(self.next_u64() ^ mix(stream)))
    }
}

// ---------------------------------------------------------------------------------------------
// The event trace and the failure report.

struct Trace {
    t0: Instant,
    events: Mutex<Vec<Event>>,
}

struct Event {
    at: Duration,
    key: Option<usize>,
    who: String,
    what: String,
}

impl Trace {
    /// Starts the clock (call inside the schedule's runtime: under a paused clock, virtual).
    fn new() -> Arc<Self> {
        Arc::new(Trace {
            t0: Instant::now(),
            events: Mutex::default(),
        })
    }

    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Records an event; returns its position.
    fn log(&self, key: Option<usize>, who: &str, what: impl Into<String>) -> usize {
        let at = self.now();
        let mut events = self.events.lock().unwrap();
        events.push(Event {
            at,
            key,
            who: who.to_owned(),
            what: what.into(),
        });
        events.len() - 1
    }

    /// The last events of `key` (and those of no key), one a line.
    fn render(&self, key: Option<usize>) -> String {
        let events = self.events.lock().unwrap();
        let picked: Vec<(usize, &Event)> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| key.is_none() || e.key.is_none() || e.key == key)
            .collect();
        let skip = picked.len().saturating_sub(TRACE_LINES);
        let mut out = String::new();
        if skip > 0 {
            let _ = writeln!(out, "  … {skip} earlier events");
        }
        for (seq, e) in &picked[skip..] {
            let key = e
                .key
                .map(|k| format!("k{k}"))
                .unwrap_or_else(|| "--".into());
            let _ = writeln!(
                out,
                "  #{seq:<5} {:>11} [{key}] {:<8} {}",
                show(e.at),
                e.who,
                e.what
            );
        }
        out
    }
}

#[derive(Default)]
struct Problems {
    list: Vec<(Option<usize>, String)>,
}

impl Problems {
    fn push(&mut self, key: Option<usize>, what: String) {
        self.list.push((key, what));
    }

    fn check(&mut self, key: Option<usize>, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.push(key, what());
        }
    }

    fn finish(self, trace: &Trace, shape: &str, summary: Summary) -> Result<Summary, String> {
        if self.list.is_empty() {
            return Ok(summary);
        }
        let mut out = format!("{} invariant(s) violated:\n", self.list.len());
        for (key, what) in self.list.iter().take(15) {
            let key = key.map(|k| format!("k{k}")).unwrap_or_else(|| "--".into());
            let _ = writeln!(out, "  - [{key}] {what}");
        }
        let key = self.list[0].0;
        let _ = writeln!(out, "schedule: {shape}");
        let _ = write!(
            out,
            "trace of {} (time since the start; `db` lines are calls as the shared store saw \
             them):\n{}",
            key.map(|k| format!("k{k}"))
                .unwrap_or_else(|| "all keys".into()),
            trace.render(key)
        );
        Err(out)
    }
}

/// What a scenario's schedules did, added up.
#[derive(Debug, Default, Clone)]
struct Summary {
    schedules: u64,
    callers: u64,
    keys: u64,
    computations: u64,
    /// Computations beyond the expected minimum.
    extra: u64,
    leases_lost: u64,
    /// Leases that lapsed under a live holder (not counting the frozen holder's).
    lapsed: u64,
    /// Schedules whose lease was shorter than `LONG_LEASE_LATENCIES` one-way latencies, and
    /// those of them in which a live holder's lease lapsed.
    short_lease: u64,
    short_lease_lapsed: u64,
    own_attempts: u64,
    max_waits: u64,
    coalesced: u64,
    lock_waits: u64,
    shared_failures: u64,
    /// Invalidation scenario: pre-invalidation answers in the tolerated window.
    stale_window: u64,
    stale_window_seeds: Vec<u64>,
    time: Duration,
}

impl Summary {
    fn add(&mut self, other: &Summary, seed: u64) {
        self.schedules += other.schedules;
        self.callers += other.callers;
        self.keys += other.keys;
        self.computations += other.computations;
        self.extra += other.extra;
        self.leases_lost += other.leases_lost;
        self.lapsed += other.lapsed;
        self.short_lease += other.short_lease;
        self.short_lease_lapsed += other.short_lease_lapsed;
        self.own_attempts += other.own_attempts;
        self.max_waits += other.max_waits;
        self.coalesced += other.coalesced;
        self.lock_waits += other.lock_waits;
        self.shared_failures += other.shared_failures;
        self.stale_window += other.stale_window;
        if other.stale_window > 0 && self.stale_window_seeds.len() < 5 {
            self.stale_window_seeds.push(seed);
        }
        self.time += other.time;
    }
}

// ---------------------------------------------------------------------------------------------
// Running the schedules.

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => s.replace('_', "").parse().ok(),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(parse_u64(&value).unwrap_or_else(|| panic!("{name}={value:?} is not a number")))
}

fn schedule_count() -> usize {
    env_u64(COUNT_ENV).map_or(DEFAULT_SCHEDULES, |n| n as usize)
}

/// The seeds of a scenario: `ATOMCACHE_SCHEDULE_SEED` alone, or `count` derived from the base.
fn seeds(tag: u64, count: usize) -> Vec<u64> {
    if let Some(seed) = env_u64(SEED_ENV) {
        return vec![seed];
    }
    let base = env_u64(BASE_ENV).unwrap_or(DEFAULT_BASE);
    (0..count as u64)
        .map(|i| mix(base ^ mix(tag.wrapping_mul(0x9E37_79B9)) ^ mix(i + 1)))
        .collect()
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// Runs a scenario's schedules one after the other, each on its own current-thread runtime
/// with a paused clock.
fn run_virtual<F, Fut>(name: &str, tag: u64, count: usize, scenario: F)
where
    F: Fn(u64, Arc<Trace>) -> Fut,
    Fut: Future<Output = Result<Summary, String>>,
{
    let started = std::time::Instant::now();
    let mut total = Summary::default();
    let mut failures = Vec::new();
    for seed in seeds(tag, count) {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let trace = Trace::new();
                match tokio::time::timeout(VIRTUAL_CAP, scenario(seed, trace.clone())).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!(
                        "the schedule did not finish within {VIRTUAL_CAP:?} of virtual time \
                         (someone waits forever)\n{}",
                        trace.render(None)
                    )),
                }
            })
        }));
        match outcome {
            Ok(Ok(summary)) => total.add(&summary, seed),
            Ok(Err(report)) => failures.push((seed, report)),
            Err(panic) => failures.push((seed, format!("panicked: {}", panic_message(&*panic)))),
        }
        if failures.len() >= MAX_FAILING_SEEDS {
            break;
        }
    }
    conclude(name, &total, started.elapsed(), &failures);
}

fn conclude(name: &str, total: &Summary, elapsed: Duration, failures: &[(u64, String)]) {
    println!(
        "{name}: {} schedules passed ({} with a short lease, a live holder's lease lapsed in {}; \
         {} callers on {} keys): {} computations ({} beyond the expected minimum), {} leases \
         lost ({} lapsed), {} own attempts, {} max waits, {} coalesced, {} lock waits, {} \
         shared failures; {:.1?} real, {:.0?} simulated",
        total.schedules,
        total.short_lease,
        total.short_lease_lapsed,
        total.callers,
        total.keys,
        total.computations,
        total.extra,
        total.leases_lost,
        total.lapsed,
        total.own_attempts,
        total.max_waits,
        total.coalesced,
        total.lock_waits,
        total.shared_failures,
        elapsed,
        total.time,
    );
    if total.stale_window > 0 {
        println!(
            "{name}: {} answers started within one latency after an invalidate/set in another \
             replica carried the previous value (joined a flight whose read preceded it; \
             tolerated), e.g. seeds {}",
            total.stale_window,
            total
                .stale_window_seeds
                .iter()
                .map(|s| format!("{s:#x}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some((seed, report)) = failures.first() {
        let seeds: Vec<String> = failures.iter().map(|(s, _)| format!("{s:#x}")).collect();
        panic!(
            "{name}: {} schedule(s) failed (stopped after {MAX_FAILING_SEEDS}), seeds: {}\n\
             re-run one: {SEED_ENV}={seed:#x} cargo test -p atomcache-tests --test \
             protocol_schedule {name} -- --nocapture\n\nseed {seed:#x}: {report}",
            failures.len(),
            seeds.join(", ")
        );
    }
}

fn ms(millis: f64) -> Duration {
    Duration::from_secs_f64(millis / 1000.0)
}

fn show(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}
