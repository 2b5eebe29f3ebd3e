//! Several coordinators as one: presence, one login per account and
//! signaling across nodes over NATS (`--nats`). Accounts and tokens are
//! shared through PostgreSQL ([`crate::store`]); this module carries the
//! rest, on NATS and JetStream rather than a protocol of our own.
//!
//! - Who is online where: a JetStream key-value bucket with a key per user
//!   ([`messages::Claim`]). A login puts the key *before* the welcome; every
//!   node watches the bucket and keeps the other nodes' users in its hub as
//!   remote members ([`crate::hub::Reach::Remote`]), so presence, look-ups
//!   and the welcome's list work as on one node. Of two logins of one name,
//!   the later revision wins everywhere: the node holding the earlier one
//!   closes it as replaced.
//! - Liveness: each node puts its own key every `ttl / 5`. A node not heard
//!   from for `ttl` is dead: every other node takes its users offline and
//!   removes their keys. A node back from a NATS outage claims its users
//!   again.
//! - Signaling and relaying: each node reads its own subject; requests for a
//!   user on another node are kept by the callee's node ([`state`]), and
//!   events, acceptances and relayed packets travel as [`NodeMsg`]s.

mod messages;
mod state;

pub use messages::{Claim, NodeMsg};

use crate::hub::Member;
use crate::logs::{self, limited};
use crate::Shared;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Messages waiting to be published to other nodes.
const OUTGOING_QUEUE: usize = 8192;
/// How long a claim (a login) may wait for the bucket.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times a claim is tried when other logins of the name race it.
const CLAIM_ATTEMPTS: usize = 5;
/// How long the first connection to NATS may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a coordinator joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS server(s), e.g. `nats://127.0.0.1:4222` (comma-separated
    /// for several).
    pub nats_url: String,
    /// This node's name (a random suffix is added per run).
    pub node: String,
    /// A node not heard from for this long is dead, and its users offline.
    pub node_ttl: Duration,
    /// Replicas of the presence bucket (as many as NATS servers, up to 3).
    pub replicas: usize,
}

/// Why the cluster could not be joined or used.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// NATS could not be reached.
    #[error("cannot reach NATS at {url}: {source}")]
    Connect {
        /// The URL given.
        url: String,
        /// The cause.
        source: async_nats::ConnectError,
    },
    /// The presence bucket could not be opened or made.
    #[error("cannot open the presence bucket in NATS JetStream (is JetStream enabled?): {0}")]
    Bucket(String),
    /// Reading this node's subject failed.
    #[error("cannot subscribe to this node's subject in NATS: {0}")]
    Subscribe(String),
    /// A login could not be recorded in the presence bucket in time.
    #[error("the cluster's presence store (NATS) did not answer: {0}")]
    Unavailable(String),
}

/// What one node knows of the others' heartbeats.
#[derive(Debug, Default)]
struct Heartbeats {
    /// When each node was last heard from, and its key's revision.
    seen: HashMap<Arc<str>, (Instant, u64)>,
}

/// The way from this node to the others: cheap to clone, held by the hub.
#[derive(Clone)]
pub struct Link {
    node: Arc<str>,
    tx: mpsc::Sender<(Arc<str>, NodeMsg)>,
    kv: Arc<kv::Store>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("node", &self.node).finish()
    }
}

impl Link {
    /// This node's id.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// Sends `msg` to `node`; dropped, with a log line, when the queue to
    /// NATS is full (a request then times out, a relayed packet is resent).
    pub fn send(&self, node: &Arc<str>, msg: NodeMsg) {
        // Relayed packets give way first: past half full, the queue keeps
        // its room for signaling (QUIC resends a dropped packet).
        if matches!(msg, NodeMsg::Relay { .. }) && self.tx.capacity() < OUTGOING_QUEUE / 2 {
            return;
        }
        if self.tx.try_send((node.clone(), msg)).is_err() {
            limited!(
                logs::CLUSTER,
                warn,
                node = &**node,
                "queue to the other nodes full; message dropped"
            );
        }
    }

