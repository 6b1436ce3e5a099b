//! Bounds checked where they are cheap: values too large to be read back are not stored,
//! lifetimes no backend can represent are a configuration error, and huge durations given to a
//! backend directly do not panic.

use std::time::Duration;

use atomcache::{Backend, Cache, CodecError, EntryKey, Error, MemoryBackend};

#[tokio::test]
async fn a_value_larger_than_the_decode_limit_is_refused_at_encode_time() {
    let cache = Cache::builder("limits-large")
        .backend(MemoryBackend::new())
        .build()
        .unwrap();
    let huge = vec![7u8; atomcache::codec::MAX_DECODE_BYTES + 1];
    match cache.set("big", &huge).await {
        Err(Error::Codec(CodecError::TooLarge { len, limit })) => {
            assert!(len > limit);
            assert_eq!(limit, atomcache::codec::MAX_DECODE_BYTES);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The cached path still answers (fail-open) and stores nothing it could not read back.
    let got = cache.get_or_compute("big", || async { huge.clone() }).await;
    assert_eq!(got.len(), huge.len());
    assert_eq!(cache.get::<Vec<u8>>("big").await.unwrap(), None);
    assert_eq!(cache.stats().store_failures, 1);
}

#[test]
fn lifetimes_beyond_what_backends_represent_are_a_config_error() {
    for (exp, lock, wait) in [
        (
            Duration::MAX,
            Duration::from_secs(5),
            Duration::from_secs(30),
        ),
        (
            Duration::from_secs(101 * 365 * 24 * 3600),
            Duration::from_secs(5),
            Duration::from_secs(30),
        ),
        (
            Duration::from_secs(60),
            Duration::from_secs(5),
            Duration::MAX,
        ),
        (
            Duration::from_secs(60),
            Duration::from_secs(5),
            Duration::ZERO,
        ),
    ] {
        let built = Cache::builder("limits-config")
            .exp(exp)
            .lock_timeout(lock)
            .max_wait(wait)
            .build();
        match built {
            Err(Error::InvalidConfig(message)) => assert!(!message.is_empty()),
            other => panic!("({exp:?}, {lock:?}, {wait:?}) should be refused: {other:?}"),
        }
    }
    // The longest accepted lifetime is accepted.
    Cache::builder("limits-config")
        .exp(Duration::from_secs(100 * 365 * 24 * 3600))
        .build()
        .unwrap();
}

#[tokio::test]
async fn huge_durations_given_to_the_memory_backend_do_not_panic() {
    let backend = MemoryBackend::new();
    let key = EntryKey::new("", "limits", "k");
    backend.set(&key, b"v", Duration::MAX).await.unwrap();
    assert!(backend.get(&key).await.unwrap().is_some());
    assert!(backend.remaining_ttl(&key).await.unwrap().is_some());
    backend.invalidate(&key).await.unwrap();
    let lookup = backend
        .get_or_lease(&key, "t", Duration::MAX)
        .await
        .unwrap();
    assert_eq!(lookup, atomcache::Lookup::Leased);
    assert!(backend.renew_lease(&key, "t", Duration::MAX).await.unwrap());
}
