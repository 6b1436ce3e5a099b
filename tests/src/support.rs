//! Helpers shared by the integration tests of the locked path: caches, leases and the
//! assertions made on them, encoded bytes for a test that plays the holder, polling, gated and
//! failing computations, stampedes of callers released together, takeover waiters, and the
//! scenarios that run alike on Redis and on the memory backend; and for the auto-refresh tests,
//! a refreshed function ([`refreshed_counter!`](crate::refreshed_counter)) and its readers.
//! None of them starts a server: they work on any backend.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomcache::{
    Backend, Cache, EntryKey, Holder, LeaseAttempt, MemoryBackend, Release, Runtime, Stats,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

/// A cache of namespace `ns` on `backend`: values live 60 s, leases `lock_timeout`.
pub fn cache_on(backend: impl Backend, ns: &str, lock_timeout: Duration) -> Cache {
    Cache::builder(ns)
        .exp(Duration::from_secs(60))
        .lock_timeout(lock_timeout)
        .backend(backend)
        .build()
        .expect("cache settings")
}

/// The bytes `Cache` stores for `value` (header + bincode payload), for a test that plays the
/// holder and stores under its own lease.
pub async fn encoded<T: Serialize + DeserializeOwned>(value: &T) -> Vec<u8> {
    let scratch = Cache::builder("scratch")
        .backend(MemoryBackend::new())
        .build()
        .unwrap();
    scratch.set("v", value).await.unwrap();
    scratch.entry::<T>("v").await.unwrap().unwrap().raw.to_vec()
}

/// Polls `cond` every 5 ms until it holds (panics after 5 s).
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    until_within(what, Duration::from_secs(5), cond).await;
}

/// Polls `cond` every 5 ms until it holds (panics after `within`).
pub async fn until_within(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `d` in milliseconds, for the figures.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Waits `over`, then asserts that `read` answers what it answered before the wait.
pub async fn assert_unchanged<T: PartialEq + Debug>(
    read: impl Fn() -> T,
    over: Duration,
    what: &str,
) {
    let before = read();
    tokio::time::sleep(over).await;
    assert_eq!(read(), before, "{what}");
}

/// Asserts that `cache` holds the `String` `expected` for `id`.
pub async fn assert_holds(cache: &Cache, id: &str, expected: &str) {
    assert_eq!(
        cache.get::<String>(id).await.unwrap().as_deref(),
        Some(expected)
    );
}

/// Asserts that the counters of `caches` add up to one computation, with no attempt outside
/// the lease, no wait given up and no lease lost; returns the counters.
pub fn assert_one_computation<'a>(caches: impl IntoIterator<Item = &'a Cache>) -> Vec<Stats> {
    let stats: Vec<_> = caches.into_iter().map(Cache::stats).collect();
    assert_eq!(
        stats.iter().map(|s| s.computations).sum::<u64>(),
        1,
        "{stats:?}"
    );
    for s in &stats {
        assert_eq!(
            (s.own_attempts, s.max_waits, s.leases_lost),
            (0, 0, 0),
            "{s:?}"
        );
    }
    stats
}

/// Takes the lease of `key` with `token` for `lease` on `backend`, asserting it was free.
pub async fn hold_lease<B: Backend>(backend: &B, key: &EntryKey, token: &str, lease: Duration) {
    assert_eq!(
        backend.try_lease(key, token, lease).await.unwrap(),
        LeaseAttempt::Acquired
    );
}

/// The holder of the lease of `key`, seen by a try with `token` on `backend` that must not get
/// it (`taken` is the panic message if it did).
pub async fn lease_holder<B: Backend>(
    backend: &B,
    key: &EntryKey,
    token: &str,
    taken: &str,
) -> Holder {
    match backend
        .try_lease(key, token, Duration::from_secs(1))
        .await
        .unwrap()
    {
        LeaseAttempt::Held(holder) => holder,
        LeaseAttempt::Acquired => panic!("{taken}"),
    }
}

/// Releases the lease `token` of `key` after a failed computation, to be remembered for
/// `remember`; returns whether the lease was current.
pub async fn release_failed<B: Backend>(
    backend: &B,
    key: &EntryKey,
    token: &str,
    remember: Duration,
) -> bool {
    backend
        .release_lease(key, token, Release::Failed { remember })
        .await
        .unwrap()
}

/// Asserts that a caller waited on another caller's lease once and never computed outside it.
pub fn assert_waited_once(stats: &Stats, what: &str) {
    assert_eq!(stats.lock_waits, 1, "{what}: {stats:?}");
    assert_eq!(stats.own_attempts, 0, "{what}: {stats:?}");
}

