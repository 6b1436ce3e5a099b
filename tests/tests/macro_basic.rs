//! `#[cached]` on free functions, on the embedded memory backend (no `init`). Every test uses
//! its own functions: the backend is process-wide and the tests of this file share it.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use atomcache::cached;
use serde::{Deserialize, Serialize};

static SQUARE_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The doc comment stays on the function.
#[cached(exp = 600, lock_timeout = 5)]
pub async fn square(x: u32) -> u64 {
    SQUARE_CALLS.fetch_add(1, SeqCst);
    u64::from(x) * u64::from(x)
}

#[tokio::test]
async fn a_value_is_computed_once_per_distinct_arguments() {
    assert_eq!(square(3).await, 9);
    assert_eq!(square(3).await, 9);
    assert_eq!(SQUARE_CALLS.load(SeqCst), 1);
    assert_eq!(square(4).await, 16);
    assert_eq!(SQUARE_CALLS.load(SeqCst), 2);
    assert_eq!(square(3).await, 9);
    assert_eq!(SQUARE_CALLS.load(SeqCst), 2);
}

static PAGE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = "10m")]
async fn page(offset: u32, items: u32) -> Vec<u32> {
    PAGE_CALLS.fetch_add(1, SeqCst);
    (offset..offset + items).collect()
}

#[tokio::test]
async fn every_argument_is_part_of_the_id() {
    assert_eq!(page(0, 3).await, [0, 1, 2]);
    assert_eq!(page(0, 2).await, [0, 1]);
    assert_eq!(page(1, 2).await, [1, 2]);
    assert_eq!(page(0, 3).await, [0, 1, 2]);
    assert_eq!(PAGE_CALLS.load(SeqCst), 3);
}

static FALLIBLE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, PartialEq)]
struct Unavailable;

#[cached(exp = 60)]
async fn fallible(x: u32) -> Result<u32, Unavailable> {
    // The first attempt fails; the error type needs no serde at all.
    if FALLIBLE_CALLS.fetch_add(1, SeqCst) == 0 {
        return Err(Unavailable);
    }
    Ok(x + 1)
}

#[tokio::test]
async fn err_is_returned_and_not_cached() {
    assert_eq!(fallible(1).await, Err(Unavailable));
    assert_eq!(fallible(1).await, Ok(2));
    assert_eq!(fallible(1).await, Ok(2));
    assert_eq!(FALLIBLE_CALLS.load(SeqCst), 2);
}

static QUESTION_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60)]
async fn parse_number(text: &str) -> Result<i64, std::num::ParseIntError> {
    QUESTION_CALLS.fetch_add(1, SeqCst);
    if text.is_empty() {
        return Ok(0);
    }
    let n: i64 = text.trim().parse()?;
    Ok(n * 2)
}

#[tokio::test]
async fn return_and_question_mark_work_in_the_body() {
    assert_eq!(parse_number("").await, Ok(0));
    assert_eq!(parse_number(" 21").await, Ok(42));
    assert!(parse_number("x").await.is_err());
    assert!(parse_number("x").await.is_err());
    assert_eq!(parse_number(" 21").await, Ok(42));
    assert_eq!(QUESTION_CALLS.load(SeqCst), 4);
}

static OPTION_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60)]
async fn find_user(id: u32) -> Option<String> {
    OPTION_CALLS.fetch_add(1, SeqCst);
    (id == 1).then(|| "ada".to_string())
}

#[tokio::test]
async fn none_is_not_cached() {
    assert_eq!(find_user(2).await, None);
    assert_eq!(find_user(2).await, None);
    assert_eq!(OPTION_CALLS.load(SeqCst), 2);
    assert_eq!(find_user(1).await.as_deref(), Some("ada"));
    assert_eq!(find_user(1).await.as_deref(), Some("ada"));
    assert_eq!(OPTION_CALLS.load(SeqCst), 3);
}

static CACHE_NONE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60, cache_none)]
async fn find_user_remembering_misses(id: u32) -> Option<String> {
    CACHE_NONE_CALLS.fetch_add(1, SeqCst);
    (id == 1).then(|| "ada".to_string())
}

#[tokio::test]
async fn cache_none_stores_none_too() {
    assert_eq!(find_user_remembering_misses(2).await, None);
    assert_eq!(find_user_remembering_misses(2).await, None);
    assert_eq!(CACHE_NONE_CALLS.load(SeqCst), 1);
}

/// Something that is not serialisable, like a connection pool.
struct Client {
    base: u32,
}

static SKIP_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60, skip(client))]
async fn fetch(client: &Client, id: u32) -> u32 {
    SKIP_CALLS.fetch_add(1, SeqCst);
    client.base + id
}

