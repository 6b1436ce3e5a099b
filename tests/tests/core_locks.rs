//! The lease and the wake-up on a real redis-server: token-checked renewal, store and release;
//! no lost wake-up between the look that found the lease held, subscribing, looking again and
//! waiting; and `set`/`invalidate` revoking a fill in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::{
    Backend, Cache, EntryKey, LeaseAttempt, Lookup, MemoryBackend, RedisBackend, Release,
};
use atomcache_tests::{HookPoint, Hooked, RedisServer};
use serde::{de::DeserializeOwned, Serialize};

const WAKE_BOUND: Duration = Duration::from_secs(2);

async fn connect(server: &RedisServer) -> RedisBackend {
    RedisBackend::connect(&server.url())
        .await
        .expect("connect to the test server")
}

/// The bytes `Cache` stores for `value` (header + bincode payload), for a test that plays the
/// holder and stores under its own lease.
async fn encoded<T: Serialize + DeserializeOwned>(value: &T) -> Vec<u8> {
    let scratch = Cache::builder("scratch")
        .backend(MemoryBackend::new())
        .build()
        .unwrap();
    scratch.set("v", value).await.unwrap();
    scratch.entry::<T>("v").await.unwrap().unwrap().raw.to_vec()
}

/// Polls `cond` every 5 ms until it holds (panics after 5 s).
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_holder_whose_lease_lapsed_cannot_touch_the_newer_holders_lease() {
    let server = RedisServer::start();
    let slow = connect(&server).await;
    let newer = connect(&server).await;
    let key = EntryKey::new(slow.key_prefix(), "tokens", "k");

    assert_eq!(
        slow.get_or_lease(&key, "token-a", Duration::from_millis(200))
            .await
            .unwrap(),
        Lookup::Leased
    );
    match newer
        .get_or_lease(&key, "token-b", Duration::from_secs(10))
        .await
        .unwrap()
    {
        Lookup::Held(holder) => {
            assert!(holder.remaining <= Duration::from_millis(200), "{holder:?}");
            assert_eq!(holder.token, "token-a");
            assert_eq!(holder.last_failed, None);
        }
        other => panic!("the lease was taken twice: {other:?}"),
    }
    // A wrong token releases and renews nothing.
    assert!(!newer
        .release_lease(&key, "token-b", Release::Abandoned)
        .await
        .unwrap());
    assert!(!newer
        .renew_lease(&key, "token-b", Duration::from_secs(10))
        .await
        .unwrap());
    assert_eq!(
        server.get_raw(&key.lock()).await.as_deref(),
        Some(&b"token-a"[..])
    );
    assert!(server.pttl(&key.lock()).await <= 200);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.pttl(&key.lock()).await, -2, "A's lease lapsed");
    assert_eq!(
        newer
            .try_lease(&key, "token-b", Duration::from_secs(10))
            .await
            .unwrap(),
        LeaseAttempt::Acquired
    );

    // The slow holder A wakes up and tries everything it could do with its old token.
    assert!(!slow
        .release_lease(&key, "token-a", Release::Abandoned)
        .await
        .unwrap());
    assert!(!slow
        .release_lease(
            &key,
            "token-a",
            Release::Failed {
                remember: Duration::from_secs(10)
            }
        )
        .await
        .unwrap());
    assert!(!slow
        .renew_lease(&key, "token-a", Duration::from_secs(30))
        .await
        .unwrap());
    assert!(!slow
        .store_leased(&key, "token-a", b"late value", Duration::from_secs(10))
        .await
        .unwrap());
    assert_eq!(
        server.get_raw(key.value()).await,
        None,
        "A's late store was refused"
    );
    assert_eq!(
        server.pttl(&key.failed()).await,
        -2,
        "A's refused release remembered a failure"
    );
    assert_eq!(
        server.get_raw(&key.lock()).await.as_deref(),
        Some(&b"token-b"[..]),
        "B's lease survived A"
    );
    let pttl = server.pttl(&key.lock()).await;
    assert!(
        pttl > 9_000 && pttl <= 10_000,
        "A must not have changed B's lease expiry: {pttl}"
    );
    match slow
        .try_lease(&key, "token-c", Duration::from_secs(1))
        .await
        .unwrap()
    {
        LeaseAttempt::Held(holder) => {
            assert!(holder.remaining > Duration::from_secs(8), "{holder:?}");
            assert_eq!(holder.token, "token-b");
        }
        LeaseAttempt::Acquired => panic!("B's lease was deleted by A"),
    }

    // B itself can renew and store; the store ends its lease.
    assert!(newer
        .renew_lease(&key, "token-b", Duration::from_secs(20))
        .await
        .unwrap());
    assert!(server.pttl(&key.lock()).await > 10_000);
    assert!(newer
        .store_leased(&key, "token-b", b"fresh", Duration::from_secs(10))
        .await
        .unwrap());
    assert_eq!(server.pttl(&key.lock()).await, -2);
    assert_eq!(
        server.get_raw(key.value()).await.as_deref(),
        Some(&b"fresh"[..])
    );
    assert!(
        !newer
            .store_leased(&key, "token-b", b"again", Duration::from_secs(10))
            .await
            .unwrap(),
        "a lease stores once"
    );
    assert_eq!(
        server.get_raw(key.value()).await.as_deref(),
        Some(&b"fresh"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_published_right_after_subscribe_is_never_lost() {
    const ROUNDS: usize = 150;
    let server = RedisServer::start();
    let waiter = connect(&server).await;
    let other = connect(&server).await;

    // A store without the lease is refused and writes nothing.
    let key = EntryKey::new(waiter.key_prefix(), "wake", "no-lease");
    assert!(!other
        .store_leased(&key, "nobody", b"v", Duration::from_secs(10))
        .await
        .unwrap());
    assert_eq!(server.get_raw(key.value()).await, None);

    for round in 0..ROUNDS {
        // A fresh key each round, so each round really sends SUBSCRIBE and waits for its
        // confirmation; then another connection ends or revokes a lease, or publishes, at once.
        let key = EntryKey::new(waiter.key_prefix(), "wake", &format!("fresh-{round}"));
        let mut sub = waiter.subscribe(&key).await.unwrap();
        let lease = |token: &'static str| {
            let (other, key) = (other.clone(), key.clone());
            async move {
                assert_eq!(
                    other
                        .try_lease(&key, token, Duration::from_secs(10))
                        .await
                        .unwrap(),
                    LeaseAttempt::Acquired
                );
            }
        };
        match round % 6 {
            0 => {
                lease("t").await;
                assert!(other
                    .store_leased(&key, "t", b"v", Duration::from_secs(10))
                    .await
                    .unwrap());
            }
            1 => other
                .set(&key, b"v", Duration::from_secs(10))
                .await
                .unwrap(),
            2 => {
                lease("t").await;
                assert!(other
                    .release_lease(&key, "t", Release::Abandoned)
                    .await
                    .unwrap());
            }
            3 => {
                lease("t").await;
                assert!(other
                    .release_lease(
                        &key,
                        "t",
                        Release::Failed {
                            remember: Duration::from_secs(1)
                        }
                    )
                    .await
                    .unwrap());
            }
            4 => {
                lease("t").await;
                other.invalidate(&key).await.unwrap();
            }
            _ => assert!(server.publish(&key.channel(), "raw").await >= 1),
        }
        tokio::time::timeout(WAKE_BOUND, sub.woken())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the wake-up was lost"));
    }

    // The same key over and over: the channel stays subscribed, each new subscription still
    // sees the next publish.
    let key = EntryKey::new(waiter.key_prefix(), "wake", "same");
    for round in 0..ROUNDS {
        let mut sub = waiter.subscribe(&key).await.unwrap();
        other
            .set(&key, b"v", Duration::from_secs(10))
            .await
            .unwrap();
        tokio::time::timeout(WAKE_BOUND, sub.woken())
            .await
            .unwrap_or_else(|_| panic!("same key, round {round}: the wake-up was lost"));
    }

    // Waiters of one process share one subscription per channel (the backend's count).
    let key = EntryKey::new(waiter.key_prefix(), "wake", "shared");
    let subs: Vec<_> = futures::future::join_all((0..50).map(|_| waiter.subscribe(&key)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        server.publish(&key.channel(), "x").await,
        1,
        "50 local waiters must share one Redis subscriber"
    );
    drop(subs);
}

/// How the entry changes while the waiter walks its path.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// The holder stores its value under its lease.
    Stored,
    /// Another replica `set`s the value, revoking the holder's lease.
    Set,
    /// The holder's computation fails: it releases its lease.
    Failed,
}

/// The entry changes at an exact point of the waiter's path (through another replica's
/// connection); the waiter must see it without waiting for the lease to lapse: it answers with
/// the stored value, or takes the lease at once after a failure.
async fn change_at(point: HookPoint) {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let server = RedisServer::start();
    let holder_backend = connect(&server).await;
    let stored = encoded(&"from-holder".to_string()).await;
    for change in [Change::Stored, Change::Set, Change::Failed] {
        let ns = format!("gap-{change:?}");
        let holder = Cache::builder(ns.clone())
            .exp(Duration::from_secs(60))
            .lock_timeout(LOCK_TIMEOUT)
            .backend(holder_backend.clone())
            .build()
            .unwrap();
        let key = holder.key("k");
        assert_eq!(
            holder_backend
                .try_lease(&key, "holder", LOCK_TIMEOUT)
                .await
                .unwrap(),
            LeaseAttempt::Acquired
        );

        let action = {
            let (holder, backend, key, stored) = (
                holder.clone(),
                holder_backend.clone(),
                key.clone(),
                stored.clone(),
            );
            async move {
                match change {
                    Change::Stored => assert!(backend
                        .store_leased(&key, "holder", &stored, Duration::from_secs(60))
                        .await
                        .unwrap()),
                    Change::Set => {
                        holder.set("k", &"from-set".to_string()).await.unwrap();
                        assert!(
                            !backend
                                .store_leased(&key, "holder", &stored, Duration::from_secs(60))
                                .await
                                .unwrap(),
                            "the set revoked the holder's lease"
                        );
                    }
                    Change::Failed => assert!(backend
                        .release_lease(
                            &key,
                            "holder",
                            Release::Failed {
                                remember: Duration::from_secs(2)
                            }
                        )
                        .await
                        .unwrap()),
                }
            }
        };
        let hooked = Hooked::new(connect(&server).await, point, action);
        let fired = hooked.fired();
        let waiter = Cache::builder(ns)
            .exp(Duration::from_secs(60))
            .lock_timeout(LOCK_TIMEOUT)
            .backend(hooked)
            .build()
            .unwrap();
        assert_eq!(waiter.key("k"), key);

        let started = Instant::now();
        let value = tokio::time::timeout(
            LOCK_TIMEOUT / 2,
            waiter.get_or_compute("k", || async { "from-waiter".to_string() }),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("{point:?} {change:?}: the waiter missed the change and waited for the lease")
        });
        assert!(
            fired.load(Ordering::SeqCst),
            "{point:?} {change:?}: the hook never ran"
        );
        assert!(
            started.elapsed() < WAKE_BOUND,
            "{point:?} {change:?}: took {:?}",
            started.elapsed()
        );
        let stats = waiter.stats();
        assert_eq!(stats.lock_waits, 1, "{point:?} {change:?}: {stats:?}");
        assert_eq!(stats.own_attempts, 0, "{point:?} {change:?}: {stats:?}");
        let expected = match change {
            Change::Stored => "from-holder",
            Change::Set => "from-set",
            // Failures never queue: the waiter took the next lease at once and stored.
            Change::Failed => "from-waiter",
        };
        assert_eq!(value, expected, "{point:?} {change:?}");
        assert_eq!(
            stats.computations,
            u64::from(matches!(change, Change::Failed)),
            "{point:?} {change:?}: {stats:?}"
        );
        assert_eq!(
            holder.get::<String>("k").await.unwrap().as_deref(),
            Some(expected),
            "{point:?} {change:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_after_the_lease_was_found_held_before_subscribing_is_seen() {
    change_at(HookPoint::LeaseHeld).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_right_after_subscribing_is_seen() {
    change_at(HookPoint::Subscribed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_between_the_second_look_and_the_wait_wakes_the_waiter() {
    change_at(HookPoint::Miss(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_racing_a_landing_value_never_miss_it() {
    // Unsynchronised races on top of the exact points above: the holder lands its value (its
    // own store under the lease, or another replica's `set`) after a varying delay while a
    // waiter walks look → subscribe → look → wait.
    const ROUNDS: u64 = 40;
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let server = RedisServer::start();
    let holder_backend = connect(&server).await;
    let waiter_backend = connect(&server).await;
    for round in 0..ROUNDS {
        let ns = format!("race-{round}");
        let holder = Cache::builder(ns.clone())
            .lock_timeout(LOCK_TIMEOUT)
            .backend(holder_backend.clone())
            .build()
            .unwrap();
        let waiter = Cache::builder(ns)
            .lock_timeout(LOCK_TIMEOUT)
            .backend(waiter_backend.clone())
            .build()
            .unwrap();
        let key = holder.key("k");
        assert_eq!(
            holder_backend
                .try_lease(&key, "holder", LOCK_TIMEOUT)
                .await
                .unwrap(),
            LeaseAttempt::Acquired
        );
        let bytes = encoded(&round).await;
        let wait = tokio::spawn(async move {
            tokio::time::timeout(
                WAKE_BOUND,
                waiter.get_or_compute("k", || async { round + 1_000_000 }),
            )
            .await
        });
        // 0..~4 ms: before, during and after the waiter's own round trips.
        tokio::time::sleep(Duration::from_micros((round % 20) * 200)).await;
        if round % 2 == 0 {
            assert!(holder_backend
                .store_leased(&key, "holder", &bytes, Duration::from_secs(60))
                .await
                .unwrap());
        } else {
            holder.set("k", &round).await.unwrap();
        }
        let value = wait
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("round {round}: wake-up lost"));
        assert_eq!(value, round, "round {round}: the waiter computed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_channels_are_unsubscribed_and_a_later_waiter_subscribes_again() {
    let server = RedisServer::start();
    let waiter = connect(&server).await;
    let other = connect(&server).await;
    let key = EntryKey::new(waiter.key_prefix(), "sweep", "k");

    let sub = waiter.subscribe(&key).await.unwrap();
    assert_eq!(server.publish(&key.channel(), "x").await, 1);
    drop(sub);
    // The background sweep (every few seconds) unsubscribes the channel nobody waits on.
    let deadline = Instant::now() + Duration::from_secs(12);
    while waiter.subscribed_channels() > 0 {
        assert!(
            Instant::now() < deadline,
            "the idle channel was never swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.publish(&key.channel(), "x").await != 0 {
        assert!(
            Instant::now() < deadline,
            "swept but still subscribed on the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut sub = waiter.subscribe(&key).await.unwrap();
    other
        .set(&key, b"v", Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::timeout(WAKE_BOUND, sub.woken())
        .await
        .expect("a waiter after the sweep was not woken");
}

/// A replica: its own connection, its own single-flight table and stats.
async fn replica(server: &RedisServer, ns: &str) -> Cache {
    Cache::builder(ns)
        .exp(Duration::from_secs(60))
        .lock_timeout(Duration::from_secs(5))
        .backend(connect(server).await)
        .build()
        .unwrap()
}

/// A caller of `id` whose computation `n` (counted across every caller made by this helper)
/// reports `n` on `started` and returns `computation-<n>` once `gates[n]` is notified.
struct Gated {
    computations: Arc<AtomicUsize>,
    gates: Vec<Arc<tokio::sync::Notify>>,
    started: tokio::sync::mpsc::UnboundedSender<usize>,
}

impl Gated {
    fn new(rounds: usize) -> (Self, tokio::sync::mpsc::UnboundedReceiver<usize>) {
        let (started, rx) = tokio::sync::mpsc::unbounded_channel();
        let gated = Gated {
            computations: Arc::default(),
            gates: (0..rounds).map(|_| Arc::default()).collect(),
            started,
        };
        (gated, rx)
    }

    fn call(&self, cache: &Cache, id: &str) -> tokio::task::JoinHandle<String> {
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

    fn open(&self, n: usize) {
        self.gates[n].notify_one();
    }

    fn computations(&self) -> usize {
        self.computations.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_during_a_computation_refuses_its_value() {
    let server = RedisServer::start();
    let a = replica(&server, "revoked").await;
    let b = replica(&server, "revoked").await;

    // Alone: the holder's value is not stored; the next caller computes a fresh one.
    let (gated, mut started) = Gated::new(2);
    let holder = gated.call(&a, "alone");
    assert_eq!(started.recv().await, Some(0));
    b.invalidate("alone").await.unwrap();
    assert_eq!(
        server.pttl(&a.key("alone").lock()).await,
        -2,
        "the invalidation revoked the lease"
    );
    gated.open(0);
    assert_eq!(
        holder.await.unwrap(),
        "computation-0",
        "the holder's caller keeps its answer"
    );
    assert_eq!(server.get_raw(a.key("alone").value()).await, None);
    assert_eq!(a.get::<String>("alone").await.unwrap(), None);
    assert_eq!(a.stats().leases_lost, 1, "{:?}", a.stats());
    gated.open(1);
    assert_eq!(gated.call(&b, "alone").await.unwrap(), "computation-1");
    assert_eq!(
        a.get::<String>("alone").await.unwrap().as_deref(),
        Some("computation-1")
    );

    // With callers waiting in both replicas: B's waiters look again at once and one of them
    // computes under a new lease; A's followers of the refused fill get that fresh value.
    let (gated, mut started) = Gated::new(2);
    let (a_before, b_before) = (a.stats(), b.stats());
    let holder = gated.call(&a, "waited");
    assert_eq!(started.recv().await, Some(0));
    let followers_in_a: Vec<_> = (0..2).map(|_| gated.call(&a, "waited")).collect();
    let waiters_in_b: Vec<_> = (0..3).map(|_| gated.call(&b, "waited")).collect();
    until("callers joined and waited", || {
        a.stats().coalesced == a_before.coalesced + 2
            && b.stats().lock_waits == b_before.lock_waits + 1
            && b.stats().coalesced == b_before.coalesced + 2
    })
    .await;
    b.invalidate("waited").await.unwrap();
    assert_eq!(started.recv().await, Some(1));
    gated.open(0);
    assert_eq!(holder.await.unwrap(), "computation-0");
    assert_eq!(
        server.get_raw(a.key("waited").value()).await,
        None,
        "the revoked computation was stored"
    );
    assert_eq!(a.stats().leases_lost, 2, "{:?}", a.stats());
    gated.open(1);
    for call in followers_in_a.into_iter().chain(waiters_in_b) {
        assert_eq!(call.await.unwrap(), "computation-1");
    }
    assert_eq!(gated.computations(), 2);
    assert_eq!(
        a.get::<String>("waited").await.unwrap().as_deref(),
        Some("computation-1")
    );
    assert_eq!(a.stats().backend_errors + b.stats().backend_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_a_computation_wins() {
    let server = RedisServer::start();
    let a = replica(&server, "set-wins").await;
    let b = replica(&server, "set-wins").await;
    let (gated, mut started) = Gated::new(1);
    let holder = gated.call(&a, "k");
    assert_eq!(started.recv().await, Some(0));
    let followers_in_a: Vec<_> = (0..2).map(|_| gated.call(&a, "k")).collect();
    let waiters_in_b: Vec<_> = (0..3).map(|_| gated.call(&b, "k")).collect();
    until("callers joined and waited", || {
        a.stats().coalesced == 2 && b.stats().lock_waits == 1 && b.stats().coalesced == 2
    })
    .await;

    b.set("k", &"from-set".to_string()).await.unwrap();
    // B's waiters are woken by the set and answer with it while the holder still computes.
    for waiter in waiters_in_b {
        let v = tokio::time::timeout(WAKE_BOUND, waiter)
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
    assert_eq!(
        a.get::<String>("k").await.unwrap().as_deref(),
        Some("from-set")
    );
    assert_eq!(server.pttl(&a.key("k").lock()).await, -2);
    assert_eq!(gated.computations(), 1);
    assert_eq!(a.stats().leases_lost, 1, "{:?}", a.stats());
    assert_eq!(b.stats().computations, 0, "{:?}", b.stats());
}
