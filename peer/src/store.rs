//! A local account's message store: one SQLite database per account, holding
//! every message sent and received with its delivery state.
//!
//! Life cycle of a message: the sender stores it (outgoing, undelivered)
//! before sending; the receiver stores it (idempotently, keyed by sender and
//! id) before acknowledging; the sender marks it delivered on the
//! acknowledgement. Undelivered outgoing messages are what is kept for
//! someone and sent at the next connection. A received message is marked
//! shown once the front end has it; what was stored but never shown (the
//! program stopped in between) is shown at the next login.

use common::db::{Db, DbError};
use common::ids::{now_millis, MessageId};
use common::protocol::ChatMessage;
use common::Fingerprint;
use rusqlite::params;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE messages (
        peer TEXT NOT NULL,
        outgoing INTEGER NOT NULL,
        id BLOB NOT NULL,
        body TEXT NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        held INTEGER NOT NULL,
        stored_at_ms INTEGER NOT NULL,
        delivered_at_ms INTEGER,
        PRIMARY KEY (peer, outgoing, id)
    ) WITHOUT ROWID;
    CREATE INDEX messages_by_time ON messages(peer, sent_at_ms, id);
    CREATE INDEX messages_undelivered ON messages(peer, id)
        WHERE outgoing = 1 AND delivered_at_ms IS NULL;
",
    "
    -- Received messages not yet shown to the user (rows from before this
    -- column count as shown).
    ALTER TABLE messages ADD COLUMN shown INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX messages_unshown ON messages(peer, id) WHERE outgoing = 0 AND shown = 0;
",
    "
    -- The key each contact had when the coordinator last vouched for it.
    CREATE TABLE contacts (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        seen_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
",
];

/// One stored message, as history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The other side of the conversation.
    pub peer: String,
    /// True when this user sent it.
    pub outgoing: bool,
    /// The message.
    pub message: ChatMessage,
    /// For outgoing messages: when the receiver acknowledged it.
    pub delivered_at_ms: Option<i64>,
}

/// The store of one local account.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    path: PathBuf,
}

/// Path of `account`'s database inside the data folder.
pub fn account_db_path(data_dir: &Path, account: &str) -> PathBuf {
    data_dir.join("accounts").join(format!("{account}.sqlite3"))
}

impl Store {
    /// Opens (or creates) the database of `account` in `data_dir`.
    pub fn open(data_dir: &Path, account: &str) -> Result<Store, DbError> {
        let path = account_db_path(data_dir, account);
        Ok(Store {
            db: Db::open(&path, MIGRATIONS)?,
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key each contact had when last vouched for (unreadable rows are
    /// skipped: a key is learned again at the next connection).
    pub async fn contact_keys(&self) -> Result<HashMap<String, Fingerprint>, DbError> {
        self.db
            .call(|c| {
                let mut stmt = c.prepare_cached("SELECT name, fingerprint FROM contacts")?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                let mut keys = HashMap::new();
                for row in rows {
                    let (name, fp) = row?;
                    if let Ok(fp) = fp.parse() {
                        keys.insert(name, fp);
                    }
                }
                Ok(keys)
            })
            .await
    }

    /// Remembers the key the coordinator vouched for as `name`'s.
    pub async fn remember_key(&self, name: &str, key: Fingerprint) -> Result<(), DbError> {
        let name = name.to_string();
        self.db
            .call(move |c| {
                c.prepare_cached(
                    "INSERT INTO contacts (name, fingerprint, seen_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint, seen_at_ms = excluded.seen_at_ms",
                )?
                .execute(params![name, key.to_string(), now_millis()])?;
                Ok(())
            })
            .await
    }

    /// Stores messages this user wrote (recipient, message), not yet
    /// delivered, in one transaction.
    pub async fn add_outgoing(&self, msgs: Vec<(String, ChatMessage)>) -> Result<(), DbError> {
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached(
                    "INSERT INTO messages (peer, outgoing, id, body, sent_at_ms, held, stored_at_ms)
                     VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                let now = now_millis();
                for (peer, m) in &msgs {
                    stmt.execute(params![
                        peer,
                        m.id.to_bytes(),
                        m.body,
                        m.sent_at_ms,
                        m.held,
                        now
                    ])?;
                }
                Ok(())
            })
            .await
    }

    /// Stores messages received from `peer`, in one transaction, as shown
    /// or not yet shown; for each, false when it was already stored (a
    /// resend).
    pub async fn add_incoming(
        &self,
        peer: &str,
        msgs: Vec<ChatMessage>,
        shown: bool,
    ) -> Result<Vec<bool>, DbError> {
        let peer = peer.to_string();
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached(
                    "INSERT OR IGNORE INTO messages (peer, outgoing, id, body, sent_at_ms, held, stored_at_ms, shown)
                     VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                let now = now_millis();
                msgs.iter()
                    .map(|m| {
                        let n = stmt.execute(params![peer, m.id.to_bytes(), m.body, m.sent_at_ms, m.held, now, shown])?;
                        Ok(n == 1)
                    })
                    .collect()
            })
            .await
    }

    /// Marks messages to `peer` delivered, in one transaction; returns how
    /// many were not marked before.
    pub async fn mark_delivered(&self, peer: &str, ids: Vec<MessageId>) -> Result<usize, DbError> {
        let peer = peer.to_string();
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached(
                    "UPDATE messages SET delivered_at_ms = ?3
                     WHERE peer = ?1 AND outgoing = 1 AND id = ?2 AND delivered_at_ms IS NULL",
                )?;
                let now = now_millis();
                let mut changed = 0;
                for id in ids {
                    changed += stmt.execute(params![peer, id.to_bytes(), now])?;
                }
                Ok(changed)
            })
            .await
    }