/// Asserts that a holder whose lease `token` is no longer current can neither release, renew
/// nor store under it.
pub async fn assert_stale_token_refused<B: Backend>(backend: &B, key: &EntryKey, token: &str) {
    assert!(!backend
        .release_lease(key, token, Release::Abandoned)
        .await
        .unwrap());
    assert!(!release_failed(backend, key, token, Duration::from_secs(10)).await);
    assert!(!backend
        .renew_lease(key, token, Duration::from_secs(30))
        .await
        .unwrap());
    assert!(!backend
        .store_leased(key, token, b"late value", Duration::from_secs(10))
        .await
        .unwrap());
}

/// How the entry changes while a waiter walks its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// The holder stores its value under its lease.
    Stored,
    /// Another replica `set`s the value (`"from-set"`), revoking the holder's lease.
    Set,
    /// The holder's computation fails: it releases its lease.
    Failed,
}

impl Landing {
    /// Every kind of change.
    pub const ALL: [Landing; 3] = [Landing::Stored, Landing::Set, Landing::Failed];

    /// What a waiter answers after this change, when the holder stores `"from-holder"` and the
    /// waiter would compute `"from-waiter"` (failures never queue: the waiter takes the next
    /// lease at once and computes).
    pub fn expected(self) -> &'static str {
        match self {
            Landing::Stored => "from-holder",
            Landing::Set => "from-set",
            Landing::Failed => "from-waiter",
        }
    }

    /// Makes this change happen to `key` (the entry of id `"k"` of `holder`), whose lease the
    /// holder holds with the token `"holder"` on `backend`: its store of `stored`, a `set`
    /// through `holder` (after which the holder's store is refused), or the release of a failed
    /// computation.
    pub async fn land<B: Backend>(self, holder: Cache, backend: B, key: EntryKey, stored: Vec<u8>) {
        match self {
            Landing::Stored => assert!(backend
                .store_leased(&key, "holder", &stored, Duration::from_secs(60))
                .await
                .unwrap()),
            Landing::Set => {
                holder.set("k", &"from-set".to_string()).await.unwrap();
                assert!(
                    !backend
                        .store_leased(&key, "holder", &stored, Duration::from_secs(60))
                        .await
                        .unwrap(),
                    "the set revoked the holder's lease"
                );
            }
            Landing::Failed => {
                assert!(release_failed(&backend, &key, "holder", Duration::from_secs(2)).await)
            }
        }
    }
}

/// Callers whose computation `n` (counted across every caller made by one `Gated`, from 0)
/// reports `n` on the receiver returned by [`Gated::new`] and returns `computation-<n>` once
/// [`Gated::open`]`(n)` was called.
pub struct Gated {
    computations: Arc<AtomicUsize>,
    gates: Vec<Arc<Notify>>,
    started: mpsc::UnboundedSender<usize>,
}

impl Gated {
    /// Gates for `rounds` computations, and the receiver of their start reports.
    pub fn new(rounds: usize) -> (Self, mpsc::UnboundedReceiver<usize>) {
        let (started, rx) = mpsc::unbounded_channel();
        let gated = Gated {
            computations: Arc::default(),
            gates: (0..rounds).map(|_| Arc::default()).collect(),
            started,
        };
        (gated, rx)
    }

    /// Spawns a `get_or_compute` of `id` on `cache`.
    pub fn call(&self, cache: &Cache, id: &str) -> JoinHandle<String> {
        let (cache, id) = (cache.clone(), id.to_owned());
        let (computations, gates, started) = (
            self.computations.clone(),
            self.gates.clone(),
            self.started.clone(),
        );
        tokio::spawn(async move {
            cache
                .get_or_compute(&id, || async move {
                    let n = computations.fetch_add(1, Ordering::SeqCst);
                    started.send(n).unwrap();
                    gates[n].notified().await;
                    format!("computation-{n}")
                })
                .await
        })
    }

    /// Lets computation `n` return.
    pub fn open(&self, n: usize) {
        self.gates[n].notify_one();
    }

    /// How many computations started.
    pub fn computations(&self) -> usize {
        self.computations.load(Ordering::SeqCst)
    }
}

