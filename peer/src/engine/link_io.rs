//! The I/O of one direct connection once its hello has passed: a reader
//! that decodes every whole frame of each chunk it reads and hands them to
//! the loop as one batch, and a writer that writes, in order, what the loop
//! queues. It decides nothing: what a frame means is the outbox's business.
//! The task reports how the connection ended.

use super::action::LinkId;
use super::api::{ChatEnd, LinkFault};
use super::driver::Input;
use common::close::{self, CloseCode};
use common::protocol::PeerMsg;
use common::wire::{decode_frame, encode, WireError, MAX_FRAME_LEN};
use quinn::{RecvStream, SendStream};
use tokio::sync::mpsc;

/// Batches of frames queued for a link's writer. The loop never waits on
/// it: the window bounds what it queues, and a peer that lets more pile up
/// is not reading and is closed.
const WRITE_QUEUE: usize = 16 * 1024;
/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes gathered into one write.
const WRITE_COALESCE: usize = 256 * 1024;

/// What a link's reader hands the loop.
#[derive(Debug)]
pub(crate) enum LinkInput {
    /// Whole frames, in order.
    Frames(Vec<PeerMsg>),
    /// The other side finished its stream.
    Eof,
    /// The stream broke the framing (the reader stops).
    Bad(LinkFault, CloseCode),
}

/// What the loop hands a link's writer.
#[derive(Debug)]
pub(crate) enum Out {
    /// Frames to write, in order.
    Frames(Vec<PeerMsg>),
    /// Finish the stream (a delivery is over).
    Finish,
}

/// The loop's handle on a running link.
#[derive(Debug)]
pub(crate) struct LinkHandle {
    tx: mpsc::Sender<Out>,
    conn: quinn::Connection,
    /// How this side closed it, when it did first.
    closed: Option<(CloseCode, Option<LinkFault>)>,
}

impl LinkHandle {
    /// Queues frames; false when the writer's queue is full (the peer is
    /// not reading). A writer that is gone (the connection ended) takes
    /// nothing and says nothing: the link's end is reported by its task,
    /// with the reason the other side gave (a sign-out, say).
    pub(crate) fn send(&self, out: Out) -> bool {
        !matches!(
            self.tx.try_send(out),
            Err(mpsc::error::TrySendError::Full(_))
        )
    }

    /// The other side's address and the current round-trip time.
    pub(crate) fn path(&self) -> (std::net::SocketAddr, std::time::Duration) {
        (self.conn.remote_address(), self.conn.rtt())
    }

    /// Closes the connection with `code`.
    pub(crate) fn close(&mut self, code: CloseCode) {
        self.closed.get_or_insert((code, None));
        close::close(&self.conn, code);
    }

    /// Closes the connection for a breach of the protocol (or a local failure).
    pub(crate) fn fail(&mut self, code: CloseCode, fault: LinkFault) {
        self.closed.get_or_insert((code, Some(fault)));
        close::close(&self.conn, code);
    }

    /// How the link ended, from whichever side closed it first: whether it
    /// ended as the protocol says, and why.
    pub(crate) fn end(self, err: Option<&quinn::ConnectionError>) -> (bool, ChatEnd) {
        match (self.closed, err) {
            (Some((_, Some(fault))), _) => (false, ChatEnd::ProtocolError(fault)),
            (Some((code, None)), _) => {
                let why = match code {
                    CloseCode::NORMAL => ChatEnd::PeerLeft,
                    CloseCode::DUPLICATE => ChatEnd::PeerRestarted,
                    _ => ChatEnd::YouLeft,
                };
                (code == CloseCode::NORMAL, why)
            }
            (None, Some(e)) => (close::code_of(e) == Some(CloseCode::NORMAL), end_reason(e)),
            (None, None) => (false, ChatEnd::ConnectionLost("closed".into())),
        }
    }
}

/// Starts the task of one link: frames go to `frames`, and its end to
/// `inputs` as [`Input::LinkEnded`].
pub(crate) fn start(
    link: LinkId,
    conn: quinn::Connection,
    send: SendStream,
    recv: RecvStream,
    frames: mpsc::Sender<(LinkId, LinkInput)>,
    inputs: mpsc::Sender<Input>,
) -> (
    LinkHandle,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let handle = LinkHandle {
        tx,
        conn: conn.clone(),
        closed: None,
    };
    let task = async move {
        let io = async {
            tokio::join!(read_link(link, recv, frames), write_link(send, rx));
        };
        tokio::select! {
            _ = conn.closed() => {}
            _ = io => { conn.closed().await; }
        }
        let _ = inputs
            .send(Input::LinkEnded(link, conn.close_reason()))
            .await;
    };
    (handle, task)
}

/// How the other side ended a link, from the close it sent.
fn end_reason(err: &quinn::ConnectionError) -> ChatEnd {
    match close::code_of(err) {
        Some(CloseCode::LEFT_CHAT) => ChatEnd::PeerLeft,
        Some(CloseCode::SIGNED_OUT) => ChatEnd::PeerSignedOut,
        Some(CloseCode::DUPLICATE) => ChatEnd::PeerRestarted,
        _ => ChatEnd::ConnectionLost(close::describe_connection_error(err)),
    }
}

async fn read_link(link: LinkId, mut recv: RecvStream, tx: mpsc::Sender<(LinkId, LinkInput)>) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        let chunk = match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                let end = if buf.is_empty() {
                    LinkInput::Eof
                } else {
                    LinkInput::Bad(
                        LinkFault::BadFrame(WireError::Truncated.to_string()),
                        CloseCode::PROTOCOL_ERROR,
                    )
                };
                let _ = tx.send((link, end)).await;
                return;
            }
            // The connection's end is reported by the task.
            Err(_) => return,
        };
        buf.extend_from_slice(&chunk.bytes);
        let mut frames = Vec::new();
        let mut used = 0;
        let bad = loop {
            match decode_frame::<PeerMsg>(&buf[used..]) {
                Ok(Some((msg, n))) => {
                    frames.push(msg);
                    used += n;
                }
                Ok(None) => break None,
                Err(e) => {
                    let code = match e {
                        WireError::TooLarge { .. } => CloseCode::FRAME_TOO_LARGE,
                        _ => CloseCode::PROTOCOL_ERROR,
                    };
                    break Some(LinkInput::Bad(LinkFault::BadFrame(e.to_string()), code));
                }
            }
        };
        buf.drain(..used);
        debug_assert!(buf.len() <= MAX_FRAME_LEN + READ_CHUNK + 4);
        if !frames.is_empty() && tx.send((link, LinkInput::Frames(frames))).await.is_err() {
            return;
        }
        if let Some(bad) = bad {
            let _ = tx.send((link, bad)).await;
            return;
        }
    }
}

async fn write_link(mut send: SendStream, mut rx: mpsc::Receiver<Out>) {
    let mut bytes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut finish = false;
        // Gather what is queued into one write.
        while let Some(out) = next.take() {
            match out {
                Out::Frames(frames) => {
                    for f in &frames {
                        match encode(f) {
                            Ok(b) => bytes.extend_from_slice(&b),
                            Err(e) => tracing::error!(error = %e, "a frame does not encode"),
                        }
                    }
                }
                Out::Finish => {
                    finish = true;
                    break;
                }
            }
            if bytes.len() < WRITE_COALESCE {
                next = rx.try_recv().ok();
            }
        }
        if !bytes.is_empty() && send.write_all(&bytes).await.is_err() {
            return;
        }
        bytes.clear();
        if finish {
            let _ = send.finish();
        }
    }
}
