//! The only code that talks to Vault/OpenBao: KV v2 reads and check-and-set writes, metadata,
//! AppRole secret-ids, token login and renewal.
//!
//! Invariants: every call goes through [`Vault::call`], which classifies errors into
//! [`VaultError`] and moves to the next configured address when a node is unavailable or sealed;
//! every write is counted (the rotation budget is measured in writes); no secret value is logged.

mod approle;
mod auth;
mod error;
mod extra;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use vaultrs::api::kv2::requests::{
    ReadSecretRequest, SetSecretMetadataRequest, SetSecretRequestOptions,
};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

pub use approle::{GeneratedSecretId, SecretIdOptions};
pub use auth::{resolve_login, Login};
pub use error::{classify_status, error_chain, VaultError};
pub use extra::{MountKind, TokenInfo};

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
#[derive(Debug, Clone)]
pub struct SecretMetadata {
    pub current_version: u64,
    /// `created_time` of each version still known to Vault.
    pub versions: HashMap<u64, VersionInfo>,
    pub custom_metadata: HashMap<String, String>,
}

#[derive(Debug, Clone)]
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

struct Node {
    address: String,
    /// Replaced whole when the token changes, so no lock is held across a request.
    client: std::sync::RwLock<Arc<VaultClient>>,
}

impl Node {
    fn client(&self) -> Arc<VaultClient> {
        self.client.read().expect("client lock poisoned").clone()
    }
}

/// A connection to one Vault/OpenBao cluster (one or more node addresses).
pub struct Vault {
    nodes: Vec<Node>,
    /// Index of the node that answered last; calls start there.
    active: AtomicUsize,
    login: Login,
    http: reqwest::Client,
    namespace: Option<String>,
    token: std::sync::RwLock<SecretString>,
    pub stats: VaultStats,
}

