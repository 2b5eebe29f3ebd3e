//! Runs the parts' [`StoreJob`]s against the account's store and gives back
//! a [`StoreDone`] for each. The loop keeps the futures in order and polls
//! them beside its other inputs: each submits its work to the store's
//! thread as soon as it is first polled (the thread runs everything waiting
//! in one transaction), so the loop never waits on the disk.
//!
//! How many are in flight is bounded upstream: the outbox takes input only
//! while the messages being stored fit in the window, and takes received
//! frames only while few incoming jobs are in flight.

use super::action::{LinkId, StoreJob};
use crate::store::{Store, StoredMessage};
use common::ids::MessageId;
use common::protocol::ChatMessage;
use common::Fingerprint;
use std::collections::HashMap;

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
    /// [`StoreJob::ContactKeys`].
    ContactKeys(Result<HashMap<String, Fingerprint>, String>),
    /// A job with nothing to report ([`StoreJob::MarkHeld`], [`StoreJob::MarkShown`]).
    Marked(Result<(), String>),
}

/// Runs one job. The loop polls these futures itself, in order
/// (`FuturesOrdered`), so no task sits between it and the store's thread.
pub(crate) async fn run(store: Store, job: StoreJob) -> StoreDone {
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
        StoreJob::ContactKeys => StoreDone::ContactKeys(store.contact_keys().await.map_err(text)),
        StoreJob::RememberKey { name, key } => {
            StoreDone::Marked(store.remember_key(&name, key).await.map_err(text))
        }
    }
}
