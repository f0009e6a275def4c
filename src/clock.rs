//! Time as the daemon sees it. One [`Clock`] is passed in (held by `AppState` and the job
//! workers), so session expiry, sign-in lockouts, job leases, retry backoff and history
//! retention can be tested by moving a [`ManualClock`] forward instead of sleeping.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + Debug {
    /// Seconds since the Unix epoch (what records store).
    fn now_secs(&self) -> u64;
    /// A monotonic instant (what in-memory timers compare).
    fn now(&self) -> Instant;
}

/// The real time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_secs(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The real time plus an offset that only grows: [`ManualClock::advance`] jumps ahead.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset_secs: AtomicU64,
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves this clock `secs` seconds ahead.
    pub fn advance(&self, secs: u64) {
        self.offset_secs.fetch_add(secs, Ordering::SeqCst);
    }

    fn offset(&self) -> u64 {
        self.offset_secs.load(Ordering::SeqCst)
    }
}

impl Clock for ManualClock {
    fn now_secs(&self) -> u64 {
        SystemClock.now_secs() + self.offset()
    }

    fn now(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_ahead_of_the_system_clock() {
        let clock = ManualClock::new();
        let (secs, instant) = (SystemClock.now_secs(), Instant::now());
        clock.advance(3600);
        assert!(clock.now_secs() >= secs + 3600);
        assert!(clock.now() >= instant + Duration::from_secs(3600));
    }
}
