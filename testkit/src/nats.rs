//! A private NATS server with JetStream for tests (to be written).