    /// Queues `msg` for `name` in `session` on `node`.
    pub fn deliver(&self, node: &Arc<str>, name: &str, session: u64, msg: crate::hub::Outbound) {
        let name = name.to_string();
        self.send(node, NodeMsg::Deliver { name, session, msg });
    }

    /// The claim of `member`, a session of this node.
    pub fn claim_of(&self, member: &Member) -> Claim {
        Claim {
            node: self.node.to_string(),
            session: member.session,
            fingerprint: member.fingerprint,
            addrs: member.addrs.clone(),
        }
    }

    /// Records that `claim` holds `name`, cluster-wide; its revision. A
    /// session of `name` elsewhere is closed by its node when it sees this.
    ///
    /// The write is conditional on the key's revision just read: a claim
    /// that NATS delivers late (the client keeps what it could not send
    /// during an outage, and sends it on reconnecting, long after this login
    /// gave up) finds the key changed and is refused, so it can never undo a
    /// later login elsewhere. Losing a race with another login is retried.
    pub async fn claim(&self, name: &str, claim: &Claim) -> Result<u64, ClusterError> {
        let key = messages::user_key(name);
        let value = Bytes::from(messages::encode(claim));
        let attempt = async {
            for _ in 0..CLAIM_ATTEMPTS {
                let last = match self.kv.entry(key.as_str()).await {
                    Ok(entry) => entry.map_or(0, |e| e.revision),
                    Err(e) => return Err(ClusterError::Unavailable(e.to_string())),
                };
                match self.kv.update(&key, value.clone(), last).await {
                    Ok(revision) => return Ok(revision),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(ClusterError::Unavailable(e.to_string())),
                }
            }
            Err(ClusterError::Unavailable(format!(
                "{CLAIM_ATTEMPTS} other logins of {name} raced this one"
            )))
        };
        match tokio::time::timeout(CLAIM_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ClusterError::Unavailable(format!(
                "no answer within {} s",
                CLAIM_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Puts back the claim of this node's session of `name`, whose known
    /// revision is `known`, if nobody claimed the name since: the key still
    /// holds `known` (NATS came back with it), or it was removed (a node
    /// that thought this one dead). Never over another claim. The new
    /// revision, or `None` when the name is someone else's now.
    pub async fn reclaim(&self, name: &str, claim: &Claim, known: u64) -> Option<u64> {
        let key = messages::user_key(name);
        let value = Bytes::from(messages::encode(claim));
        let attempt = async {
            if let Ok(revision) = self.kv.update(&key, value.clone(), known).await {
                return Some(revision);
            }
            let last = match self.kv.entry(key.as_str()).await.ok()? {
                None => 0,
                Some(e) if e.operation != kv::Operation::Put => e.revision,
                Some(_) => return None,
            };
            self.kv.update(&key, value, last).await.ok()
        };
        tokio::time::timeout(CLAIM_TIMEOUT, attempt)
            .await
            .ok()
            .flatten()
    }

    /// After a login of `name` in `session` gave up its claim: if NATS
    /// applied the write anyway (late), removes it, so nobody sees a
    /// session that never was (in the background).
    pub fn abandon(&self, name: &str, session: u64) {
        let (kv, key) = (self.kv.clone(), messages::user_key(name));
        tokio::spawn(async move {
            tokio::time::sleep(CLAIM_TIMEOUT).await;
            let Ok(Ok(Some(entry))) =
                tokio::time::timeout(CLAIM_TIMEOUT, kv.entry(key.as_str())).await
            else {
                return;
            };
            let ours = entry.operation == kv::Operation::Put
                && messages::decode::<Claim>(&entry.value).is_some_and(|c| c.session == session);
            if ours {
                let delete = kv.delete_expect_revision(&key, Some(entry.revision));
                let _ = tokio::time::timeout(CLAIM_TIMEOUT, delete).await;
            }
        });
    }

    /// Withdraws the claim `revision` of `name` (in the background), unless
    /// a later one replaced it.
    pub fn release(&self, name: &str, revision: u64) {
        let (kv, key) = (self.kv.clone(), messages::user_key(name));
        tokio::spawn(async move {
            let delete = kv.delete_expect_revision(&key, Some(revision));
            // A failure means a later claim holds the key, or NATS is away
            // (then the node's heartbeat lapses, or it claims again).
            let _ = tokio::time::timeout(CLAIM_TIMEOUT, delete).await;
        });
    }
}

/// A joined cluster, before its tasks run.
pub struct Cluster {
    config: ClusterConfig,
    client: async_nats::Client,
    link: Link,
    rx: mpsc::Receiver<(Arc<str>, NodeMsg)>,
    inbox: async_nats::Subscriber,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.link.node)
            .finish()
    }
}

impl Cluster {
    /// Connects to NATS, opens (or makes) the presence bucket and
    /// subscribes to this node's subject.
    pub async fn join(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        let node: Arc<str> = Arc::from(messages::node_id(&config.node));
        let options = async_nats::ConnectOptions::new()
            .name(format!("p2pchat-coordinator {node}"))
            .connection_timeout(CONNECT_TIMEOUT)
            // After the first connection, NATS being away is an outage to
            // ride out, never a reason to stop.
            .max_reconnects(None)
            .event_callback(|event| async move {
                limited!(logs::CLUSTER, info, event = %event, "NATS connection");
            });
        let client = async_nats::connect_with_options(config.nats_url.as_str(), options)
            .await
            .map_err(|source| ClusterError::Connect {
                url: config.nats_url.clone(),
                source,
            })?;
        let js = async_nats::jetstream::new(client.clone());
        let kv = open_bucket(&js, config.replicas).await?;
        let inbox = client
            .subscribe(messages::inbox(&node))
            .await
            .map_err(|e| ClusterError::Subscribe(e.to_string()))?;
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        tracing::info!(node = &*node, nats = config.nats_url, "joined the cluster");
        Ok(Cluster {
            config,
            client,
            link: Link {
                node,
                tx,
                kv: Arc::new(kv),
            },
            rx,
            inbox,
        })
    }

    /// The way to the other nodes.
    pub fn link(&self) -> Link {
        self.link.clone()
    }

    /// Runs the cluster's tasks in `tasks` until `cancel`: publishing to
    /// other nodes, reading this node's subject, watching the bucket, and
    /// the heartbeat that also sweeps dead nodes.
    pub fn spawn(self, shared: Arc<Shared>, cancel: CancellationToken, tasks: &mut JoinSet<()>) {
        let Cluster {
            config,
            client,
            link,
            rx,
            inbox,
        } = self;
        let beats = Arc::new(Mutex::new(Heartbeats::default()));
        tasks.spawn(publish(client.clone(), rx, cancel.clone()));
        tasks.spawn(read_inbox(inbox, shared.clone(), cancel.clone()));
        tasks.spawn(watch(
            link.clone(),
            shared.clone(),
            beats.clone(),
            config.node_ttl,
            cancel.clone(),
        ));
        tasks.spawn(heartbeat(link, shared, beats, config.node_ttl, cancel));
    }
}

/// Opens the presence bucket, making it when no node has yet. The bucket's
/// stream is made by hand, as the key-value conventions describe it, since
/// the client's own `create_key_value` first reads account details in a
/// shape older servers (Debian's 2.9) do not send.
async fn open_bucket(
    js: &async_nats::jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    if let Ok(kv) = js.get_key_value(messages::BUCKET).await {
        return Ok(kv);
    }
    use async_nats::jetstream::stream;
    let config = stream::Config {
        name: format!("KV_{}", messages::BUCKET),
        description: Some("p2pchat: who is online on which coordinator node".to_string()),
        subjects: vec![format!("$KV.{}.>", messages::BUCKET)],
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    // An error may mean another node made it meanwhile: open it either way.
    let made = js.get_or_create_stream(config).await.err();
    js.get_key_value(messages::BUCKET).await.map_err(|e| {
        let cause = made.map_or_else(|| e.to_string(), |m| m.to_string());
        ClusterError::Bucket(cause)
    })
}

/// Publishes what the hub sends to other nodes.
async fn publish(
    client: async_nats::Client,
    mut rx: mpsc::Receiver<(Arc<str>, NodeMsg)>,
    cancel: CancellationToken,
) {
    loop {
        let (node, msg) = tokio::select! {
            () = cancel.cancelled() => break,
            next = rx.recv() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let payload = Bytes::from(messages::encode(&msg));
        if let Err(e) = client.publish(messages::inbox(&node), payload).await {
            limited!(logs::CLUSTER, warn, node = &*node, error = %e, "cannot publish to a node");
        }
    }
    let _ = client.flush().await;
}

/// Applies what other nodes send this one.
async fn read_inbox(
    mut inbox: async_nats::Subscriber,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = cancel.cancelled() => break,
            next = inbox.next() => match next {
                Some(m) => m,
                None => break,
            },
        };
        match messages::decode::<NodeMsg>(&message.payload) {
            Some(msg) => shared.hub.on_node_msg(msg, shared.config.request_timeout),
            None => limited!(
                logs::CLUSTER,
                warn,
                "a message from another node could not be read"
            ),
        }
    }
}

/// Watches the bucket: other nodes' users come and go, nodes beat. Starts
/// over (with the current state) whenever the watch ends, as after an
/// outage of NATS.
async fn watch(
    link: Link,
    shared: Arc<Shared>,
    beats: Arc<Mutex<Heartbeats>>,
    ttl: Duration,
    cancel: CancellationToken,
) {
    while !cancel.is_cancelled() {
        let watched = tokio::select! {
            () = cancel.cancelled() => break,
            w = link.kv.watch_with_history(">") => w,
        };
        let mut watch = match watched {
            Ok(w) => w,
            Err(e) => {
                limited!(logs::CLUSTER, warn, error = %e, "cannot watch the presence bucket; retrying");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // Names seen in this watch's replay: after it, other nodes' users
        // not among them left while the watch was down.
        let mut replayed: Option<HashMap<String, u64>> = Some(HashMap::new());
        loop {
            let entry = tokio::select! {
                () = cancel.cancelled() => return,
                e = watch.next() => e,
            };
            let entry = match entry {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    limited!(logs::CLUSTER, warn, error = %e, "presence watch failed; watching again");
                    break;
                }
                None => break,
            };
            apply(&link, &shared, &beats, ttl, &entry, replayed.as_mut());
            if entry.seen_current {
                if let Some(seen) = replayed.take() {
                    shared.hub.keep_only_claimed(&seen);
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Applies one entry of the bucket.
fn apply(
    link: &Link,
    shared: &Arc<Shared>,
    beats: &Mutex<Heartbeats>,
    ttl: Duration,
    entry: &kv::Entry,
    replayed: Option<&mut HashMap<String, u64>>,
) {
    let put = entry.operation == kv::Operation::Put;
    if let Some(node) = messages::node_of_key(&entry.key) {
        let node: Arc<str> = Arc::from(node);
        let mut beats = beats.lock().unwrap_or_else(|p| p.into_inner());
        if put {
            // A beat replayed at the start of a watch is as old as the
            // server says (a node long dead is not alive); a live one is
            // heard now, so the nodes' clocks need not agree.
            let age = if replayed.is_some() {
                SystemTime::from(entry.created)
                    .elapsed()
                    .unwrap_or_default()
                    .min(ttl * 2)
            } else {
                Duration::ZERO
            };
            let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            beats.seen.insert(node, (at, entry.revision));
        } else {
            beats.seen.remove(&node);
            drop(beats);
            if *node != *link.node {
                shared.hub.drop_node(&node);
            }
        }
        return;
    }
    let Some(name) = messages::name_of_key(&entry.key) else {
        return;
    };
    if put {
        let Some(claim) = messages::decode::<Claim>(&entry.value) else {
            limited!(
                logs::CLUSTER,
                warn,
                key = entry.key,
                "a presence entry could not be read"
            );
            return;
        };
        if let Some(seen) = replayed {
            seen.insert(name.clone(), entry.revision);
        }
        if shared.hub.claimed(&name, entry.revision, claim, link) {
            // This node's claim for a session it does not have.
            let (kv, key, revision) = (link.kv.clone(), entry.key.clone(), entry.revision);
            tokio::spawn(async move {
                let delete = kv.delete_expect_revision(&key, Some(revision));
                let _ = tokio::time::timeout(CLAIM_TIMEOUT, delete).await;
            });
        }
    } else if let Some(mine) = shared.hub.unclaimed(&name, entry.revision, link) {
        // Our session's claim was removed (another node thought us dead):
        // put it back, unless someone claimed the name since.
        tokio::spawn(reclaim(link.clone(), shared.clone(), name, mine));
    }
}

/// Puts back the claim of this node's session of `name` (see
/// [`Link::reclaim`]); withdraws it again if the session left meanwhile.
async fn reclaim(link: Link, shared: Arc<Shared>, name: String, claim: Claim) {
    let Some(known) = shared.hub.claim_revision(&name, claim.session) else {
        return;
    };
    if let Some(revision) = link.reclaim(&name, &claim, known).await {
        if !shared.hub.set_claim(&name, claim.session, revision) {
            link.release(&name, revision);
        }
    }
}

/// Puts this node's key every `ttl / 5`; takes dead nodes' users offline;
/// after an outage, claims this node's users again.
async fn heartbeat(
    link: Link,
    shared: Arc<Shared>,
    beats: Arc<Mutex<Heartbeats>>,
    ttl: Duration,
    cancel: CancellationToken,
) {
    let started = Instant::now();
    let every = (ttl / 5).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let key = messages::node_key(&link.node);
    let mut healthy = true;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let beat = tokio::time::timeout(every, link.kv.put(&key, Bytes::from_static(b"1"))).await;
        match beat {
            Ok(Ok(_)) if !healthy => {
                healthy = true;
                tracing::info!("NATS is back: claiming this node's users again");
                // Beside the heartbeat, which must go on beating meanwhile.
                let (link, shared) = (link.clone(), shared.clone());
                tokio::spawn(async move {
                    for (name, claim) in shared.hub.local_claims(&link) {
                        reclaim(link.clone(), shared.clone(), name, claim).await;
                    }
                });
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if healthy {
                    tracing::warn!(error = %e, "cannot reach the presence bucket");
                }
                healthy = false;
            }
            Err(_) => {
                if healthy {
                    tracing::warn!("the presence bucket did not answer");
                }
                healthy = false;
            }
        }
        sweep(&link, &shared, &beats, ttl, started);
        shared
            .hub
            .prune_departed((ttl * 4).max(Duration::from_secs(60)));
    }
    // A clean stop: the others take this node's users offline at once.
    let _ = tokio::time::timeout(Duration::from_secs(2), link.kv.delete(&key)).await;
}

/// Takes offline the users of every node not heard from for `ttl`, and
/// removes their keys (whichever node gets there first).
fn sweep(link: &Link, shared: &Shared, beats: &Mutex<Heartbeats>, ttl: Duration, started: Instant) {
    let now = Instant::now();
    let dead: Vec<(Arc<str>, Option<u64>)> = {
        let beats = beats.lock().unwrap_or_else(|p| p.into_inner());
        shared
            .hub
            .remote_nodes()
            .into_iter()
            .chain(beats.seen.keys().cloned())
            .filter(|node| **node != *link.node)
            .filter_map(|node| {
                let (at, revision) = match beats.seen.get(&node) {
                    Some(&(at, revision)) => (at, Some(revision)),
                    None => (started, None),
                };
                (now.duration_since(at) > ttl).then_some((node, revision))
            })
            .collect()
    };
    for (node, revision) in dead {
        let gone = shared.hub.drop_node(&node);
        if !gone.is_empty() {
            tracing::warn!(
                node = &*node,
                users = gone.len(),
                "node not heard from: its users are offline"
            );
        }
        beats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .remove(&node);
        let kv = link.kv.clone();
        tokio::spawn(async move {
            for (name, claim) in gone {
                let _ = kv
                    .delete_expect_revision(messages::user_key(&name), Some(claim))
                    .await;
            }
            if let Some(revision) = revision {
                let _ = kv
                    .delete_expect_revision(messages::node_key(&node), Some(revision))
                    .await;
            }
        });
    }
}
