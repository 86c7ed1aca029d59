//! A KV v2 store in memory, for tests and simulations of the engine: numbered versions,
//! check-and-set, `created_time` from a clock the test controls, `max_versions`, soft-deleted and
//! destroyed versions, and faults on writes (an answer lost after the write landed, or before).
//! Compiled for tests and with the `fault-injection` feature only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::SecretStore;
use crate::config::KvPath;
use crate::vault::{MountKind, VaultError};

/// KV v2 keeps this many versions when `max_versions` is not set.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;

/// The clock that stamps `created_time`.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// An in-memory KV v2 mount (every mount name is KV v2, every path writable).
pub struct MemoryKv {
    inner: Mutex<Inner>,
    clock: Clock,
}

#[derive(Default)]
struct Inner {
    paths: HashMap<String, Entry>,
    faults: Vec<Fault>,
    /// Writes received (check-and-set writes of data), by path.
    writes: Vec<String>,
}

#[derive(Default)]
struct Entry {
    current: u64,
    max_versions: Option<u32>,
    versions: BTreeMap<u64, Version>,
}

struct Version {
    data: Option<Value>,
    created_time: DateTime<Utc>,
    deleted: bool,
}

/// What a write fault does to the write it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// The write lands, its answer is lost: `OutcomeUnknown`.
    LostAfter,
    /// The write never lands, and the answer says nothing: `OutcomeUnknown` (a gateway's 502).
    LostBefore,
}

struct Fault {
    path_substr: String,
    nth: usize,
    matched: usize,
    what: WriteFault,
}

impl Default for MemoryKv {
    fn default() -> Self {
        MemoryKv::new(Arc::new(Utc::now))
    }
}

