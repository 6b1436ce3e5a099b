//! A circuit breaker for the calls to a remote store.
//!
//! A frozen Redis (`SIGSTOP`, a paused VM) or a half-open TCP connection does not refuse calls:
//! it lets each of them wait for the full command timeout. Without a breaker every cached call
//! of the service would pay that timeout, for as long as the outage lasts, before failing open.
//! [`Breaker`] owns the decision "is the store answering?": after
//! [`threshold`](BreakerConfig::threshold) consecutive calls that got no answer it *opens* and,
//! for [`cooldown`](BreakerConfig::cooldown), rejects calls at once with
//! [`Error::Unavailable`] (the caller fails open and computes without the cache). After the
//! cooldown exactly one call goes through as a *probe*: an answer closes the breaker, no answer
//! opens it for another cooldown.
//!
//! Which errors mean "no answer" is the backend's call (the `unhealthy` argument of
//! [`Breaker::call`]): timeouts and refused/reset/dropped connections do; an error the server
//! answered with (a script error, `WRONGTYPE`) proves the server is alive and counts as a
//! success.
//!
//! The whole state is one atomic word, so a call on a closed breaker costs two atomic loads and
//! no lock, allocation, clock read or timer.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;

/// When a [`Breaker`] opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive unanswered calls (timeouts, connection errors) that open the breaker.
    /// `0` disables the breaker: every call goes through.
    pub threshold: u32,
    /// How long an open breaker rejects calls before it lets one probe through (rounded up to
    /// whole milliseconds).
    pub cooldown: Duration,
}

/// The default breaker: opens after 3 consecutive unanswered calls, probes again after 1 s.
pub const DEFAULT_BREAKER: BreakerConfig = BreakerConfig {
    threshold: 3,
    cooldown: Duration::from_secs(1),
};

impl Default for BreakerConfig {
    /// [`DEFAULT_BREAKER`]: threshold 3, cooldown 1 s.
    fn default() -> Self {
        DEFAULT_BREAKER
    }
}

/// What the circuit breaker in front of a backend does with the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// The store answers: calls go through.
    Closed,
    /// The store stopped answering: calls are rejected until the cooldown has elapsed.
    Open,
    /// The cooldown has elapsed: the next call is a probe, or a probe is in flight (other
    /// calls are rejected meanwhile).
    HalfOpen,
}

// The state word. The low two bits are a tag; the rest depends on it:
// - closed:  [generation: 30 bits][consecutive failures: 32 bits][00]
// - open:    [open until, ms since `base`: 62 bits][01]
// - probing: [0][10]                                (a probe is in flight)
// The generation changes each time a probe closes the breaker, so an outcome of a call admitted
// in an earlier closed period (before a trip) can never count in a later one.
const TAG_MASK: u64 = 0b11;
const TAG_CLOSED: u64 = 0b00;
const TAG_OPEN: u64 = 0b01;
const TAG_PROBING: u64 = 0b10;
const PROBING: u64 = TAG_PROBING;
const FAILURES_SHIFT: u32 = 2;
const GENERATION_SHIFT: u32 = 34;
const GENERATION_MASK: u64 = (1 << (64 - GENERATION_SHIFT)) - 1;
const UNTIL_SHIFT: u32 = 2;
const MAX_UNTIL_MS: u64 = u64::MAX >> UNTIL_SHIFT;

const fn closed_word(generation: u64, failures: u32) -> u64 {
    ((generation & GENERATION_MASK) << GENERATION_SHIFT)
        | ((failures as u64) << FAILURES_SHIFT)
        | TAG_CLOSED
}

const fn open_word(until_ms: u64) -> u64 {
    let until_ms = if until_ms > MAX_UNTIL_MS {
        MAX_UNTIL_MS
    } else {
        until_ms
    };
    (until_ms << UNTIL_SHIFT) | TAG_OPEN
}

const fn generation_of(word: u64) -> u64 {
    word >> GENERATION_SHIFT
}

const fn failures_of(word: u64) -> u32 {
    // Truncation keeps exactly the 32 failure bits.
    (word >> FAILURES_SHIFT) as u32
}

const fn until_of(word: u64) -> u64 {
    word >> UNTIL_SHIFT
}

/// The decision for one call.
enum Admission {
    /// Closed: run it and record its outcome against this generation.
    Closed { generation: u64 },
    /// The cooldown elapsed and this call holds the probe slot.
    Probe,
    /// Open, or a probe is in flight.
    Rejected,
}

