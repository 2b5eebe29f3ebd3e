//! A private PostgreSQL server for tests (to be written).
