//! Integration tests of the coordinator: an in-process server on
//! `127.0.0.1:0` driven by raw protocol clients, and the real `coordinator`
//! binary driven through its output and signals.

#![allow(clippy::unwrap_used)]

mod bad_input;
mod lifecycle;
mod limits;
mod login;
mod memory;
mod permissions;
mod presence;
mod signaling;
mod storms;
mod support;
mod throttle;
