//! Single flight: identical calls in flight inside one process share one trip to the store.
//!
//! The first caller of a key becomes the leader and walks the locked path; the others wait for
//! its landing and decode the bytes it shares. A leader that is cancelled or panics lands
//! nothing, and its followers start a new round. A leader without followers pays one map
//! insert and remove: the channel to followers is made by the first follower, and the value is
//! never copied for sharing.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::key::Fnv1a;

/// What a leader hands to its followers.
#[derive(Clone, Debug)]
pub(crate) enum Landing {
    /// Header + payload of the value, as stored.
    Value(Arc<[u8]>),
    /// The computation produced nothing cacheable (e.g. `Err`).
    Failed,
}

type Slot = watch::Receiver<Option<Landing>>;
type Sender = watch::Sender<Option<Landing>>;
/// In-flight keys; the sender exists once a follower joined.
type Map = HashMap<String, Option<Sender>, BuildHasherDefault<Fnv1a>>;

#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<Map>,
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
        if let Some(sender) = map.get_mut(key) {
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
        map.insert(key.to_owned(), None);
        Joined::Leader(FlightGuard {
            flights: self,
            key,
            done: false,
        })
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

    /// Removes the entry (ours: only the leader removes it, and a new leader for the key can
    /// only come after this removal) and returns the followers' channel, if any.
    fn remove(&self) -> Option<Sender> {
        self.flights.lock().remove(self.key).flatten()
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        // Cancelled or panicked: dropping the sender closes the channel, and the followers
        // start a new round.
        if !self.done {
            drop(self.remove());
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
