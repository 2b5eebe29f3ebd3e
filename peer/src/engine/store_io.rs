//! Runs the parts' [`StoreJob`]s against the account's store and hands the
//! results back to the loop as [`StoreDone`] inputs, in the order the jobs
//! were given. Jobs are submitted as soon as they arrive (the store's
//! thread runs everything waiting in one transaction), so the loop never
//! waits on the disk.
//!
//! The job queue is unbounded because its length is bounded upstream: the
//! outbox takes input only while the messages being stored fit in the
//! window, and takes received frames only while few incoming jobs are in
//! flight.

use super::action::{LinkId, StoreJob};
use super::driver::Input;
use crate::store::{Store, StoredMessage};
use common::ids::MessageId;
use common::protocol::ChatMessage;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;

/// Messages shown by `/history`.
const HISTORY_LIMIT: u32 = 200;

/// A finished job.
#[derive(Debug)]
pub(crate) enum StoreDone {
    /// [`StoreJob::AddOutgoing`].
    Outgoing(Vec<(String, ChatMessage)>, Result<(), String>),
    /// [`StoreJob::AddIncoming`]: which messages were new.
    Incoming {
        link: LinkId,
        peer: String,
        msgs: Vec<ChatMessage>,
        shown: bool,
        result: Result<Vec<bool>, String>,
    },
    /// [`StoreJob::MarkDelivered`].
    Delivered {
        link: LinkId,
        ids: Vec<MessageId>,
        result: Result<usize, String>,
    },
    /// [`StoreJob::LoadBacklog`].
    Backlog {
        link: LinkId,
        result: Result<Vec<ChatMessage>, String>,
    },
    /// [`StoreJob::PeersWithUndelivered`].
    Waiting(Result<Vec<String>, String>),
    /// [`StoreJob::Unshown`].
    Unshown(Result<Vec<(String, ChatMessage)>, String>),
    /// [`StoreJob::History`].
    History(String, Result<Vec<StoredMessage>, String>),
    /// A job with nothing to report ([`StoreJob::MarkHeld`], [`StoreJob::MarkShown`]).
    Marked(Result<(), String>),
}

/// Starts the executor; returns where to send jobs.
pub(crate) fn start(
    store: Store,
    inputs: mpsc::Sender<Input>,
) -> (
    mpsc::UnboundedSender<StoreJob>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<StoreJob>();
    let task = async move {
        let mut running = FuturesOrdered::new();
        loop {
            tokio::select! {
                job = rx.recv(), if true => match job {
                    Some(job) => running.push_back(run(store.clone(), job)),
                    None if running.is_empty() => return,
                    None => {
                        // Closing: finish the work; nobody may read the results.
                        while let Some(done) = running.next().await {
                            let _ = inputs.try_send(Input::Stored(done));
                        }
                        return;
                    }
                },
                Some(done) = running.next(), if !running.is_empty() => {
                    if inputs.send(Input::Stored(done)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    (tx, task)
}

async fn run(store: Store, job: StoreJob) -> StoreDone {
    let text = |e: common::db::DbError| e.to_string();
    match job {
        StoreJob::AddOutgoing(batch) => {
            let result = store.add_outgoing(batch.clone()).await.map_err(text);
            StoreDone::Outgoing(batch, result)
        }
        StoreJob::AddIncoming {
            link,
            peer,
            msgs,
            shown,
        } => {
            let result = store
                .add_incoming(&peer, msgs.clone(), shown)
                .await
                .map_err(text);
            StoreDone::Incoming {
                link,
                peer,
                msgs,
                shown,
                result,
            }
        }
        StoreJob::MarkDelivered { link, peer, ids } => {
            let result = store.mark_delivered(&peer, ids.clone()).await.map_err(text);
            StoreDone::Delivered { link, ids, result }
        }
        StoreJob::MarkHeld { peer, ids } => {
            StoreDone::Marked(store.mark_held(&peer, ids).await.map_err(text))
        }
        StoreJob::MarkShown(items) => {
            StoreDone::Marked(store.mark_shown(items).await.map_err(text))
        }
        StoreJob::LoadBacklog {
            link,
            peer,
            after,
            limit,
        } => StoreDone::Backlog {
            link,
            result: store
                .undelivered_page(&peer, after, limit)
                .await
                .map_err(text),
        },
        StoreJob::PeersWithUndelivered => {
            StoreDone::Waiting(store.peers_with_undelivered().await.map_err(text))
        }
        StoreJob::Unshown => StoreDone::Unshown(store.unshown().await.map_err(text)),
        StoreJob::History(peer) => {
            let result = store.history(&peer, HISTORY_LIMIT).await.map_err(text);
            StoreDone::History(peer, result)
        }
    }
}