#[tokio::test]
async fn skipped_arguments_are_not_part_of_the_id() {
    let (a, b) = (Client { base: 100 }, Client { base: 200 });
    assert_eq!(fetch(&a, 1).await, 101);
    // Another client, same id: the cached value (the skipped argument does not matter).
    assert_eq!(fetch(&b, 1).await, 101);
    assert_eq!(fetch(&b, 2).await, 202);
    assert_eq!(SKIP_CALLS.load(SeqCst), 2);
    // The companion takes only the arguments of the id.
    fetch_invalidate(1).await.unwrap();
    assert_eq!(fetch(&b, 1).await, 201);
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct User {
    id: u64,
    name: String,
}

static KEY_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60, key = user.id)]
async fn greeting(user: &User, punctuation: char) -> String {
    KEY_CALLS.fetch_add(1, SeqCst);
    format!("hello {}{punctuation}", user.name)
}

#[tokio::test]
async fn key_alone_makes_the_id() {
    let ada = User {
        id: 1,
        name: "ada".into(),
    };
    let renamed = User {
        id: 1,
        name: "countess".into(),
    };
    assert_eq!(greeting(&ada, '!').await, "hello ada!");
    assert_eq!(greeting(&renamed, '?').await, "hello ada!");
    assert_eq!(KEY_CALLS.load(SeqCst), 1);
    // The id is the JSON of the key, in the function's namespace.
    let cache = atomcache::Cache::new(concat!(module_path!(), "::greeting"));
    assert_eq!(
        cache.get::<String>("1").await.unwrap().as_deref(),
        Some("hello ada!")
    );
    greeting_invalidate(&renamed, '.').await.unwrap();
    assert_eq!(greeting(&renamed, '?').await, "hello countess?");
}

static REF_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60)]
async fn describe(name: &str, scores: &[u32], owner: &User) -> String {
    REF_CALLS.fetch_add(1, SeqCst);
    format!("{name}:{}:{}", scores.iter().sum::<u32>(), owner.name)
}

#[tokio::test]
async fn reference_arguments_work() {
    let owner = User {
        id: 7,
        name: "grace".into(),
    };
    let (name, scores) = (String::from("total"), vec![1, 2, 3]);
    assert_eq!(describe(&name, &[1, 2, 3], &owner).await, "total:6:grace");
    assert_eq!(describe("total", &scores, &owner).await, "total:6:grace");
    assert_eq!(REF_CALLS.load(SeqCst), 1);
    assert_eq!(describe("total", &[1, 2], &owner).await, "total:3:grace");
    assert_eq!(REF_CALLS.load(SeqCst), 2);
    // The id is the JSON of the arguments.
    let cache = atomcache::Cache::new(concat!(module_path!(), "::describe"));
    let id = r#"["total",[1,2,3],{"id":7,"name":"grace"}]"#;
    assert_eq!(
        cache.get::<String>(id).await.unwrap().as_deref(),
        Some("total:6:grace")
    );
}

static SLOW_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60, lock_timeout = 2)]
async fn slow(x: u32) -> u32 {
    SLOW_CALLS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    x * 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_computation() {
    let calls: Vec<_> = (0..32).map(|_| tokio::spawn(slow(5))).collect();
    for call in futures::future::join_all(calls).await {
        assert_eq!(call.unwrap(), 50);
    }
    assert_eq!(SLOW_CALLS.load(SeqCst), 1);
}

static INVALIDATE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60)]
pub(crate) async fn counter(label: String) -> usize {
    INVALIDATE_CALLS.fetch_add(1, SeqCst) + 1
}

#[tokio::test]
async fn the_invalidate_companion_drops_one_entry() {
    assert_eq!(counter("a".into()).await, 1);
    assert_eq!(counter("b".into()).await, 2);
    assert_eq!(counter("a".into()).await, 1);
    counter_invalidate("a".into()).await.unwrap();
    assert_eq!(counter("a".into()).await, 3);
    assert_eq!(counter("b".into()).await, 2);
    // Invalidating an entry that does not exist is fine.
    counter_invalidate("zzz".into()).await.unwrap();
}

static NAMESPACE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60, namespace = "basic-squares")]
async fn namespaced(x: u32) -> u32 {
    NAMESPACE_CALLS.fetch_add(1, SeqCst);
    x * x
}

#[tokio::test]
async fn namespace_replaces_the_module_path() {
    assert_eq!(namespaced(5).await, 25);
    let cache = atomcache::Cache::new("basic-squares");
    assert_eq!(cache.get::<u32>("5").await.unwrap(), Some(25));
    // Writes through the Cache API are what the function reads.
    cache.set("6", &1000u32).await.unwrap();
    assert_eq!(namespaced(6).await, 1000);
    assert_eq!(NAMESPACE_CALLS.load(SeqCst), 1);
}

