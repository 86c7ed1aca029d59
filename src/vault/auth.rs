//! How the daemon logs in to Vault and keeps its token alive.
//!
//! Invariant: a token or secret-id is held only in `SecretString`s and never logged; renewal runs
//! at about 2/3 of the token's TTL, and when a token cannot be renewed (or nears its max TTL) the
//! daemon logs in again where it can (AppRole).

use std::path::{Path, PathBuf};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::http::{Request, Resend};
use super::{Vault, VaultError};
use crate::config::{RoleId, VaultAuth};
use crate::egress::error_chain;

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

/// How long a failed renewal or re-login is retried before the daemon reports it and waits
/// for the next check: long enough to ride out a Vault outage of several minutes.
const REFRESH_BUDGET: Duration = Duration::from_secs(15 * 60);
/// How long the first token lookup is retried.
const LOOKUP_BUDGET: Duration = Duration::from_secs(60);
/// When retries ran out: the next check this far away.
const RECHECK: u64 = 60;

/// Capped exponential backoff with jitter, budgeted by total time rather than tries.
pub(super) fn backoff(budget: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .with_total_delay(Some(budget))
}

impl Vault {
    /// AppRole login; every later request uses the new token. A no-op for token auth.
    pub async fn log_in(&self) -> Result<(), VaultError> {
        #[derive(Deserialize)]
        struct Answer {
            auth: Auth,
        }
        #[derive(Deserialize)]
        struct Auth {
            client_token: String,
            #[serde(default)]
            lease_duration: u64,
        }
        let Login::AppRole {
            mount,
            role_id,
            secret_id,
        } = &self.login
        else {
            return Ok(());
        };
        let api_path = format!("auth/{mount}/login");
        let body =
            serde_json::json!({ "role_id": role_id, "secret_id": secret_id.expose_secret() });
        let answer = self
            .send(Request {
                method: Method::POST,
                api_path: &api_path,
                shown: &api_path,
                body: Some(&body),
                count: Some(&self.stats.logins),
                // A login may spend one of the secret-id's uses.
                resend: Resend::Once,
                slow: false,
            })
            .await
            .map_err(|e| match e {
                e if e.is_retryable() => e,
                other => VaultError::Login {
                    reason: other.to_string(),
                },
            })?;
        let answer: Answer = serde_json::from_value(answer).map_err(|_| VaultError::Login {
            reason: format!("{api_path}: the answer holds no token"),
        })?;
        tracing::info!(mount = %mount, ttl_s = answer.auth.lease_duration, "logged in to vault with approle");
        self.set_token(SecretString::from(answer.auth.client_token));
        Ok(())
    }

    pub async fn token_ttl(&self) -> Result<TokenTtl, VaultError> {
        #[derive(Deserialize)]
        struct Data {
            #[serde(default)]
            ttl: u64,
            #[serde(default)]
            renewable: Option<bool>,
        }
        let path = "auth/token/lookup-self";
        let answer = self
            .send(Request {
                method: Method::GET,
                api_path: path,
                shown: path,
                body: None,
                count: None,
                resend: Resend::Always,
                slow: false,
            })
            .await?;
        let data: Data = super::data_of(answer, path)?;
        Ok(TokenTtl {
            ttl: data.ttl,
            renewable: data.renewable.unwrap_or(false),
        })
    }

    /// Renew the token once; returns the new TTL in seconds.
    pub async fn renew_token(&self) -> Result<u64, VaultError> {
        let path = "auth/token/renew-self";
        let answer = self
            .send(Request {
                method: Method::POST,
                api_path: path,
                shown: path,
                body: None,
                count: Some(&self.stats.renewals),
                resend: Resend::Always,
                slow: false,
            })
            .await?;
        answer
            .pointer("/auth/lease_duration")
            .and_then(|d| d.as_u64())
            .ok_or_else(|| VaultError::Other {
                path: path.to_string(),
                status: None,
                message: "the answer holds no lease_duration".into(),
            })
    }

    /// Keep the token alive until the task is dropped: renew at 2/3 of the TTL; when renewal
    /// fails or the max TTL is near, log in again (AppRole); with a non-renewable static token,
    /// warn and keep checking. A failure Vault may recover from (unavailable, sealed) is retried
    /// with capped, jittered exponential backoff for up to [`REFRESH_BUDGET`]. Returns only when
    /// the token never expires.
    pub async fn maintain_token(&self) {
        let first = (|| self.token_ttl())
            .retry(backoff(LOOKUP_BUDGET))
            .when(VaultError::is_retryable)
            .notify(|e, wait| tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "cannot look up the vault token; retrying"))
            .await;
        let mut ttl = match first {
            Ok(t) if t.ttl == 0 => return,
            Ok(t) => t.ttl,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up the vault token; trying to renew it in 10s");
                10
            }
        };
        loop {
            tokio::time::sleep(renewal_delay(ttl)).await;
            let full = ttl;
            let refreshed = (|| self.refresh(full))
                .retry(backoff(REFRESH_BUDGET))
                .when(VaultError::is_retryable)
                .notify(|e, wait| tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "cannot refresh the vault token; retrying"))
                .await;
            ttl = match refreshed {
                Ok(new) => new.max(1),
                Err(e) if self.can_log_in() => {
                    tracing::error!(error = %error_chain(&e), "cannot renew the vault token or log in again; checking again in {RECHECK}s");
                    RECHECK
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot renew the vault token and cannot log in again (token auth); the daemon will stop working when it expires");
                    full.max(10)
                }
            };
        }
    }

    /// One refresh: renew the token, or log in afresh (AppRole) when renewal fails or is capped
    /// well below what the token had (its max TTL is near). Returns the new TTL in seconds.
    async fn refresh(&self, full: u64) -> Result<u64, VaultError> {
        match self.renew_token().await {
            Ok(new) if new * 2 < full && self.can_log_in() => self.relogin(full).await,
            Ok(new) => {
                tracing::debug!(ttl_s = new, "renewed the vault token");
                Ok(new)
            }
            Err(e) if self.can_log_in() => {
                tracing::info!(error = %e, "cannot renew the vault token; logging in again");
                self.relogin(full).await
            }
            Err(e) => Err(e),
        }
    }

    fn can_log_in(&self) -> bool {
        matches!(self.login, Login::AppRole { .. })
    }

    /// Log in again; the new token's TTL (or `fallback` when it cannot be looked up).
    async fn relogin(&self, fallback: u64) -> Result<u64, VaultError> {
        self.log_in().await?;
        Ok(match self.token_ttl().await {
            Ok(t) => t.ttl,
            Err(_) => fallback,
        })
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
    fn token_refresh_backs_off_with_jitter_within_a_time_budget() {
        use backon::BackoffBuilder;
        let budget = Duration::from_secs(600);
        let run = || backoff(budget).build().collect::<Vec<Duration>>();
        let (a, b) = (run(), run());
        for delays in [&a, &b] {
            let total: Duration = delays.iter().sum();
            assert!(total <= budget, "{total:?}");
            assert!(
                total >= budget - Duration::from_secs(60),
                "the budget is used: {total:?}"
            );
            assert!(delays[0] >= Duration::from_millis(500) && delays[0] < Duration::from_secs(1));
            // Capped at 30 s, plus at most as much jitter.
            assert!(delays.iter().all(|d| *d <= Duration::from_secs(60)));
        }
        assert_ne!(a, b, "jitter spreads retries apart");
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