    /// Messages to `peer` not yet delivered, oldest first.
    pub async fn undelivered(&self, peer: &str) -> Result<Vec<ChatMessage>, DbError> {
        let peer = peer.to_string();
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, body, sent_at_ms, held FROM messages
                     WHERE peer = ?1 AND outgoing = 1 AND delivered_at_ms IS NULL ORDER BY id",
                )?;
                let rows = stmt.query_map([peer], |r| {
                    Ok(ChatMessage {
                        id: MessageId::from_bytes(r.get(0)?),
                        body: r.get(1)?,
                        sent_at_ms: r.get(2)?,
                        held: r.get(3)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    /// At most `limit` messages to `peer` not yet delivered, after `after`,
    /// oldest first.
    pub async fn undelivered_page(
        &self,
        peer: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, DbError> {
        let peer = peer.to_string();
        let after = after.map(|id| id.to_bytes().to_vec()).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, body, sent_at_ms, held FROM messages
                     WHERE peer = ?1 AND outgoing = 1 AND delivered_at_ms IS NULL AND id > ?2
                     ORDER BY id LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![peer, after, limit], |r| {
                    Ok(ChatMessage {
                        id: MessageId::from_bytes(r.get(0)?),
                        body: r.get(1)?,
                        sent_at_ms: r.get(2)?,
                        held: r.get(3)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    /// Marks messages to `peer` as kept: they did not arrive during their chat.
    pub async fn mark_held(&self, peer: &str, ids: Vec<MessageId>) -> Result<(), DbError> {
        let peer = peer.to_string();
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached(
                    "UPDATE messages SET held = 1 WHERE peer = ?1 AND outgoing = 1 AND id = ?2",
                )?;
                for id in ids {
                    stmt.execute(params![peer, id.to_bytes()])?;
                }
                Ok(())
            })
            .await
    }

    /// Marks received messages (sender, id) as shown.
    pub async fn mark_shown(&self, items: Vec<(String, MessageId)>) -> Result<(), DbError> {
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached(
                    "UPDATE messages SET shown = 1 WHERE peer = ?1 AND outgoing = 0 AND id = ?2",
                )?;
                for (peer, id) in items {
                    stmt.execute(params![peer, id.to_bytes()])?;
                }
                Ok(())
            })
            .await
    }

    /// Received messages never shown, oldest first per sender.
    pub async fn unshown(&self) -> Result<Vec<(String, ChatMessage)>, DbError> {
        self.db
            .call(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT peer, id, body, sent_at_ms, held FROM messages
                     WHERE outgoing = 0 AND shown = 0 ORDER BY peer, id",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        ChatMessage {
                            id: MessageId::from_bytes(r.get(1)?),
                            body: r.get(2)?,
                            sent_at_ms: r.get(3)?,
                            held: r.get(4)?,
                        },
                    ))
                })?;
                rows.collect()
            })
            .await
    }

    /// Are messages to `peer` waiting for delivery?
    pub async fn has_undelivered(&self, peer: &str) -> Result<bool, DbError> {
        let peer = peer.to_string();
        self.db
            .call(move |c| {
                c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM messages
                     WHERE peer = ?1 AND outgoing = 1 AND delivered_at_ms IS NULL)",
                    [peer],
                    |r| r.get(0),
                )
            })
            .await
    }

    /// Everyone this user has undelivered messages for.
    pub async fn peers_with_undelivered(&self) -> Result<Vec<String>, DbError> {
        self.db
            .call(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT DISTINCT peer FROM messages WHERE outgoing = 1 AND delivered_at_ms IS NULL",
                )?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect()
            })
            .await
    }

    /// The last `limit` messages with `peer`, oldest first.
    pub async fn history(&self, peer: &str, limit: u32) -> Result<Vec<StoredMessage>, DbError> {
        let peer = peer.to_string();
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT outgoing, id, body, sent_at_ms, held, delivered_at_ms FROM (
                         SELECT * FROM messages WHERE peer = ?1
                         ORDER BY sent_at_ms DESC, id DESC LIMIT ?2
                     ) ORDER BY sent_at_ms, id",
                )?;
                let rows = stmt.query_map(params![peer, limit], |r| {
                    Ok(StoredMessage {
                        peer: peer.clone(),
                        outgoing: r.get(0)?,
                        message: ChatMessage {
                            id: MessageId::from_bytes(r.get(1)?),
                            body: r.get(2)?,
                            sent_at_ms: r.get(3)?,
                            held: r.get(4)?,
                        },
                        delivered_at_ms: r.get(5)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str, held: bool) -> ChatMessage {
        ChatMessage {
            id: MessageId::generate(),
            sent_at_ms: now_millis(),
            held,
            body: body.into(),
        }
    }

    #[tokio::test]
    async fn life_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "alice").unwrap();
        let (a, b) = (msg("one", true), msg("two", false));
        let out = vec![
            ("bob".to_string(), a.clone()),
            ("bob".to_string(), b.clone()),
        ];
        store.add_outgoing(out).await.unwrap();
        assert_eq!(
            store.undelivered("bob").await.unwrap(),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(
            store.peers_with_undelivered().await.unwrap(),
            vec!["bob".to_string()]
        );
        assert_eq!(store.mark_delivered("bob", vec![a.id]).await.unwrap(), 1);
        let again = store.mark_delivered("bob", vec![a.id]).await.unwrap();
        assert_eq!(again, 0, "a second ack changes nothing");
        assert_eq!(store.undelivered("bob").await.unwrap(), vec![b.clone()]);

        let (c, d) = (msg("three", true), msg("four", false));
        let fresh = store
            .add_incoming("bob", vec![c.clone(), d], false)
            .await
            .unwrap();
        assert_eq!(fresh, vec![true, true]);
        let resend = store
            .add_incoming("bob", vec![c.clone()], false)
            .await
            .unwrap();
        assert_eq!(resend, vec![false], "a resend is stored once");
        let h = store.history("bob", 10).await.unwrap();
        assert_eq!(h.len(), 4);
        assert!(h[0].outgoing && h[0].delivered_at_ms.is_some());
        assert!(!h[2].outgoing && h[2].message.held);
        assert_eq!(
            store.unshown().await.unwrap().len(),
            2,
            "received, never shown"
        );
        store
            .mark_shown(vec![("bob".to_string(), c.id)])
            .await
            .unwrap();
        assert_eq!(store.unshown().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn backlog_pages_follow_ids_and_kept_marks_stick() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "alice").unwrap();
        let msgs: Vec<ChatMessage> = (0..5).map(|i| msg(&format!("m{i}"), false)).collect();
        let out = msgs
            .iter()
            .map(|m| ("bob".to_string(), m.clone()))
            .collect();
        store.add_outgoing(out).await.unwrap();
        let first = store.undelivered_page("bob", None, 2).await.unwrap();
        assert_eq!(first, msgs[..2].to_vec());
        let rest = store
            .undelivered_page("bob", Some(first[1].id), 10)
            .await
            .unwrap();
        assert_eq!(rest, msgs[2..].to_vec());
        store.mark_held("bob", vec![msgs[0].id]).await.unwrap();
        let again = store.undelivered_page("bob", None, 1).await.unwrap();
        assert!(again[0].held);
    }

    #[tokio::test]
    async fn contact_keys_are_remembered_replaced_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a: Fingerprint = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let b: Fingerprint = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        {
            let store = Store::open(dir.path(), "alice").unwrap();
            assert!(store.contact_keys().await.unwrap().is_empty());
            store.remember_key("bob", a).await.unwrap();
            store.remember_key("bob", b).await.unwrap();
            store.remember_key("carol", a).await.unwrap();
        }
        let store = Store::open(dir.path(), "alice").unwrap();
        let keys = store.contact_keys().await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys["bob"], b);
        assert_eq!(keys["carol"], a);
    }
}
