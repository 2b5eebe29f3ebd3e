//! The p2pchat protocol crate, shared by the coordinator and the peer.
//!
//! It owns everything both sides must agree on: the message enums of the two
//! coordinator streams and of the peer-to-peer protocol ([`protocol`]), the one
//! module that knows byte layouts ([`wire`]), name and size rules ([`names`]),
//! QUIC transport settings ([`transport`]), TLS configuration with the
//! fingerprint verifiers ([`tls`]), connection close codes ([`close`]), the
//! frame rate limit ([`limits`]),
//! time-ordered message ids ([`ids`]), how an error chain reads as one
//! sentence ([`report`]) and, with the `db` feature, the SQLite
//! thread both binaries store through ([`db`]).
//!
//! Architecture invariant: this crate opens no socket and spawns no task; the
//! only thread it starts is the database thread of [`db`].

pub mod close;
#[cfg(feature = "db")]
pub mod db;
pub mod ids;
pub mod limits;
pub mod names;
pub mod protocol;
pub mod report;
pub mod tls;
pub mod transport;
pub mod wire;

pub use tls::Fingerprint;
