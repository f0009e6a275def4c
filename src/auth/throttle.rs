//! Login throttling per account and per client address, with lockouts that expire, and the
//! gate that bounds how many password hashes run at once.
//! Kept in memory: a restart forgets failures, which is acceptable for a LAN appliance and
//! keeps failed logins from writing to the database.
//!
//! An attempt reserves its slot *before* the password is hashed ([`LoginThrottle::begin`]):
//! attempts in flight count against the limits like failures, so a burst of concurrent wrong
//! passwords runs at most `max` hashes per account (and per address), not one per request.
//! An attempt dropped without an outcome (the client went away) counts as a failure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a request waits for a free password-hashing slot before it is told to come back.
const HASH_SLOT_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct LoginThrottle {
    max_account_failures: u32,
    max_ip_failures: u32,
    lockout: Duration,
    state: Mutex<State>,
    hashing: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<String, Failures>,
    addresses: HashMap<IpAddr, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first_at: Instant,
    locked_until: Option<Instant>,
    /// Attempts reserved and not yet settled.
    in_flight: u32,
}

impl Failures {
    fn fresh(now: Instant) -> Self {
        Failures {
            count: 0,
            first_at: now,
            locked_until: None,
            in_flight: 0,
        }
    }

    /// Forgets failures older than the lockout window and lockouts that ended.
    fn expire(&mut self, now: Instant, lockout: Duration) {
        if now.duration_since(self.first_at) > lockout
            || self.locked_until.is_some_and(|until| until <= now)
        {
            *self = Failures {
                in_flight: self.in_flight,
                ..Failures::fresh(now)
            };
        }
    }

    /// Seconds to wait, when no attempt may start now.
    fn refusal(&self, max: u32, now: Instant) -> Option<u64> {
        if let Some(until) = self.locked_until.filter(|until| *until > now) {
            return Some(until.duration_since(now).as_secs().max(1));
        }
        (self.count + self.in_flight >= max).then_some(1)
    }

    /// Counts a failure; true if it triggered the lockout.
    fn fail(&mut self, max: u32, now: Instant, lockout: Duration) -> bool {
        self.expire(now, lockout);
        self.count += 1;
        if self.count >= max {
            self.locked_until = Some(now + lockout);
            true
        } else {
            false
        }
    }
}

