//! Integration tests of the coordinator: an in-process server on
//! `127.0.0.1:0` driven by raw protocol clients, and the real `coordinator`
//! binary driven through its output and signals, and its operator commands
//! on real database files.

#![allow(clippy::unwrap_used)]

mod bad_input;
mod cluster;
mod lifecycle;
mod limits;
mod log_flood;
mod login;
mod memory;
mod operating;
mod operator;
mod permissions;
mod presence;
mod relay;
mod signaling;
mod store_backends;
mod storms;
mod support;
mod throttle;
