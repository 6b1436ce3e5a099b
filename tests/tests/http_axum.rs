//! The axum HTTP helpers against real routers: ETag and max-age, 304, opt-in no-cache with
//! coalescing, a real TCP round trip, and two routers (replicas) on one Redis computing once.

mod common;

use std::time::Duration;

use atomcache::{Cache, MemoryBackend, RedisBackend, Runtime};
use atomcache_tests::RedisServer;
use axum::http::{header, StatusCode};
use axum::Router;
use common::http::{concurrently, item_router, request, Answer, Computations, Item};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn router(cache: Cache) -> (Router, Computations) {
    let computations = Computations::default();
    let router = item_router(cache, &computations, Duration::from_millis(150));
    (router, computations)
}

fn memory_router() -> (Router, Computations) {
    let cache = Cache::builder("http_axum::items")
        .exp(Duration::from_secs(60))
        .backend(MemoryBackend::new())
        .build()
        .unwrap();
    router(cache)
}

fn max_age(answer: &Answer) -> u64 {
    let value = answer
        .cache_control
        .as_deref()
        .expect("Cache-Control header");
    value
        .strip_prefix("max-age=")
        .unwrap_or_else(|| panic!("not a max-age: {value}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn first_request_computes_second_is_served_with_etag_and_max_age() {
    let (router, computations) = memory_router();
    let first = request(&router, "/items/7", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let item: Item = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(item, Item { id: 7, version: 1 });
    let etag = first.etag.clone().expect("ETag header");
    assert!(etag.starts_with("W/\""), "{etag}");
    assert!(
        (59..=60).contains(&max_age(&first)),
        "{:?}",
        first.cache_control
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = request(&router, "/items/7", &[]).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body, first.body);
    assert_eq!(second.etag.as_deref(), Some(etag.as_str()));
    assert!(
        max_age(&second) < 60 && max_age(&second) >= 57,
        "max-age must count down: {:?}",
        second.cache_control
    );
    assert_eq!(computations.total(), 1);

    // Another id is another entry with another tag.
    let other = request(&router, "/items/8", &[]).await;
    assert_ne!(other.etag, first.etag);
}

#[tokio::test]
async fn if_none_match_gets_304_with_an_empty_body() {
    let (router, computations) = memory_router();
    let first = request(&router, "/items/1", &[]).await;
    let etag = first.etag.unwrap();
    for header_value in [
        etag.clone(),
        etag.trim_start_matches("W/").to_owned(),
        format!("\"nope\", {etag}"),
        "*".into(),
    ] {
        let again = request(
            &router,
            "/items/1",
            &[(header::IF_NONE_MATCH, &header_value)],
        )
        .await;
        assert_eq!(
            again.status,
            StatusCode::NOT_MODIFIED,
            "If-None-Match: {header_value}"
        );
        assert!(again.body.is_empty());
        assert_eq!(again.etag.as_deref(), Some(etag.as_str()));
        assert!(max_age(&again) <= 60);
    }
    let stale = request(
        &router,
        "/items/1",
        &[(header::IF_NONE_MATCH, "W/\"0000\"")],
    )
    .await;
    assert_eq!(stale.status, StatusCode::OK);
    assert!(!stale.body.is_empty());
    assert_eq!(computations.total(), 1);
}

#[tokio::test]
async fn no_cache_recomputes_once_for_concurrent_requests_on_an_opted_in_endpoint() {
    let (router, computations) = memory_router();
    let first = request(&router, "/fresh/3", &[]).await;
    assert_eq!(computations.total(), 1);

    let bypasses = concurrently(
        std::slice::from_ref(&router),
        20,
        "/fresh/3",
        &[(header::CACHE_CONTROL, "no-cache")],
    )
    .await;
    let mut bodies = Vec::new();
    for answer in bypasses {
        assert_eq!(answer.status, StatusCode::OK);
        bodies.push(answer.body);
    }
    assert_eq!(
        computations.total(),
        2,
        "20 concurrent no-cache requests must recompute once"
    );
    let fresh: Item = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(fresh.version, 2);
    assert!(bodies.iter().all(|b| *b == bodies[0]));

    // The fresh value was stored for everyone.
    let after = request(&router, "/items/3", &[]).await;
    assert_eq!(after.body, bodies[0]);
    assert_ne!(after.etag, first.etag);
    assert_eq!(computations.total(), 2);
}

#[tokio::test]
async fn no_cache_is_ignored_on_an_endpoint_that_did_not_opt_in() {
    let (router, computations) = memory_router();
    let first = request(&router, "/items/4", &[]).await;
    let again = request(&router, "/items/4", &[(header::CACHE_CONTROL, "no-cache")]).await;
    assert_eq!(again.body, first.body);
    assert_eq!(computations.total(), 1);
}

/// One request over a real socket, spoken as plain HTTP/1.1.
async fn raw_get(addr: std::net::SocketAddr, path: &str, extra: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn header_line<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn over_a_real_tcp_socket() {
    let (router, computations) = memory_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let first = raw_get(addr, "/items/42", "").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.ends_with(r#"{"id":42,"version":1}"#), "{first}");
    let etag = header_line(&first, "etag").expect("etag").to_owned();
    assert!(header_line(&first, "cache-control")
        .unwrap()
        .starts_with("max-age="));

    let second = raw_get(addr, "/items/42", &format!("If-None-Match: {etag}\r\n")).await;
    assert!(second.starts_with("HTTP/1.1 304"), "{second}");
    assert!(
        second.ends_with("\r\n\r\n"),
        "a 304 has no body: {second:?}"
    );
    assert_eq!(computations.total(), 1);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_on_one_redis_compute_once() {
    let server = RedisServer::start();
    let mut replicas = Vec::new();
    let mut routers = Vec::new();
    let mut counters = Vec::new();
    for _ in 0..2 {
        let replica =
            Runtime::detached(RedisBackend::connect(&server.url()).await.unwrap()).unwrap();
        let cache = replica
            .cache("http_axum::items")
            .exp(Duration::from_secs(60))
            .build()
            .unwrap();
        let (router, computations) = router(cache);
        replicas.push(replica);
        routers.push(router);
        counters.push(computations);
    }
    let answers = concurrently(&routers, 40, "/items/9", &[]).await;
    let total: usize = counters.iter().map(Computations::total).sum();
    assert_eq!(total, 1, "two replicas behind one Redis must compute once");
    assert!(answers
        .iter()
        .all(|a| a.status == StatusCode::OK && a.body == answers[0].body));
    assert!(
        answers.iter().all(|a| a.etag == answers[0].etag),
        "the ETag must be equal in every replica"
    );
    for replica in replicas {
        replica.shutdown().await;
    }
}