impl LoginThrottle {
    /// Password hashing runs on as many threads at once as the machine has cores, unless
    /// [`Self::with_hash_concurrency`] says otherwise.
    pub fn new(max_account_failures: u32, max_ip_failures: u32, lockout: Duration) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            max_account_failures,
            max_ip_failures,
            lockout,
            state: Mutex::new(State::default()),
            hashing: Arc::new(Semaphore::new(cores)),
        }
    }

    /// At most `slots` password hashes (argon2id, 19 MiB each) at once; 0 means one per core.
    pub fn with_hash_concurrency(mut self, slots: usize) -> Self {
        if slots > 0 {
            self.hashing = Arc::new(Semaphore::new(slots));
        }
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Some(seconds)` when this account or address is locked out now.
    pub fn check(&self, username: &str, address: IpAddr, now: Instant) -> Option<u64> {
        let state = self.lock();
        let account = state.accounts.get(&username.to_lowercase());
        let by_address = state.addresses.get(&address);
        [account, by_address]
            .into_iter()
            .flatten()
            .filter_map(|f| f.locked_until)
            .filter(|until| *until > now)
            .map(|until| until.duration_since(now).as_secs().max(1))
            .max()
    }

    /// Reserves one sign-in attempt (or password check) before any hashing. `Err(seconds)` when
    /// the account or address is locked out, or when the attempts already running would reach
    /// the limit. Settle the attempt with [`Attempt::succeeded`] or [`Attempt::failed`].
    pub fn begin(
        self: &Arc<Self>,
        username: &str,
        address: IpAddr,
        now: Instant,
    ) -> Result<Attempt, u64> {
        let account = username.to_lowercase();
        let mut state = self.lock();
        let lockout = self.lockout;
        let by_account = state
            .accounts
            .entry(account.clone())
            .or_insert_with(|| Failures::fresh(now));
        by_account.expire(now, lockout);
        let account_wait = by_account.refusal(self.max_account_failures, now);
        let by_address = state
            .addresses
            .entry(address)
            .or_insert_with(|| Failures::fresh(now));
        by_address.expire(now, lockout);
        let address_wait = by_address.refusal(self.max_ip_failures, now);
        if let Some(wait) = account_wait.max(address_wait) {
            return Err(wait);
        }
        by_address.in_flight += 1;
        if let Some(entry) = state.accounts.get_mut(&account) {
            entry.in_flight += 1;
        }
        // Bound memory under a flood of made-up usernames.
        if state.accounts.len() > 100_000 {
            state
                .accounts
                .retain(|_, f| f.in_flight > 0 || f.locked_until.is_some_and(|u| u > now));
        }
        if state.addresses.len() > 100_000 {
            state
                .addresses
                .retain(|_, f| f.in_flight > 0 || f.locked_until.is_some_and(|u| u > now));
        }
        Ok(Attempt {
            throttle: Arc::clone(self),
            account,
            address,
            settled: false,
            began: now,
        })
    }

    /// Counts a failed attempt that was never reserved; returns the lockout in seconds if this
    /// one triggered it.
    pub fn record_failure(&self, username: &str, address: IpAddr, now: Instant) -> Option<u64> {
        self.settle(&username.to_lowercase(), address, false, false, now)
    }

    fn settle(
        &self,
        account: &str,
        address: IpAddr,
        reserved: bool,
        success: bool,
        now: Instant,
    ) -> Option<u64> {
        let mut state = self.lock();
        let lockout = self.lockout;
        let by_account = state
            .accounts
            .entry(account.to_owned())
            .or_insert_with(|| Failures::fresh(now));
        if reserved {
            by_account.in_flight = by_account.in_flight.saturating_sub(1);
        }
        let account_locked = if success {
            *by_account = Failures {
                in_flight: by_account.in_flight,
                ..Failures::fresh(now)
            };
            false
        } else {
            by_account.fail(self.max_account_failures, now, lockout)
        };
        let by_address = state
            .addresses
            .entry(address)
            .or_insert_with(|| Failures::fresh(now));
        if reserved {
            by_address.in_flight = by_address.in_flight.saturating_sub(1);
        }
        let address_locked = !success && by_address.fail(self.max_ip_failures, now, lockout);
        (account_locked || address_locked).then_some(lockout.as_secs().max(1))
    }

    /// Waits (briefly) for a password-hashing slot; `Err(seconds)` when the server is busy
    /// hashing. Move the permit into the blocking task that hashes.
    pub async fn hash_slot(&self) -> Result<OwnedSemaphorePermit, u64> {
        match tokio::time::timeout(HASH_SLOT_WAIT, Arc::clone(&self.hashing).acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(1),
        }
    }
}

/// A reserved sign-in attempt. Dropped unsettled, it counts as a failure.
#[derive(Debug)]
pub struct Attempt {
    throttle: Arc<LoginThrottle>,
    account: String,
    address: IpAddr,
    settled: bool,
    /// When it began: an attempt dropped unsettled fails at that time.
    began: Instant,
}

impl Attempt {
    /// The password was right (at `now`): the account's failures are cleared.
    pub fn succeeded(mut self, now: Instant) {
        self.settled = true;
        self.throttle
            .settle(&self.account, self.address, true, true, now);
    }

    /// The password was wrong (at `now`); returns the lockout in seconds if this one
    /// triggered it.
    pub fn failed(mut self, now: Instant) -> Option<u64> {
        self.settled = true;
        self.throttle
            .settle(&self.account, self.address, true, false, now)
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle
                .settle(&self.account, self.address, true, false, self.began);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_expires() {
        let throttle = LoginThrottle::new(3, 100, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(throttle.record_failure("Bob", ip, t0), None);
        assert_eq!(throttle.record_failure("bob", ip, t0), None);
        assert!(throttle.check("bob", ip, t0).is_none());
        assert_eq!(throttle.record_failure("bob", ip, t0), Some(60));
        assert!(
            throttle
                .check("BOB", ip, t0 + Duration::from_secs(30))
                .is_some()
        );
        assert!(throttle.check("alice", ip, t0).is_none());
        assert!(
            throttle
                .check("bob", ip, t0 + Duration::from_secs(61))
                .is_none()
        );
    }

    #[test]
    fn address_limit_spans_accounts() {
        let throttle = LoginThrottle::new(100, 2, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        throttle.record_failure("a", ip, t0);
        throttle.record_failure("b", ip, t0);
        assert!(throttle.check("c", ip, t0).is_some());
        assert!(
            throttle
                .check("c", "10.0.0.3".parse().unwrap(), t0)
                .is_none()
        );
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let throttle = Arc::new(LoginThrottle::new(3, 100, Duration::from_secs(60)));
        let ip: IpAddr = "10.0.0.4".parse().unwrap();
        let t0 = Instant::now();
        let running: Vec<Attempt> = (0..3)
            .map(|_| throttle.begin("carol", ip, t0).unwrap())
            .collect();
        // Three are hashing: a fourth may not start, although none has failed yet.
        assert_eq!(throttle.begin("Carol", ip, t0).unwrap_err(), 1);
        let outcomes: Vec<Option<u64>> = running.into_iter().map(|a| a.failed(t0)).collect();
        assert_eq!(outcomes, vec![None, None, Some(60)]);
        assert!(throttle.begin("carol", ip, t0).unwrap_err() >= 59);
        // Dropped unsettled counts as a failure.
        let other = throttle.begin("dave", ip, t0).unwrap();
        drop(other);
        let again = throttle.begin("dave", ip, t0).unwrap();
        again.succeeded(t0);
        assert!(throttle.begin("dave", ip, t0).is_ok());
    }
}
