//! Passwords and login throttling.
//!
//! Passwords are hashed with Argon2id (m = 19 MiB, t = 2, p = 1) on the
//! blocking pool, at most a few at a time, so a burst of logins cannot stall
//! the executor that serves presence and signaling. Failed attempts are
//! counted per account and per source address; past a few free failures each
//! further one doubles the wait before the next attempt is considered.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::Semaphore;

/// Throttling settings.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// Failures allowed before waits start.
    pub free_failures: u32,
    /// The first wait; each further failure doubles it.
    pub base_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
    /// Password hashes computed at once.
    pub hash_concurrency: usize,
    /// Accounts one address may create before waits start (each costs a
    /// password hash and a row).
    pub free_creations: u32,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            free_failures: 3,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
            hash_concurrency: 2,
            free_creations: 10,
        }
    }
}

/// Errors of password work.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Argon2 failed (bad stored hash or parameters).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The blocking task was cancelled (shutdown).
    #[error("password hashing was interrupted")]
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Addr(IpAddr),
    /// Accounts created from an address.
    Created(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    blocked_until: Instant,
    last: Instant,
}

/// Most throttling entries kept; older ones are forgotten first.
const MAX_ENTRIES: usize = 100_000;

/// Password hashing and throttling.
#[derive(Debug)]
pub struct Auth {
    limits: AuthLimits,
    hashing: Arc<Semaphore>,
    failures: Mutex<HashMap<Key, Failures>>,
}

fn argon2() -> Argon2<'static> {
    // The OWASP baseline; `Params::new` only fails for out-of-range values.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl Auth {
    /// New state with `limits`.
    pub fn new(limits: AuthLimits) -> Auth {
        let permits = limits.hash_concurrency.max(1);
        Auth {
            limits,
            hashing: Arc::new(Semaphore::new(permits)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| AuthError::Interrupted)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| AuthError::Interrupted)
    }

    /// A PHC string for a new password.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        self.blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AuthError::Hash(e.to_string()))
        })
        .await?
    }

    /// Does `password` match the stored PHC string?
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, AuthError> {
        self.blocking(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| AuthError::Hash(e.to_string()))?;
            Ok(argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `account` from `addr` must still wait, if at all.
    pub fn wait_for(&self, account: &str, addr: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let map = self.lock();
        [Key::Account(account.to_string()), Key::Addr(addr)]
            .iter()
            .filter_map(|k| map.get(k))
            .map(|f| f.blocked_until.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
            .max()
    }

    /// Counts a failure; returns the wait it imposes (zero while failures are free).
    pub fn record_failure(&self, account: &str, addr: IpAddr) -> Duration {
        let keys = [Key::Account(account.to_string()), Key::Addr(addr)];
        self.count(&keys, self.limits.free_failures)
    }

    /// How long `addr` must wait before creating another account, if at all.
    pub fn creation_wait(&self, addr: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let map = self.lock();
        map.get(&Key::Created(addr))
            .map(|f| f.blocked_until.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Counts an account created from `addr`; returns the wait it imposes.
    pub fn record_creation(&self, addr: IpAddr) -> Duration {
        self.count(&[Key::Created(addr)], self.limits.free_creations)
    }

    /// Counts one event for each key; past `free` of them, each further one
    /// doubles the wait. Returns the longest wait imposed.
    fn count(&self, keys: &[Key], free: u32) -> Duration {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            let horizon = self.limits.max_delay;
            map.retain(|_, f| now.duration_since(f.last) < horizon);
        }
        if map.len() >= MAX_ENTRIES {
            // Still full (an attack from many addresses): forget the oldest
            // half rather than grow without bound.
            let mut ages: Vec<Instant> = map.values().map(|f| f.last).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, f| f.last > cut);
        }
        let mut longest = Duration::ZERO;
        for key in keys {
            let f = map.entry(key.clone()).or_insert(Failures {
                count: 0,
                blocked_until: now,
                last: now,
            });
            f.count += 1;
            f.last = now;
            let wait = self.delay_after(f.count, free);
            f.blocked_until = now + wait;
            longest = longest.max(wait);
        }
        longest
    }

    /// Forgets the failures of `account` and `addr` after a success.
    pub fn record_success(&self, account: &str, addr: IpAddr) {
        let mut map = self.lock();
        map.remove(&Key::Account(account.to_string()));
        map.remove(&Key::Addr(addr));
    }

    fn delay_after(&self, events: u32, free: u32) -> Duration {
        let over = events.saturating_sub(free);
        if over == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (over - 1).min(16);
        self.limits
            .base_delay
            .saturating_mul(factor)
            .min(self.limits.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let auth = Auth::new(AuthLimits::default());
        let phc = auth.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(auth
            .verify("correct horse".into(), phc.clone())
            .await
            .unwrap());
        assert!(!auth.verify("wrong horse".into(), phc).await.unwrap());
    }

    #[test]
    fn waits_grow_after_free_failures_and_reset_on_success() {
        let auth = Auth::new(AuthLimits {
            base_delay: Duration::from_secs(1),
            ..Default::default()
        });
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            assert_eq!(auth.record_failure("bob", ip), Duration::ZERO);
        }
        assert_eq!(auth.record_failure("bob", ip), Duration::from_secs(1));
        assert_eq!(auth.record_failure("bob", ip), Duration::from_secs(2));
        assert!(auth.wait_for("bob", ip).is_some());
        // Another address is blocked for this account too.
        assert!(auth.wait_for("bob", [10, 0, 0, 2].into()).is_some());
        auth.record_success("bob", ip);
        assert!(auth.wait_for("bob", ip).is_none());
    }
}
