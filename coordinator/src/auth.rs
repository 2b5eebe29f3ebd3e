//! Passwords and login throttling.
//!
//! **Hashing.** Passwords are hashed with Argon2id (m = 19 MiB, t = 2,
//! p = 1) on the blocking pool, at most [`AuthLimits::hash_concurrency`] at a
//! time. Each hashing permit owns one 19 MiB block buffer from a pool, reused
//! for every hash: the memory spent on hashing is bounded by the permits and
//! never handed back to (and fragmented by) the allocator.
//!
//! **Throttling.** An attempt is *reserved* before anything is hashed
//! ([`Auth::begin`]): the checks and the pessimistic count of a failure
//! happen under one lock, so parallel attempts cannot all pass a check that
//! only a finished failure would have closed. At most one attempt per account
//! (from a source that never logged in to it), a few per source and a few in
//! total are in flight; anything beyond is refused at once, without hashing.
//! Failures are counted
//!
//! - per (account, source): past a few free ones, each doubles the wait of
//!   that pair. This is what stops a guesser, and it never touches the real
//!   owner at another address;
//! - per source, across accounts (password spraying), with the same rule;
//! - per account, across sources: a much looser ceiling that only *slows*
//!   (a delay before each attempt from a source not yet known for the
//!   account), never refuses, so no stranger can lock the owner out.
//!
//! A source that logged in to an account is remembered as known for it: its
//! attempts skip the per-account slot and slow-down. Token resumes are
//! throttled on their own counter, never by password failures. Counters
//! idle for [`AuthLimits::forget_after`] start over. The table is bounded:
//! when it is full the least recently used entries that impose no wait are
//! forgotten; entries that impose a wait are never evicted, and when only
//! those are left a new source is refused rather than let in unthrottled.

use crate::source::source_of;
use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use prometheus_client::metrics::{gauge::Gauge, histogram::Histogram};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::Semaphore;

/// Argon2 memory cost in KiB (19 MiB, the OWASP baseline).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;
/// How long a refusal for "an attempt is already in flight" asks to wait.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// Throttling settings.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// Failures per (account, source), and per source, allowed before waits start.
    pub free_failures: u32,
    /// The first wait; each further failure doubles it.
    pub base_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
    /// Failures on one account, from all sources, before attempts on it from
    /// sources not known for it are slowed.
    pub account_free_failures: u32,
    /// The delay added to each such attempt once the account is past its
    /// ceiling (it slows a guesser spread over many sources; it never refuses).
    pub account_slowdown: Duration,
    /// A counter idle this long starts over.
    pub forget_after: Duration,
    /// Password hashes computed at once (each holds a 19 MiB buffer).
    pub hash_concurrency: usize,
    /// Login attempts in flight (reserved, waiting or hashing) per source.
    pub attempts_per_source: usize,
    /// Login attempts in flight in total.
    pub attempts_in_flight: usize,
    /// Accounts one source may create before waits start (generous: many
    /// users may sit behind one NAT address).
    pub free_creations: u32,
    /// Most throttling entries kept.
    pub max_entries: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            free_failures: 3,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
            account_free_failures: 20,
            account_slowdown: Duration::from_secs(1),
            forget_after: Duration::from_secs(15 * 60),
            hash_concurrency: 2,
            attempts_per_source: 2,
            attempts_in_flight: 64,
            free_creations: 100,
            max_entries: 100_000,
        }
    }
}

/// Errors of password work.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Argon2 failed (bad stored hash or parameters).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// A stored hash asks for more memory than a hashing buffer holds.
    #[error("the stored password hash needs {need} KiB, over the {have} KiB hashing budget")]
    OverBudget {
        /// KiB the stored parameters need.
        need: usize,
        /// KiB a buffer holds.
        have: usize,
    },
    /// The blocking task was cancelled (shutdown).
    #[error("password hashing was interrupted")]
    Interrupted,
}

