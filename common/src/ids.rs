//! Time-ordered, unique message ids.
//!
//! An id is 128 bits: 48 bits of Unix milliseconds, 16 bits of a per-process
//! sequence (so ids made within one millisecond still sort in creation order)
//! and 64 random bits (so ids from different peers never collide).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// A message id. Its big-endian bytes sort like the id itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId(pub u128);

static LAST: Mutex<(u64, u16)> = Mutex::new((0, 0));

impl MessageId {
    /// A new id, later than every id this process made before.
    pub fn generate() -> MessageId {
        let now = now_millis().max(0) as u64;
        let (ms, seq) = {
            let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
            if now > last.0 {
                *last = (now, 0);
            } else if last.1 == u16::MAX {
                *last = (last.0 + 1, 0);
            } else {
                last.1 += 1;
            }
            *last
        };
        let random: u64 = random_u64();
        MessageId(((ms as u128) << 80) | ((seq as u128) << 64) | random as u128)
    }

    /// The id as 16 big-endian bytes, for storage.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// An id from its 16 stored bytes.
    pub fn from_bytes(b: [u8; 16]) -> MessageId {
        MessageId(u128::from_be_bytes(b))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // ring is already in the tree through rustls: use its system RNG.
    if rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut buf)
        .is_err()
    {
        // Fall back on the clock's nanoseconds: uniqueness is still ensured by
        // the millisecond and sequence parts within this process.
        buf = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0) as u64)
            .to_be_bytes();
    }
    u64::from_be_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_increasing_and_unique() {
        let ids: Vec<MessageId> = (0..10_000).map(|_| MessageId::generate()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn bytes_round_trip_and_sort() {
        let a = MessageId::generate();
        let b = MessageId::generate();
        assert_eq!(MessageId::from_bytes(a.to_bytes()), a);
        assert!(a.to_bytes() < b.to_bytes());
    }
}
