//! Real servers for tests: a private PostgreSQL ([`postgres`]) and a private
//! NATS server with JetStream ([`nats`]), each in a temporary folder on a
//! free loopback port, stopped and removed when dropped. Tests that need
//! one start their own, so no test depends on a service the machine runs.

pub mod nats;
pub mod postgres;