/// Callers whose computations fail: the first one (the holder's) reports its start on the
/// receiver returned by [`Failing::new`] and fails once [`Failing::fail_first`] was called;
/// every later one fails at once. Each error names the caller's replica and its attempt there:
/// `"<name>: attempt <n> failed"`.
pub struct Failing {
    gate: Arc<Notify>,
    first: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl Failing {
    /// The callers, and the receiver of the first computation's start.
    pub fn new() -> (Self, oneshot::Receiver<()>) {
        let (first, started) = oneshot::channel();
        let failing = Failing {
            gate: Arc::default(),
            first: Arc::new(Mutex::new(Some(first))),
        };
        (failing, started)
    }

    /// Spawns a `try_get_or_compute` of `id` on `cache` whose attempts count in `computations`.
    pub fn call(
        &self,
        cache: &Cache,
        id: &str,
        computations: &Arc<AtomicUsize>,
        name: &'static str,
    ) -> JoinHandle<Result<u32, String>> {
        let (cache, id, computations) = (cache.clone(), id.to_owned(), computations.clone());
        let (gate, first) = (self.gate.clone(), self.first.clone());
        tokio::spawn(async move {
            cache
                .try_get_or_compute(&id, || async move {
                    let n = computations.fetch_add(1, Ordering::SeqCst) + 1;
                    let first = first.lock().unwrap().take();
                    if let Some(tx) = first {
                        let _ = tx.send(());
                        gate.notified().await;
                    }
                    Err::<u32, String>(format!("{name}: attempt {n} failed"))
                })
                .await
        })
    }

    /// Lets the first computation fail.
    pub fn fail_first(&self) {
        self.gate.notify_one();
    }
}

/// Spawns `callers` calls of `id` on each of `caches`, released together by one barrier.
/// Computation `n` (counted in `computations`, from 1) sleeps `compute` and returns `value(n)`;
/// each call returns its answer and how long it took from the barrier.
pub fn stampede<'a, T>(
    caches: impl IntoIterator<Item = &'a Cache>,
    callers: usize,
    id: &str,
    computations: &Arc<AtomicUsize>,
    compute: Duration,
    value: fn(usize) -> T,
) -> Vec<JoinHandle<(T, Duration)>>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let caches: Vec<&Cache> = caches.into_iter().collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(caches.len() * callers));
    let mut calls = Vec::new();
    for cache in caches {
        for _ in 0..callers {
            let (cache, computations, barrier, id) = (
                cache.clone(),
                computations.clone(),
                barrier.clone(),
                id.to_owned(),
            );
            calls.push(tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let v = cache
                    .get_or_compute(&id, || async move {
                        let n = computations.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(compute).await;
                        value(n)
                    })
                    .await;
                (v, started.elapsed())
            }));
        }
    }
    calls
}

/// Awaits `calls` and asserts that each answered `expected` within `within` (`slow` starts the
/// message about a call that took longer).
pub async fn assert_all_answer<T, E>(
    calls: Vec<JoinHandle<(T, Duration)>>,
    expected: E,
    within: Duration,
    slow: &str,
) where
    T: PartialEq<E> + Debug,
    E: Debug,
{
    for call in calls {
        let (v, elapsed) = call.await.expect("caller task");
        assert_eq!(v, expected);
        assert!(elapsed < within, "{slow} {elapsed:?}");
    }
}

/// Asserts that `id` stays computed once in all across `caches` (computations counted in
/// `computations`): a later call in each cache answers `expected` instead of computing
/// `again`, and the caches' counters add up to one computation, with no attempt outside the
/// lease, no wait given up and no lease lost.
pub async fn assert_computed_once<T>(
    caches: &[&Cache],
    id: &str,
    computations: &AtomicUsize,
    expected: T,
    again: T,
) where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    for cache in caches {
        let again = again.clone();
        let v = cache.get_or_compute(id, || async { again }).await;
        assert_eq!(v, expected);
    }
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    assert_one_computation(caches.iter().copied());
}

/// Two replicas of namespace `ns`: a cache on `a`, and the cache of a runtime detached on `b`
/// (returned too, to be shut down).
pub fn cache_and_runtime_cache(
    a: impl Backend,
    b: impl Backend,
    ns: &str,
    lock_timeout: Duration,
) -> (Cache, Runtime, Cache) {
    let runtime = Runtime::detached(b).unwrap();
    let b = runtime
        .cache(ns)
        .exp(Duration::from_secs(60))
        .lock_timeout(lock_timeout)
        .build()
        .unwrap();
    (cache_on(a, ns, lock_timeout), runtime, b)
}