impl Vault {
    /// Build clients for every address and log in. Nothing is written.
    pub async fn connect(cfg: &VaultConfig, login: Login) -> Result<Vault, VaultError> {
        let initial_token = match &login {
            Login::Token(t) => t.clone(),
            Login::AppRole { .. } => SecretString::from(String::new()),
        };
        let mut nodes = Vec::new();
        for address in &cfg.addresses {
            let client = build_client(cfg, address, initial_token.expose_secret())?;
            nodes.push(Node {
                address: address.trim_end_matches('/').to_string(),
                client: std::sync::RwLock::new(Arc::new(client)),
            });
        }
        let mut http = reqwest::Client::builder().timeout(cfg.request_timeout);
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| VaultError::Other {
                path: ca.display().to_string(),
                status: None,
                message: format!("cannot read CA file: {e}"),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| VaultError::Other {
                    path: ca.display().to_string(),
                    status: None,
                    message: format!("cannot parse CA file: {e}"),
                })?;
            for c in certs {
                http = http.add_root_certificate(c);
            }
        }
        let http = http.build().map_err(|e| VaultError::Other {
            path: String::new(),
            status: None,
            message: format!("cannot build HTTP client: {e}"),
        })?;
        let vault = Vault {
            nodes,
            active: AtomicUsize::new(0),
            login,
            http,
            namespace: cfg.namespace.clone(),
            token: std::sync::RwLock::new(initial_token),
            stats: VaultStats::default(),
        };
        vault.pick_active_node().await;
        if matches!(vault.login, Login::AppRole { .. }) {
            vault.log_in().await?;
        }
        Ok(vault)
    }

    /// The address of the node calls start at.
    pub fn active_address(&self) -> &str {
        &self.nodes[self.active.load(Ordering::Relaxed)].address
    }

    /// Prefer the active node of an HA cluster: standbys check CAS against a stale copy
    /// (reference/openbao.md). `sys/health` answers 200 only on the active node.
    async fn pick_active_node(&self) {
        if self.nodes.len() < 2 {
            return;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let url = format!("{}/v1/sys/health", node.address);
            if let Ok(resp) = self.http.get(&url).send().await {
                if resp.status().as_u16() == 200 {
                    self.active.store(i, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Run `op` against the active node, moving on to the next address when a node is
    /// unavailable or sealed.
    async fn call<T, F, Fut>(&self, path: &str, op: F) -> Result<T, VaultError>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let op = &op;
        self.over_nodes(move |node: &Node| async move {
            op(node.client())
                .await
                .map_err(|e| error::classify(e, path, &node.address))
        })
        .await
    }

    /// Try `op` on each node in turn, starting at the active one, while the error says the node
    /// could not answer (unavailable, sealed); remember the node that answered.
    async fn over_nodes<'s, T, F, Fut>(&'s self, op: F) -> Result<T, VaultError>
    where
        F: Fn(&'s Node) -> Fut,
        Fut: Future<Output = Result<T, VaultError>>,
    {
        let n = self.nodes.len();
        let start = self.active.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let node = &self.nodes[idx];
            match op(node).await {
                Ok(v) => {
                    if idx != start {
                        self.active.store(idx, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Err(err) if err.is_retryable() && i + 1 < n => {
                    tracing::warn!(address = %node.address, error = %err, "vault node failed; trying the next address");
                    last = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or(VaultError::Unavailable {
            address: String::new(),
            reason: "no address configured".into(),
        }))
    }

    /// Read the current version's data and metadata in one round trip.
    pub async fn read(&self, kv: &KvPath) -> Result<SecretVersion, VaultError> {
        self.read_at(kv, None).await
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
    pub async fn read_json(
        &self,
        kv: &KvPath,
    ) -> Result<Option<(serde_json::Value, u64)>, VaultError> {
        match self.read_value_at(kv, None).await {
            Ok((v, version, _)) => Ok(Some((v, version))),
            Err(VaultError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn read_value_at(
        &self,
        kv: &KvPath,
        version: Option<u64>,
    ) -> Result<(serde_json::Value, u64, DateTime<Utc>), VaultError> {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let shown = kv.to_string();
        let resp = self
            .call(&shown, |c: Arc<VaultClient>| async move {
                let endpoint = ReadSecretRequest::builder()
                    .mount(kv.mount.as_str())
                    .path(kv.path.as_str())
                    .version(version)
                    .build()
                    .expect("all fields set");
                vaultrs::api::exec_with_result(&*c, endpoint).await
            })
            .await?;
        let created = parse_time(&resp.metadata.created_time, &shown)?;
        Ok((resp.data, resp.metadata.version, created))
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
    /// (0: the secret must not exist yet). Returns the new version.
    pub async fn write_cas(
        &self,
        kv: &KvPath,
        data: &SecretFields,
        expected_version: u64,
    ) -> Result<u64, VaultError> {
        self.write_json_cas(kv, &data.to_json(), expected_version)
            .await
    }

    /// Check-and-set write of a JSON object (the daemon's own records).
    pub async fn write_json_cas(
        &self,
        kv: &KvPath,
        body: &serde_json::Value,
        expected_version: u64,
    ) -> Result<u64, VaultError> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let cas = u32::try_from(expected_version).map_err(|_| VaultError::Other {
            path: kv.to_string(),
            status: None,
            message: format!("version {expected_version} is out of range for check-and-set"),
        })?;
        let meta = self
            .call(&kv.to_string(), |c: Arc<VaultClient>| async move {
                vaultrs::kv2::set_with_options(
                    &*c,
                    &kv.mount,
                    &kv.path,
                    body,
                    SetSecretRequestOptions { cas },
                )
                .await
            })
            .await?;
        Ok(meta.version)
    }

    /// The secret's metadata: current version, each version's created_time, custom_metadata.
    pub async fn read_metadata(&self, kv: &KvPath) -> Result<SecretMetadata, VaultError> {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let shown = kv.to_string();
        let m = self
            .call(&shown, |c: Arc<VaultClient>| async move {
                vaultrs::kv2::read_metadata(&*c, &kv.mount, &kv.path).await
            })
            .await?;
        let mut versions = HashMap::new();
        for (v, info) in m.versions {
            let Ok(v) = v.parse::<u64>() else { continue };
            versions.insert(
                v,
                VersionInfo {
                    created_time: parse_time(&info.created_time, &shown)?,
                    destroyed: info.destroyed,
                    deleted: !info.deletion_time.is_empty(),
                },
            );
        }
        Ok(SecretMetadata {
            current_version: m.current_version,
            versions,
            custom_metadata: m.custom_metadata.unwrap_or_default(),
        })
    }

    /// Replace the secret's custom_metadata (Vault has no CAS here: an index for humans only).
    pub async fn set_custom_metadata(
        &self,
        kv: &KvPath,
        custom: HashMap<String, String>,
    ) -> Result<(), VaultError> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let custom = &custom;
        self.call(&kv.to_string(), |c: Arc<VaultClient>| async move {
            let mut opts = SetSecretMetadataRequest::builder();
            opts.custom_metadata(custom.clone());
            vaultrs::kv2::set_metadata(&*c, &kv.mount, &kv.path, Some(&mut opts)).await
        })
        .await
    }

    /// Permanently destroy the given versions' data.
    pub async fn destroy_versions(&self, kv: &KvPath, versions: &[u64]) -> Result<(), VaultError> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.call(&kv.to_string(), |c: Arc<VaultClient>| async move {
            vaultrs::kv2::destroy_versions(&*c, &kv.mount, &kv.path, versions.to_vec()).await
        })
        .await
    }

    /// Keys under a folder (names ending in `/` are folders); empty when there is none.
    pub async fn list(&self, mount: &str, path: &str) -> Result<Vec<String>, VaultError> {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        match self
            .call(
                &format!("{mount}/{path}"),
                |c: Arc<VaultClient>| async move { vaultrs::kv2::list(&*c, mount, path).await },
            )
            .await
        {
            Ok(keys) => Ok(keys),
            Err(VaultError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Point every node's client at a new token.
    async fn set_token(&self, token: SecretString) {
        for node in &self.nodes {
            let mut settings = node.client().settings.clone();
            settings.token = token.expose_secret().to_string();
            match VaultClient::new(settings) {
                Ok(c) => *node.client.write().expect("client lock poisoned") = Arc::new(c),
                Err(e) => {
                    tracing::error!(address = %node.address, error = %error_chain(&e), "cannot rebuild the vault client")
                }
            }
        }
        *self.token.write().expect("token lock poisoned") = token;
    }

    /// The current token, for raw calls.
    fn current_token(&self) -> SecretString {
        self.token.read().expect("token lock poisoned").clone()
    }

    /// A raw JSON call for endpoints vaultrs does not model; same error classification.
    async fn raw(
        &self,
        method: reqwest::Method,
        api_path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, VaultError> {
        let (method, body) = (&method, &body);
        self.over_nodes(move |node: &Node| async move {
            let url = format!("{}/v1/{}", node.address, api_path);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("X-Vault-Token", self.current_token().expose_secret())
                .header("X-Vault-Request", "true");
            if let Some(ns) = &self.namespace {
                req = req.header("X-Vault-Namespace", ns);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| VaultError::Unavailable {
                address: node.address.clone(),
                reason: error_chain(&e.without_url()),
            })?;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let value: serde_json::Value =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            if (200..300).contains(&status) {
                return Ok(value);
            }
            let errors: Vec<String> = value
                .get("errors")
                .and_then(|e| e.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Err(classify_status(status, &errors, api_path, &node.address))
        })
        .await
    }
}

fn build_client(cfg: &VaultConfig, address: &str, token: &str) -> Result<VaultClient, VaultError> {
    let mut settings = VaultClientSettingsBuilder::default();
    settings
        .address(address)
        .token(token)
        .timeout(Some(cfg.request_timeout))
        // Set explicitly: the builder's defaults read VAULT_SKIP_VERIFY / VAULT_CACERT.
        .verify(true)
        .ca_certs(
            cfg.ca_file
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        );
    if let Some(ns) = &cfg.namespace {
        settings.namespace(Some(ns.clone()));
    }
    let settings = settings.build().map_err(|e| VaultError::Other {
        path: address.to_string(),
        status: None,
        message: format!("bad Vault client settings: {e}"),
    })?;
    VaultClient::new(settings).map_err(|e| VaultError::Other {
        path: address.to_string(),
        status: None,
        message: error_chain(&e),
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
