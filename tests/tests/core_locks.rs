//! The lease and the wake-up on a real redis-server: token-checked renewal, store and release;
//! no lost wake-up between the look that found the lease held, subscribing, looking again and
//! waiting; and `set`/`invalidate` revoking a fill in flight.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use atomcache::{Backend, Cache, EntryKey, LeaseAttempt, Lookup, RedisBackend, Release};
use atomcache_tests::support::{
    self, assert_holds, assert_stale_token_refused, assert_waited_once, cache_on, encoded,
    hold_lease, invalidate_while_callers_wait, lease_holder, release_failed, Gated, Landing,
};
use atomcache_tests::{HookPoint, Hooked, RedisServer};

const WAKE_BOUND: Duration = Duration::from_secs(2);

async fn connect(server: &RedisServer) -> RedisBackend {
    RedisBackend::connect(&server.url())
        .await
        .expect("connect to the test server")
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
    assert_stale_token_refused(&slow, &key, "token-a").await;
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
    let holder = lease_holder(&slow, &key, "token-c", "B's lease was deleted by A").await;
    assert!(holder.remaining > Duration::from_secs(8), "{holder:?}");
    assert_eq!(holder.token, "token-b");

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
            async move { hold_lease(&other, &key, token, Duration::from_secs(10)).await }
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
                assert!(release_failed(&other, &key, "t", Duration::from_secs(1)).await);
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

/// The entry changes at an exact point of the waiter's path (through another replica's
/// connection); the waiter must see it without waiting for the lease to lapse: it answers with
/// the stored value, or takes the lease at once after a failure.
async fn change_at(point: HookPoint) {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let server = RedisServer::start();
    let holder_backend = connect(&server).await;
    let stored = encoded(&"from-holder".to_string()).await;
    for change in Landing::ALL {
        let ns = format!("gap-{change:?}");
        let holder = cache_on(holder_backend.clone(), &ns, LOCK_TIMEOUT);
        let key = holder.key("k");
        hold_lease(&holder_backend, &key, "holder", LOCK_TIMEOUT).await;

        let action = change.land(
            holder.clone(),
            holder_backend.clone(),
            key.clone(),
            stored.clone(),
        );
        let hooked = Hooked::new(connect(&server).await, point, action);
        let fired = hooked.fired();
        let waiter = cache_on(hooked, &ns, LOCK_TIMEOUT);
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
        assert_waited_once(&stats, &format!("{point:?} {change:?}"));
        // Failures never queue: the waiter took the next lease at once and stored.
        let expected = change.expected();
        assert_eq!(value, expected, "{point:?} {change:?}");
        assert_eq!(
            stats.computations,
            u64::from(change == Landing::Failed),
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
        let holder = cache_on(holder_backend.clone(), &ns, LOCK_TIMEOUT);
        let waiter = cache_on(waiter_backend.clone(), &ns, LOCK_TIMEOUT);
        let key = holder.key("k");
        hold_lease(&holder_backend, &key, "holder", LOCK_TIMEOUT).await;
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
    cache_on(connect(server).await, ns, Duration::from_secs(5))
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
    assert_holds(&a, "alone", "computation-1").await;

    // With callers waiting in both replicas: B's waiters look again at once and one of them
    // computes under a new lease; A's followers of the refused fill get that fresh value.
    invalidate_while_callers_wait(&a, &b, &connect(&server).await, "waited").await;
    assert_eq!(a.stats().backend_errors + b.stats().backend_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_a_computation_wins() {
    let server = RedisServer::start();
    let a = replica(&server, "set-wins").await;
    let b = replica(&server, "set-wins").await;
    support::set_during_a_computation_wins(&a, &b, "k").await;
    assert_eq!(server.pttl(&a.key("k").lock()).await, -2);
}