/// Spawns one call of `id` per `(cache, counter)` in `callers`; its computation counts itself in
/// the counter, takes `compute` and returns `value`. Each call returns its answer and how long
/// it took.
pub fn counted_calls<T>(
    callers: &[(&Cache, &Arc<AtomicUsize>)],
    id: &str,
    compute: Duration,
    value: T,
) -> Vec<JoinHandle<(T, Duration)>>
where
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    let mut calls = Vec::new();
    for (cache, computations) in callers {
        let (cache, computations, id, value) = (
            (*cache).clone(),
            (*computations).clone(),
            id.to_owned(),
            value.clone(),
        );
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let v = cache
                .get_or_compute(&id, || async move {
                    computations.fetch_add(1, Ordering::SeqCst);
                    if !compute.is_zero() {
                        tokio::time::sleep(compute).await;
                    }
                    value
                })
                .await;
            (v, started.elapsed())
        }));
    }
    calls
}

/// A computation three times as long as its lease runs once. Eight callers in each of the
/// replicas `a` and `b`, released together, ask for `"k"`; the one computation takes `compute`
/// (three lease lengths) and answers `value(1)`, while `while_computing` checks the holder's
/// lease. Every caller gets that value within `compute` + 1 s, and a lease length later nobody
/// computes again (a computation would answer `again`).
pub async fn a_computation_longer_than_its_lease_runs_once<T>(
    (a, b): (&Cache, &Cache),
    lock_timeout: Duration,
    compute: Duration,
    value: fn(usize) -> T,
    again: T,
    while_computing: impl Future<Output = ()>,
) where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone + Send + 'static,
{
    let computations = Arc::new(AtomicUsize::new(0));
    let calls = stampede([a, b], 8, "k", &computations, compute, value);
    while_computing.await;
    let within = compute + Duration::from_secs(1);
    assert_all_answer(calls, value(1), within, "a caller took").await;
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    // Nobody computes again, later either.
    tokio::time::sleep(lock_timeout).await;
    assert_computed_once(&[a, b], "k", &computations, value(1), again).await;
}

/// When each computation started, as recorded by [`takeover_waiters`].
pub type ComputedAt = Arc<Mutex<Vec<Instant>>>;

/// Spawns `callers` waiters of `id` on each of `caches`, each computing `"taken-over"` (in
/// 100 ms) after recording when it started; returns the calls (answer and latency) and the
/// computation start instants.
pub fn takeover_waiters(
    caches: &[Cache],
    id: &str,
    callers: usize,
) -> (Vec<JoinHandle<(String, Duration)>>, ComputedAt) {
    let computed_at = Arc::new(Mutex::new(Vec::new()));
    let mut calls = Vec::new();
    for cache in caches {
        for _ in 0..callers {
            let (cache, computed_at, id) = (cache.clone(), computed_at.clone(), id.to_owned());
            calls.push(tokio::spawn(async move {
                let started = Instant::now();
                let value = cache
                    .get_or_compute(&id, || async move {
                        computed_at.lock().unwrap().push(Instant::now());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        "taken-over".to_string()
                    })
                    .await;
                (value, started.elapsed())
            }));
        }
    }
    (calls, computed_at)
}

/// Spawns a `get_or_compute` of `id` on `cache` whose computation runs `body`, and returns
/// once that computation started (the call holds the lease then).
pub async fn start_holder<T>(
    cache: &Cache,
    id: &str,
    body: impl Future<Output = T> + Send + 'static,
) -> JoinHandle<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let (started_tx, started_rx) = oneshot::channel();
    let (cache, id) = (cache.clone(), id.to_owned());
    let task = tokio::spawn(async move {
        cache
            .get_or_compute(&id, || async move {
                let _ = started_tx.send(());
                body.await
            })
            .await
    });
    tokio::time::timeout(Duration::from_secs(5), started_rx)
        .await
        .expect("the holder never started computing")
        .expect("the holder task died before computing");
    task
}

