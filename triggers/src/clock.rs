//! Time, injected: decisions read [`Clock::now`], loops wait with [`Clock::sleep_until`], so tests
//! drive time with [`ManualClock`] instead of waiting (and never read the system clock).

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Completes once [`now`](Self::now) is at or after `deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()>;
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock. Sleeps re-check the time after waking, so a clock step (NTP)
/// neither fires early nor sleeps forever.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// Longest single sleep of [`SystemClock`] before it re-reads the wall clock.
const MAX_SLEEP: Duration = Duration::from_secs(30);

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                let left = deadline.duration_since(Timestamp::now());
                if left <= SignedDuration::ZERO {
                    return;
                }
                let left = Duration::try_from(left).unwrap_or(MAX_SLEEP);
                tokio::time::sleep(left.min(MAX_SLEEP)).await;
            }
        })
    }
}

/// A clock that only moves when told to (tests).
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
    changed: watch::Sender<Timestamp>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        let (changed, _) = watch::channel(start);
        Self {
            now: Arc::new(Mutex::new(start)),
            changed,
        }
    }

    /// Sets the time (it may go backwards, like a real clock step).
    pub fn set(&self, t: Timestamp) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = t;
        self.changed.send_replace(t);
    }

    /// Moves the time forward.
    pub fn advance(&self, by: SignedDuration) {
        let t = self.now() + by;
        self.set(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        let mut rx = self.changed.subscribe();
        let now = self.now.clone();
        Box::pin(async move {
            loop {
                if *now.lock().unwrap_or_else(|p| p.into_inner()) >= deadline {
                    return;
                }
                if rx.changed().await.is_err() {
                    // The clock is gone: nothing will ever move it.
                    return futures::future::pending().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_moved_past_the_deadline() {
        let start: Timestamp = "2026-03-29T00:59:00Z".parse().expect("time");
        let clock = ManualClock::new(start);
        let deadline = start + SignedDuration::from_secs(60);
        let mut sleeper = tokio::spawn(clock.sleep_until(deadline));
        clock.advance(SignedDuration::from_secs(30));
        tokio::task::yield_now().await;
        assert!(
            futures::poll!(&mut sleeper).is_pending(),
            "30 s before the deadline"
        );
        clock.advance(SignedDuration::from_secs(30));
        sleeper.await.expect("sleeper finished");
        assert_eq!(clock.now(), deadline);
    }

    #[tokio::test]
    async fn system_clock_does_not_sleep_for_past_deadlines() {
        let past: Timestamp = "2020-01-01T00:00:00Z".parse().expect("time");
        SystemClock.sleep_until(past).await;
        assert!(SystemClock.now() > past);
    }
}
