//! `vault_approle_secret_id`: secret-ids of an AppRole role, minted and destroyed through the
//! daemon's own Vault login.
//!
//! Secret fields: `role_id`, `secret_id`, `secret_id_accessor`. The accessor is the handle used
//! to destroy a secret-id without sending the secret-id itself.

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;

use super::{MintRequest, Minted, Mode, Provider, ProviderError, ProviderInfo};
use crate::config::AppRoleSecretIdConfig;
use crate::secret::SecretFields;
use crate::vault::{SecretIdOptions, Vault, VaultError};

pub struct AppRoleProvider {
    cfg: AppRoleSecretIdConfig,
    vault: Arc<Vault>,
}

impl AppRoleProvider {
    pub fn new(cfg: AppRoleSecretIdConfig, vault: Arc<Vault>) -> Self {
        AppRoleProvider { cfg, vault }
    }

    /// A zero TTL means "the role's default" to Vault; treat it as not set.
    fn ttl(&self) -> Option<std::time::Duration> {
        self.cfg.secret_id_ttl.filter(|t| !t.is_zero())
    }

    fn what(&self) -> String {
        format!("approle {}/{}", self.cfg.mount, self.cfg.role_name)
    }

    /// The role-id to log in with: the one stored with the secret-id, else the role's own (a
    /// secret adopted by hand may hold only the secret-id).
    async fn role_id_for(&self, secret: &SecretFields) -> Result<String, ProviderError> {
        if let Some(r) = secret.expose("role_id").filter(|r| !r.is_empty()) {
            return Ok(r.to_string());
        }
        self.vault
            .approle_role_id(&self.cfg.mount, &self.cfg.role_name)
            .await
            .map_err(|e| self.map_err(e, Op::Other))
    }

    /// Classify a Vault error for the rotation driver. The Vault error names a path and a
    /// status, never a secret value, so its text is safe to carry.
    fn map_err(&self, err: VaultError, op: Op) -> ProviderError {
        let reason = format!("{}: {err}", self.what());
        match err {
            // A transport failure after the generate request may have gone out: Vault may
            // have created a secret-id that nobody holds. A refused connection never reached it.
            VaultError::Unavailable { reason: ref r, .. }
                if op == Op::Generate && !r.starts_with("status ") && !is_connect_failure(r) =>
            {
                ProviderError::UnknownOutcome { reason }
            }
            e if e.is_retryable() => ProviderError::Transient {
                reason,
                retry_after: None,
            },
            // PermissionDenied (the daemon's own token lacks a policy), NotFound (no such role)
            // and the rest: nothing a retry or another secret-id fixes. A refused login is not
            // an error here: approle_try_login answers it as Ok(false).
            _ => ProviderError::Config { reason },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Generate,
    Other,
}

/// reqwest/hyper describe a refused or failed connect as "tcp connect error" / "Connection
/// refused" / "dns error": the request was never sent.
fn is_connect_failure(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("connect error")
        || r.contains("connection refused")
        || r.contains("dns error")
        || r.contains("(connect)")
}

fn field<'a>(secret: &'a SecretFields, name: &str) -> Result<&'a str, ProviderError> {
    secret
        .expose(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ProviderError::Config {
            reason: format!("the secret has no `{name}` field"),
        })
}

#[async_trait]
impl Provider for AppRoleProvider {
    fn required_fields(&self) -> &'static [&'static str] {
        &["secret_id"]
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            mode: Mode::Automatic,
            credentials_expire: self.ttl().is_some(),
            async_revocation: false,
        }
    }

    async fn mint(&self, req: &MintRequest) -> Result<Minted, ProviderError> {
        let role_id = self
            .vault
            .approle_role_id(&self.cfg.mount, &self.cfg.role_name)
            .await
            .map_err(|e| self.map_err(e, Op::Other))?;
        let opts = SecretIdOptions {
            ttl: self.ttl(),
            // verify() logs in once with the new secret-id, which spends one use: add it so the
            // dependent still gets the number of uses configured. 0 means unlimited.
            num_uses: self
                .cfg
                .secret_id_num_uses
                .map(|n| if n == 0 { 0 } else { n.saturating_add(1) }),
            metadata: vec![("rotation_attempt".to_string(), req.attempt_id.clone())],
        };
        let generated = self
            .vault
            .approle_generate_secret_id(&self.cfg.mount, &self.cfg.role_name, &opts)
            .await
            .map_err(|e| self.map_err(e, Op::Generate))?;
        let mut secret = SecretFields::new();
        secret.insert("role_id", role_id);
        secret.insert(
            "secret_id",
            secrecy::ExposeSecret::expose_secret(&generated.secret_id).to_string(),
        );
        secret.insert("secret_id_accessor", generated.accessor);
        let expires_at = self
            .ttl()
            .and_then(|t| chrono::Duration::from_std(t).ok())
            .map(|t| req.now + t);
        Ok(Minted { secret, expires_at })
    }

    async fn verify(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let role_id = self.role_id_for(secret).await?;
        let secret_id = SecretString::from(field(secret, "secret_id")?.to_string());
        let accepted = self
            .vault
            .approle_try_login(&self.cfg.mount, &role_id, &secret_id)
            .await
            .map_err(|e| self.map_err(e, Op::Other))?;
        if accepted {
            Ok(())
        } else {
            Err(ProviderError::Rejected {
                reason: format!("{}: login with the secret-id was refused", self.what()),
            })
        }
    }

    async fn revoke(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let accessor = field(secret, "secret_id_accessor")?;
        // Destroying an accessor that is already gone succeeds (the Vault client says so).
        match self
            .vault
            .approle_destroy_secret_id(&self.cfg.mount, &self.cfg.role_name, accessor)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(self.map_err(e, Op::Other)),
        }
    }

    async fn verify_revoked(&self, secret: &SecretFields) -> Result<bool, ProviderError> {
        match self.verify(secret).await {
            Ok(()) => return Ok(false),
            Err(ProviderError::Rejected { .. }) => {}
            Err(e) => return Err(e),
        }
        // A refused login could also mean the uses ran out; the accessor lookup says whether the
        // secret-id itself is gone. A hand-written secret may have no accessor: login is all we
        // can check then.
        let Some(accessor) = secret
            .expose("secret_id_accessor")
            .filter(|a| !a.is_empty())
        else {
            return Ok(true);
        };
        let exists = self
            .vault
            .approle_secret_id_exists(&self.cfg.mount, &self.cfg.role_name, accessor)
            .await
            .map_err(|e| self.map_err(e, Op::Other))?;
        Ok(!exists)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_told_apart_from_timeouts() {
        let cases = [
            ("error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)", true),
            ("error sending request: operation timed out", false),
            ("error sending request: connection closed before message completed", false),
        ];
        for (reason, connect) in cases {
            assert_eq!(is_connect_failure(reason), connect, "{reason}");
        }
    }
}