/// A circuit breaker in front of a remote store; see the [module docs](self).
///
/// Lock-free: the state is one atomic word, plus counters. `Send + Sync`; share it by reference
/// (or inside an `Arc`) between all the calls to one store.
pub(crate) struct Breaker {
    config: BreakerConfig,
    /// Tagged state word, see `closed_word` / `open_word` / `PROBING`.
    state: AtomicU64,
    /// Origin of the millisecond clock of the open-until instants.
    base: Instant,
    /// Times the breaker closed again (source of the closed generations). Only the probe
    /// holder writes it.
    closes: AtomicU64,
    trips: AtomicU64,
    rejected: AtomicU64,
    /// Tests move this breaker's clock forward without sleeping.
    #[cfg(test)]
    skew_ms: AtomicU64,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("config", &self.config)
            .field("state", &self.state())
            .field("trips", &self.trips())
            .field("rejected", &self.rejected())
            .finish()
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            state: AtomicU64::new(closed_word(0, 0)),
            base: Instant::now(),
            closes: AtomicU64::new(0),
            trips: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            #[cfg(test)]
            skew_ms: AtomicU64::new(0),
        }
    }

    /// Runs `call` if the breaker admits it; otherwise returns [`Error::Unavailable`] at once,
    /// dropping `call` without polling it.
    ///
    /// `unhealthy(&err)` says whether an error means the store is not answering (a timeout, a
    /// refused, reset or dropped connection). Other errors were answered by the server and count
    /// as successes.
    ///
    /// On a closed breaker this costs two atomic loads (a compare-and-swap after a failure).
    /// A probe whose future is dropped before it finishes releases the probe slot without
    /// counting as a success or a failure: the next call probes.
    pub async fn call<T, F>(&self, call: F, unhealthy: fn(&Error) -> bool) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        let ticket = self.ticket()?;
        let result = call.await;
        ticket.settle(&result, unhealthy);
        result
    }

    /// The admission of one call, for a caller that awaits the call itself (no future wraps
    /// it, so the hot path moves nothing): `Err(Error::Unavailable)` when rejected. Settle the
    /// ticket with the call's result; a ticket dropped unsettled (a cancelled call) frees the
    /// probe slot and counts as nothing.
    pub fn ticket(&self) -> Result<Ticket<'_>, Error> {
        if self.config.threshold == 0 {
            return Ok(Ticket::Free);
        }
        match self.admit() {
            Admission::Closed { generation } => Ok(Ticket::Closed {
                breaker: self,
                generation,
            }),
            Admission::Probe => Ok(Ticket::Probe(ProbeGuard {
                breaker: self,
                armed: true,
            })),
            Admission::Rejected => Err(Error::Unavailable),
        }
    }

    /// What the breaker does with the next call.
    pub fn state(&self) -> BreakerState {
        let word = self.state.load(Ordering::Acquire);
        match word & TAG_MASK {
            TAG_CLOSED => BreakerState::Closed,
            TAG_OPEN if self.now_ms() < until_of(word) => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Times the breaker opened since it was created (a failed probe counts again).
    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// Calls rejected without being sent.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    #[inline]
    fn admit(&self) -> Admission {
        let word = self.state.load(Ordering::Acquire);
        if word & TAG_MASK == TAG_CLOSED {
            Admission::Closed {
                generation: generation_of(word),
            }
        } else {
            self.admit_slow(word)
        }
    }

    #[cold]
    fn admit_slow(&self, mut word: u64) -> Admission {
        loop {
            match word & TAG_MASK {
                TAG_CLOSED => {
                    return Admission::Closed {
                        generation: generation_of(word),
                    }
                }
                TAG_OPEN if self.now_ms() >= until_of(word) => {
                    match self.state.compare_exchange(
                        word,
                        PROBING,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Admission::Probe,
                        Err(actual) => word = actual,
                    }
                }
                _ => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    return Admission::Rejected;
                }
            }
        }
    }

    /// Records the outcome of a call admitted while closed in `generation`. Outcomes of an
    /// earlier closed period, or arriving while open or probing, are ignored: only the probe
    /// closes an open breaker, and a trip is counted once.
    fn record_closed(&self, generation: u64, answered: bool) {
        let mut word = self.state.load(Ordering::Acquire);
        loop {
            if word & TAG_MASK != TAG_CLOSED || generation_of(word) != generation {
                return;
            }
            let failures = failures_of(word);
            let (next, tripped) = if answered {
                if failures == 0 {
                    return;
                }
                (closed_word(generation, 0), None)
            } else {
                let failures = failures.saturating_add(1);
                if failures >= self.config.threshold {
                    (open_word(self.open_until_ms()), Some(failures))
                } else {
                    (closed_word(generation, failures), None)
                }
            };
            match self
                .state
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if let Some(failures) = tripped {
                        self.trips.fetch_add(1, Ordering::Relaxed);
                        let cooldown = self.config.cooldown;
                        tracing::warn!(
                            failures,
                            "the cache backend stopped answering; failing open for {cooldown:?}"
                        );
                    }
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// The probe was answered: close (only the probe holder gets here).
    fn close(&self) {
        let generation = self.closes.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        self.state
            .store(closed_word(generation, 0), Ordering::Release);
        tracing::info!(
            trips = self.trips(),
            "the cache backend answers again; using the cache again"
        );
    }

    /// The probe was not answered: open for another full cooldown.
    fn reopen(&self) {
        self.state
            .store(open_word(self.open_until_ms()), Ordering::Release);
        self.trips.fetch_add(1, Ordering::Relaxed);
        let cooldown = self.config.cooldown;
        tracing::debug!("probe: the cache backend is still not answering; failing open for another {cooldown:?}");
    }

    /// The probe was dropped before it finished: open with the cooldown already elapsed, so the
    /// next call probes.
    fn release_probe(&self) {
        self.state.store(open_word(0), Ordering::Release);
        tracing::debug!("probe cancelled; the next call probes");
    }

    fn elapsed(&self) -> Duration {
        let elapsed = self.base.elapsed();
        #[cfg(test)]
        let elapsed =
            elapsed.saturating_add(Duration::from_millis(self.skew_ms.load(Ordering::Relaxed)));
        elapsed
    }

    /// Now, in whole milliseconds since `base` (rounded down).
    fn now_ms(&self) -> u64 {
        u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Now plus the cooldown, in milliseconds since `base`, rounded up: with `now_ms` rounded
    /// down, a probe is never admitted before the full cooldown has elapsed.
    fn open_until_ms(&self) -> u64 {
        let until = self.elapsed().saturating_add(self.config.cooldown);
        u64::try_from(until.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    #[cfg(test)]
    fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.skew_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// Whether the store answered: a success, or an error that is not `unhealthy`.
fn answered<T>(result: &Result<T, Error>, unhealthy: fn(&Error) -> bool) -> bool {
    match result {
        Ok(_) => true,
        Err(err) => !unhealthy(err),
    }
}

/// One admitted call; see [`Breaker::ticket`].
pub(crate) enum Ticket<'a> {
    /// The breaker is disabled (threshold 0).
    Free,
    /// Admitted while closed, in this generation.
    Closed {
        breaker: &'a Breaker,
        generation: u64,
    },
    /// The probe.
    Probe(ProbeGuard<'a>),
}

impl Ticket<'_> {
    /// Records the outcome of the admitted call.
    pub fn settle<T>(self, result: &Result<T, Error>, unhealthy: fn(&Error) -> bool) {
        match self {
            Ticket::Free => {}
            Ticket::Closed {
                breaker,
                generation,
            } => breaker.record_closed(generation, answered(result, unhealthy)),
            Ticket::Probe(probe) => probe.finish(answered(result, unhealthy)),
        }
    }
}

/// Holds the probe slot; releases it if the probe is dropped before it finishes.
pub(crate) struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl ProbeGuard<'_> {
    fn finish(mut self, answered: bool) {
        self.armed = false;
        if answered {
            self.breaker.close();
        } else {
            self.breaker.reopen();
        }
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::{pin, Pin};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Poll;
    use tokio::sync::oneshot;

    const COOLDOWN: Duration = Duration::from_secs(60);
    /// Less than this much real time passes between two steps of a test.
    const MARGIN: Duration = Duration::from_secs(1);
    /// From `COOLDOWN - MARGIN` after a trip to past its end (the open-until instant is
    /// rounded up to the next millisecond).
    const PAST_THE_END: Duration = Duration::from_millis(1_001);

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            threshold,
            cooldown: COOLDOWN,
        })
    }

    fn not_answering(err: &Error) -> bool {
        matches!(err, Error::Timeout(_))
    }

    fn timeout() -> Error {
        Error::Timeout(Duration::from_secs(1))
    }

    fn wrongtype() -> Error {
        Error::backend("WRONGTYPE Operation against a key holding the wrong kind of value")
    }

    async fn ok(b: &Breaker) -> Result<(), Error> {
        b.call(async { Ok(()) }, not_answering).await
    }

    async fn fail(b: &Breaker) -> Result<(), Error> {
        b.call(async { Err(timeout()) }, not_answering).await
    }

    /// A call the breaker must reject without polling it.
    async fn must_reject(b: &Breaker) {
        let never = std::future::poll_fn(|_| -> Poll<Result<(), Error>> {
            panic!("a rejected call was polled")
        });
        let before = b.rejected();
        let result = b.call(never, not_answering).await;
        assert!(matches!(result, Err(Error::Unavailable)), "{result:?}");
        assert_eq!(b.rejected(), before + 1);
    }

    /// Polls `fut` once and asserts that it is pending.
    async fn poll_once<F: Future>(mut fut: Pin<&mut F>) {
        let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending()));
        assert!(first.await, "expected the call to be pending");
    }

    /// A call that finishes with whatever is sent on the returned sender.
    fn controlled() -> (
        oneshot::Sender<Result<(), Error>>,
        impl Future<Output = Result<(), Error>>,
    ) {
        let (tx, rx) = oneshot::channel();
        (tx, async move { rx.await.unwrap_or(Err(timeout())) })
    }

    async fn trip(b: &Breaker) {
        for _ in 0..b.config.threshold {
            assert!(fail(b).await.is_err());
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn default_config_and_auto_traits() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Breaker>();
        assert_eq!(BreakerConfig::default(), DEFAULT_BREAKER);
        assert_eq!(DEFAULT_BREAKER.threshold, 3);
        assert_eq!(DEFAULT_BREAKER.cooldown, Duration::from_secs(1));
        let b = Breaker::new(DEFAULT_BREAKER);
        assert!(format!("{b:?}").contains("Closed"));
    }

    #[test]
    fn state_word_round_trips() {
        let word = closed_word(GENERATION_MASK, u32::MAX);
        assert_eq!(word & TAG_MASK, TAG_CLOSED);
        assert_eq!(generation_of(word), GENERATION_MASK);
        assert_eq!(failures_of(word), u32::MAX);
        assert_eq!(generation_of(closed_word(GENERATION_MASK + 2, 0)), 1);
        assert_eq!(until_of(open_word(12_345)), 12_345);
        assert_eq!(until_of(open_word(u64::MAX)), MAX_UNTIL_MS);
        assert_eq!(open_word(0) & TAG_MASK, TAG_OPEN);
    }

    #[tokio::test]
    async fn the_call_future_is_send() {
        fn send<F: Future + Send>(f: F) -> F {
            f
        }
        let b = breaker(3);
        send(b.call(async { Ok(1) }, not_answering)).await.unwrap();
    }

    #[tokio::test]
    async fn opens_after_threshold_consecutive_unanswered_calls() {
        let b = breaker(3);
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Closed);
        // A success resets the count.
        ok(&b).await.unwrap();
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.trips(), 0);
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.trips(), 1);
        must_reject(&b).await;
        must_reject(&b).await;
        assert_eq!(b.rejected(), 2);
        assert_eq!(b.trips(), 1);
    }

    #[tokio::test]
    async fn answered_errors_count_as_healthy() {
        let b = breaker(3);
        for _ in 0..10 {
            let result = b
                .call(async { Err::<(), _>(wrongtype()) }, not_answering)
                .await;
            assert!(matches!(result, Err(Error::Backend(_))));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // An answered error between failures breaks the streak.
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        b.call(async { Err::<(), _>(wrongtype()) }, not_answering)
            .await
            .unwrap_err();
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.trips(), 0);
    }

    #[tokio::test]
    async fn threshold_zero_disables_the_breaker() {
        let b = breaker(0);
        for _ in 0..10 {
            fail(&b).await.unwrap_err();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.trips(), 0);
        ok(&b).await.unwrap();
    }

    #[tokio::test]
    async fn rejects_until_the_cooldown_then_one_probe_at_a_time() {
        let b = breaker(3);
        trip(&b).await;
        b.advance(COOLDOWN - MARGIN);
        assert_eq!(b.state(), BreakerState::Open);
        must_reject(&b).await;
        b.advance(PAST_THE_END);
        assert_eq!(b.state(), BreakerState::HalfOpen);

        let (tx, probe) = controlled();
        let mut probe = pin!(b.call(probe, not_answering));
        poll_once(probe.as_mut()).await;
        // The probe is in flight: everyone else is still rejected.
        assert_eq!(b.state(), BreakerState::HalfOpen);
        must_reject(&b).await;
        must_reject(&b).await;

        // Its success closes the breaker.
        tx.send(Ok(())).unwrap();
        probe.await.unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.trips(), 1);
        ok(&b).await.unwrap();
        // And the closed breaker counts from zero again.
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.trips(), 2);
    }

    #[tokio::test]
    async fn an_answered_error_from_the_probe_closes_it() {
        let b = breaker(1);
        trip(&b).await;
        b.advance(COOLDOWN + MARGIN);
        b.call(async { Err::<(), _>(wrongtype()) }, not_answering)
            .await
            .unwrap_err();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_failed_probe_reopens_for_a_full_cooldown_and_counts_a_trip() {
        let b = breaker(3);
        trip(&b).await;
        b.advance(COOLDOWN + MARGIN);
        fail(&b).await.unwrap_err();
        assert_eq!(b.trips(), 2);
        assert_eq!(b.state(), BreakerState::Open);
        b.advance(COOLDOWN - MARGIN);
        must_reject(&b).await;
        assert_eq!(b.state(), BreakerState::Open);
        b.advance(PAST_THE_END);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        ok(&b).await.unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.trips(), 2);
    }

    #[tokio::test]
    async fn a_cancelled_probe_frees_the_slot() {
        let b = breaker(3);
        trip(&b).await;
        b.advance(COOLDOWN + MARGIN);
        {
            let (_tx, probe) = controlled();
            let mut probe = pin!(b.call(probe, not_answering));
            poll_once(probe.as_mut()).await;
            must_reject(&b).await;
        } // The caller gave up: the probe is dropped mid-flight.
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.trips(), 1, "a cancelled probe is not a failure");
        // The next call is the probe (it is polled), and closes the breaker.
        ok(&b).await.unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_late_outcome_from_before_the_trip_changes_nothing() {
        let b = breaker(3);
        let (tx_ok, early_ok) = controlled();
        let (tx_fail, early_fail) = controlled();
        let mut early_ok = pin!(b.call(early_ok, not_answering));
        let mut early_fail = pin!(b.call(early_fail, not_answering));
        poll_once(early_ok.as_mut()).await;
        poll_once(early_fail.as_mut()).await;

        trip(&b).await;
        tx_ok.send(Ok(())).unwrap();
        early_ok.await.unwrap();
        assert_eq!(b.state(), BreakerState::Open, "only the probe closes it");
        must_reject(&b).await;

        // A late failure neither counts another trip nor extends the cooldown.
        b.advance(COOLDOWN - MARGIN);
        tx_fail.send(Err(timeout())).unwrap();
        early_fail.await.unwrap_err();
        assert_eq!(b.trips(), 1);
        b.advance(PAST_THE_END);
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test]
    async fn a_late_failure_does_not_count_after_the_breaker_closed_again() {
        let b = breaker(2);
        let (tx, early) = controlled();
        let mut early = pin!(b.call(early, not_answering));
        poll_once(early.as_mut()).await;
        trip(&b).await;
        b.advance(COOLDOWN + MARGIN);
        ok(&b).await.unwrap(); // the probe closes it
        tx.send(Err(timeout())).unwrap();
        early.await.unwrap_err();
        // Had the stale failure counted, this one would trip it.
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.trips(), 1);
    }

    #[tokio::test]
    async fn unanswered_calls_finishing_together_trip_once() {
        let b = breaker(3);
        let mut senders = Vec::new();
        let mut calls = Vec::new();
        for _ in 0..8 {
            let (tx, call) = controlled();
            senders.push(tx);
            calls.push(Box::pin(b.call(call, not_answering)));
        }
        for call in &mut calls {
            poll_once(call.as_mut()).await;
        }
        for tx in senders {
            tx.send(Err(timeout())).unwrap();
        }
        for call in calls {
            call.await.unwrap_err();
        }
        assert_eq!(b.trips(), 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unanswered_calls_on_several_threads_trip_once() {
        const CALLS: usize = 8;
        for _ in 0..50 {
            let b = Arc::new(breaker(3));
            let admitted = Arc::new(AtomicUsize::new(0));
            let (go, ready) = tokio::sync::watch::channel(false);
            let tasks: Vec<_> = (0..CALLS)
                .map(|_| {
                    let (b, admitted, mut ready) = (b.clone(), admitted.clone(), ready.clone());
                    tokio::spawn(async move {
                        let call = async move {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            let _ = ready.wait_for(|go| *go).await;
                            Err::<(), _>(timeout())
                        };
                        b.call(call, not_answering).await
                    })
                })
                .collect();
            drop(ready);
            while admitted.load(Ordering::SeqCst) < CALLS {
                tokio::task::yield_now().await;
            }
            go.send(true).unwrap();
            for task in tasks {
                assert!(matches!(task.await.unwrap(), Err(Error::Timeout(_))));
            }
            assert_eq!(b.trips(), 1);
            assert_eq!(b.rejected(), 0);
            assert_eq!(b.state(), BreakerState::Open);
        }
    }
}