impl MemoryKv {
    pub fn new(clock: Clock) -> MemoryKv {
        MemoryKv {
            inner: Mutex::new(Inner::default()),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory kv lock poisoned")
    }

    /// The Nth write (1-based, counted from now) to a path containing `path_substr` meets
    /// `what`.
    pub fn fault(&self, path_substr: &str, nth: usize, what: WriteFault) {
        assert!(nth >= 1, "writes are counted from 1");
        self.lock().faults.push(Fault {
            path_substr: path_substr.to_string(),
            nth,
            matched: 0,
            what,
        });
    }

    /// Writes received so far to paths containing `path_substr` (whatever became of them).
    pub fn writes(&self, path_substr: &str) -> usize {
        let inner = self.lock();
        inner
            .writes
            .iter()
            .filter(|p| p.contains(path_substr))
            .count()
    }

    /// The current version's data, as a reader with every right sees it.
    pub fn get(&self, kv: &KvPath) -> Option<Value> {
        let inner = self.lock();
        let e = inner.paths.get(&kv.to_string())?;
        e.versions
            .get(&e.current)
            .filter(|v| !v.deleted)
            .and_then(|v| v.data.clone())
    }

    /// Write without check-and-set (an operator's `kv put`).
    pub fn put(&self, kv: &KvPath, data: Value) -> u64 {
        let now = (self.clock)();
        self.lock()
            .paths
            .entry(kv.to_string())
            .or_default()
            .push(data, now)
    }

    /// Soft-delete the latest version (`kv delete`): it reads as missing, and check-and-set
    /// still compares against its number.
    pub fn delete_latest(&self, kv: &KvPath) {
        let mut inner = self.lock();
        if let Some(e) = inner.paths.get_mut(&kv.to_string()) {
            let current = e.current;
            if let Some(v) = e.versions.get_mut(&current) {
                v.deleted = true;
            }
        }
    }

    /// The versions still kept at the path, oldest first.
    pub fn versions(&self, kv: &KvPath) -> Vec<u64> {
        let inner = self.lock();
        inner
            .paths
            .get(&kv.to_string())
            .map(|e| e.versions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The `created_time` of a version still kept.
    pub fn created_time(&self, kv: &KvPath, version: u64) -> Option<DateTime<Utc>> {
        let inner = self.lock();
        Some(
            inner
                .paths
                .get(&kv.to_string())?
                .versions
                .get(&version)?
                .created_time,
        )
    }
}

impl Entry {
    fn push(&mut self, data: Value, now: DateTime<Utc>) -> u64 {
        self.current += 1;
        self.versions.insert(
            self.current,
            Version {
                data: Some(data),
                created_time: now,
                deleted: false,
            },
        );
        let keep = self.max_versions.unwrap_or(DEFAULT_MAX_VERSIONS).max(1) as usize;
        while self.versions.len() > keep {
            self.versions.pop_first();
        }
        self.current
    }

    fn readable(&self) -> Option<(Value, u64)> {
        let v = self.versions.get(&self.current).filter(|v| !v.deleted)?;
        Some((v.data.clone()?, self.current))
    }
}

fn lost(kv: &KvPath, what: WriteFault) -> VaultError {
    VaultError::OutcomeUnknown {
        path: kv.to_string(),
        reason: format!("injected: {what:?}"),
    }
}

#[async_trait]
impl SecretStore for MemoryKv {
    async fn read(&self, kv: &KvPath) -> Result<Option<(Value, u64)>, VaultError> {
        let inner = self.lock();
        Ok(inner.paths.get(&kv.to_string()).and_then(Entry::readable))
    }

    async fn read_for_cas(&self, kv: &KvPath) -> Result<(Option<Value>, u64), VaultError> {
        let inner = self.lock();
        Ok(match inner.paths.get(&kv.to_string()) {
            None => (None, 0),
            Some(e) => match e.readable() {
                Some((v, n)) => (Some(v), n),
                None => (None, e.current),
            },
        })
    }

    async fn write_cas(
        &self,
        kv: &KvPath,
        data: &Value,
        expected: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), VaultError> {
        let now = (self.clock)();
        let path = kv.to_string();
        let mut inner = self.lock();
        inner.writes.push(path.clone());
        let mut fault = None;
        for f in inner.faults.iter_mut() {
            if path.contains(&f.path_substr) {
                f.matched += 1;
                if f.matched == f.nth && fault.is_none() {
                    fault = Some(f.what);
                }
            }
        }
        if fault == Some(WriteFault::LostBefore) {
            return Err(lost(kv, WriteFault::LostBefore));
        }
        let e = inner.paths.entry(path.clone()).or_default();
        if e.current != expected {
            return Err(VaultError::CasMismatch { path });
        }
        let version = e.push(data.clone(), now);
        match fault {
            Some(what) => Err(lost(kv, what)),
            None => Ok((version, Some(now))),
        }
    }

    async fn set_max_versions(&self, kv: &KvPath, n: u32) -> Result<(), VaultError> {
        let mut inner = self.lock();
        let e = inner.paths.entry(kv.to_string()).or_default();
        e.max_versions = Some(n);
        while e.versions.len() > n.max(1) as usize {
            e.versions.pop_first();
        }
        Ok(())
    }

    async fn destroy_versions(&self, kv: &KvPath, versions: &[u64]) -> Result<(), VaultError> {
        let mut inner = self.lock();
        if let Some(e) = inner.paths.get_mut(&kv.to_string()) {
            for n in versions {
                if let Some(v) = e.versions.get_mut(n) {
                    v.data = None;
                }
            }
        }
        Ok(())
    }

    async fn mount_kind(&self, _mount: &str) -> Result<MountKind, VaultError> {
        Ok(MountKind {
            engine: "kv".into(),
            version: Some("2".into()),
        })
    }

    async fn capabilities_self(
        &self,
        paths: &[String],
    ) -> Result<HashMap<String, Vec<String>>, VaultError> {
        Ok(paths
            .iter()
            .map(|p| (p.clone(), vec!["root".to_string()]))
            .collect())
    }
}
