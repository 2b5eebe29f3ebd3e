//! The coordinator's in-memory state: who is online (with a bounded outbound
//! queue per session) and which chat requests are pending. Presence
//! ([`crate::presence`]) and signaling ([`crate::signaling`]) are the two
//! halves of its behaviour.
//!
//! The state sits behind a std `Mutex` that is never held across an
//! `.await`. Signaling events go to one session through its bounded queue
//! with `try_send`: a session whose queue is full is too slow to keep up and
//! is closed (once, with one log line), so one slow client never blocks the
//! others or makes memory grow. Presence changes are not copied into every
//! session's queue: they go once into a shared, bounded log
//! ([`crate::presence::Change`] on a broadcast channel) that each session
//! reads at its own pace and coalesces ([`crate::presence::Feed`]).

use crate::logs::{self, limited};
use crate::metrics::Metrics;
use common::close::{self, CloseCode};
use common::protocol::{RelayEvent, RequestKind, SessionResponse, SignalEvent};
use common::Fingerprint;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// Messages queued for one session, per stream.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Outbound {
    /// For the session stream.
    Session(SessionResponse),
    /// For the signaling stream.
    Signal(SignalEvent),
}

/// Capacity of each session's outbound queue.
pub const OUTBOUND_QUEUE: usize = 256;

/// A logged-in session, on this node or (in a cluster) on another one.
#[derive(Debug)]
pub struct Member {
    /// Unique per connection (cluster-wide: see `server::session_ids`);
    /// tells a replaced session from its successor.
    pub session: u64,
    /// Fingerprint of the certificate it presented.
    pub fingerprint: Fingerprint,
    /// Its candidate addresses, observed one first.
    pub addrs: Vec<SocketAddr>,
    /// The revision of its claim in the cluster's presence bucket (0 on a
    /// single node): of two claims of one name, the higher one is the
    /// session that stays.
    pub claim: u64,
    /// How to reach it.
    pub reach: Reach,
}

/// Where a member's connection is.
#[derive(Debug)]
pub enum Reach {
    /// On this node.
    Local {
        /// The connection, to close it when it is replaced or too slow.
        conn: quinn::Connection,
        /// Its outbound queue.
        tx: mpsc::Sender<Outbound>,
        /// The coordinator's counters.
        metrics: Arc<Metrics>,
    },
    /// On another node of the cluster: messages go there over NATS.
    Remote {
        /// Its name (messages are addressed by name and session).
        name: Arc<str>,
        /// The node it is on.
        node: Arc<str>,
        /// The way to that node.
        link: crate::cluster::Link,
    },
}

