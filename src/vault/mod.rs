//! The only code that talks to Vault/OpenBao: KV v2 reads and check-and-set writes, metadata,
//! AppRole secret-ids, token login and renewal.
//!
//! Invariants: every call goes through one HTTP stack ([`http`]), which sends it to the active
//! node of a cluster, classifies errors into [`VaultError`], fails over and sends a request again
//! only when that is safe (a write whose reply was lost goes again only when landing twice is
//! harmless or caught by check-and-set), and counts requests (the rotation budget is measured in
//! writes); no secret value is logged.

mod approle;
mod auth;
mod cas;
mod error;
mod facts;
mod http;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

pub use approle::{GeneratedSecretId, SecretIdInfo, SecretIdOptions};
pub use auth::{resolve_login, Login};
pub use error::{classify_status, VaultError};
pub use facts::{MountKind, TokenInfo};
pub use http::FAILOVER_BOUND;

use http::Resend;

use crate::config::{KvPath, VaultConfig};
use crate::secret::SecretFields;

/// One version of a KV v2 secret: its data and the metadata that came with it.
#[derive(Debug, Clone)]
pub struct SecretVersion {
    pub data: SecretFields,
    pub version: u64,
    pub created_time: DateTime<Utc>,
}

/// A KV v2 secret's metadata (no data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMetadata {
    pub current_version: u64,
    /// `created_time` of each version still known to Vault.
    pub versions: HashMap<u64, VersionInfo>,
    pub custom_metadata: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub created_time: DateTime<Utc>,
    pub destroyed: bool,
    pub deleted: bool,
}

impl SecretMetadata {
    pub fn current(&self) -> Option<&VersionInfo> {
        self.versions.get(&self.current_version)
    }
}

/// Counters of what the daemon asked of Vault; read by metrics and by the write-budget test.
#[derive(Debug, Default)]
pub struct VaultStats {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub logins: AtomicU64,
    pub renewals: AtomicU64,
}

/// A connection to one Vault/OpenBao cluster (one or more node addresses).
pub struct Vault {
    /// Node addresses, without a trailing `/`.
    addresses: Vec<String>,
    /// Index of the active node (of the node that answered last); calls start there.
    active: AtomicUsize,
    /// `active` was found by `sys/health` and has not failed since (several addresses only).
    known: AtomicBool,
    /// Counts the times the active node was found; a request that fails looks again only when
    /// nobody has since it started.
    epoch: AtomicU64,
    /// One request at a time looks for the active node; the others wait for what it finds.
    discovery: tokio::sync::Mutex<()>,
    /// How long a `sys/health` probe may take.
    probe_timeout: Duration,
    /// The time a folder's listing is given (`http::Request::slow`).
    list_timeout: Duration,
    login: Login,
    http: reqwest::Client,
    namespace: Option<String>,
    token: std::sync::RwLock<SecretString>,
    /// What [`Vault::read_recent`] read lately, by path.
    recent: std::sync::Mutex<HashMap<String, (std::time::Instant, SecretVersion)>>,
    pub stats: VaultStats,
}

impl Vault {
    /// Build the HTTP client and log in. Nothing is written.
    pub async fn connect(cfg: &VaultConfig, login: Login) -> Result<Vault, VaultError> {
        let initial_token = match &login {
            Login::Token(t) => t.clone(),
            Login::AppRole { .. } => SecretString::from(String::new()),
        };
        for (i, address) in cfg.addresses.iter().enumerate() {
            // The message does not repeat the address: it may hold a password.
            reqwest::Url::parse(address).map_err(|e| VaultError::Other {
                path: format!("vault.addresses[{i}]"),
                status: None,
                message: format!("not a valid URL: {e}"),
            })?;
        }
        let vault = Vault {
            addresses: cfg
                .addresses
                .iter()
                .map(|a| a.trim_end_matches('/').to_string())
                .collect(),
            active: AtomicUsize::new(0),
            known: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            discovery: tokio::sync::Mutex::new(()),
            probe_timeout: cfg.request_timeout.min(http::PROBE_TIMEOUT),
            list_timeout: cfg.request_timeout.max(http::LIST_TIMEOUT),
            login,
            http: http::client(cfg)?,
            namespace: cfg.namespace.clone(),
            token: std::sync::RwLock::new(initial_token),
            recent: Default::default(),
            stats: VaultStats::default(),
        };
        vault.pick_active_node().await;
        if matches!(vault.login, Login::AppRole { .. }) {
            vault.log_in().await?;
        }
        Ok(vault)
    }

