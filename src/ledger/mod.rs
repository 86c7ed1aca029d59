//! What a credential's records hold, as data: the state record (its attempts, their history,
//! the event log for dependents) and the backoff both the engine and the delivery worker record.
//! Below `rotation` (which writes the state record through its transitions) and `notify` (which
//! reads the event log and keeps the deliveries record), so that neither imports the other's
//! data: `rotation` imports `notify`, never the other way.
//!
//! Invariant: pure data and its (de)serialisation and validation; no IO, no clock.

mod backoff;
mod event_log;
mod state_record;

pub use backoff::Backoff;
pub use event_log::{clip, EventLog, Logged, LOG_LIMIT, MAX_TEXT};
pub use state_record::{
    bounded, json_size, Attempt, AttemptSummary, Drift, Mark, Orphan, Outcome, Parked, Paused,
    Phase, Retry, StateRecord, TooLarge, HISTORY_LIMIT, MAX_RECORD_BYTES, MAX_RECORD_STRINGS,
    OLDEST_SCHEMA, SCHEMA,
};
