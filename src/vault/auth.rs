//! How the daemon logs in to Vault and keeps its token alive.
//!
//! Invariant: a token or secret-id is held only in `SecretString`s and never logged; renewal runs
//! at about 2/3 of the token's TTL, and when a token cannot be renewed (or nears its max TTL) the
//! daemon logs in again where it can (AppRole).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{error_chain, Vault, VaultError};
use crate::config::{RoleId, VaultAuth};

/// What the daemon logs in with, resolved from the config (files and environment read).
#[derive(Clone)]
pub enum Login {
    Token(SecretString),
    AppRole {
        mount: String,
        role_id: String,
        secret_id: SecretString,
    },
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::Token(_) => f.write_str("Login::Token([REDACTED])"),
            Login::AppRole { mount, role_id, .. } => f
                .debug_struct("Login::AppRole")
                .field("mount", mount)
                .field("role_id", role_id)
                .field("secret_id", &"[REDACTED]")
                .finish(),
        }
    }
}

/// Read the token or AppRole secrets named by the config. `var` looks up environment variables
/// (`VAULT_TOKEN`, `CREDENTIALS_DIRECTORY`).
pub fn resolve_login(
    auth: &VaultAuth,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Login, VaultError> {
    match auth {
        VaultAuth::TokenEnv => match var("VAULT_TOKEN") {
            Some(t) if !t.trim().is_empty() => {
                Ok(Login::Token(SecretString::from(t.trim().to_string())))
            }
            _ => Err(VaultError::Login {
                reason: "vault.auth.method = \"token\" but VAULT_TOKEN is not set".into(),
            }),
        },
        VaultAuth::TokenFile { path } => {
            let path = resolve_credential_path(path, var);
            Ok(Login::Token(read_secret_file(&path)?))
        }
        VaultAuth::AppRole {
            mount,
            role_id,
            secret_id_file,
        } => {
            let role_id = match role_id {
                RoleId::Inline(r) => r.clone(),
                RoleId::File(p) => read_secret_file(&resolve_credential_path(p, var))?
                    .expose_secret()
                    .to_string(),
            };
            let secret_id = read_secret_file(&resolve_credential_path(secret_id_file, var))?;
            Ok(Login::AppRole {
                mount: mount.clone(),
                role_id,
                secret_id,
            })
        }
    }
}

/// A relative path is a systemd credential name under `$CREDENTIALS_DIRECTORY`.
fn resolve_credential_path(path: &Path, var: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if path.is_relative() {
        if let Some(dir) = var("CREDENTIALS_DIRECTORY") {
            return Path::new(&dir).join(path);
        }
    }
    path.to_path_buf()
}

fn read_secret_file(path: &Path) -> Result<SecretString, VaultError> {
    let text = std::fs::read_to_string(path).map_err(|e| VaultError::Login {
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(VaultError::Login {
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(SecretString::from(trimmed.to_string()))
}

/// What `auth/token/lookup-self` says of the daemon's token.
#[derive(Debug, Clone, Copy)]
pub struct TokenTtl {
    /// Seconds left; 0 means the token never expires (root or a periodic token without TTL).
    pub ttl: u64,
    pub renewable: bool,
}

/// When to renew a token with `ttl` seconds left: at about 2/3 of it, at least a second away.
pub fn renewal_delay(ttl: u64) -> Duration {
    Duration::from_millis((ttl * 1000 * 2 / 3).max(1000))
}

impl Vault {
    /// AppRole login; replaces the token of every node's client. A no-op for token auth.
    pub async fn log_in(&self) -> Result<(), VaultError> {
        let Login::AppRole {
            mount,
            role_id,
            secret_id,
        } = &self.login
        else {
            return Ok(());
        };
        let auth = self
            .call(
                &format!("auth/{mount}/login"),
                |c: std::sync::Arc<vaultrs::client::VaultClient>| async move {
                    vaultrs::auth::approle::login(&*c, mount, role_id, secret_id.expose_secret())
                        .await
                },
            )
            .await
            .map_err(|e| match e {
                e @ (VaultError::Sealed { .. } | VaultError::Unavailable { .. }) => e,
                other => VaultError::Login {
                    reason: other.to_string(),
                },
            })?;
        self.stats.logins.fetch_add(1, Ordering::Relaxed);
        tracing::info!(mount = %mount, ttl_s = auth.lease_duration, "logged in to vault with approle");
        self.set_token(SecretString::from(auth.client_token)).await;
        Ok(())
    }

    pub async fn token_ttl(&self) -> Result<TokenTtl, VaultError> {
        let info = self
            .call(
                "auth/token/lookup-self",
                |c: std::sync::Arc<vaultrs::client::VaultClient>| async move {
                    vaultrs::token::lookup_self(&*c).await
                },
            )
            .await?;
        Ok(TokenTtl {
            ttl: info.ttl,
            renewable: info.renewable.unwrap_or(false),
        })
    }

    /// Renew the token once; returns the new TTL in seconds.
    pub async fn renew_token(&self) -> Result<u64, VaultError> {
        let auth = self
            .call(
                "auth/token/renew-self",
                |c: std::sync::Arc<vaultrs::client::VaultClient>| async move {
                    vaultrs::token::renew_self(&*c, None).await
                },
            )
            .await?;
        self.stats.renewals.fetch_add(1, Ordering::Relaxed);
        Ok(auth.lease_duration)
    }

    /// Keep the token alive until the task is dropped: renew at 2/3 of the TTL; when renewal
    /// fails or the max TTL is near, log in again (AppRole); with a non-renewable static token,
    /// warn and keep checking. Returns only when the token never expires.
    pub async fn maintain_token(&self) {
        let mut ttl = match self.token_ttl().await {
            Ok(t) if t.ttl == 0 => return,
            Ok(t) => t.ttl,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up the vault token; retrying in 10s");
                10
            }
        };
        loop {
            tokio::time::sleep(renewal_delay(ttl)).await;
            let full = ttl;
            ttl = match self.renew_token().await {
                // Renewal capped well below what we had: the max TTL is near, log in afresh.
                Ok(new) if new * 2 < full && self.can_log_in() => self.relogin_ttl(full).await,
                Ok(new) => {
                    tracing::debug!(ttl_s = new, "renewed the vault token");
                    new.max(1)
                }
                Err(e) if self.can_log_in() => {
                    tracing::info!(error = %e, "cannot renew the vault token; logging in again");
                    self.relogin_ttl(full).await
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot renew the vault token and cannot log in again (token auth); the daemon will stop working when it expires");
                    full.max(10)
                }
            };
        }
    }

    fn can_log_in(&self) -> bool {
        matches!(self.login, Login::AppRole { .. })
    }

    async fn relogin_ttl(&self, fallback: u64) -> u64 {
        match self.log_in().await {
            Ok(()) => match self.token_ttl().await {
                Ok(t) => t.ttl.max(1),
                Err(_) => fallback.max(1),
            },
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "vault login failed; retrying");
                5
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_two_thirds_of_the_ttl() {
        let cases = [
            (3, 2000),
            (30, 20_000),
            (3600, 2_400_000),
            (0, 1000),
            (1, 1000),
        ];
        for (ttl, ms) in cases {
            assert_eq!(renewal_delay(ttl), Duration::from_millis(ms), "ttl {ttl}");
        }
    }

    #[test]
    fn relative_files_live_in_the_credentials_directory() {
        let env =
            |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| "/run/credentials/x".to_string());
        assert_eq!(
            resolve_credential_path(Path::new("secret-id"), &env),
            PathBuf::from("/run/credentials/x/secret-id")
        );
        assert_eq!(
            resolve_credential_path(Path::new("/etc/a"), &env),
            PathBuf::from("/etc/a")
        );
    }

    #[test]
    fn login_debug_is_redacted() {
        let l = Login::AppRole {
            mount: "approle".into(),
            role_id: "rid".into(),
            secret_id: SecretString::from("s3cr3t".to_string()),
        };
        assert!(!format!("{l:?}").contains("s3cr3t"));
        assert!(
            !format!("{:?}", Login::Token(SecretString::from("t0k".to_string()))).contains("t0k")
        );
    }
}
