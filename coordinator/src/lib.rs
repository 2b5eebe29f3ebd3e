//! The p2pchat coordinator: accounts, presence and chat signaling over QUIC.
//!
//! - [`server`]: binding, the accept loop, connection limits and shutdown.
//! - [`session`]: one task per connection (login, then presence and signaling).
//! - [`auth`]: Argon2id hashing off the executor, login throttling.
//! - [`hub`], [`presence`], [`signaling`]: who is online, pending requests.
//! - [`store`]: the SQLite accounts database.
//!
//! The coordinator never sees chat text: peers talk directly once introduced.

pub mod auth;
pub mod hub;
pub mod presence;
pub mod server;
pub mod session;
pub mod signaling;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

pub use server::{Coordinator, ServerError};

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Folder of the accounts database.
    pub data_dir: PathBuf,
    /// How long a callee has to answer a chat request.
    pub request_timeout: Duration,
    /// How long a session token stays valid.
    pub token_ttl: Duration,
    /// How long a connection may take from its hello to a completed login
    /// (a person typing a name and a password); idling longer closes it.
    pub login_timeout: Duration,
    /// Login throttling and hashing concurrency.
    pub auth: auth::AuthLimits,
}

impl Config {
    /// Defaults for a data folder.
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            request_timeout: Duration::from_secs(60),
            token_ttl: Duration::from_secs(7 * 24 * 3600),
            login_timeout: Duration::from_secs(300),
            auth: auth::AuthLimits::default(),
        }
    }
}

/// State shared by every connection task.
#[derive(Debug)]
pub struct Shared {
    /// The settings.
    pub config: Config,
    /// Accounts and tokens.
    pub store: store::Store,
    /// Passwords and throttling.
    pub auth: auth::Auth,
    /// Presence and signaling.
    pub hub: hub::Hub,
}
