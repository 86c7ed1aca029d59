//! The state record as the record store keeps it: its folder, schema, validation, and what a
//! write stamps and bounds.

use serde_json::Value;

use super::state::{self, bounded, StateRecord};
use crate::records::Record;

/// How many versions Vault keeps of a state record (it holds credentials).
pub const RECORD_VERSIONS: u32 = 5;

impl Record for StateRecord {
    const FOLDER: &'static str = "credentials";
    const NAME: &'static str = "state record";
    const SCHEMA: u32 = state::SCHEMA;
    const MAX_VERSIONS: Option<u32> = Some(RECORD_VERSIONS);

    fn fresh(credential: &str) -> StateRecord {
        StateRecord::new(credential)
    }

    fn validate(&self, credential: &str) -> Result<(), String> {
        StateRecord::validate(self, credential)
    }

    /// Stamped with this binary's schema and version, and bounded (the oldest finished
    /// attempts go first).
    fn prepare(mut self) -> Result<(StateRecord, Value), String> {
        self.schema = state::SCHEMA;
        self.written_by = Some(concat!("secret-rotator ", env!("CARGO_PKG_VERSION")).into());
        bounded(self).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
