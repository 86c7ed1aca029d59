//! AppRole secret-ids: what the `vault_approle_secret_id` provider asks of Vault.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::http::Resend;
use super::{Vault, VaultError};

/// Options for a new secret-id.
#[derive(Debug, Clone, Default)]
pub struct SecretIdOptions {
    pub ttl: Option<Duration>,
    pub num_uses: Option<u32>,
    /// Key/value metadata attached to the secret-id (the attempt id, for tracing orphans).
    pub metadata: Vec<(String, String)>,
}

/// A freshly generated secret-id and its accessor (the handle used to revoke it).
#[derive(Debug)]
pub struct GeneratedSecretId {
    pub secret_id: SecretString,
    pub accessor: String,
    /// The lifetime Vault gave it; `None` when it never expires.
    pub ttl: Option<Duration>,
}

/// What `secret-id/lookup` says of an existing secret-id. A secret-id whose uses ran out is
/// deleted by Vault, so one that exists has uses left.
#[derive(Debug, Clone)]
pub struct SecretIdInfo {
    pub accessor: String,
    /// `None` when it never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Logins left; 0 means unlimited.
    pub uses_left: u64,
}

impl SecretIdInfo {
    /// It exists, and has not expired at `now`.
    pub fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

impl Vault {
    pub async fn approle_role_id(&self, mount: &str, role: &str) -> Result<String, VaultError> {
        let v = self
            .raw(
                reqwest::Method::GET,
                &format!("auth/{mount}/role/{role}/role-id"),
                None,
                Resend::Always,
            )
            .await?;
        v.pointer("/data/role_id")
            .and_then(|r| r.as_str())
            .map(str::to_string)
            .ok_or_else(|| VaultError::Other {
                path: format!("auth/{mount}/role/{role}/role-id"),
                status: None,
                message: "answer has no role_id".into(),
            })
    }

    pub async fn approle_generate_secret_id(
        &self,
        mount: &str,
        role: &str,
        opts: &SecretIdOptions,
    ) -> Result<GeneratedSecretId, VaultError> {
        let path = format!("auth/{mount}/role/{role}/secret-id");
        let mut body = serde_json::Map::new();
        if let Some(ttl) = opts.ttl {
            body.insert("ttl".into(), format!("{}s", ttl.as_secs()).into());
        }
        if let Some(uses) = opts.num_uses {
            body.insert("num_uses".into(), uses.into());
        }
        if !opts.metadata.is_empty() {
            let meta: serde_json::Map<String, serde_json::Value> = opts
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            body.insert(
                "metadata".into(),
                serde_json::Value::Object(meta).to_string().into(),
            );
        }
        let v = self
            .raw(
                reqwest::Method::POST,
                &path,
                Some(body.into()),
                Resend::Once,
            )
            .await?;
        let field = |name: &str| {
            v.pointer(&format!("/data/{name}"))
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| VaultError::Other {
                    path: path.clone(),
                    status: None,
                    message: format!("answer has no {name}"),
                })
        };
        let ttl = v
            .pointer("/data/secret_id_ttl")
            .and_then(|t| t.as_u64())
            .filter(|t| *t > 0)
            .map(Duration::from_secs);
        Ok(GeneratedSecretId {
            secret_id: SecretString::from(field("secret_id")?),
            accessor: field("secret_id_accessor")?,
            ttl,
        })
    }

    /// The role's own `secret_id_ttl`; `None` when the role lets secret-ids live forever.
    pub async fn approle_role_secret_id_ttl(
        &self,
        mount: &str,
        role: &str,
    ) -> Result<Option<Duration>, VaultError> {
        let path = format!("auth/{mount}/role/{role}/secret-id-ttl");
        let v = self
            .raw(reqwest::Method::GET, &path, None, Resend::Always)
            .await?;
        let ttl = v
            .pointer("/data/secret_id_ttl")
            .and_then(|t| t.as_u64())
            .ok_or_else(|| VaultError::Other {
                path: path.clone(),
                status: None,
                message: "answer has no secret_id_ttl".into(),
            })?;
        Ok((ttl > 0).then(|| Duration::from_secs(ttl)))
    }