fn hash_err(e: impl std::fmt::Display) -> AuthError {
    AuthError::Hash(e.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// Password failures of one account from one source.
    Pair(String, IpAddr),
    /// Password failures from one source, any account.
    Source(IpAddr),
    /// Password failures of one account, any source (slows only).
    Account(String),
    /// Refused session tokens from one source.
    Token(IpAddr),
    /// Accounts created from a source.
    Created(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    count: u32,
    blocked_until: Instant,
    last: Instant,
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<Key, Counter>,
    /// (account, source) pairs that logged in; bounded like `counters`.
    known: HashMap<(String, IpAddr), Instant>,
    by_account: HashMap<String, usize>,
    by_source: HashMap<IpAddr, usize>,
    in_flight: usize,
}

/// One buffer of Argon2 blocks per hashing permit, reused.
#[derive(Debug)]
struct HashPool {
    permits: Semaphore,
    buffers: Mutex<Vec<Vec<Block>>>,
    allocated: AtomicUsize,
    /// Hashes waiting for a permit (a metric).
    queue: Gauge,
    /// How long each hash waited for its permit (a metric).
    wait: Histogram,
}

/// Password hashing and throttling.
#[derive(Debug)]
pub struct Auth {
    limits: AuthLimits,
    pool: Arc<HashPool>,
    state: Mutex<State>,
}

fn params() -> Params {
    // The OWASP baseline; `Params::new` only fails for out-of-range values.
    Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).unwrap_or_default()
}

fn blocks_per_buffer() -> usize {
    params().block_count()
}

/// Hashes `password` into a PHC string, using `blocks` as Argon2's memory.
fn hash_with(password: &[u8], blocks: &mut [Block]) -> Result<String, AuthError> {
    let params = params();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(hash_err)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let need = params.block_count();
    let have = blocks.len();
    let blocks = blocks
        .get_mut(..need)
        .ok_or(AuthError::OverBudget { need, have })?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, salt_bytes, &mut out, blocks)
        .map_err(hash_err)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(hash_err)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(hash_err)?),
    };
    Ok(phc.to_string())
}

/// Does `password` match the PHC string `phc`? Uses `blocks` as memory.
fn verify_with(password: &[u8], phc: &str, blocks: &mut [Block]) -> Result<bool, AuthError> {
    let parsed = PasswordHash::new(phc).map_err(hash_err)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(hash_err)?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(hash_err)?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(hash_err)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(AuthError::Hash("stored hash has no salt or output".into()));
    };
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(hash_err)?;
    let need = params.block_count();
    let have = blocks.len();
    let blocks = blocks
        .get_mut(..need)
        .ok_or(AuthError::OverBudget { need, have })?;
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt_bytes, &mut out, blocks)
        .map_err(hash_err)?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(&out).map_err(hash_err)? == expected)
}

impl HashPool {
    fn new(permits: usize) -> HashPool {
        HashPool {
            permits: Semaphore::new(permits),
            buffers: Mutex::new(Vec::with_capacity(permits)),
            allocated: AtomicUsize::new(0),
            queue: Gauge::default(),
            wait: crate::metrics::wait_histogram(),
        }
    }

    /// Runs `f` on the blocking pool with a buffer, under a permit. Buffers
    /// are made on first need (an idle coordinator holds none) and never
    /// more than one per permit.
    async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut [Block]) -> R + Send + 'static,
    ) -> Result<R, AuthError> {
        let asked = Instant::now();
        let queued = Queued::new(&self.queue);
        let permit = self.permits.acquire().await;
        drop(queued);
        let _permit = permit.map_err(|_| AuthError::Interrupted)?;
        self.wait.observe(asked.elapsed().as_secs_f64());
        let taken = self.buffers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut blocks = taken.unwrap_or_else(|| {
            self.allocated.fetch_add(1, Ordering::Relaxed);
            vec![Block::default(); blocks_per_buffer()]
        });
        let (blocks, result) = tokio::task::spawn_blocking(move || {
            let result = f(&mut blocks);
            // Leave nothing derived from a password behind in the buffer.
            blocks.iter_mut().for_each(|b| *b = Block::default());
            (blocks, result)
        })
        .await
        .map_err(|_| AuthError::Interrupted)?;
        self.buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(blocks);
        Ok(result)
    }
}

