//! The harness's [`DelayProxy`]: delays through it, a delay line that does not serialize
//! pipelined commands, byte-exact forwarding of large values, freeze/thaw and cut.

use std::time::{Duration, Instant};

use atomcache_tests::{DelayProxy, RedisServer};
use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::IntoConnectionInfo;

const ONE_WAY: Duration = Duration::from_millis(5);
const RTT: Duration = Duration::from_millis(10);

/// A multiplexed connection with generous timeouts (the proxy adds latency on purpose) and
/// `TCP_NODELAY`, like atomcache's own connections: without it, Nagle's algorithm holds small
/// writes until the previous one is acknowledged, so the client itself would batch pipelined
/// commands into one chunk per round trip.
async fn connect(url: &str) -> MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let info = url
        .into_connection_info()
        .expect("valid URL")
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)
        .expect("valid connection info")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap_or_else(|err| panic!("connection to {url}: {err}"))
}

/// A server, a proxy to it with [`ONE_WAY`] delays, and a connection through the proxy.
async fn proxied() -> (RedisServer, DelayProxy, MultiplexedConnection) {
    let server = RedisServer::start();
    let proxy = DelayProxy::start(server.port(), ONE_WAY);
    let conn = connect(&proxy.url()).await;
    (server, proxy, conn)
}

async fn ping(conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async(conn).await
}

#[tokio::test]
async fn a_round_trip_through_the_proxy_takes_two_one_way_delays() {
    let (server, proxy, mut proxied) = proxied().await;
    assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}/", proxy.port()));
    let mut direct = server.raw().await;
    assert_eq!(proxy.connections(), 1);

    let start = Instant::now();
    assert_eq!(ping(&mut direct).await.expect("direct PING"), "PONG");
    let direct_rtt = start.elapsed();

    let start = Instant::now();
    assert_eq!(ping(&mut proxied).await.expect("proxied PING"), "PONG");
    let proxied_rtt = start.elapsed();

    eprintln!("PING: direct {direct_rtt:?}, through the proxy {proxied_rtt:?}");
    assert!(
        proxied_rtt >= RTT,
        "a PING through the proxy took {proxied_rtt:?}, less than {RTT:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_take_about_one_round_trip_not_one_each() {
    let (server, _proxy, conn) = proxied().await;
    server.set_raw("k", b"v", None).await;

    // Staggered by ~1 ms so that most requests reach the proxy in separate reads: a sleep per
    // chunk would then need 50 × 5 ms upstream alone.
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    let start = Instant::now();
    let mut gets = Vec::new();
    for _ in 0..50 {
        ticks.tick().await;
        let mut conn = conn.clone();
        gets.push(tokio::spawn(async move {
            redis::cmd("GET")
                .arg("k")
                .query_async::<String>(&mut conn)
                .await
        }));
    }
    for get in gets {
        assert_eq!(get.await.expect("GET task").expect("GET"), "v");
    }
    let elapsed = start.elapsed();

    eprintln!("50 concurrent GETs through the proxy: {elapsed:?}");
    assert!(
        elapsed < RTT * 25,
        "50 concurrent GETs took {elapsed:?}: the delay line serializes chunks"
    );
}

#[tokio::test]
async fn a_large_value_round_trips_byte_exact() {
    let (server, _proxy, mut conn) = proxied().await;

    let value: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(i >> 9) % 251) as u8)
        .collect();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query_async(&mut conn)
        .await
        .expect("SET of 1 MiB through the proxy");
    let back: Vec<u8> = redis::cmd("GET")
        .arg("big")
        .query_async(&mut conn)
        .await
        .expect("GET of 1 MiB through the proxy");
    assert!(back == value, "the 1 MiB value came back altered");
    assert_eq!(
        server.get_raw("big").await.as_deref(),
        Some(&value[..]),
        "the server holds another value"
    );
}

#[tokio::test]
async fn freeze_black_holes_the_connection_and_thaw_resumes_it() {
    let (server, proxy, mut conn) = proxied().await;
    server.set_raw("k", b"v", None).await;
    assert_eq!(
        ping(&mut conn).await.expect("PING before the freeze"),
        "PONG"
    );

    proxy.freeze();
    let frozen = tokio::time::timeout(
        Duration::from_millis(300),
        redis::cmd("GET").arg("k").query_async::<String>(&mut conn),
    )
    .await;
    assert!(
        frozen.is_err(),
        "a GET through a frozen proxy answered: {frozen:?}"
    );
    assert_eq!(
        proxy.connections(),
        1,
        "the connection must stay open while frozen"
    );

    proxy.thaw();
    let value: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn)
        .await
        .expect("GET after the thaw");
    assert_eq!(value, "v");
}

#[tokio::test]
async fn cut_closes_open_connections_and_new_ones_work() {
    let (_server, proxy, mut old) = proxied().await;
    assert_eq!(ping(&mut old).await.expect("PING before the cut"), "PONG");
    assert_eq!(proxy.connections(), 1);

    proxy.cut();
    assert_eq!(proxy.connections(), 0, "cut left connections open");
    let after = ping(&mut old).await;
    assert!(
        after.is_err(),
        "a PING on a cut connection answered: {after:?}"
    );

    let mut new = connect(&proxy.url()).await;
    assert_eq!(
        ping(&mut new).await.expect("PING on a new connection"),
        "PONG"
    );
    assert_eq!(proxy.connections(), 1);
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections() {
    let (_server, proxy, mut conn) = proxied().await;
    assert_eq!(ping(&mut conn).await.expect("PING"), "PONG");

    drop(proxy);
    let after = ping(&mut conn).await;
    assert!(
        after.is_err(),
        "a PING after the proxy was dropped answered: {after:?}"
    );
}

#[test]
fn works_from_a_sync_test_and_set_delay_applies() {
    let server = RedisServer::start();
    let proxy = DelayProxy::start(server.port(), Duration::ZERO);
    let client = redis::Client::open(proxy.url()).expect("valid URL");
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("sync connection through the proxy");

    proxy.set_delay(Duration::from_millis(20));
    let start = Instant::now();
    let pong: String = redis::cmd("PING").query(&mut conn).expect("sync PING");
    assert_eq!(pong, "PONG");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(40),
        "a PING with 20 ms one way took {elapsed:?}"
    );
}
