//! The p2pchat peer: an [`engine`] that talks to the coordinator and directly
//! to other peers and keeps history in a local [`store`], and the terminal
//! front end ([`cli`]) on top of it, and a non-interactive one ([`send`]).
//!
//! Architecture invariant: the engine never prints and the CLI never touches
//! the network or the database; they meet only through the engine's
//! commands and events.

pub mod candidates;
pub mod cli;
pub mod engine;
pub mod send;
pub mod store;
pub mod trust;