/// `set` during a computation wins. Replica `a` computes `id` with two followers, and three
/// callers in replica `b` wait on its lease; a `set` through `b` answers `b`'s callers at once
/// and `a`'s followers too; the holder's caller keeps its own answer, but its value is refused
/// (a lease lost in `a`) and `b` never computes.
pub async fn set_during_a_computation_wins(a: &Cache, b: &Cache, id: &str) {
    let (gated, mut started) = Gated::new(1);
    let holder = gated.call(a, id);
    assert_eq!(started.recv().await, Some(0));
    let followers_in_a: Vec<_> = (0..2).map(|_| gated.call(a, id)).collect();
    let waiters_in_b: Vec<_> = (0..3).map(|_| gated.call(b, id)).collect();
    until("callers joined and waited", || {
        a.stats().coalesced == 2 && b.stats().lock_waits == 1 && b.stats().coalesced == 2
    })
    .await;

    b.set(id, &"from-set".to_string()).await.unwrap();
    // B's waiters are woken by the set and answer with it while the holder still computes.
    for waiter in waiters_in_b {
        let v = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("B's waiters were not woken by the set")
            .unwrap();
        assert_eq!(v, "from-set");
    }
    gated.open(0);
    assert_eq!(
        holder.await.unwrap(),
        "computation-0",
        "the holder's caller keeps its answer"
    );
    for follower in followers_in_a {
        assert_eq!(follower.await.unwrap(), "from-set");
    }
    assert_holds(a, id, "from-set").await;
    assert_eq!(gated.computations(), 1);
    assert_eq!(a.stats().leases_lost, 1, "{:?}", a.stats());
    assert_eq!(b.stats().computations, 0, "{:?}", b.stats());
}

/// `invalidate` during a computation refuses its value, with callers waiting. Replica `a`
/// computes `id` with two followers, and three callers in replica `b` wait on its lease; after
/// an invalidation through `b`, `b`'s callers look again at once and one of them computes under
/// a new lease; the holder's caller keeps its own answer, but its value is not stored (read
/// raw on `backend`), and `a`'s followers get the fresh value.
pub async fn invalidate_while_callers_wait(a: &Cache, b: &Cache, backend: &impl Backend, id: &str) {
    let (gated, mut started) = Gated::new(2);
    let (a_before, b_before) = (a.stats(), b.stats());
    let holder = gated.call(a, id);
    assert_eq!(started.recv().await, Some(0));
    let followers_in_a: Vec<_> = (0..2).map(|_| gated.call(a, id)).collect();
    let waiters_in_b: Vec<_> = (0..3).map(|_| gated.call(b, id)).collect();
    until("callers joined and waited", || {
        a.stats().coalesced == a_before.coalesced + 2
            && b.stats().lock_waits == b_before.lock_waits + 1
            && b.stats().coalesced == b_before.coalesced + 2
    })
    .await;

    b.invalidate(id).await.unwrap();
    // B's waiters look again at once: one of them takes a new lease.
    assert_eq!(started.recv().await, Some(1));
    gated.open(0);
    assert_eq!(holder.await.unwrap(), "computation-0");
    assert_eq!(
        backend.get(&a.key(id)).await.unwrap(),
        None,
        "the revoked computation was stored"
    );
    assert_eq!(
        a.stats().leases_lost,
        a_before.leases_lost + 1,
        "{:?}",
        a.stats()
    );
    gated.open(1);
    for call in followers_in_a.into_iter().chain(waiters_in_b) {
        assert_eq!(call.await.unwrap(), "computation-1");
    }
    assert_eq!(gated.computations(), 2);
    assert_holds(a, id, "computation-1").await;
}

/// A failure is shared in process and not queued behind in another replica. Replica `a`
/// computes `id` with `callers` followers, and `callers` callers in replica `b` wait on its
/// lease (one waits, the others follow it). When the holder's computation fails, `a`'s
/// followers get its own `Err` without computing, and `b`'s callers do not wait for the lease
/// to lapse: `b` computes at most once, and its callers all get that failure.
pub async fn a_failure_is_shared_and_not_queued(
    a: &Cache,
    b: &Cache,
    id: &str,
    callers: usize,
    lock_timeout: Duration,
) {
    let in_a = Arc::new(AtomicUsize::new(0));
    let in_b = Arc::new(AtomicUsize::new(0));
    let (failing, started) = Failing::new();
    let holder = failing.call(a, id, &in_a, "A");
    started.await.unwrap();
    let followers_in_a: Vec<_> = (0..callers)
        .map(|_| failing.call(a, id, &in_a, "A"))
        .collect();
    let waiters_in_b: Vec<_> = (0..callers)
        .map(|_| failing.call(b, id, &in_b, "B"))
        .collect();
    until("callers joined and waited", || {
        a.stats().coalesced >= callers as u64
            && b.stats().lock_waits >= 1
            && b.stats().coalesced >= callers as u64 - 1
    })
    .await;

    let failed_at = Instant::now();
    failing.fail_first();
    let failure = Err("A: attempt 1 failed".to_string());
    assert_eq!(holder.await.unwrap(), failure);
    // A's followers get the holder's own Err, cloned, without computing.
    for follower in followers_in_a {
        assert_eq!(follower.await.unwrap(), failure);
    }
    assert_eq!(in_a.load(Ordering::SeqCst), 1, "A's followers computed");
    let stats = a.stats();
    assert_eq!(stats.shared_failures, callers as u64, "{stats:?}");
    assert_eq!(stats.computations, 1, "{stats:?}");
    // B's callers do not queue behind the failed lease, and B computes at most once (its
    // followers share its own failure).
    let mut from_b = Vec::new();
    for waiter in waiters_in_b {
        from_b.push(waiter.await.unwrap());
    }
    assert!(
        failed_at.elapsed() < lock_timeout / 2,
        "B's callers waited for the failed lease to lapse ({:?})",
        failed_at.elapsed()
    );
    assert!(
        in_b.load(Ordering::SeqCst) <= 1,
        "B computed more than once"
    );
    assert!(
        from_b
            .iter()
            .all(|r| *r == Err("B: attempt 1 failed".to_string())),
        "{from_b:?}"
    );
}

