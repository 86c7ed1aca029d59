//! The check-and-set read protocol over KV v2: the current data with the version a
//! check-and-set compares against (the metadata's when the latest version is soft-deleted or
//! destroyed, read again when a secret appears between the two reads), and a record's
//! `max_versions`.

use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{json, Value};

use super::http::Resend;
use super::{SecretVersion, Vault, VaultError};
use crate::config::KvPath;

/// How often a secret that reads as missing, while its metadata says it is there, is read again.
const READ_AGAIN: usize = 5;

impl Vault {
    /// The current version's data as JSON (`None` when it cannot be read) and the version
    /// check-and-set compares against: the data's own, else the metadata's `current_version`
    /// (a soft-deleted or destroyed latest version keeps its number), else 0.
    ///
    /// A secret created between the read and the metadata read is read again: taken for
    /// missing at its new version, its first write would be overwritten by a check-and-set
    /// that should have failed.
    pub async fn read_json_for_cas(&self, kv: &KvPath) -> Result<(Option<Value>, u64), VaultError> {
        for _ in 0..READ_AGAIN {
            if let Some((value, version)) = self.read_json(kv).await? {
                return Ok((Some(value), version));
            }
            if let Some(version) = self.unreadable_version(kv).await? {
                return Ok((None, version));
            }
        }
        Err(self.kept_changing(kv))
    }

    /// [`Vault::read_json_for_cas`] for a secret's fields.
    pub async fn read_for_cas(
        &self,
        kv: &KvPath,
    ) -> Result<(Option<SecretVersion>, u64), VaultError> {
        for _ in 0..READ_AGAIN {
            if let Some(v) = self.read_optional(kv).await? {
                let version = v.version;
                return Ok((Some(v), version));
            }
            if let Some(version) = self.unreadable_version(kv).await? {
                return Ok((None, version));
            }
        }
        Err(self.kept_changing(kv))
    }

    /// After a read found nothing: the metadata's `current_version` when that version is
    /// really unreadable (soft-deleted, destroyed) or 0 when there is no secret; `None` when
    /// the current version is readable, i.e. it was written since the read.
    async fn unreadable_version(&self, kv: &KvPath) -> Result<Option<u64>, VaultError> {
        match self.read_metadata(kv).await {
            Ok(m) => match m.current() {
                Some(v) if !v.deleted && !v.destroyed => Ok(None),
                _ => Ok(Some(m.current_version)),
            },
            Err(VaultError::NotFound { .. }) => Ok(Some(0)),
            Err(e) => Err(e),
        }
    }

    fn kept_changing(&self, kv: &KvPath) -> VaultError {
        VaultError::Other {
            path: kv.to_string(),
            status: None,
            message: format!(
                "read {READ_AGAIN} times as missing while its metadata showed a readable current version"
            ),
        }
    }

    /// Keep at most `n` versions of the secret (the daemon's records hold credentials: old
    /// versions must not pile up).
    pub async fn set_max_versions(&self, kv: &KvPath, n: u32) -> Result<(), VaultError> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let path = format!("{}/metadata/{}", kv.mount, kv.path);
        self.raw(
            Method::POST,
            &path,
            Some(json!({ "max_versions": n })),
            Resend::Always,
        )
        .await
        .map(|_| ())
    }
}
