//! Telling dependents: the event payload, the sinks that deliver it (webhook, file, exec) and the
//! outbox that orders and retries deliveries and gates revocation on acks (pure).
//!
//! Invariant: a payload never carries a secret; only the `file` sink writes a secret value, and
//! only to the file the operator configured (0600, atomic). Each sink reports delivered or not,
//! with a reason fit for a log line; it never retries by itself (the outbox owns retries).

pub mod deliver;
pub mod delivery;
pub mod exec_sink;
pub mod file_sink;
pub mod outbox;
pub mod payload;
pub mod webhook;
