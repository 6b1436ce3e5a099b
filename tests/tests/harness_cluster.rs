//! The Redis Cluster harness: six real `redis-server` nodes joined by `redis-cli --cluster
//! create`, served through the `redis` crate's cluster client, failed over and resharded.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use atomcache_tests::{key_slot, RedisCluster};
use redis::AsyncCommands;

/// Generous: CI is a loaded 2-core machine (the node timeout is 2 s).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

fn start() -> RedisCluster {
    let t = Instant::now();
    let cluster = RedisCluster::start();
    eprintln!("cluster started in {:?}", t.elapsed());
    cluster
}

async fn connection(cluster: &RedisCluster) -> redis::cluster_async::ClusterConnection {
    cluster
        .client()
        .get_async_connection()
        .await
        .expect("cluster connection")
}

/// Retries `SET key value` until the cluster accepts it (a client may need a few tries to learn
/// a new topology), within `timeout`.
async fn set_until_ok(
    conn: &mut redis::cluster_async::ClusterConnection,
    key: &str,
    value: &str,
    timeout: Duration,
) {
    let start = Instant::now();
    loop {
        match conn.set::<_, _, ()>(key, value).await {
            Ok(()) => return,
            Err(err) if start.elapsed() < timeout => {
                eprintln!("SET {key} failed, retrying: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("SET {key} still fails after {timeout:?}: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_starts_and_serves_keys_through_the_cluster_client() {
    let cluster = start();
    assert_eq!(cluster.nodes().len(), 6);
    assert_eq!(cluster.primaries().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);
    assert_eq!(cluster.urls().len(), 6);
    // Every replica follows a primary, each primary has one.
    let view = cluster.cluster_nodes();
    let primary_ids: BTreeSet<&str> = view
        .iter()
        .filter(|n| n.primary)
        .map(|n| n.id.as_str())
        .collect();
    let followed: BTreeSet<&str> = view
        .iter()
        .filter_map(|n| n.primary_id.as_deref())
        .collect();
    assert_eq!(primary_ids, followed, "{view:?}");

    for key in ["foo", "atomcache:x", "{user1000}.following", "123456789"] {
        assert_eq!(cluster.slot_of(key), key_slot(key.as_bytes()), "{key}");
    }

    let mut conn = connection(&cluster).await;
    // Keys on every primary.
    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    let owners: BTreeSet<u16> = keys
        .iter()
        .map(|k| cluster.primary_for_slot(cluster.slot_of(k)).port())
        .collect();
    assert_eq!(
        owners.len(),
        3,
        "30 keys should land on all three primaries"
    );
    for key in &keys {
        let _: () = conn.set(key, format!("v-{key}")).await.expect("SET");
    }
    for key in &keys {
        let value: Option<String> = conn.get(key).await.expect("GET");
        assert_eq!(value, Some(format!("v-{key}")));
        // The value is on the slot's primary itself.
        let owner = cluster.primary_for_slot(cluster.slot_of(key));
        assert_eq!(
            owner.get_raw(key).await,
            Some(format!("v-{key}").into_bytes())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_of_a_key_fails_over_to_its_replica() {
    let mut cluster = start();
    let key = "failover-key";
    let slot = cluster.slot_of(key);
    let old = cluster.primary_for_slot(slot).port();
    let view = cluster.cluster_nodes();
    let old_id = view.iter().find(|n| n.port == old).unwrap().id.clone();
    let its_replica = view
        .iter()
        .find(|n| n.primary_id.as_deref() == Some(&old_id))
        .expect("the primary has a replica")
        .port;

    let mut conn = connection(&cluster).await;
    let _: () = conn.set(key, "before").await.expect("SET before the kill");

    let killed = cluster.kill_primary_of(key);
    assert_eq!(killed, old);
    assert!(!cluster.node(old).is_running());
    let t = Instant::now();
    let new = cluster.wait_for_failover(old, FAILOVER_TIMEOUT).await;
    eprintln!("failover {old} -> {new} took {:?}", t.elapsed());
    assert_eq!(new, its_replica, "the killed primary's replica takes over");
    assert_eq!(cluster.primary_for_slot(slot).port(), new);
    assert_eq!(cluster.primaries().len(), 3);

    // The slot is served again: writes through the same client succeed (the value itself may
    // be lost: no persistence, asynchronous replication).
    set_until_ok(&mut conn, key, "after", FAILOVER_TIMEOUT).await;
    let value: Option<String> = conn.get(key).await.expect("GET after the failover");
    assert_eq!(value.as_deref(), Some("after"));
    assert_eq!(
        cluster.node(new).get_raw(key).await,
        Some(b"after".to_vec())
    );
    // A fresh client on the surviving seeds works too.
    let mut fresh = connection(&cluster).await;
    let value: Option<String> = fresh.get(key).await.expect("GET on a fresh client");
    assert_eq!(value.as_deref(), Some("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshard_moves_slots_and_their_keys() {
    let cluster = start();
    let primaries: Vec<u16> = cluster.primaries().iter().map(|n| n.port()).collect();
    let (from, to) = (primaries[0], primaries[1]);
    let before = cluster.cluster_nodes();
    let slots_of = |view: &[atomcache_tests::ClusterNode], port: u16| -> BTreeSet<u16> {
        let node = view.iter().find(|n| n.port == port).unwrap();
        node.slots.iter().flat_map(|&(a, b)| a..=b).collect()
    };
    let from_before = slots_of(&before, from);
    let to_before = slots_of(&before, to);

    // Keys on the source primary, written before the move.
    let mut conn = connection(&cluster).await;
    let keys: Vec<String> = (0..3000)
        .map(|i| format!("reshard-{i}"))
        .filter(|k| from_before.contains(&key_slot(k.as_bytes())))
        .collect();
    for key in &keys {
        let _: () = conn.set(key, key).await.expect("SET before the reshard");
    }

    let t = Instant::now();
    cluster.reshard(from, to, 100).await;
    eprintln!("reshard of 100 slots took {:?}", t.elapsed());

    let after = cluster.cluster_nodes();
    let to_after = slots_of(&after, to);
    let from_after = slots_of(&after, from);
    assert_eq!(to_after.len(), to_before.len() + 100);
    assert_eq!(from_after.len(), from_before.len() - 100);
    let moved: BTreeSet<u16> = to_after.difference(&to_before).copied().collect();
    assert!(
        moved.is_subset(&from_before),
        "moved slots came from {from}"
    );
    assert_eq!(cluster.primary_for_slot(*moved.first().unwrap()).port(), to);

    // The keys of moved slots moved with them; every key is still served through the client.
    let moved_keys: Vec<&String> = keys
        .iter()
        .filter(|k| moved.contains(&key_slot(k.as_bytes())))
        .collect();
    assert!(
        !moved_keys.is_empty(),
        "some keys should sit in moved slots"
    );
    for key in &moved_keys {
        assert_eq!(
            cluster.node(to).get_raw(key).await,
            Some(key.as_bytes().to_vec())
        );
        // The source answers MOVED for it and holds no key of the slot any more.
        let slot = key_slot(key.as_bytes());
        let left: i64 = redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query_async(&mut cluster.node(from).raw().await)
            .await
            .expect("CLUSTER COUNTKEYSINSLOT");
        assert_eq!(left, 0, "slot {slot} still has keys at {from}");
    }
    for key in &keys {
        let value: Option<String> = conn.get(key).await.expect("GET after the reshard");
        assert_eq!(value.as_deref(), Some(key.as_str()));
    }
    for key in &moved_keys {
        let _: () = conn.set(*key, "new").await.expect("SET in a moved slot");
    }
}
