//! The record store: every record the daemon keeps in Vault (a credential's state record, its
//! deliveries record), with the path, the parse, the validation and the check-and-set of each.
//! The engine, the delivery worker, the reports and the CLI read and write records only here,
//! so a record means the same thing to all of them.
//!
//! Invariants:
//! - a record is checked before anything uses it: a schema newer than this binary knows, a
//!   body that does not parse, or a record that fails its kind's validation (another
//!   credential's record, a field its phase needs) is [`RecordError::Corrupt`], naming the path
//!   and the field, and is never overwritten (nothing writes a record it could not read);
//! - every write is check-and-set on the version last read or written; a mismatch is
//!   [`RecordError::Conflict`] (someone else wrote), never a blind write;
//! - a write that failed may have landed: the writer keeps the [`InDoubt`] it returned and
//!   reads the record back with [`RecordStore::settle`] before any other write, so nothing is
//!   written from a copy older than what is stored.
//!
//! Below `rotation` and `notify`: the kinds of record implement [`Record`] where they are
//! defined, and this module knows only the trait.

mod kv;
#[cfg(any(test, feature = "fault-injection"))]
pub mod memory;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use kv::SecretStore;

use crate::config::KvPath;
use crate::vault::VaultError;

/// A kind of record the daemon keeps per credential under `{state_prefix}/{FOLDER}/{name}`.
pub trait Record: Serialize + DeserializeOwned + Send + Sync + Sized + 'static {
    /// The folder under the state prefix: `credentials`, `deliveries`.
    const FOLDER: &'static str;
    /// What errors call it: "state record", "deliveries record".
    const NAME: &'static str;
    /// The newest `schema` this binary knows: a record with a newer one is refused before it
    /// is parsed (its shape may have changed).
    const SCHEMA: u32;
    /// Versions Vault keeps of it (set by the first write of each process, see
    /// [`RecordStore::write`]); `None`: the mount's default.
    const MAX_VERSIONS: Option<u32>;

    /// The record of a credential that has none yet.
    fn fresh(credential: &str) -> Self;

    /// Checked after parsing, before use: `Err` names the field and what is wrong.
    fn validate(&self, credential: &str) -> Result<(), String>;

    /// The record as it is written (stamped, bounded) and its JSON body; `Err` says why it
    /// cannot be written.
    fn prepare(self) -> Result<(Self, Value), String> {
        let body = serde_json::to_value(&self).map_err(|e| e.to_string())?;
        Ok((self, body))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The record is not what this binary can use; it is left as it is.
    #[error("{name} {path} is unusable: {reason}")]
    Corrupt {
        name: &'static str,
        path: String,
        reason: String,
    },
    /// Someone else wrote the record since the version this writer read or wrote.
    #[error("{name} {path}: written by someone else since version {expected}")]
    Conflict {
        name: &'static str,
        credential: String,
        path: String,
        expected: u64,
    },
    /// The record cannot be written as it is (too large, say); nothing was sent.
    #[error("{name} {path} cannot be written: {reason}")]
    Refused {
        name: &'static str,
        credential: String,
        path: String,
        reason: String,
    },
}

/// A write that failed after it was sent: it may have landed or not. Kept by the writer and
/// handed to [`RecordStore::settle`] before it writes that record again.
#[derive(Debug, Clone)]
pub struct InDoubt {
    expected: u64,
    sent: Value,
}

/// A failed write: its error, and whether it may have landed.
#[derive(Debug)]
pub struct WriteError {
    pub error: RecordError,
    /// `Some` when the write was sent (anything but a refusal before sending or a
    /// check-and-set mismatch).
    pub in_doubt: Option<InDoubt>,
}

impl From<WriteError> for RecordError {
    fn from(w: WriteError) -> RecordError {
        w.error
    }
}

/// What [`RecordStore::settle`] found: the record as stored, its version, and whether the
/// write in doubt is the one stored.
#[derive(Debug)]
pub struct Settled<R> {
    pub record: R,
    pub version: u64,
    pub landed: bool,
}

/// The daemon's records of every credential, on one KV v2 mount under one prefix.
#[derive(Clone)]
pub struct RecordStore {
    kv: Arc<dyn SecretStore>,
    mount: String,
    prefix: String,
    /// Records whose `max_versions` this process has set.
    bounded: Arc<Mutex<HashSet<String>>>,
}

impl RecordStore {
    pub fn new(kv: Arc<dyn SecretStore>, mount: &str, prefix: &str) -> RecordStore {
        RecordStore {
            kv,
            mount: mount.to_string(),
            prefix: prefix.to_string(),
            bounded: Arc::default(),
        }
    }

    /// The mount the records are on (`vault.state_mount`).
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// Where the record of this kind of a credential is kept.
    pub fn path<R: Record>(&self, credential: &str) -> KvPath {
        KvPath {
            mount: self.mount.clone(),
            path: format!("{}/{}/{}", self.prefix, R::FOLDER, credential),
        }
    }