    /// The address of the node calls start at: the active node of a cluster.
    pub fn active_address(&self) -> &str {
        &self.addresses[self.active.load(Ordering::Relaxed)]
    }

    /// Read the current version's data and metadata in one round trip.
    pub async fn read(&self, kv: &KvPath) -> Result<SecretVersion, VaultError> {
        self.read_at(kv, None).await
    }

    /// [`Vault::read`], or what it gave for the same path less than `max_age` ago (`true`:
    /// reused). For a parent credential that every provider call needs (a store's access
    /// token): a burst of rotations against one store reads it once, and a change in Vault is
    /// seen within `max_age`, or at once after [`Vault::forget`] (the caller's answer to the
    /// provider refusing it).
    pub async fn read_recent(
        &self,
        kv: &KvPath,
        max_age: Duration,
    ) -> Result<(SecretVersion, bool), VaultError> {
        let key = kv.to_string();
        {
            let recent = self.recent.lock().expect("recent reads lock poisoned");
            if let Some((at, v)) = recent.get(&key) {
                if at.elapsed() < max_age {
                    return Ok((v.clone(), true));
                }
            }
        }
        let v = self.read(kv).await?;
        let mut recent = self.recent.lock().expect("recent reads lock poisoned");
        recent.insert(key, (std::time::Instant::now(), v.clone()));
        Ok((v, false))
    }

    /// The next [`Vault::read_recent`] of `kv` reads it from Vault.
    pub fn forget(&self, kv: &KvPath) {
        let mut recent = self.recent.lock().expect("recent reads lock poisoned");
        recent.remove(&kv.to_string());
    }

    /// Read a given version's data and metadata.
    pub async fn read_version(
        &self,
        kv: &KvPath,
        version: u64,
    ) -> Result<SecretVersion, VaultError> {
        self.read_at(kv, Some(version)).await
    }

    async fn read_at(
        &self,
        kv: &KvPath,
        version: Option<u64>,
    ) -> Result<SecretVersion, VaultError> {
        let (value, version, created_time) = self.read_value_at(kv, version).await?;
        let data = SecretFields::from_json(&value).ok_or_else(|| VaultError::Other {
            path: kv.to_string(),
            status: None,
            message: "secret data is not a JSON object".into(),
        })?;
        Ok(SecretVersion {
            data,
            version,
            created_time,
        })
    }

