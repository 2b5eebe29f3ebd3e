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

mod link;
mod messages;
mod state;
mod tasks;

pub use link::Link;
pub use messages::{Claim, NodeMsg};

use crate::logs::{self, limited};
use crate::Shared;
use async_nats::jetstream::kv;
use link::OUTGOING_QUEUE;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tasks::{heartbeat, publish, read_inbox, watch, Heartbeats};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a claim (a login) may wait for the bucket.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);
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
