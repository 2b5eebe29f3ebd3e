//! Presence: joining and leaving the online set, and telling everyone else.
//!
//! A change (X came online, X went away) is written **once** into the hub's
//! shared log, a bounded broadcast channel, under the hub's lock. Each
//! logged-in session reads that log through its own [`Feed`]: it wakes on the
//! first change, waits a short window for more, and sends everything that
//! arrived as one write. A storm of M arrivals among N online sessions
//! therefore costs M log entries and about one write per session per window,
//! not N × M queued messages and wake-ups. Order per name is the log's order.
//! The window grows with the number online ([`crate::Config::presence_window_per_session`]),
//! so that a long ramp of arrivals costs a bounded number of writes per
//! second in total, not one per session every few milliseconds.
//!
//! The log keeps the last `presence_backlog` changes. A session that falls
//! further behind than that (its client stopped reading and its writes
//! stalled) has lost changes it can no longer be told; it is closed as too
//! slow with a reason, once. Memory never grows with a slow reader: the log
//! is shared and bounded.

use crate::hub::{Hub, Member, State};
use crate::logs::{self, limited};
use common::close::CloseCode;
use common::protocol::SessionResponse;
use common::wire::{self, WireError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// One change of presence, as kept in the shared log.
#[derive(Debug, Clone)]
pub struct Change {
    /// Who.
    pub name: Arc<str>,
    /// True: came online. False: went offline.
    pub online: bool,
}

/// Why a session's feed cannot go on.
#[derive(Debug, Error)]
pub enum FeedError {
    /// The session fell further behind the log than it keeps.
    #[error("fell {0} presence changes behind")]
    Lagged(u64),
    /// A change could not be encoded (a name over the frame limit).
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// One session's reader of the presence log, from the moment it joined.
#[derive(Debug)]
pub struct Feed {
    rx: broadcast::Receiver<Change>,
    me: Arc<str>,
    first: Option<Change>,
}

impl Feed {
    /// Waits until a change is waiting. Cancel-safe: a change received is
    /// kept until [`Feed::drain`] takes it.
    pub async fn changed(&mut self) -> Result<(), FeedError> {
        while self.first.is_none() {
            match self.rx.recv().await {
                Ok(c) if c.name == self.me => {}
                Ok(c) => self.first = Some(c),
                Err(RecvError::Lagged(n)) => return Err(FeedError::Lagged(n)),
                // The hub is gone (shutdown): nothing more will come.
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
        Ok(())
    }

    /// Takes every change waiting (this session's own excluded) and appends
    /// them to `out` as consecutive presence frames, in log order. Returns
    /// how many.
    pub fn drain(&mut self, out: &mut Vec<u8>) -> Result<usize, FeedError> {
        let mut count = 0;
        let mut next = self.first.take();
        loop {
            if let Some(c) = next.take() {
                if c.name != self.me {
                    let frame = wire::encode(&SessionResponse::Presence {
                        name: c.name.to_string(),
                        online: c.online,
                    })?;
                    out.extend_from_slice(&frame);
                    count += 1;
                }
            }
            match self.rx.try_recv() {
                Ok(c) => next = Some(c),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return Ok(count),
                Err(TryRecvError::Lagged(n)) => return Err(FeedError::Lagged(n)),
            }
        }
    }
}

impl Hub {
    /// Puts a logged-in session online; returns the others online and the
    /// session's feed of changes after that snapshot. A session already
    /// online for the account is closed as replaced (the account stays
    /// online, so nobody is told it left); otherwise everyone else is told
    /// the account came online.
    pub fn join(&self, name: &str, member: Member) -> (Vec<String>, Feed) {
        let mut st = self.lock();
        // Subscribed under the lock: the feed holds exactly the changes
        // after the snapshot returned below.
        let feed = Feed {
            rx: self.presence.subscribe(),
            me: Arc::from(name),
            first: None,
        };
        self.admit(&mut st, name, member);
        (st.online_except(name), feed)
    }

    /// Puts `member` online as `name`, replacing (and closing) a session
    /// that held the name before, unless that one holds a later claim (in a
    /// cluster, the later login wins on every node alike): then `member` is
    /// the one closed. False when `member` lost.
    pub(crate) fn admit(&self, st: &mut State, name: &str, member: Member) -> bool {
        if let Some(old) = st.online.get_mut(name) {
            if old.session == member.session {
                // The same session, heard of again (a claim seen twice).
                old.claim = old.claim.max(member.claim);
                return true;
            }
            if old.claim > member.claim {
                member.close(CloseCode::REPLACED);
                return false;
            }
        }
        match st.online.insert(name.to_string(), member) {
            Some(old) => {
                limited!(
                    logs::REPLACED,
                    info,
                    user = name,
                    "second login replaces the first session"
                );
                old.close(CloseCode::REPLACED);
                st.drop_requests_of(old.session);
            }
            None => {
                limited!(logs::ONLINE, info, user = name, "online");
                self.online_count.store(st.online.len(), Ordering::Relaxed);
                // An error only means nobody is listening.
                let _ = self.presence.send(Change {
                    name: Arc::from(name),
                    online: true,
                });
            }
        }
        true
    }

    /// Takes `session` of `name` offline (if it is still the current one) and
    /// tells everyone else; in a cluster, its claim is withdrawn.
    pub fn leave(&self, name: &str, session: u64) {
        let mut st = self.lock();
        if st.online.get(name).is_none_or(|m| m.session != session) {
            return;
        }
        if let Some(gone) = self.forget(&mut st, name) {
            if let Some(link) = &st.link {
                link.release(name, gone.claim);
            }
        }
    }

    /// Takes `name` offline whoever holds it, ends what its session had
    /// going here, and tells everyone else.
    pub(crate) fn forget(&self, st: &mut State, name: &str) -> Option<Member> {
        let gone = st.online.remove(name)?;
        let session = gone.session;
        if gone.node().is_some() {
            let at = std::time::Instant::now();
            st.departed.insert(name.to_string(), (gone.claim, at));
        }
        self.online_count.store(st.online.len(), Ordering::Relaxed);
        st.drop_requests_of(session);
        st.relays.remove(&session);
        st.forwarded.retain(|(s, _), _| *s != session);
        st.relay_pairs
            .retain(|(a, b), _| a.as_str() != name && b.as_str() != name);
        limited!(logs::OFFLINE, info, user = name, "offline");
        let _ = self.presence.send(Change {
            name: Arc::from(name),
            online: false,
        });
        Some(gone)
    }

    /// Is `name` online?
    pub fn is_online(&self, name: &str) -> bool {
        self.lock().online.contains_key(name)
    }

    /// Everyone online except `name`, sorted.
    pub fn online_except(&self, name: &str) -> Vec<String> {
        self.lock().online_except(name)
    }

    /// Closes every session with `code` (shutdown).
    pub fn close_all(&self, code: CloseCode) {
        for m in self.lock().online.values() {
            m.close(code);
        }
    }
}

impl crate::hub::State {
    /// Everyone online except `name`, sorted.
    pub fn online_except(&self, name: &str) -> Vec<String> {
        self.online.keys().filter(|n| *n != name).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::wire::decode_frame;

    fn feed(tx: &broadcast::Sender<Change>, me: &str) -> Feed {
        Feed {
            rx: tx.subscribe(),
            me: Arc::from(me),
            first: None,
        }
    }

    fn change(name: &str, online: bool) -> Change {
        Change {
            name: Arc::from(name),
            online,
        }
    }

    fn frames(mut buf: &[u8]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        while let Some((SessionResponse::Presence { name, online }, used)) =
            decode_frame::<SessionResponse>(buf).unwrap()
        {
            out.push((name, online));
            buf = &buf[used..];
        }
        out
    }

    #[tokio::test]
    async fn a_burst_is_drained_as_one_batch_in_order_without_ones_own() {
        let (tx, _) = broadcast::channel(64);
        let mut f = feed(&tx, "me");
        for (n, on) in [("a", true), ("me", true), ("b", true), ("a", false)] {
            tx.send(change(n, on)).unwrap();
        }
        f.changed().await.unwrap();
        let mut out = Vec::new();
        assert_eq!(f.drain(&mut out).unwrap(), 3);
        assert_eq!(
            frames(&out),
            [("a".into(), true), ("b".into(), true), ("a".into(), false)]
        );
        let mut again = Vec::new();
        assert_eq!(f.drain(&mut again).unwrap(), 0, "nothing twice");
    }

    #[tokio::test]
    async fn a_reader_further_behind_than_the_backlog_is_told_it_lagged() {
        let (tx, _) = broadcast::channel(4);
        let mut f = feed(&tx, "me");
        for i in 0..10 {
            tx.send(change(&format!("u{i}"), true)).unwrap();
        }
        assert!(matches!(f.changed().await, Err(FeedError::Lagged(_))));
    }
}