#[cached(exp = 60, namespace = "basic-json", codec = atomcache::Json)]
async fn json_encoded(x: u32) -> Vec<u32> {
    vec![x; 2]
}

#[tokio::test]
async fn codec_chooses_the_stored_format() {
    assert_eq!(json_encoded(4).await, [4, 4]);
    let json = atomcache::Cache::builder("basic-json")
        .codec::<atomcache::Json>()
        .build()
        .unwrap();
    let entry = json.entry::<Vec<u32>>("4").await.unwrap().unwrap();
    assert_eq!(entry.value, [4, 4]);
    assert!(
        entry.raw.ends_with(b"[4,4]"),
        "JSON payload: {:?}",
        entry.raw
    );
}

static EXPIRY_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = "300ms", lock_timeout = "100ms")]
async fn short_lived() -> usize {
    EXPIRY_CALLS.fetch_add(1, SeqCst) + 1
}

#[tokio::test]
async fn values_expire_after_exp() {
    assert_eq!(short_lived().await, 1);
    assert_eq!(short_lived().await, 1);
    let ttl = atomcache::Cache::new(concat!(module_path!(), "::short_lived"))
        .remaining_ttl("null")
        .await
        .unwrap()
        .expect("stored");
    assert!(ttl <= Duration::from_millis(300), "{ttl:?}");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(short_lived().await, 2);
}

static PATTERN_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60)]
async fn add_pair((a, b): (u32, u32), mut scale: u32, _: bool) -> u32 {
    PATTERN_CALLS.fetch_add(1, SeqCst);
    scale += 1;
    (a + b) * scale
}

#[tokio::test]
async fn destructuring_arguments_work() {
    assert_eq!(add_pair((1, 2), 1, true).await, 6);
    assert_eq!(add_pair((1, 2), 1, true).await, 6);
    assert_eq!(add_pair((1, 2), 1, false).await, 6);
    assert_eq!(PATTERN_CALLS.load(SeqCst), 2);
    add_pair_invalidate((1, 2), 1, true).await.unwrap();
    assert_eq!(add_pair((1, 2), 1, true).await, 6);
    assert_eq!(PATTERN_CALLS.load(SeqCst), 3);
}

static UNIT_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60)]
async fn warm_up() {
    UNIT_CALLS.fetch_add(1, SeqCst);
}

#[tokio::test]
async fn unit_functions_run_once() {
    warm_up().await;
    warm_up().await;
    assert_eq!(UNIT_CALLS.load(SeqCst), 1);
}

static SHARED_ERR_CALLS: AtomicUsize = AtomicUsize::new(0);

/// An error type that is `Clone + Send + Sync + 'static`: shared with the callers that waited.
#[cached(exp = 60)]
async fn upstream_down(x: u32) -> Result<u32, String> {
    let n = SHARED_ERR_CALLS.fetch_add(1, SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Err(format!("attempt {n} for {x} failed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_of_a_failing_function_share_its_err() {
    let calls: Vec<_> = (0..16).map(|_| tokio::spawn(upstream_down(1))).collect();
    for call in futures::future::join_all(calls).await {
        assert_eq!(call.unwrap(), Err("attempt 1 for 1 failed".to_string()));
    }
    assert_eq!(SHARED_ERR_CALLS.load(SeqCst), 1, "the Err was not shared");
    // Not cached: the next call computes again.
    assert_eq!(
        upstream_down(1).await,
        Err("attempt 2 for 1 failed".to_string())
    );
}

static OPAQUE_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Not `Clone`: cannot be shared.
#[derive(Debug, PartialEq)]
struct Opaque(usize);

#[cached(exp = 60)]
async fn opaque_failure(x: u32) -> Result<u32, Opaque> {
    let n = OPAQUE_CALLS.fetch_add(1, SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = x;
    Err(Opaque(n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_that_cannot_be_shared_is_retried_by_each_follower_at_once() {
    const CALLERS: usize = 16;
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..CALLERS)
        .map(|_| tokio::spawn(opaque_failure(1)))
        .collect();
    let mut attempts: Vec<usize> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|call| call.unwrap().unwrap_err().0)
        .collect();
    attempts.sort_unstable();
    // The leader's failure, then every follower's own attempt: each caller gets its own Err.
    assert_eq!(attempts, (1..=CALLERS).collect::<Vec<_>>());
    // The followers' attempts ran concurrently, not one after another.
    assert!(
        started.elapsed() < Duration::from_millis(200 * 4),
        "the followers queued: {:?}",
        started.elapsed()
    );
}