/// Counts one hash in the queue until dropped (also when the waiting
/// future is dropped: the gauge never drifts).
struct Queued<'a>(&'a Gauge);

impl<'a> Queued<'a> {
    fn new(gauge: &'a Gauge) -> Queued<'a> {
        gauge.inc();
        Queued(gauge)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why an attempt was not let through; the user may try again after `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// How long to wait before trying again.
    pub wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Succeeded,
    Failed,
    /// Never judged: the password was not checked at all.
    Abandoned,
}

/// A reserved login attempt. Until [`Attempt::succeeded`] is called it
/// counts as a failure (also when dropped unfinished).
#[derive(Debug)]
pub struct Attempt<'a> {
    auth: &'a Auth,
    account: Option<String>,
    source: IpAddr,
    /// Wait this long before hashing (the account is past its ceiling).
    pub delay: Duration,
    outcome: Outcome,
}

impl Auth {
    /// New state with `limits`.
    pub fn new(limits: AuthLimits) -> Auth {
        let permits = limits.hash_concurrency.max(1);
        Auth {
            limits,
            pool: Arc::new(HashPool::new(permits)),
            state: Mutex::new(State::default()),
        }
    }

    /// A PHC string for a new password.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        self.pool
            .run(move |blocks| hash_with(password.as_bytes(), blocks))
            .await?
    }

    /// Does `password` match the stored PHC string?
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, AuthError> {
        self.pool
            .run(move |blocks| verify_with(password.as_bytes(), &phc, blocks))
            .await?
    }

    /// The hashing queue's depth and wait metrics (shared handles).
    pub fn hash_metrics(&self) -> (Gauge, Histogram) {
        (self.pool.queue.clone(), self.pool.wait.clone())
    }

    /// How many hashing buffers were ever allocated (at most the permits).
    pub fn hash_buffers_allocated(&self) -> usize {
        self.pool.allocated.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a password attempt on `account` from `ip`, or refuses it at
    /// once. The reservation counts as a failure until it succeeds.
    pub fn begin(&self, account: &str, ip: IpAddr) -> Result<Attempt<'_>, Refused> {
        let now = Instant::now();
        let source = source_of(ip);
        let l = &self.limits;
        let mut st = self.lock();
        let pair = Key::Pair(account.to_string(), source);
        let wait = [&pair, &Key::Source(source)]
            .into_iter()
            .filter_map(|k| st.wait(k, now, l.forget_after))
            .max();
        if let Some(wait) = wait {
            return Err(Refused { wait });
        }
        let known = st.known.contains_key(&(account.to_string(), source));
        let busy = st.in_flight >= l.attempts_in_flight
            || st.by_source.get(&source).copied().unwrap_or(0) >= l.attempts_per_source
            || (!known && st.by_account.get(account).copied().unwrap_or(0) > 0);
        if busy {
            return Err(Refused { wait: BUSY_WAIT });
        }
        let keys = [pair, Key::Source(source), Key::Account(account.to_string())];
        if !st.make_room(&keys, now, l) {
            return Err(Refused { wait: BUSY_WAIT });
        }
        for key in &keys[..2] {
            st.bump(key, l.free_failures, now, l);
        }
        let account_failures = st.bump(&keys[2], u32::MAX, now, l);
        let delay = if !known && account_failures > l.account_free_failures {
            l.account_slowdown
        } else {
            Duration::ZERO
        };
        st.in_flight += 1;
        *st.by_source.entry(source).or_default() += 1;
        *st.by_account.entry(account.to_string()).or_default() += 1;
        Ok(Attempt {
            auth: self,
            account: Some(account.to_string()),
            source,
            delay,
            outcome: Outcome::Pending,
        })
    }

    /// Reserves the creation of an account from `ip` (it costs a hash and a
    /// row), or refuses it at once.
    pub fn begin_creation(&self, ip: IpAddr) -> Result<Attempt<'_>, Refused> {
        let now = Instant::now();
        let source = source_of(ip);
        let l = &self.limits;
        let mut st = self.lock();
        if let Some(wait) = st.wait(&Key::Created(source), now, l.forget_after) {
            return Err(Refused { wait });
        }
        if st.in_flight >= l.attempts_in_flight
            || st.by_source.get(&source).copied().unwrap_or(0) >= l.attempts_per_source
        {
            return Err(Refused { wait: BUSY_WAIT });
        }
        st.in_flight += 1;
        *st.by_source.entry(source).or_default() += 1;
        Ok(Attempt {
            auth: self,
            account: None,
            source,
            delay: Duration::ZERO,
            // A creation that does not finish costs nothing to count.
            outcome: Outcome::Failed,
        })
    }

    /// Remembers `ip` as a source known for `account` (its creator).
    pub fn known_from(&self, account: &str, ip: IpAddr) {
        let max = self.limits.max_entries;
        self.lock()
            .remember(account, source_of(ip), Instant::now(), max);
    }

    /// Must `ip` wait before its next session-token resume?
    pub fn token_wait(&self, ip: IpAddr) -> Option<Duration> {
        let l = &self.limits;
        self.lock()
            .wait(&Key::Token(source_of(ip)), Instant::now(), l.forget_after)
    }

    /// Counts a refused session token from `ip`; the wait it imposes.
    pub fn token_refused(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let l = &self.limits;
        let key = Key::Token(source_of(ip));
        let mut st = self.lock();
        if !st.make_room(std::slice::from_ref(&key), now, l) {
            return BUSY_WAIT;
        }
        st.bump(&key, l.free_failures, now, l);
        st.wait(&key, now, l.forget_after).unwrap_or_default()
    }

    fn finish(&self, attempt: &Attempt<'_>) {
        let now = Instant::now();
        let l = &self.limits;
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        release(&mut st.by_source, &attempt.source);
        match (&attempt.account, attempt.outcome) {
            (Some(account), outcome) => {
                release(&mut st.by_account, account);
                if outcome == Outcome::Abandoned {
                    for key in [
                        Key::Pair(account.clone(), attempt.source),
                        Key::Source(attempt.source),
                    ] {
                        st.unbump(&key, l.free_failures, now, l);
                    }
                    st.unbump(&Key::Account(account.clone()), u32::MAX, now, l);
                }
                if outcome == Outcome::Succeeded {
                    st.counters
                        .remove(&Key::Pair(account.clone(), attempt.source));
                    st.unbump(&Key::Source(attempt.source), l.free_failures, now, l);
                    st.unbump(&Key::Account(account.clone()), u32::MAX, now, l);
                    st.remember(account, attempt.source, now, l.max_entries);
                }
            }
            (None, Outcome::Succeeded) => {
                let key = Key::Created(attempt.source);
                if st.make_room(std::slice::from_ref(&key), now, l) {
                    st.bump(&key, l.free_creations, now, l);
                }
            }
            (None, _) => {}
        }
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

fn delay_after(events: u32, free: u32, l: &AuthLimits) -> Duration {
    let over = events.saturating_sub(free);
    if over == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (over - 1).min(16);
    l.base_delay.saturating_mul(factor).min(l.max_delay)
}

impl State {
    /// The wait `key` imposes now, if any.
    fn wait(&self, key: &Key, now: Instant, forget_after: Duration) -> Option<Duration> {
        let c = self.counters.get(key)?;
        if now.duration_since(c.last) >= forget_after && c.blocked_until <= now {
            return None;
        }
        Some(c.blocked_until.saturating_duration_since(now)).filter(|d| !d.is_zero())
    }

    /// Counts one event on `key`; past `free`, each doubles the wait. The count.
    fn bump(&mut self, key: &Key, free: u32, now: Instant, l: &AuthLimits) -> u32 {
        let c = self.counters.entry(key.clone()).or_insert(Counter {
            count: 0,
            blocked_until: now,
            last: now,
        });
        if now.duration_since(c.last) >= l.forget_after && c.blocked_until <= now {
            c.count = 0;
        }
        c.count = c.count.saturating_add(1);
        c.last = now;
        c.blocked_until = c.blocked_until.max(now + delay_after(c.count, free, l));
        c.count
    }

    /// Takes back one reserved event on `key` (the attempt succeeded).
    fn unbump(&mut self, key: &Key, free: u32, now: Instant, l: &AuthLimits) {
        if let Some(c) = self.counters.get_mut(key) {
            c.count = c.count.saturating_sub(1);
            if c.count == 0 {
                self.counters.remove(key);
            } else if delay_after(c.count, free, l).is_zero() {
                c.blocked_until = now;
            }
        }
    }

    /// Makes room for the `keys` not yet in the table. Forgets idle entries
    /// first, then the least recently used eighth of the entries that impose
    /// no wait. False when only entries imposing a wait are left.
    fn make_room(&mut self, keys: &[Key], now: Instant, l: &AuthLimits) -> bool {
        let new = keys
            .iter()
            .filter(|k| !self.counters.contains_key(k))
            .count();
        if self.counters.len() + new <= l.max_entries {
            return true;
        }
        let forget = l.forget_after;
        self.counters
            .retain(|_, c| c.blocked_until > now || now.duration_since(c.last) < forget);
        if self.counters.len() + new <= l.max_entries {
            return true;
        }
        let mut free: Vec<(Instant, Key)> = self
            .counters
            .iter()
            .filter(|(k, c)| c.blocked_until <= now && !keys.contains(k))
            .map(|(k, c)| (c.last, k.clone()))
            .collect();
        free.sort_unstable_by_key(|(last, _)| *last);
        let cut = (l.max_entries / 8).max(new);
        for (_, key) in free.into_iter().take(cut) {
            self.counters.remove(&key);
        }
        self.counters.len() + new <= l.max_entries
    }

    /// Remembers that `source` logged in to `account`.
    fn remember(&mut self, account: &str, source: IpAddr, now: Instant, max: usize) {
        if self.known.len() >= max {
            let mut ages: Vec<Instant> = self.known.values().copied().collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 8];
            self.known.retain(|_, t| *t > cut);
        }
        self.known.insert((account.to_string(), source), now);
    }
}

impl Attempt<'_> {
    /// The password was right (or the account was created): the reserved
    /// failure is taken back and the source is known for the account.
    pub fn succeeded(mut self) {
        self.outcome = Outcome::Succeeded;
    }

    /// The password could not be checked (the accounts database did not
    /// answer): the reserved failure is taken back, and nothing else
    /// changes. No guess was judged, so none is counted against the user.
    pub fn abandoned(mut self) {
        self.outcome = Outcome::Abandoned;
    }

    /// The password was wrong: the reserved failure stays. The wait it imposes
    /// on this (account, source) and source.
    pub fn failed(mut self) -> Duration {
        self.outcome = Outcome::Failed;
        let Some(account) = &self.account else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let l = &self.auth.limits;
        let st = self.auth.lock();
        [
            Key::Pair(account.clone(), self.source),
            Key::Source(self.source),
        ]
        .iter()
        .filter_map(|k| st.wait(k, now, l.forget_after))
        .max()
        .unwrap_or_default()
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.auth.finish(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        [10, 0, 0, last].into()
    }

    fn fail(auth: &Auth, account: &str, from: IpAddr) -> Duration {
        auth.begin(account, from)
            .expect("attempt admitted")
            .failed()
    }

    #[tokio::test]
    async fn hash_and_verify_reuse_one_buffer_per_permit() {
        let auth = Auth::new(AuthLimits::default());
        let phc = auth.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(auth
            .verify("correct horse".into(), phc.clone())
            .await
            .unwrap());
        assert!(!auth
            .verify("wrong horse".into(), phc.clone())
            .await
            .unwrap());
        // A PHC string made by the argon2 crate's own hasher verifies too.
        use argon2::password_hash::PasswordHasher;
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
            .hash_password(b"pw of theirs", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(auth.verify("pw of theirs".into(), theirs).await.unwrap());
        let auth = Arc::new(auth);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (auth, phc) = (auth.clone(), phc.clone());
            tasks.spawn(async move { auth.verify("x".repeat(9), phc).await });
        }
        while let Some(r) = tasks.join_next().await {
            assert!(!r.unwrap().unwrap());
        }
        assert!(
            auth.hash_buffers_allocated() <= AuthLimits::default().hash_concurrency,
            "{} buffers for {} permits",
            auth.hash_buffers_allocated(),
            AuthLimits::default().hash_concurrency
        );
    }

    #[test]
    fn waits_grow_after_free_failures_and_reset_on_success() {
        let auth = Auth::new(AuthLimits {
            base_delay: Duration::from_secs(1),
            ..Default::default()
        });
        for _ in 0..3 {
            assert_eq!(fail(&auth, "bob", ip(1)), Duration::ZERO);
        }
        let wait = fail(&auth, "bob", ip(1));
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(auth.begin("bob", ip(1)).is_err(), "the pair waits");
        assert!(auth.begin("carol", ip(1)).is_err(), "the source waits");
        // Another address is not locked out of bob.
        auth.begin("bob", ip(2))
            .expect("another source")
            .succeeded();
    }

    #[test]
    fn attempts_the_store_could_not_check_count_for_nothing() {
        let auth = Auth::new(AuthLimits {
            base_delay: Duration::from_secs(1),
            ..Default::default()
        });
        fail(&auth, "bob", ip(1));
        for _ in 0..20 {
            auth.begin("bob", ip(1))
                .expect("an outage never makes the owner wait")
                .abandoned();
        }
        // Still the one real failure: two more are free, the fourth waits.
        assert_eq!(fail(&auth, "bob", ip(1)), Duration::ZERO);
        assert_eq!(fail(&auth, "bob", ip(1)), Duration::ZERO);
        assert!(fail(&auth, "bob", ip(1)) > Duration::ZERO);
    }

    #[test]
    fn a_second_attempt_on_an_account_is_refused_while_one_is_in_flight() {
        let auth = Auth::new(AuthLimits::default());
        let first = auth.begin("bob", ip(1)).unwrap();
        assert_eq!(
            auth.begin("bob", ip(2)).unwrap_err().wait,
            BUSY_WAIT,
            "one attempt per account"
        );
        let other = auth.begin("carol", ip(1)).unwrap();
        assert!(auth.begin("dave", ip(1)).is_err(), "two per source");
        drop((first, other));
        auth.begin("bob", ip(2)).unwrap().succeeded();
        // bob is now known from ip(2): its attempts skip the account slot.
        let _stranger = auth.begin("bob", ip(3)).unwrap();
        auth.begin("bob", ip(2)).unwrap().succeeded();
    }

    #[test]
    fn the_account_ceiling_slows_strangers_but_not_the_known_owner() {
        let auth = Auth::new(AuthLimits {
            account_free_failures: 4,
            ..Default::default()
        });
        auth.begin("bob", ip(1)).unwrap().succeeded();
        for attacker in 10..20 {
            let a = auth.begin("bob", ip(attacker)).unwrap();
            a.failed();
        }
        let stranger = auth.begin("bob", ip(30)).unwrap();
        assert!(stranger.delay > Duration::ZERO, "strangers are slowed");
        drop(stranger);
        let owner = auth.begin("bob", ip(1)).unwrap();
        assert_eq!(owner.delay, Duration::ZERO, "the known owner is not");
    }

    #[test]
    fn a_full_table_never_forgets_a_wait() {
        let auth = Auth::new(AuthLimits {
            max_entries: 12,
            base_delay: Duration::from_secs(60),
            ..Default::default()
        });
        for _ in 0..4 {
            fail(&auth, "victim", ip(1));
        }
        assert!(auth.begin("victim", ip(1)).is_err());
        // Fill the table from many other sources and accounts.
        for n in 2..200u8 {
            if let Ok(a) = auth.begin(&format!("acct{n}"), ip(n)) {
                a.failed();
            }
        }
        assert!(
            auth.begin("victim", ip(1)).is_err(),
            "the guesser's wait survived the flood"
        );
        assert!(auth.lock().counters.len() <= 12);
    }
}