impl Member {
    /// Queues `msg`; a full queue closes the session as too slow. The close
    /// (and its log line) happens once: a session already closing drops
    /// further messages silently, so a burst aimed at a stuck client costs
    /// one warning, not one per message. A remote member's message goes to
    /// its node.
    pub fn send(&self, msg: Outbound) {
        let (conn, tx, metrics) = match &self.reach {
            Reach::Local { conn, tx, metrics } => (conn, tx, metrics),
            Reach::Remote { name, node, link } => {
                link.deliver(node, name, self.session, msg);
                return;
            }
        };
        let presence = matches!(msg, Outbound::Session(SessionResponse::Presence { .. }));
        match tx.try_send(msg) {
            Ok(()) if presence => metrics.presence_sent(),
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if conn.close_reason().is_none() {
                    metrics.queue_full();
                    limited!(
                        logs::QUEUE_FULL,
                        warn,
                        session = self.session,
                        queued = OUTBOUND_QUEUE,
                        "outbound queue full; closing slow client"
                    );
                    self.close(CloseCode::TOO_SLOW);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Closes the session's connection with `code`, counting it. A remote
    /// member is closed by its own node, which learns of a second login
    /// from the presence bucket.
    pub fn close(&self, code: CloseCode) {
        if let Reach::Local { conn, metrics, .. } = &self.reach {
            if conn.close_reason().is_none() {
                metrics.closed_by_coordinator(code);
            }
            close::close(conn, code);
        }
    }

    /// The node it is on; `None` for this node.
    pub fn node(&self) -> Option<&Arc<str>> {
        match &self.reach {
            Reach::Local { .. } => None,
            Reach::Remote { node, .. } => Some(node),
        }
    }
}

/// A request waiting for the callee's answer.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Requester's name.
    pub from: String,
    /// Requester's session.
    pub from_session: u64,
    /// The id the requester chose.
    pub from_id: u64,
    /// Callee's name.
    pub to: String,
    /// Callee's session.
    pub to_session: u64,
    /// Chat or delivery.
    pub kind: RequestKind,
    /// When it times out.
    pub deadline: Instant,
}

/// A request kept on the callee's node, as its requester's node knows it.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// The node that keeps it.
    pub node: Arc<str>,
    /// When the requester is told it timed out if that node never answered
    /// (its answer lost, or the node dead): the request's own time-out and
    /// a margin.
    pub deadline: Instant,
}

/// Everything behind the hub's lock.
#[derive(Debug, Default)]
pub struct State {
    /// Online sessions by normalised name, in name order (each welcome
    /// lists them sorted; keeping them sorted spares a sort per login).
    pub online: BTreeMap<String, Member>,
    /// Pending requests by coordinator-given id.
    pub pending: HashMap<u64, Pending>,
    /// The next coordinator-given request id.
    pub next_request: u64,
    /// Pairs the coordinator arranged (names in order, see
    /// [`crate::signaling::relay_pair`]) with the sessions they were
    /// arranged in: only they may relay to each other.
    pub relay_pairs: HashMap<(String, String), (u64, u64, u64)>,
    /// The order in which relay pairs were allowed (the oldest goes first).
    pub next_relay_pair: u64,
    /// The relay queue of each session that opened its relay stream.
    pub relays: HashMap<u64, mpsc::Sender<RelayEvent>>,
    /// Pairs (names in order) that accepted a chat with each other since
    /// the coordinator started: only they learn each other's addresses for
    /// a delivery.
    pub contacts: HashSet<(String, String)>,
    /// Requests of this node's sessions that wait on another node (the
    /// callee's), by requester session and id: a cancel goes there.
    pub forwarded: HashMap<(u64, u64), Forwarded>,
    /// Other nodes' users taken offline lately, with the revision of the
    /// claim that ended: a message about them that arrives late (on NATS,
    /// after the bucket said they left) must not bring them back.
    pub departed: HashMap<String, (u64, Instant)>,
    /// Sessions of this node whose claim is being written (a login in
    /// progress): their claim seen in the bucket is no orphan.
    pub claiming: HashSet<u64>,
    /// The way to the other nodes, in a cluster.
    pub link: Option<crate::cluster::Link>,
}

/// Presence and signaling state.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    /// The shared presence log; sent to only with `state` locked, so a
    /// subscription taken under the lock starts exactly after a snapshot.
    pub(crate) presence: broadcast::Sender<crate::presence::Change>,
    /// How many are online, readable without the lock.
    pub(crate) online_count: AtomicUsize,
    /// How long a callee has to answer.
    pub request_timeout: Duration,
}

impl Hub {
    /// An empty hub whose presence log keeps the last `presence_backlog`
    /// changes (a session further behind than that is closed as too slow).
    pub fn new(request_timeout: Duration, presence_backlog: usize) -> Hub {
        let (presence, _) = broadcast::channel(presence_backlog.max(1));
        Hub {
            state: Mutex::new(State::default()),
            presence,
            online_count: AtomicUsize::new(0),
            request_timeout,
        }
    }

    /// How many sessions are online (without taking the lock).
    pub fn online_count(&self) -> usize {
        self.online_count.load(Ordering::Relaxed)
    }

    /// Locks the state (a poisoned lock is recovered: the state stays usable).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Sends `msg` to `name` if it is online in `session`.
    pub fn send_to(&self, name: &str, session: u64, msg: Outbound) {
        if let Some(m) = self.online.get(name).filter(|m| m.session == session) {
            m.send(msg);
        }
    }
}