/// Defines the static counter `$counter` and an `#[atomcache::cached(auto_refresh)]` function
/// `$name() -> u64` of namespace `$ns` (values live 2 s, leases 1 s: a refresh starts about
/// every second), whose computation counts itself in `$counter`, takes `$compute` and returns
/// the count: each refresh stores a new value. Attributes (docs) before `$name` go to the
/// function.
///
/// A macro, not a function: every runtime starts a refresher for each such function linked into
/// its binary, so only the test binaries that want one define it.
#[macro_export]
macro_rules! refreshed_counter {
    ($(#[$attr:meta])* $name:ident, $counter:ident, $ns:tt, $compute:expr) => {
        static $counter: ::std::sync::atomic::AtomicU64 = ::std::sync::atomic::AtomicU64::new(0);

        $(#[$attr])*
        #[::atomcache::cached(exp = 2, lock_timeout = 1, auto_refresh, namespace = $ns)]
        async fn $name() -> u64 {
            let n = $counter.fetch_add(1, ::std::sync::atomic::Ordering::SeqCst) + 1;
            ::tokio::time::sleep($compute).await;
            n
        }
    };
}

/// Polls `cache` every 10 ms until it holds the value of a function without arguments (id
/// `"null"`), as the refreshers of three replicas fill it at start-up (panics after `within`);
/// asserts that they computed it once between them, as the function's counter `computations`
/// has it, and returns that count.
pub async fn wait_first_fill(cache: &Cache, within: Duration, computations: &AtomicU64) -> u64 {
    let deadline = Instant::now() + within;
    while cache.get::<u64>("null").await.expect("get").is_none() {
        assert!(Instant::now() < deadline, "no refresher filled the value");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_fill = computations.load(Ordering::SeqCst);
    assert_eq!(
        first_fill, 1,
        "three replicas filled one value {first_fill} times"
    );
    first_fill
}

/// Reads the value of a function without arguments (id `"null"`) in `cache` every 5 ms until
/// `until`: how many reads, how many of them found nothing, and the values seen.
pub async fn read_refreshed(cache: &Cache, until: Instant) -> (u64, u64, BTreeSet<u64>) {
    let mut seen = BTreeSet::new();
    let (mut reads, mut misses) = (0u64, 0u64);
    while Instant::now() < until {
        match cache.get::<u64>("null").await.expect("the backend is up") {
            Some(v) => {
                seen.insert(v);
            }
            None => misses += 1,
        }
        reads += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (reads, misses, seen)
}

/// How many refresh periods `elapsed` spans with values living `exp` and leases `lock_timeout`:
/// a refresh starts about `lock_timeout` before expiry, so a period is about `exp - lock_timeout`.
pub fn refresh_periods(elapsed: Duration, exp: Duration, lock_timeout: Duration) -> f64 {
    elapsed.as_secs_f64() / (exp - lock_timeout).as_secs_f64()
}

/// Asserts that the replicas refreshed once per period between them: `computations` within
/// [`refresh_periods`] `periods` (one more, two fewer).
pub fn assert_one_refresh_per_period(computations: u64, periods: f64) {
    assert!(
        (computations as f64) <= periods + 1.0,
        "{computations} computations in {periods:.1} periods: more than one replica refreshed"
    );
    assert!(
        (computations as f64) >= periods - 2.0,
        "only {computations} refreshes in {periods:.1} periods"
    );
}
