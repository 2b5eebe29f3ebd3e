//! QUIC transport settings shared by the coordinator and the peers.
//!
//! Both sides use the same idle time-out and keep-alive, so that a peer that
//! vanishes (a killed process, a pulled cable) is noticed within
//! [`IDLE_TIMEOUT`], and each connection may hold only the three bidirectional
//! streams the protocol uses (no unidirectional ones): a stream flood is
//! refused by QUIC flow control itself.

use quinn::{IdleTimeout, TransportConfig, VarInt};
use std::sync::Arc;
use std::time::Duration;

/// A connection with no packet for this long is closed as lost.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive is sent after this much silence.
pub const KEEP_ALIVE: Duration = Duration::from_secs(3);
/// Bidirectional streams a side may have open at once (session, signaling
/// and relay; or one peer stream).
pub const MAX_BIDI_STREAMS: u32 = 3;
/// Bytes one stream may have in flight unread.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// Bytes a whole connection may have in flight unread.
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// The transport configuration of every p2pchat connection.
pub fn transport_config() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
        IDLE_TIMEOUT.as_millis() as u32,
    ))));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_concurrent_bidi_streams(VarInt::from_u32(MAX_BIDI_STREAMS));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(VarInt::from_u32(CONNECTION_WINDOW));
    t.send_window(u64::from(CONNECTION_WINDOW));
    Arc::new(t)
}
