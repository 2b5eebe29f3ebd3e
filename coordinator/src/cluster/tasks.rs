//! The cluster's tasks, from [`super::Cluster::spawn`] until shutdown:
//! publishing to other nodes, reading this node's subject, watching the
//! presence bucket (and applying each entry to the hub), and the heartbeat,
//! which also sweeps dead nodes and claims this node's users again after an
//! outage.

use super::messages;
use super::{Claim, Link, NodeMsg, CLAIM_TIMEOUT};
use crate::logs::{self, limited};
use crate::Shared;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What one node knows of the others' heartbeats.
#[derive(Debug, Default)]
pub(super) struct Heartbeats {
    /// When each node was last heard from, and its key's revision.
    seen: HashMap<Arc<str>, (Instant, u64)>,
}

/// Publishes what the hub sends to other nodes.
pub(super) async fn publish(
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
pub(super) async fn read_inbox(
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
pub(super) async fn watch(
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
pub(super) async fn heartbeat(
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