    /// The record and its version, checked; `None` when there is none (no metadata read:
    /// for showing, not for a check-and-set).
    pub async fn read<R: Record>(&self, credential: &str) -> Result<Option<(R, u64)>, RecordError> {
        let Some((value, version)) = self.kv.read(&self.path::<R>(credential)).await? else {
            return Ok(None);
        };
        Ok(Some((self.parse(credential, value)?, version)))
    }

    /// The record (a fresh one when there is none) and the version to check-and-set against:
    /// a record never written, or whose latest version was deleted, is at the version its
    /// metadata says.
    pub async fn load<R: Record>(&self, credential: &str) -> Result<(R, u64), RecordError> {
        match self.kv.read_for_cas(&self.path::<R>(credential)).await? {
            (Some(value), version) => Ok((self.parse(credential, value)?, version)),
            (None, version) => Ok((R::fresh(credential), version)),
        }
    }

    /// The version a check-and-set of the record compares against now (nothing parsed).
    pub async fn version<R: Record>(&self, credential: &str) -> Result<u64, RecordError> {
        let (_, version) = self.kv.read_for_cas(&self.path::<R>(credential)).await?;
        Ok(version)
    }

    /// Check a stored body: schema, parse, the kind's validation.
    pub fn parse<R: Record>(&self, credential: &str, value: Value) -> Result<R, RecordError> {
        let corrupt = |reason: String| RecordError::Corrupt {
            name: R::NAME,
            path: self.path::<R>(credential).to_string(),
            reason,
        };
        let schema = value.get("schema").and_then(Value::as_u64);
        if let Some(schema) = schema.filter(|s| *s > u64::from(R::SCHEMA)) {
            return Err(corrupt(format!(
                "field schema: {schema} is newer than this binary knows ({}); it was written by {}; upgrade secret-rotator",
                R::SCHEMA,
                value
                    .get("written_by")
                    .and_then(Value::as_str)
                    .unwrap_or("an unknown program")
            )));
        }
        let record: R = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        record.validate(credential).map_err(corrupt)?;
        Ok(record)
    }

    /// Write `record` as the version after `expected` (check-and-set). Returns the record as
    /// written and its version. After the first write of a record that lands in this process,
    /// its kind's `max_versions` is set (one metadata write per record and process): set only
    /// after the write that created the record, it was never set when that write's answer was
    /// lost, the process died before setting it, or the setting failed, and the record kept
    /// the mount's default number of versions, each holding credentials, for good.
    pub async fn write<R: Record>(
        &self,
        credential: &str,
        record: R,
        expected: u64,
    ) -> Result<(R, u64), WriteError> {
        let path = self.path::<R>(credential);
        let (record, body) = record.prepare().map_err(|reason| WriteError {
            error: RecordError::Refused {
                name: R::NAME,
                credential: credential.to_string(),
                path: path.to_string(),
                reason,
            },
            in_doubt: None,
        })?;
        match self.kv.write_cas(&path, &body, expected).await {
            Ok((version, _)) => {
                self.bound::<R>(&path).await;
                Ok((record, version))
            }
            Err(VaultError::CasMismatch { .. }) => Err(WriteError {
                error: RecordError::Conflict {
                    name: R::NAME,
                    credential: credential.to_string(),
                    path: path.to_string(),
                    expected,
                },
                in_doubt: None,
            }),
            Err(e) => Err(WriteError {
                error: e.into(),
                in_doubt: Some(InDoubt {
                    expected,
                    sent: body,
                }),
            }),
        }
    }

    /// After a write that failed: the record as stored now. It is the version the writer had
    /// (the write did not land), or the very record it sent at the next version (it landed,
    /// its answer was lost); anything else was written by someone else, `Conflict`.
    pub async fn settle<R: Record>(
        &self,
        credential: &str,
        doubt: &InDoubt,
    ) -> Result<Settled<R>, RecordError> {
        let path = self.path::<R>(credential);
        let (value, version) = self.kv.read_for_cas(&path).await?;
        let landed = version == doubt.expected + 1 && value.as_ref() == Some(&doubt.sent);
        if version != doubt.expected && !landed {
            return Err(RecordError::Conflict {
                name: R::NAME,
                credential: credential.to_string(),
                path: path.to_string(),
                expected: doubt.expected,
            });
        }
        if landed {
            self.bound::<R>(&path).await;
        }
        let record = match value {
            Some(value) => self.parse(credential, value)?,
            None => R::fresh(credential),
        };
        Ok(Settled {
            record,
            version,
            landed,
        })
    }

    /// A record written: its old versions must not pile up in Vault (a state record holds
    /// credentials). Set after a write of this process landed (the record exists: an update of
    /// its metadata, not a create), until it is set once; a failure is tried again at the next
    /// write.
    async fn bound<R: Record>(&self, path: &KvPath) {
        let Some(n) = R::MAX_VERSIONS else {
            return;
        };
        let key = path.to_string();
        if self
            .bounded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return;
        }
        match self.kv.set_max_versions(path, n).await {
            Ok(()) => {
                self.bounded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key);
            }
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "cannot set max_versions on the {}; tried again at its next write", R::NAME)
            }
        }
    }
}

#[cfg(test)]
mod tests;
