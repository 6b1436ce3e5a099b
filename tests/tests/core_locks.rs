//! The lock and the wake-up on a real redis-server: token-checked release, and no lost
//! wake-up between subscribing, looking at the value and waiting.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::{Backend, Cache, EntryKey, LockAttempt, RedisBackend};
use atomcache_tests::{HookPoint, Hooked, RedisServer};

const WAKE_BOUND: Duration = Duration::from_secs(2);

async fn connect(server: &RedisServer) -> RedisBackend {
    RedisBackend::connect(&server.url())
        .await
        .expect("connect to the test server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_holder_whose_lock_expired_cannot_touch_the_newer_holders_lock() {
    let server = RedisServer::start();
    let slow = connect(&server).await;
    let newer = connect(&server).await;
    let key = EntryKey::new(slow.key_prefix(), "tokens", "k");

    assert_eq!(
        slow.try_lock(&key, "token-a", Duration::from_millis(200))
            .await
            .unwrap(),
        LockAttempt::Acquired
    );
    match newer
        .try_lock(&key, "token-b", Duration::from_secs(10))
        .await
        .unwrap()
    {
        LockAttempt::Held { remaining } => assert!(remaining <= Duration::from_millis(200)),
        LockAttempt::Acquired => panic!("the lock was taken twice"),
    }
    // A wrong token releases nothing.
    assert!(!newer.unlock(&key, "token-b").await.unwrap());
    assert_eq!(
        server.get_raw(&key.lock()).await.as_deref(),
        Some(&b"token-a"[..])
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.pttl(&key.lock()).await, -2, "A's lock expired");
    assert_eq!(
        newer
            .try_lock(&key, "token-b", Duration::from_secs(10))
            .await
            .unwrap(),
        LockAttempt::Acquired
    );

    // The slow holder A wakes up and tries everything it could do with its old token.
    assert!(!slow.unlock(&key, "token-a").await.unwrap());
    assert!(!slow
        .extend_lock(&key, "token-a", Duration::from_secs(30))
        .await
        .unwrap());
    assert!(!slow
        .store_and_unlock(&key, "token-a", b"late value", Duration::from_secs(10))
        .await
        .unwrap());
    assert_eq!(
        server.get_raw(&key.lock()).await.as_deref(),
        Some(&b"token-b"[..]),
        "B's lock survived A"
    );
    let pttl = server.pttl(&key.lock()).await;
    assert!(
        pttl > 9_000 && pttl <= 10_000,
        "A must not have changed B's lock expiry: {pttl}"
    );
    match slow
        .try_lock(&key, "token-c", Duration::from_secs(1))
        .await
        .unwrap()
    {
        LockAttempt::Held { remaining } => assert!(remaining > Duration::from_secs(8)),
        LockAttempt::Acquired => panic!("B's lock was deleted by A"),
    }

    // B itself can extend and release.
    assert!(newer
        .extend_lock(&key, "token-b", Duration::from_secs(20))
        .await
        .unwrap());
    assert!(server.pttl(&key.lock()).await > 10_000);
    assert!(newer
        .store_and_unlock(&key, "token-b", b"fresh", Duration::from_secs(10))
        .await
        .unwrap());
    assert_eq!(server.pttl(&key.lock()).await, -2);
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

    for round in 0..ROUNDS {
        // A fresh key each round, so each round really sends SUBSCRIBE and waits for its
        // confirmation; then another connection publishes at once.
        let key = EntryKey::new(waiter.key_prefix(), "wake", &format!("fresh-{round}"));
        let mut sub = waiter.subscribe(&key).await.unwrap();
        match round % 4 {
            0 => {
                other
                    .store_and_unlock(&key, "nobody", b"v", Duration::from_secs(10))
                    .await
                    .unwrap();
            }
            1 => other
                .set(&key, b"v", Duration::from_secs(10))
                .await
                .unwrap(),
            2 => {
                assert_eq!(
                    other
                        .try_lock(&key, "t", Duration::from_secs(10))
                        .await
                        .unwrap(),
                    LockAttempt::Acquired
                );
                assert!(other.unlock(&key, "t").await.unwrap());
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

/// The value lands at an exact point of the waiter's path (through another replica's
/// connection); the waiter must answer with it, without computing and without waiting for the
/// lock to expire.
async fn value_lands_at(point: HookPoint) {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let server = RedisServer::start();
    let holder_backend = connect(&server).await;
    let holder = Cache::builder("gap")
        .exp(Duration::from_secs(60))
        .lock_timeout(LOCK_TIMEOUT)
        .backend(holder_backend.clone())
        .build()
        .unwrap();
    let key = holder.key("k");
    assert_eq!(
        holder_backend
            .try_lock(&key, "holder", LOCK_TIMEOUT)
            .await
            .unwrap(),
        LockAttempt::Acquired
    );

    let landing = {
        let (holder, backend, key) = (holder.clone(), holder_backend.clone(), key.clone());
        async move {
            holder.set("k", &"from-holder".to_string()).await.unwrap();
            assert!(backend.unlock(&key, "holder").await.unwrap());
        }
    };
    let hooked = Hooked::new(connect(&server).await, point, landing);
    let fired = hooked.fired();
    let waiter = Cache::builder("gap")
        .exp(Duration::from_secs(60))
        .lock_timeout(LOCK_TIMEOUT)
        .backend(hooked)
        .build()
        .unwrap();
    assert_eq!(waiter.key("k"), key);

    let computed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let flag = computed.clone();
    let value = tokio::time::timeout(
        LOCK_TIMEOUT / 2,
        waiter.get_or_compute("k", || async move {
            flag.store(true, Ordering::SeqCst);
            "from-waiter".to_string()
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{point:?}: the waiter missed the value and waited for the lock"));
    assert!(
        fired.load(Ordering::SeqCst),
        "{point:?}: the hook never ran"
    );
    assert_eq!(value, "from-holder", "{point:?}");
    assert!(
        !computed.load(Ordering::SeqCst),
        "{point:?}: the waiter computed"
    );
    assert!(
        started.elapsed() < WAKE_BOUND,
        "{point:?}: took {:?}",
        started.elapsed()
    );
    assert_eq!(waiter.stats().computations, 0);
    assert_eq!(waiter.stats().lock_waits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_landing_after_the_lock_attempt_before_subscribing_is_seen() {
    value_lands_at(HookPoint::LockHeld).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_landing_right_after_subscribing_is_seen() {
    value_lands_at(HookPoint::Subscribed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_landing_between_the_check_and_the_wait_wakes_the_waiter() {
    value_lands_at(HookPoint::Miss(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_racing_a_landing_value_never_miss_it() {
    // Unsynchronised races on top of the exact points above: the holder lands its value after
    // a varying delay while a waiter walks lock → subscribe → check → wait.
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
                .try_lock(&key, "holder", LOCK_TIMEOUT)
                .await
                .unwrap(),
            LockAttempt::Acquired
        );
        let wait = tokio::spawn(async move {
            tokio::time::timeout(
                WAKE_BOUND,
                waiter.get_or_compute("k", || async { round + 1_000_000 }),
            )
            .await
        });
        // 0..~4 ms: before, during and after the waiter's own round trips.
        tokio::time::sleep(Duration::from_micros((round % 20) * 200)).await;
        holder.set("k", &round).await.unwrap();
        holder_backend.unlock(&key, "holder").await.unwrap();
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
