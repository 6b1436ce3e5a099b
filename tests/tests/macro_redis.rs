//! `#[cached]` against a real Redis: values land in Redis under the function's namespace, `Err`
//! and `None` are not stored, `skip`/`key` are honoured, methods and reference arguments work,
//! the companion invalidates, and separate replica processes get the same value from one
//! computation.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{SystemTime, UNIX_EPOCH};

use atomcache::cached;
use atomcache_tests::RedisServer;
use serde::{Deserialize, Serialize};

static SQUARES: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60)]
async fn square(x: u32) -> u64 {
    SQUARES.fetch_add(1, SeqCst);
    u64::from(x) * u64::from(x)
}

static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60)]
async fn lookup(name: &str) -> Result<u32, String> {
    if LOOKUPS.fetch_add(1, SeqCst) == 0 {
        return Err(format!("{name}: upstream down"));
    }
    Ok(name.len() as u32)
}

static FINDS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60)]
async fn find(id: u32) -> Option<String> {
    FINDS.fetch_add(1, SeqCst);
    id.is_multiple_of(2).then(|| format!("even-{id}"))
}

struct Client {
    name: &'static str,
}

static FETCHES: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60, skip(client))]
async fn fetch(client: &Client, id: u32) -> String {
    FETCHES.fetch_add(1, SeqCst);
    format!("{id} via {}", client.name)
}

static REPORTS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 60, key = (tenant, day))]
async fn report(tenant: &str, day: u32, request_id: u64) -> String {
    REPORTS.fetch_add(1, SeqCst);
    format!("{tenant}/{day} first asked by {request_id}")
}

static WORDS: AtomicUsize = AtomicUsize::new(0);

#[derive(Serialize)]
struct Filter {
    min_len: usize,
}

#[cached(exp = 60)]
async fn count_words(text: &str, stop: &[String], filter: &Filter) -> usize {
    WORDS.fetch_add(1, SeqCst);
    text.split_whitespace()
        .filter(|w| w.len() >= filter.min_len && !stop.iter().any(|s| s == w))
        .count()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u32,
    owner: String,
}

struct Repo {
    owner: String,
}

static REPO_FINDS: AtomicUsize = AtomicUsize::new(0);

impl Repo {
    #[cached(exp = 60, skip(self))]
    async fn item(&self, id: u32) -> Item {
        REPO_FINDS.fetch_add(1, SeqCst);
        Item {
            id,
            owner: self.owner.clone(),
        }
    }
}

/// One test: the backend is process-wide, and its connection lives in this test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_functions_on_redis() {
    let server = RedisServer::start();
    let runtime = atomcache::init(
        atomcache::RedisBackend::connect(&server.url())
            .await
            .unwrap(),
    )
    .await
    .unwrap();

    // The value is in Redis, under the function's default namespace and the JSON of its arguments.
    assert_eq!(square(12).await, 144);
    assert_eq!(square(12).await, 144);
    assert_eq!(SQUARES.load(SeqCst), 1);
    let key = atomcache::Cache::new("macro_redis::square").key("12");
    assert!(
        server.get_raw(key.value()).await.is_some(),
        "no value at {}",
        key.value()
    );
    let ttl = server.pttl(key.value()).await;
    assert!(ttl > 55_000 && ttl <= 60_000, "pttl {ttl}");
    // The companion drops it from Redis.
    square_invalidate(12).await.unwrap();
    assert!(server.get_raw(key.value()).await.is_none());
    assert_eq!(square(12).await, 144);
    assert_eq!(SQUARES.load(SeqCst), 2);

    // Err is returned, not stored.
    assert!(lookup("ada").await.is_err());
    assert_eq!(lookup("ada").await, Ok(3));
    assert_eq!(lookup("ada").await, Ok(3));
    assert_eq!(LOOKUPS.load(SeqCst), 2);

    // None is not stored; Some is.
    assert_eq!(find(3).await, None);
    assert_eq!(find(3).await, None);
    assert_eq!(find(4).await.as_deref(), Some("even-4"));
    assert_eq!(find(4).await.as_deref(), Some("even-4"));
    assert_eq!(FINDS.load(SeqCst), 3);

    // skip: another client, same entry.
    assert_eq!(fetch(&Client { name: "a" }, 1).await, "1 via a");
    assert_eq!(fetch(&Client { name: "b" }, 1).await, "1 via a");
    assert_eq!(FETCHES.load(SeqCst), 1);

    // key: request_id is not part of the id.
    let first = report("acme", 7, 1).await;
    assert_eq!(report("acme", 7, 2).await, first);
    assert_ne!(report("acme", 8, 3).await, first);
    assert_eq!(REPORTS.load(SeqCst), 2);

    // Reference arguments.
    let stop = vec!["the".to_string()];
    let filter = Filter { min_len: 2 };
    assert_eq!(count_words("the cat sat on a mat", &stop, &filter).await, 4);
    assert_eq!(count_words("the cat sat on a mat", &stop, &filter).await, 4);
    assert_eq!(count_words("the cat sat on a mat", &[], &filter).await, 5);
    assert_eq!(WORDS.load(SeqCst), 2);

    // Methods with `self` skipped: every Repo shares the entry of an id.
    let ada = Repo {
        owner: "ada".into(),
    };
    let bob = Repo {
        owner: "bob".into(),
    };
    assert_eq!(ada.item(5).await.owner, "ada");
    assert_eq!(bob.item(5).await.owner, "ada");
    assert_eq!(REPO_FINDS.load(SeqCst), 1);

    let stats = runtime.stats();
    assert_eq!(stats.backend_errors, 0, "{stats:?}");
    assert_eq!(stats.decode_errors, 0, "{stats:?}");
    runtime.shutdown().await;

    same_value_in_every_replica_process(&server);
}

/// Four processes × 32 callers of one cold key: one computation, one value everywhere.
fn same_value_in_every_replica_process(server: &RedisServer) {
    let start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 1500;
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_macro_replica"))
                .args([server.url(), start_ms.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn macro_replica")
        })
        .collect();
    let mut values = Vec::new();
    let mut computations = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "replica failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout.lines().last().expect("a report line");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_owned()
        };
        values.push(field("value"));
        computations += field("computations").parse::<u64>().unwrap();
        assert_eq!(field("callers"), "32");
    }
    assert_eq!(
        computations, 1,
        "4 processes x 32 callers computed {computations} times"
    );
    assert!(
        values.iter().all(|v| *v == values[0]),
        "replicas got different values: {values:?}"
    );
}
