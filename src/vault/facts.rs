//! What a preflight asks Vault beyond the secrets: the engine behind a mount, the token's
//! capabilities on paths, and the token itself.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::json;

use super::http::Resend;
use super::{Vault, VaultError};

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
}
