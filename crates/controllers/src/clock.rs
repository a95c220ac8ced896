//! The time the dataprotection controllers go by: when a schedule is due, when a backup expires,
//! when it started and completed. Taken from [`crate::Context::clock`] so tests can move time
//! forward instead of waiting for it.
//!
//! The parts that play a cluster's machinery (the Job runner, the local-path provisioner) and
//! event timestamps keep the system clock: they model processes and records, not policies.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// A source of the current time that can also wait for a time to come.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Completes once [`Clock::now`] has reached `deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()>;

    /// Yields each time the clock jumps forward (never, for the system clock): whoever computed
    /// "how long until" before the jump must look again.
    fn jumps(&self) -> BoxStream<'static, ()>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        tokio::time::sleep(until(Timestamp::now(), deadline)).boxed()
    }

    fn jumps(&self) -> BoxStream<'static, ()> {
        futures::stream::pending().boxed()
    }
}

/// The system clock plus an offset that only grows: time passes as usual and [`advance`]
/// jumps it forward, waking every [`Clock::sleep_until`] whose deadline it passes. For tests of
/// schedules and retention (a minute of cron or retention in a moment of real time).
///
/// [`advance`]: AdjustableClock::advance
#[derive(Debug)]
pub struct AdjustableClock {
    /// The offset, watched so sleepers notice a jump.
    offset: watch::Sender<SignedDuration>,
}

impl Default for AdjustableClock {
    fn default() -> Self {
        AdjustableClock { offset: watch::channel(SignedDuration::ZERO).0 }
    }
}

impl AdjustableClock {
    /// A clock that starts at the system time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
        self.offset.send_modify(|offset| *offset = offset.saturating_add(by));
    }

    /// Moves the clock forward to `at` (nothing happens if it is already later).
    pub fn advance_to(&self, at: Timestamp) {
        let ahead = self.now().duration_until(at);
        if ahead.is_positive() {
            self.advance(ahead.unsigned_abs());
        }
    }

    /// How far the clock is ahead of the system clock.
    pub fn offset(&self) -> SignedDuration {
        *self.offset.borrow()
    }
}

fn shifted(offset: SignedDuration) -> Timestamp {
    Timestamp::now().saturating_add(offset).unwrap_or(Timestamp::MAX)
}

impl Clock for AdjustableClock {
    fn now(&self) -> Timestamp {
        shifted(self.offset())
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        let mut offset = self.offset.subscribe();
        async move {
            loop {
                let now = shifted(*offset.borrow_and_update());
                if now >= deadline {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(until(now, deadline)) => {}
                    changed = offset.changed() => {
                        if changed.is_err() {
                            // The clock is gone, and its offset with it: real time is left.
                            tokio::time::sleep(until(now, deadline)).await;
                            return;
                        }
                    }
                }
            }
        }
        .boxed()
    }

    fn jumps(&self) -> BoxStream<'static, ()> {
        // A new receiver has seen the current offset: only later jumps count.
        futures::stream::unfold(self.offset.subscribe(), |mut offset| async move {
            offset.changed().await.ok()?;
            Some(((), offset))
        })
        .boxed()
    }
}

/// How long from `now` until `deadline` (zero when it has passed).
fn until(now: Timestamp, deadline: Timestamp) -> Duration {
    let left = now.duration_until(deadline);
    if left.is_positive() { left.unsigned_abs() } else { Duration::ZERO }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn advancing_wakes_sleepers_whose_deadline_passed() {
        let clock = AdjustableClock::new();
        let start = clock.now();
        let far = start + SignedDuration::from_mins(10);
        let mut jumps = clock.jumps();
        let sleeper = tokio::spawn(clock.sleep_until(far));
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(60));
        assert!(jumps.next().await.is_some(), "a jump is announced");
        assert!(!sleeper.is_finished(), "one minute does not pass a ten-minute deadline");
        clock.advance_to(far);
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("the sleeper wakes at once")
            .expect("the sleeper does not panic");
        assert!(clock.now() >= far);
        // Ten minutes ahead of the start, less the real time the test itself took.
        assert!(clock.offset() > SignedDuration::from_mins(9));
        assert!(clock.offset() <= SignedDuration::from_mins(10));
    }

    #[tokio::test]
    async fn deadlines_in_the_past_do_not_wait() {
        let clock = SystemClock;
        let past = clock.now() - SignedDuration::from_secs(1);
        tokio::time::timeout(Duration::from_secs(1), clock.sleep_until(past))
            .await
            .expect("no wait");
    }
}
