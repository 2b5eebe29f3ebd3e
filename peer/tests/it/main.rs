//! Peer tests (to come).
