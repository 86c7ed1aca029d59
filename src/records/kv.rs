//! The KV v2 store the engine and the record store reach Vault through: read a path with the
//! version check-and-set compares against, check-and-set writes, and the few facts preflight
//! asks. [`Vault`] is the real one; [`super::memory::MemoryKv`] keeps the same semantics in
//! memory for tests and simulations.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::KvPath;
use crate::vault::{MountKind, Vault, VaultError};

/// A KV v2 secrets engine, as the daemon uses it: JSON objects at paths, numbered versions,
/// check-and-set writes, `max_versions`, soft-deleted and destroyed versions.
///
/// Errors are [`VaultError`]s with Vault's meaning: `CasMismatch` when the version is not the
/// one expected (nothing written), `OutcomeUnknown` when a write may or may not have landed.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The current version's data and number; `None` when there is no readable current version
    /// (missing, soft-deleted, destroyed). No metadata read.
    async fn read(&self, kv: &KvPath) -> Result<Option<(Value, u64)>, VaultError>;

    /// The current version's data (`None` when it cannot be read) and the version a
    /// check-and-set compares against: a soft-deleted or destroyed latest version keeps its
    /// number; 0 when the path was never written.
    async fn read_for_cas(&self, kv: &KvPath) -> Result<(Option<Value>, u64), VaultError>;

    /// Write `data` as the version after `expected` (0: the path must not exist yet). Returns
    /// the new version and its `created_time` when the answer carried one.
    async fn write_cas(
        &self,
        kv: &KvPath,
        data: &Value,
        expected: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), VaultError>;

    /// Keep at most `n` versions of the path.
    async fn set_max_versions(&self, kv: &KvPath, n: u32) -> Result<(), VaultError>;

    /// Destroy these versions' data for good.
    async fn destroy_versions(&self, kv: &KvPath, versions: &[u64]) -> Result<(), VaultError>;

    /// The secrets engine behind `mount`; `NotFound` when none (or the token may not use it).
    async fn mount_kind(&self, mount: &str) -> Result<MountKind, VaultError>;

    /// The token's capabilities on each API path (`{mount}/data/{path}`).
    async fn capabilities_self(
        &self,
        paths: &[String],
    ) -> Result<HashMap<String, Vec<String>>, VaultError>;
}

#[async_trait]
impl SecretStore for Vault {
    async fn read(&self, kv: &KvPath) -> Result<Option<(Value, u64)>, VaultError> {
        self.read_json(kv).await
    }

    async fn read_for_cas(&self, kv: &KvPath) -> Result<(Option<Value>, u64), VaultError> {
        self.read_json_for_cas(kv).await
    }

    async fn write_cas(
        &self,
        kv: &KvPath,
        data: &Value,
        expected: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), VaultError> {
        self.write_json_cas_created(kv, data, expected).await
    }

    async fn set_max_versions(&self, kv: &KvPath, n: u32) -> Result<(), VaultError> {
        Vault::set_max_versions(self, kv, n).await
    }

    async fn destroy_versions(&self, kv: &KvPath, versions: &[u64]) -> Result<(), VaultError> {
        Vault::destroy_versions(self, kv, versions).await
    }

    async fn mount_kind(&self, mount: &str) -> Result<MountKind, VaultError> {
        Vault::mount_kind(self, mount).await
    }

    async fn capabilities_self(
        &self,
        paths: &[String],
    ) -> Result<HashMap<String, Vec<String>>, VaultError> {
        Vault::capabilities_self(self, paths).await
    }
}
