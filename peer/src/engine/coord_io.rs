//! The I/O of the coordinator connection: a reader task per stream that
//! forwards frames to the loop, and a writer task per stream that writes
//! what the loop queues, each write under a deadline. The loop never waits
//! on the coordinator: a full queue or a missed deadline drops the
//! connection, and the login part reconnects.

use super::driver::Input;
use common::close::{self, CloseCode};
use common::wire::{forward_frames, write_frame};
use quinn::{RecvStream, SendStream};
use serde::Serialize;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Frames queued for one coordinator stream.
const QUEUE: usize = 256;

/// The loop's handle on the coordinator connection.
#[derive(Debug)]
pub(crate) struct CoordIo {
    conn: quinn::Connection,
    session: mpsc::Sender<common::protocol::SessionRequest>,
    signal: Option<mpsc::Sender<common::protocol::SignalRequest>>,
    deadline: Duration,
}

impl CoordIo {
    /// Starts the session stream's reader and writer, and a watcher that
    /// reports the connection's close.
    pub(crate) fn start(
        gen: u64,
        conn: quinn::Connection,
        send: SendStream,
        recv: RecvStream,
        deadline: Duration,
        inputs: &mpsc::Sender<Input>,
        tasks: &mut JoinSet<()>,
    ) -> CoordIo {
        tasks.spawn(forward_frames(recv, inputs.clone(), move |r| {
            Input::Session(gen, r)
        }));
        let watched = conn.clone();
        let tx = inputs.clone();
        tasks.spawn(async move {
            let err = watched.closed().await;
            let _ = tx.send(Input::CoordClosed(gen, err)).await;
        });
        let session = spawn_writer(conn.clone(), send, deadline, tasks);
        CoordIo {
            conn,
            session,
            signal: None,
            deadline,
        }
    }

    /// Installs the signaling stream (opened after the welcome).
    pub(crate) fn add_signaling(
        &mut self,
        gen: u64,
        send: SendStream,
        recv: RecvStream,
        inputs: &mpsc::Sender<Input>,
        tasks: &mut JoinSet<()>,
    ) {
        tasks.spawn(forward_frames(recv, inputs.clone(), move |r| {
            Input::Signal(gen, r)
        }));
        self.signal = Some(spawn_writer(self.conn.clone(), send, self.deadline, tasks));
    }

    pub(crate) fn conn(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Queues a session frame; false when the coordinator is not keeping up.
    pub(crate) fn session(&self, req: common::protocol::SessionRequest) -> bool {
        self.session.try_send(req).is_ok()
    }

    /// Queues a signaling frame; false when there is no signaling stream or
    /// the coordinator is not keeping up.
    pub(crate) fn signal(&self, req: common::protocol::SignalRequest) -> bool {
        self.signal
            .as_ref()
            .is_some_and(|s| s.try_send(req).is_ok())
    }

    pub(crate) fn close(&self, code: CloseCode) {
        close::close(&self.conn, code);
    }
}

fn spawn_writer<T: Serialize + Send + Sync + 'static>(
    conn: quinn::Connection,
    mut send: SendStream,
    deadline: Duration,
    tasks: &mut JoinSet<()>,
) -> mpsc::Sender<T> {
    let (tx, mut rx) = mpsc::channel::<T>(QUEUE);
    tasks.spawn(async move {
        while let Some(frame) = rx.recv().await {
            match tokio::time::timeout(deadline, write_frame(&mut send, &frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "writing to the coordinator failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        ?deadline,
                        "the coordinator stopped reading; dropping the connection"
                    );
                    close::close(&conn, CloseCode::TIMEOUT);
                    return;
                }
            }
        }
    });
    tx
}
