//! The emulator's shared state, its clock, and the state file.
//!
//! Invariant: only this module touches the state file; it writes a temporary file and renames
//! it over the old one, so a reader never sees half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Mutex;

use crate::counters::Counters;
use crate::faults::Faults;
use crate::seed::Seed;
use crate::store::Store;

const STATE_VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state file {path} has version {found}, expected {STATE_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the state file holds. Faults and counters are not kept across restarts.
#[derive(Serialize, Deserialize)]
struct Persisted {
    version: u32,
    clock_offset_ms: i64,
    stores: Vec<Store>,
}

/// Everything behind the one lock.
pub struct Inner {
    pub stores: BTreeMap<String, Store>,
    pub clock_offset_ms: i64,
    /// Credentials, keys, jti values.
    pub rng: StdRng,
    /// Fault dice, apart so that minting does not shift them.
    pub fault_rng: StdRng,
    pub faults: Faults,
    pub counters: Counters,
}

pub fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Inner {
    /// The emulator's clock: system time plus the offset set through the admin API.
    pub fn now_ms(&self) -> u64 {
        (system_now_ms() + self.clock_offset_ms).max(0) as u64
    }

    pub fn now_secs(&self) -> i64 {
        (self.now_ms() / 1000) as i64
    }

    pub fn from_seed(seed: &Seed) -> Inner {
        let (mut rng, fault_rng) = match seed.rng_seed {
            Some(n) => (
                StdRng::seed_from_u64(n),
                StdRng::seed_from_u64(n.wrapping_add(1)),
            ),
            None => (StdRng::from_os_rng(), StdRng::from_os_rng()),
        };
        let now_secs = system_now_ms() / 1000;
        let stores = seed
            .stores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let store = Store::from_seed(s, 1_000_000 + i as u64, now_secs, &mut rng);
                (store.hash.clone(), store)
            })
            .collect();
        Inner {
            stores,
            clock_offset_ms: 0,
            rng,
            fault_rng,
            faults: Faults::default(),
            counters: Counters::default(),
        }
    }

    /// Loads a state file; None when it does not exist yet.
    pub fn load(path: &Path) -> Result<Option<Inner>, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let persisted: Persisted =
            serde_json::from_str(&text).map_err(|source| StateError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if persisted.version != STATE_VERSION {
            return Err(StateError::Version {
                path: path.to_path_buf(),
                found: persisted.version,
            });
        }
        let stores = persisted
            .stores
            .into_iter()
            .map(|mut s| {
                s.rebuild_runtime();
                (s.hash.clone(), s)
            })
            .collect();
        // Fresh generators: a restarted emulator must not repeat the jti values of its first life.
        Ok(Some(Inner {
            stores,
            clock_offset_ms: persisted.clock_offset_ms,
            rng: StdRng::from_os_rng(),
            fault_rng: StdRng::from_os_rng(),
            faults: Faults::default(),
            counters: Counters::default(),
        }))
    }

    /// The state file's text.
    pub fn snapshot(&self) -> String {
        let persisted = Persisted {
            version: STATE_VERSION,
            clock_offset_ms: self.clock_offset_ms,
            stores: self.stores.values().cloned().collect(),
        };
        serde_json::to_string_pretty(&persisted).expect("state serialises")
    }
}

/// Writes the state file, one writer at a time, each write a complete snapshot.
pub struct Persister {
    path: PathBuf,
    write_lock: Mutex<()>,
}

impl Persister {
    pub fn new(path: PathBuf) -> Persister {
        Persister {
            path,
            write_lock: Mutex::new(()),
        }
    }

    /// Takes a snapshot under `inner`'s lock, then writes it. Holding the write lock while
    /// taking the snapshot keeps the files in the order of the changes.
    pub async fn save(&self, inner: &Mutex<Inner>) -> Result<(), StateError> {
        let _guard = self.write_lock.lock().await;
        let text = inner.lock().await.snapshot();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &text))
            .await
            .expect("state writer does not panic")
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<(), StateError> {
    use std::io::Write;
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
