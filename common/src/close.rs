//! QUIC application close codes used by both sides, with the reason texts a
//! user sees. A closed connection always carries one of these.

use quinn::VarInt;

/// A named application close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode(pub u32);

impl CloseCode {
    /// Normal end: the user logged out, left the chat or the work is done.
    pub const NORMAL: CloseCode = CloseCode(0);
    /// A frame that did not decode or arrived out of order.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1);
    /// A frame over the size cap.
    pub const FRAME_TOO_LARGE: CloseCode = CloseCode(2);
    /// The other side speaks another protocol version.
    pub const VERSION_MISMATCH: CloseCode = CloseCode(3);
    /// The TLS handshake negotiated no or a wrong ALPN.
    pub const BAD_ALPN: CloseCode = CloseCode(4);
    /// Another login for the same account replaced this session.
    pub const REPLACED: CloseCode = CloseCode(5);
    /// The coordinator is shutting down.
    pub const SHUTDOWN: CloseCode = CloseCode(6);
    /// The other side did not read its messages fast enough.
    pub const TOO_SLOW: CloseCode = CloseCode(7);
    /// Too many frames or streams in too short a time.
    pub const FLOOD: CloseCode = CloseCode(8);
    /// A step of the protocol took too long.
    pub const TIMEOUT: CloseCode = CloseCode(9);
    /// The peer's certificate is not the one the coordinator vouched for.
    pub const UNEXPECTED_PEER: CloseCode = CloseCode(10);
    /// The other side failed inside (a database error, say).
    pub const INTERNAL: CloseCode = CloseCode(11);
    /// The coordinator serves as many connections as it can; try later.
    pub const BUSY: CloseCode = CloseCode(12);
    /// Too many connections (or logins in progress) from one address.
    pub const TOO_MANY_CONNECTIONS: CloseCode = CloseCode(13);
    /// The coordinator cannot reach its accounts database (a shared
    /// PostgreSQL that is down); nothing is wrong with the peer's request,
    /// and trying again shortly works once the database is back.
    pub const UNAVAILABLE: CloseCode = CloseCode(14);
    /// The coordinator cannot reach the rest of its cluster (its NATS is
    /// down); as with [`CloseCode::UNAVAILABLE`], trying again shortly works.
    pub const CLUSTER_UNAVAILABLE: CloseCode = CloseCode(15);
    /// The user typed `disconnect`: they left the chat.
    pub const LEFT_CHAT: CloseCode = CloseCode(20);
    /// The user signed out of the program.
    pub const SIGNED_OUT: CloseCode = CloseCode(21);
    /// A second connection between the same two peers; the first one stays.
    pub const DUPLICATE: CloseCode = CloseCode(22);

    /// The code as a QUIC variable-length integer.
    pub fn varint(self) -> VarInt {
        VarInt::from_u32(self.0)
    }

    /// Reads a code back from a QUIC close frame.
    pub fn from_varint(v: VarInt) -> CloseCode {
        CloseCode(u32::try_from(v.into_inner()).unwrap_or(u32::MAX))
    }

    /// A short sentence saying what the code means.
    pub fn describe(self) -> &'static str {
        match self {
            CloseCode::NORMAL => "closed normally",
            CloseCode::PROTOCOL_ERROR => "protocol error",
            CloseCode::FRAME_TOO_LARGE => "frame too large",
            CloseCode::VERSION_MISMATCH => "protocol version mismatch",
            CloseCode::BAD_ALPN => "wrong application protocol (ALPN)",
            CloseCode::REPLACED => "signed in from another place",
            CloseCode::SHUTDOWN => "coordinator shutting down",
            CloseCode::TOO_SLOW => "too slow to read messages",
            CloseCode::FLOOD => "too many requests",
            CloseCode::TIMEOUT => "timed out",
            CloseCode::UNEXPECTED_PEER => "unexpected peer certificate",
            CloseCode::INTERNAL => "internal error",
            CloseCode::BUSY => "the coordinator is full; try again later",
            CloseCode::TOO_MANY_CONNECTIONS => "too many connections from this address",
            CloseCode::UNAVAILABLE => {
                "the coordinator cannot reach its accounts database; try again shortly"
            }
            CloseCode::CLUSTER_UNAVAILABLE => {
                "the coordinator cannot reach the rest of its cluster (NATS); try again shortly"
            }
            CloseCode::LEFT_CHAT => "left the chat",
            CloseCode::SIGNED_OUT => "signed out",
            CloseCode::DUPLICATE => "duplicate connection",
            _ => "unknown reason",
        }
    }
}

/// Closes `conn` with `code` and its standard reason text.
pub fn close(conn: &quinn::Connection, code: CloseCode) {
    conn.close(code.varint(), code.describe().as_bytes());
}

/// What ended a connection, in a form a user can read.
pub fn describe_connection_error(err: &quinn::ConnectionError) -> String {
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => {
            CloseCode::from_varint(c.error_code).describe().to_string()
        }
        quinn::ConnectionError::TimedOut => "connection lost (timed out)".to_string(),
        quinn::ConnectionError::LocallyClosed => "closed".to_string(),
        other => other.to_string(),
    }
}

/// The close code carried by `err`, when the other side closed with one.
pub fn code_of(err: &quinn::ConnectionError) -> Option<CloseCode> {
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => Some(CloseCode::from_varint(c.error_code)),
        _ => None,
    }
}
