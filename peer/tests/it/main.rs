//! Integration tests of the peer: the engine driven in-process against an
//! in-process coordinator (`engine`), the real `coordinator` and `peer`
//! binaries driven through pipes (`e2e`), and the terminal front end in a
//! pseudo-terminal (`terminal`), and the binaries in network namespaces
//! with NAT and impaired links (`netns`), and three coordinator processes
//! as one cluster over a private PostgreSQL and NATS (`cluster`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod addresses;
mod cli;
mod cluster;
mod e2e;
mod e2e_support;
mod engine;
mod engine_support;
mod flow;
mod hardening;
mod netns;
mod terminal;
