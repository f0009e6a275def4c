//! Login throttling per account and per client address, with lockouts that expire.
//! Kept in memory: a restart forgets failures, which is acceptable for a LAN appliance and
//! keeps failed logins from writing to the database.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LoginThrottle {
    max_account_failures: u32,
    max_ip_failures: u32,
    lockout: Duration,
    state: Mutex<State>,
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
}

impl LoginThrottle {
    pub fn new(max_account_failures: u32, max_ip_failures: u32, lockout: Duration) -> Self {
        Self {
            max_account_failures,
            max_ip_failures,
            lockout,
            state: Mutex::new(State::default()),
        }
    }

    /// `Some(seconds)` when this account or address is locked out now.
    pub fn check(&self, username: &str, address: IpAddr, now: Instant) -> Option<u64> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Records a failed attempt; returns the lockout in seconds if this one triggered it.
    pub fn record_failure(&self, username: &str, address: IpAddr, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let lockout = self.lockout;
        let bump = |entry: &mut Failures, max: u32| -> bool {
            // Failures older than the lockout window no longer count.
            if now.duration_since(entry.first_at) > lockout
                || entry.locked_until.is_some_and(|until| until <= now)
            {
                *entry = Failures {
                    count: 0,
                    first_at: now,
                    locked_until: None,
                };
            }
            entry.count += 1;
            if entry.count >= max {
                entry.locked_until = Some(now + lockout);
                true
            } else {
                false
            }
        };
        let fresh = Failures {
            count: 0,
            first_at: now,
            locked_until: None,
        };
        let account_locked = bump(
            state
                .accounts
                .entry(username.to_lowercase())
                .or_insert(fresh),
            self.max_account_failures,
        );
        let address_locked = bump(
            state.addresses.entry(address).or_insert(fresh),
            self.max_ip_failures,
        );
        // Bound memory under a flood of made-up usernames.
        if state.accounts.len() > 100_000 {
            state
                .accounts
                .retain(|_, f| f.locked_until.is_some_and(|u| u > now));
        }
        if state.addresses.len() > 100_000 {
            state
                .addresses
                .retain(|_, f| f.locked_until.is_some_and(|u| u > now));
        }
        (account_locked || address_locked).then_some(lockout.as_secs().max(1))
    }

    /// A successful login clears the account's failures (not the address's).
    pub fn record_success(&self, username: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.accounts.remove(&username.to_lowercase());
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
}