    /// Read the current version's data as JSON, with its version number; `None` when missing.
    /// For the daemon's own structured records.
    pub async fn read_json(&self, kv: &KvPath) -> Result<Option<(Value, u64)>, VaultError> {
        match self.read_value_at(kv, None).await {
            Ok((v, version, _)) => Ok(Some((v, version))),
            Err(VaultError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Vault::read_json`], with the version's `created_time` (Vault's clock).
    pub async fn read_json_created(
        &self,
        kv: &KvPath,
    ) -> Result<Option<(Value, u64, DateTime<Utc>)>, VaultError> {
        match self.read_value_at(kv, None).await {
            Ok(read) => Ok(Some(read)),
            Err(VaultError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Delete a key's metadata and every version (`kv metadata delete`): gone from LIST.
    pub async fn delete_metadata(&self, kv: &KvPath) -> Result<(), VaultError> {
        self.send(http::Request {
            method: Method::DELETE,
            api_path: &format!("{}/metadata/{}", kv.mount, kv.path),
            shown: &kv.to_string(),
            body: None,
            count: Some(&self.stats.writes),
            resend: Resend::Always,
            slow: false,
        })
        .await
        .map(|_| ())
    }

    async fn read_value_at(
        &self,
        kv: &KvPath,
        version: Option<u64>,
    ) -> Result<(Value, u64, DateTime<Utc>), VaultError> {
        #[derive(Deserialize)]
        struct Read {
            data: Value,
            metadata: Meta,
        }
        #[derive(Deserialize)]
        struct Meta {
            version: u64,
            created_time: String,
        }
        let shown = kv.to_string();
        let mut api_path = format!("{}/data/{}", kv.mount, kv.path);
        if let Some(v) = version {
            api_path.push_str(&format!("?version={v}"));
        }
        let answer = self
            .send(http::Request {
                method: Method::GET,
                api_path: &api_path,
                shown: &shown,
                body: None,
                count: Some(&self.stats.reads),
                resend: Resend::Always,
                slow: false,
            })
            .await?;
        let read: Read = data_of(answer, &shown)?;
        let created = parse_time(&read.metadata.created_time, &shown)?;
        Ok((read.data, read.metadata.version, created))
    }

    /// Read the current version, or `None` when the secret does not exist.
    pub async fn read_optional(&self, kv: &KvPath) -> Result<Option<SecretVersion>, VaultError> {
        match self.read(kv).await {
            Ok(v) => Ok(Some(v)),
            Err(VaultError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Check-and-set write: succeeds only if the current version is `expected_version`
    /// (0: the secret must not exist yet). Returns the new version. A lost reply is
    /// [`VaultError::OutcomeUnknown`]: the write is never sent a second time.
    pub async fn write_cas(
        &self,
        kv: &KvPath,
        data: &SecretFields,
        expected_version: u64,
    ) -> Result<u64, VaultError> {
        self.write_json_cas(kv, &data.to_json(), expected_version)
            .await
    }

    /// [`Vault::write_cas`], with the `created_time` Vault gave the new version (`None` if
    /// the reply did not carry a readable one).
    pub async fn write_cas_created(
        &self,
        kv: &KvPath,
        data: &SecretFields,
        expected_version: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), VaultError> {
        self.write_json_cas_created(kv, &data.to_json(), expected_version)
            .await
    }

    /// Check-and-set write of a JSON object (the daemon's own records).
    pub async fn write_json_cas(
        &self,
        kv: &KvPath,
        body: &Value,
        expected_version: u64,
    ) -> Result<u64, VaultError> {
        let (version, _) = self
            .write_json_cas_created(kv, body, expected_version)
            .await?;
        Ok(version)
    }

    /// [`Vault::write_json_cas`], with the new version's `created_time`.
    pub async fn write_json_cas_created(
        &self,
        kv: &KvPath,
        body: &Value,
        expected_version: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), VaultError> {
        #[derive(Deserialize)]
        struct Written {
            version: u64,
            #[serde(default)]
            created_time: Option<String>,
        }
        let shown = kv.to_string();
        let request = json!({ "data": body, "options": { "cas": expected_version } });
        let answer = self
            .send(http::Request {
                method: Method::POST,
                api_path: &format!("{}/data/{}", kv.mount, kv.path),
                shown: &shown,
                body: Some(&request),
                count: Some(&self.stats.writes),
                resend: Resend::CheckAndSet,
                slow: false,
            })
            .await?;
        let written: Written = data_of(answer, &shown)?;
        let created = written
            .created_time
            .and_then(|t| parse_time(&t, &shown).ok());
        Ok((written.version, created))
    }

    /// The secret's metadata: current version, each version's created_time, custom_metadata.
    pub async fn read_metadata(&self, kv: &KvPath) -> Result<SecretMetadata, VaultError> {
        let shown = kv.to_string();
        let answer = self
            .send(http::Request {
                method: Method::GET,
                api_path: &format!("{}/metadata/{}", kv.mount, kv.path),
                shown: &shown,
                body: None,
                count: Some(&self.stats.reads),
                resend: Resend::Always,
                slow: false,
            })
            .await?;
        data_of::<Metadata>(answer, &shown)?.parse(&shown)
    }

    /// One page of a folder's keys with the metadata of each (OpenBao's `detailed-metadata`
    /// LIST: the metadata [`Vault::read_metadata`] reads, for a whole folder in one request),
    /// in key order: at most `limit`, those after `after`. A sub-folder (a key ending in `/`)
    /// comes with `None`; past the last key, an empty page. A folder that does not exist is
    /// [`VaultError::NotFound`], and so is a server without the endpoint (HashiCorp Vault): the
    /// caller tells them apart.
    pub async fn list_metadata_page(
        &self,
        mount: &str,
        folder: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Option<SecretMetadata>)>, VaultError> {
        #[derive(Deserialize)]
        struct Listing {
            keys: Vec<String>,
            #[serde(default)]
            key_info: HashMap<String, Value>,
        }
        let folder = folder.trim_end_matches('/');
        let slash = if folder.is_empty() { "" } else { "/" };
        let shown = format!("{mount}/detailed-metadata/{folder}{slash}");
        let mut query = format!("list=true&limit={limit}");
        if let Some(after) = after {
            query.push_str("&after=");
            query.push_str(&query_escape(after));
        }
        let answer = self
            .send(http::Request {
                method: Method::GET,
                api_path: &format!("{shown}?{query}"),
                shown: &shown,
                body: None,
                count: Some(&self.stats.reads),
                resend: Resend::Always,
                slow: true,
            })
            .await;
        let answer = match answer {
            // Past the last key OpenBao answers 404, as for a folder that does not exist.
            Err(VaultError::NotFound { .. }) if after.is_some() => return Ok(Vec::new()),
            answer => answer?,
        };
        let mut listing: Listing = data_of(answer, &shown)?;
        let mut page = Vec::with_capacity(listing.keys.len());
        for key in listing.keys {
            let metadata = if key.ends_with('/') {
                None
            } else {
                let kv_shown = format!("{mount}/{folder}{slash}{key}");
                let info = listing.key_info.remove(&key).unwrap_or(Value::Null);
                let m: Metadata = shaped(info, &kv_shown)?;
                Some(m.parse(&kv_shown)?)
            };
            page.push((key, metadata));
        }
        Ok(page)
    }

    /// Replace the secret's custom_metadata (Vault has no CAS here: an index for humans only).
    pub async fn set_custom_metadata(
        &self,
        kv: &KvPath,
        custom: HashMap<String, String>,
    ) -> Result<(), VaultError> {
        let request = json!({ "custom_metadata": custom });
        self.send(http::Request {
            method: Method::POST,
            api_path: &format!("{}/metadata/{}", kv.mount, kv.path),
            shown: &kv.to_string(),
            body: Some(&request),
            count: Some(&self.stats.writes),
            resend: Resend::Always,
            slow: false,
        })
        .await
        .map(|_| ())
    }

    /// Permanently destroy the given versions' data.
    pub async fn destroy_versions(&self, kv: &KvPath, versions: &[u64]) -> Result<(), VaultError> {
        let request = json!({ "versions": versions });
        self.send(http::Request {
            method: Method::PUT,
            api_path: &format!("{}/destroy/{}", kv.mount, kv.path),
            shown: &kv.to_string(),
            body: Some(&request),
            count: Some(&self.stats.writes),
            resend: Resend::Always,
            slow: false,
        })
        .await
        .map(|_| ())
    }

    /// Keys under a folder (names ending in `/` are folders); empty when there is none.
    pub async fn list(&self, mount: &str, path: &str) -> Result<Vec<String>, VaultError> {
        self.metadata_keys(mount, path, "list=true").await
    }

    /// One page of the keys under a folder (names ending in `/` are folders): at most `limit`,
    /// those after `after` in order (OpenBao's paginated LIST; a server without it answers them
    /// all, which the caller sees as a page longer than asked). Empty when there is no folder.
    pub async fn list_page(
        &self,
        mount: &str,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, VaultError> {
        let mut query = format!("list=true&limit={limit}");
        if let Some(after) = after {
            query.push_str("&after=");
            query.push_str(&query_escape(after));
        }
        self.metadata_keys(mount, path, &query).await
    }

    /// Every key under a folder, at any depth, relative to it (OpenBao's recursive list, `scan`,
    /// since 2.2: one request, not paginated). Empty when there is no folder.
    pub async fn scan(&self, mount: &str, path: &str) -> Result<Vec<String>, VaultError> {
        self.metadata_keys(mount, path, "scan=true").await
    }

    /// The `keys` of a listing request on the KV v2 metadata of `path` with `query`; empty when
    /// there is no such folder.
    async fn metadata_keys(
        &self,
        mount: &str,
        path: &str,
        query: &str,
    ) -> Result<Vec<String>, VaultError> {
        #[derive(Deserialize)]
        struct Keys {
            keys: Vec<String>,
        }
        let shown = format!("{mount}/{path}");
        let answer = self
            .send(http::Request {
                method: Method::GET,
                api_path: &format!("{mount}/metadata/{path}?{query}"),
                shown: &shown,
                body: None,
                count: Some(&self.stats.reads),
                resend: Resend::Always,
                slow: true,
            })
            .await;
        match answer {
            Ok(v) => Ok(data_of::<Keys>(v, &shown)?.keys),
            Err(VaultError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Use a new token for every later request.
    fn set_token(&self, token: SecretString) {
        *self.token.write().expect("token lock poisoned") = token;
    }

    /// The current token.
    fn current_token(&self) -> SecretString {
        self.token.read().expect("token lock poisoned").clone()
    }
}

/// A KV v2 secret's metadata as Vault answers it (a metadata read, or one entry of a folder's
/// detailed listing).
#[derive(Deserialize)]
struct Metadata {
    current_version: u64,
    #[serde(default)]
    versions: HashMap<String, MetadataVersion>,
    #[serde(default)]
    custom_metadata: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct MetadataVersion {
    created_time: String,
    #[serde(default)]
    deletion_time: String,
    #[serde(default)]
    destroyed: bool,
}

impl Metadata {
    /// `shown`: the secret's path, for errors.
    fn parse(self, shown: &str) -> Result<SecretMetadata, VaultError> {
        let mut versions = HashMap::new();
        for (v, info) in self.versions {
            let Ok(v) = v.parse::<u64>() else { continue };
            versions.insert(
                v,
                VersionInfo {
                    created_time: parse_time(&info.created_time, shown)?,
                    destroyed: info.destroyed,
                    deleted: !info.deletion_time.is_empty(),
                },
            );
        }
        Ok(SecretMetadata {
            current_version: self.current_version,
            versions,
            custom_metadata: self.custom_metadata.unwrap_or_default(),
        })
    }
}

/// The `data` object of an answer, in the shape `T`. The error names the path and, at most, a
/// missing field: never a value (the answer may hold secrets).
fn data_of<T: DeserializeOwned>(answer: Value, path: &str) -> Result<T, VaultError> {
    let data = match answer {
        Value::Object(mut m) => m.remove("data").unwrap_or(Value::Null),
        _ => Value::Null,
    };
    shaped(data, path)
}

/// `value` in the shape `T`; the error as [`data_of`]'s.
fn shaped<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, VaultError> {
    serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        let detail = if text.starts_with("missing field") {
            text
        } else {
            "a field has an unexpected type".to_string()
        };
        VaultError::Other {
            path: path.to_string(),
            status: None,
            message: format!("unexpected answer from Vault: {detail}"),
        }
    })
}

fn parse_time(s: &str, path: &str) -> Result<DateTime<Utc>, VaultError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| VaultError::Other {
            path: path.to_string(),
            status: None,
            message: format!("bad created_time {s:?}: {e}"),
        })
}

/// A key as a query parameter's value: letters, digits and `-_.~/` as they are, the rest
/// percent-encoded.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
