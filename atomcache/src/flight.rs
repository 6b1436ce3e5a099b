//! Single flight: identical calls in flight inside one process share one trip to the store.
//!
//! The first caller of a key becomes the leader and walks the locked path; the others wait for
//! its landing: the bytes of the value, a failure (shared when the output type allows it), or
//! "go round again" (the leader's value was refused because an invalidation revoked its lease).
//! A leader that is cancelled lands nothing and its followers start a new round; one that
//! panics lands a failure. A leader without followers pays one map insert and remove: the
//! channel to followers is made by the first follower, and the value is never copied for
//! sharing.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::key::Fnv1a;

/// What a leader hands to its followers.
#[derive(Clone)]
pub(crate) enum Landing {
    /// Header + payload of the value, as stored.
    Value(Arc<[u8]>),
    /// The computation produced nothing cacheable (e.g. `Err`); the failure itself when the
    /// output type can share it (see `crate::store::Sharing`).
    Failed(Option<SharedFailure>),
    /// The leader's value was refused (its lease was revoked): look again.
    Retry,
}

impl std::fmt::Debug for Landing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Landing::Value(bytes) => write!(f, "Value({} bytes)", bytes.len()),
            Landing::Failed(shared) => write!(f, "Failed(shared: {})", shared.is_some()),
            Landing::Retry => f.write_str("Retry"),
        }
    }
}

/// A failed output, type-erased, for the followers of the call that produced it.
pub type SharedFailure = Arc<dyn std::any::Any + Send + Sync>;

type Slot = watch::Receiver<Option<Landing>>;
type Sender = watch::Sender<Option<Landing>>;
/// In-flight keys: the flight's number, and the sender once a follower joined.
type Map = HashMap<String, (u64, Option<Sender>), BuildHasherDefault<Fnv1a>>;

#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<Map>,
    next: std::sync::atomic::AtomicU64,
}

pub(crate) enum Joined<'a> {
    Leader(FlightGuard<'a>),
    Follower(Slot),
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn join<'a>(&'a self, key: &'a str) -> Joined<'a> {
        let mut map = self.lock();
        if let Some((_, sender)) = map.get_mut(key) {
            let rx = match sender {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    *sender = Some(tx);
                    rx
                }
            };
            return Joined::Follower(rx);
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        map.insert(key.to_owned(), (id, None));
        Joined::Leader(FlightGuard {
            flights: self,
            key,
            id,
            done: false,
        })
    }

    /// Ends the flight of `key` for new callers (after an invalidation): they start a new one.
    /// Its followers go round again; its leader lands into the void.
    pub fn detach(&self, key: &str) {
        drop(self.lock().remove(key));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Held by the leader; landing or dropping it ends the flight.
pub(crate) struct FlightGuard<'a> {
    flights: &'a Flights,
    key: &'a str,
    id: u64,
    done: bool,
}

impl FlightGuard<'_> {
    /// Ends the flight. `landing` is called only when followers wait for it.
    pub fn land(mut self, landing: impl FnOnce() -> Landing) {
        self.done = true;
        // A caller arriving from now on starts a new flight.
        if let Some(tx) = self.remove() {
            if tx.receiver_count() > 0 {
                tx.send_replace(Some(landing()));
            }
        }
    }

    /// Removes the entry if it is still this flight's (it is not after a `detach`) and returns
    /// the followers' channel, if any.
    fn remove(&self) -> Option<Sender> {
        let mut map = self.flights.lock();
        match map.get(self.key) {
            Some((id, _)) if *id == self.id => map.remove(self.key).and_then(|(_, tx)| tx),
            _ => None,
        }
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let tx = self.remove();
        // Panicked: a failure (the followers must not queue behind more panics). Cancelled:
        // dropping the sender closes the channel, and the followers start a new round.
        if std::thread::panicking() {
            if let Some(tx) = tx {
                tx.send_replace(Some(Landing::Failed(None)));
            }
        }
    }
}

/// Waits for the leader; `None` when it went away without landing.
pub(crate) async fn wait(mut rx: Slot) -> Option<Landing> {
    match rx.wait_for(Option::is_some).await {
        Ok(landing) => landing.clone(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_landing_and_the_slot_is_freed() {
        let flights = Flights::default();
        let Joined::Leader(guard) = flights.join("k") else {
            panic!("first caller must lead")
        };
        let Joined::Follower(rx) = flights.join("k") else {
            panic!("second caller must follow")
        };
        guard.land(|| Landing::Value(Arc::from(&b"v"[..])));
        assert!(matches!(wait(rx).await, Some(Landing::Value(v)) if &*v == b"v"));
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join("k"), Joined::Leader(_)));
    }

    #[tokio::test]
    async fn a_leader_without_followers_builds_no_landing() {
        let flights = Flights::default();
        let Joined::Leader(guard) = flights.join("k") else {
            panic!()
        };
        guard.land(|| panic!("nobody waits: the landing must not be built"));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_detached_flight_does_not_take_new_callers_nor_remove_the_next_flight() {
        let flights = Flights::default();
        let Joined::Leader(old) = flights.join("k") else {
            panic!()
        };
        let Joined::Follower(rx) = flights.join("k") else {
            panic!()
        };
        flights.detach("k");
        assert!(
            wait(rx).await.is_none(),
            "followers of a detached flight go round"
        );
        let Joined::Leader(new) = flights.join("k") else {
            panic!("a caller after detach starts a new flight")
        };
        old.land(|| Landing::Retry);
        assert!(matches!(flights.join("k"), Joined::Follower(_)));
        drop(new);
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn a_panicking_leader_lands_a_failure() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let flights = Flights::default();
        let rx = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _leader = flights.join("k");
            let Joined::Follower(rx) = flights.join("k") else {
                unreachable!()
            };
            std::panic::panic_any(rx)
        }))
        .expect_err("the closure panics");
        let rx = *rx
            .downcast::<Slot>()
            .expect("the panic carries the receiver");
        assert!(matches!(rt.block_on(wait(rx)), Some(Landing::Failed(None))));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers() {
        let flights = Flights::default();
        let leader = flights.join("k");
        let Joined::Follower(rx) = flights.join("k") else {
            panic!()
        };
        drop(leader);
        assert!(wait(rx).await.is_none());
        assert_eq!(flights.len(), 0);
    }
}