    /// Look a secret-id up without logging in (no use is spent). `None`: Vault does not know it
    /// for this role (revoked, expired and tidied, used up, or never issued).
    pub async fn approle_lookup_secret_id(
        &self,
        mount: &str,
        role: &str,
        secret_id: &SecretString,
    ) -> Result<Option<SecretIdInfo>, VaultError> {
        let path = format!("auth/{mount}/role/{role}/secret-id/lookup");
        let body = serde_json::json!({ "secret_id": secret_id.expose_secret() });
        let v = match self
            .raw(reqwest::Method::POST, &path, Some(body), Resend::Always)
            .await
        {
            Ok(v) => v,
            Err(VaultError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // OpenBao answers an unknown secret-id with 204 No Content.
        let Some(data) = v.get("data").filter(|d| d.is_object()) else {
            return Ok(None);
        };
        let bad = |what: &str| VaultError::Other {
            path: path.clone(),
            status: None,
            message: format!("answer has no {what}"),
        };
        let accessor = data
            .get("secret_id_accessor")
            .and_then(|a| a.as_str())
            .ok_or_else(|| bad("secret_id_accessor"))?
            .to_string();
        let expiration = data
            .get("expiration_time")
            .and_then(|t| t.as_str())
            .ok_or_else(|| bad("expiration_time"))?;
        let expires_at = DateTime::parse_from_rfc3339(expiration)
            .map_err(|_| bad("valid expiration_time"))?
            .with_timezone(&Utc);
        Ok(Some(SecretIdInfo {
            accessor,
            // Vault writes the zero time (year 1) for "never".
            expires_at: (expires_at.timestamp() > 0).then_some(expires_at),
            uses_left: data
                .get("secret_id_num_uses")
                .and_then(|n| n.as_u64())
                .unwrap_or(0),
        }))
    }

    /// Destroy a secret-id by its accessor. Already gone is success (idempotent).
    pub async fn approle_destroy_secret_id(
        &self,
        mount: &str,
        role: &str,
        accessor: &str,
    ) -> Result<(), VaultError> {
        self.accessor_call(mount, role, "destroy", accessor)
            .await
            .map(|_| ())
    }

    /// The accessors of the role's secret-ids (`LIST auth/{mount}/role/{role}/secret-id`);
    /// empty when it has none (Vault answers 404).
    pub async fn approle_list_accessors(
        &self,
        mount: &str,
        role: &str,
    ) -> Result<Vec<String>, VaultError> {
        let path = format!("auth/{mount}/role/{role}/secret-id");
        let list = reqwest::Method::from_bytes(b"LIST").expect("a valid method");
        let v = match self.raw(list, &path, None, Resend::Always).await {
            Ok(v) => v,
            Err(VaultError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(v.pointer("/data/keys")
            .and_then(|k| k.as_array())
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The metadata of the secret-id with this accessor (`None`: Vault does not know it).
    pub async fn approle_accessor_metadata(
        &self,
        mount: &str,
        role: &str,
        accessor: &str,
    ) -> Result<Option<Vec<(String, String)>>, VaultError> {
        let Some(answer) = self.accessor_call(mount, role, "lookup", accessor).await? else {
            return Ok(None);
        };
        let Some(data) = answer.get("data").filter(|d| d.is_object()) else {
            return Ok(None);
        };
        let metadata = data
            .get("metadata")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(metadata))
    }

    /// Does a secret-id with this accessor still exist?
    pub async fn approle_secret_id_exists(
        &self,
        mount: &str,
        role: &str,
        accessor: &str,
    ) -> Result<bool, VaultError> {
        let answer = self.accessor_call(mount, role, "lookup", accessor).await?;
        Ok(answer.is_some_and(|v| v.get("data").is_some_and(|d| !d.is_null())))
    }

    /// `POST auth/{mount}/role/{role}/secret-id-accessor/{action}`; `None` when the accessor is
    /// unknown. OpenBao answers an unknown accessor with 404, or (older versions) with 500
    /// "failed to find accessor entry", which a write reports as an unknown outcome.
    async fn accessor_call(
        &self,
        mount: &str,
        role: &str,
        action: &str,
        accessor: &str,
    ) -> Result<Option<serde_json::Value>, VaultError> {
        let path = format!("auth/{mount}/role/{role}/secret-id-accessor/{action}");
        let body = serde_json::json!({ "secret_id_accessor": accessor });
        match self
            .raw(reqwest::Method::POST, &path, Some(body), Resend::Always)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(VaultError::NotFound { .. }) => Ok(None),
            Err(
                VaultError::Unavailable { reason, .. } | VaultError::OutcomeUnknown { reason, .. },
            ) if reason.contains("failed to find") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Try an AppRole login with these credentials, without using the token it returns beyond
    /// revoking it. `Ok(true)`: accepted; `Ok(false)`: rejected (400/403 invalid secret id).
    pub async fn approle_try_login(
        &self,
        mount: &str,
        role_id: &str,
        secret_id: &SecretString,
    ) -> Result<bool, VaultError> {
        let path = format!("auth/{mount}/login");
        match self
            .raw(
                reqwest::Method::POST,
                &path,
                Some(serde_json::json!({ "role_id": role_id, "secret_id": secret_id.expose_secret() })),
                // Each login spends one of the secret-id's uses.
                Resend::Once,
            )
            .await
        {
            Ok(v) => {
                // Do not leave a token behind that nobody holds.
                if let Some(token) = v.pointer("/auth/client_token").and_then(|t| t.as_str()) {
                    let _ = self
                        .raw(
                            reqwest::Method::POST,
                            "auth/token/revoke",
                            Some(serde_json::json!({ "token": token })),
                            Resend::Always,
                        )
                        .await;
                }
                Ok(true)
            }
            Err(VaultError::PermissionDenied { .. }) => Ok(false),
            Err(VaultError::Other {
                status: Some(400), ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
