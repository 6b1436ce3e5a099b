//! Single flight: identical calls in flight inside one process share one trip to the store.
//!
//! The first caller of a key becomes the leader and walks the locked path; the others wait for
//! its landing and decode the bytes it shares. A leader that is cancelled or panics lands
//! nothing, and its followers start a new round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What a leader hands to its followers.
#[derive(Clone, Debug)]
pub(crate) enum Landing {
    /// Header + payload of the value, as stored.
    Value(Arc<[u8]>),
    /// The computation produced nothing cacheable (e.g. `Err`).
    Failed,
}

type Slot = watch::Receiver<Option<Landing>>;

#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Slot>>,
}

pub(crate) enum Joined<'a> {
    Leader(FlightGuard<'a>),
    Follower(Slot),
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn join(&self, key: &str) -> Joined<'_> {
        let mut map = self.lock();
        if let Some(rx) = map.get(key) {
            return Joined::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_owned(), rx);
        Joined::Leader(FlightGuard {
            flights: self,
            key: key.to_owned(),
            tx: Some(tx),
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
    key: String,
    tx: Option<watch::Sender<Option<Landing>>>,
}

impl FlightGuard<'_> {
    pub fn land(mut self, landing: Landing) {
        if let Some(tx) = self.tx.take() {
            self.remove(&tx);
            tx.send_replace(Some(landing));
        }
    }

    fn remove(&self, tx: &watch::Sender<Option<Landing>>) {
        let mut map = self.flights.lock();
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        // Cancelled or panicked: followers see the channel close and start a new round.
        if let Some(tx) = self.tx.take() {
            self.remove(&tx);
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
        guard.land(Landing::Value(Arc::from(&b"v"[..])));
        assert!(matches!(wait(rx).await, Some(Landing::Value(v)) if &*v == b"v"));
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join("k"), Joined::Leader(_)));
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
