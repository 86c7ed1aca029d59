//! The emulator's shared state ([`App`], the [`Inner`] behind its lock), its clock, and the
//! state file.
//!
//! Invariant: only this module touches the state file; it writes a temporary file (mode 0600,
//! in the same directory) and renames it over the old one, so a reader never sees half a file
//! and the file never has a looser mode, whatever the umask.

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

/// State shared by every request.
pub struct App {
    pub inner: Mutex<Inner>,
    pub admin_token: String,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    persister: Option<Persister>,
}

impl App {
    /// `state_file`: where [`App::persist`] writes; None keeps everything in memory.
    pub fn new(
        inner: Inner,
        admin_token: String,
        base_url: String,
        state_file: Option<PathBuf>,
    ) -> App {
        App {
            inner: Mutex::new(inner),
            admin_token,
            base_url,
            persister: state_file.map(Persister::new),
        }
    }

    /// Writes the state file if there is one. Called after each change, before answering.
    pub async fn persist(&self) {
        if let Some(p) = &self.persister {
            if let Err(e) = p.save(&self.inner).await {
                tracing::error!(error = %e, "state file not written");
            }
        }
    }
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

/// Writes `text` to `path` through a temporary file created with mode 0600 in the same
/// directory: fsync, rename over `path`, fsync the directory.
fn write_atomically(path: &Path, text: &str) -> Result<(), StateError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".emulator-state-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_state_file_is_written_0600_even_over_a_looser_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // What a umask of 022 gives a plain create.
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        write_atomically(&path, "new").unwrap();

        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_new_state_file_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, "{}").unwrap();
        assert_eq!(mode(&path), 0o600);
    }
}
