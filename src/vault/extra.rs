//! What the engine asks of Vault beyond reading and writing secrets: the facts a preflight
//! checks (mount type, the token's capabilities, the token itself), the version check-and-set
//! compares against when the latest version is soft-deleted, and the record's `max_versions`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{json, Value};

use super::http::Resend;
use super::{SecretVersion, Vault, VaultError};

/// How often a secret that reads as missing, while its metadata says it is there, is read again.
const READ_AGAIN: usize = 5;
use crate::config::KvPath;

/// The secrets engine behind a mount, as `sys/internal/ui/mounts/{mount}` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountKind {
    /// "kv", "transit", ...
    pub engine: String,
    /// For "kv": "1" or "2".
    pub version: Option<String>,
}

impl MountKind {
    pub fn is_kv2(&self) -> bool {
        self.engine == "kv" && self.version.as_deref() == Some("2")
    }

    /// How an operator would name it: "KV v1", "transit".
    pub fn describe(&self) -> String {
        match (self.engine.as_str(), self.version.as_deref()) {
            ("kv", Some(v)) => format!("KV v{v}"),
            ("kv", None) => "KV v1".into(),
            (e, _) => e.to_string(),
        }
    }
}

/// The daemon's token, as `auth/token/lookup-self` shows it (no secret).
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub display_name: String,
    pub policies: Vec<String>,
    /// Seconds left; 0 for a token that does not expire.
    pub ttl: u64,
}

impl Vault {
    /// The engine behind `mount`. `NotFound` when nothing is mounted there, or when the token
    /// may not use the mount: OpenBao answers 403 to both, so that mounts cannot be probed.
    pub async fn mount_kind(&self, mount: &str) -> Result<MountKind, VaultError> {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let path = format!("sys/internal/ui/mounts/{}", mount.trim_matches('/'));
        let v = match self.raw(Method::GET, &path, None, Resend::Always).await {
            Err(VaultError::PermissionDenied { .. }) => {
                return Err(VaultError::NotFound {
                    path: format!(
                        "{mount}/ (nothing is mounted there, or the token may not use it)"
                    ),
                })
            }
            other => other?,
        };
        let data = &v["data"];
        let engine = data["type"].as_str().unwrap_or_default().to_string();
        if engine.is_empty() {
            return Err(VaultError::NotFound {
                path: format!("{mount}/ (no secrets engine is mounted there)"),
            });
        }
        Ok(MountKind {
            engine,
            version: data["options"]["version"].as_str().map(str::to_string),
        })
    }

    /// The token's capabilities on each API path (e.g. `secret/data/app/x`).
    pub async fn capabilities_self(
        &self,
        paths: &[String],
    ) -> Result<HashMap<String, Vec<String>>, VaultError> {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let v = self
            .raw(
                Method::POST,
                "sys/capabilities-self",
                Some(json!({ "paths": paths })),
                Resend::Always,
            )
            .await?;
        let data = if v["data"].is_object() {
            &v["data"]
        } else {
            &v
        };
        Ok(paths
            .iter()
            .map(|p| {
                let caps = data[p.as_str()]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                (p.clone(), caps)
            })
            .collect())
    }

    /// The token the daemon uses. A 403 here means the token itself is invalid or expired.
    pub async fn lookup_self(&self) -> Result<TokenInfo, VaultError> {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let lookup = self.raw(Method::GET, "auth/token/lookup-self", None, Resend::Always);
        let v = match lookup.await {
            Err(VaultError::PermissionDenied { .. }) => {
                return Err(VaultError::Login {
                    reason: "Vault rejects the daemon's token: it is invalid, expired or revoked (auth/token/lookup-self answered 403; a valid token needs the default policy or read on that path)".into(),
                })
            }
            other => other?,
        };
        let d = &v["data"];
        Ok(TokenInfo {
            display_name: d["display_name"].as_str().unwrap_or_default().to_string(),
            policies: d["policies"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            ttl: d["ttl"].as_u64().unwrap_or(0),
        })
    }

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
