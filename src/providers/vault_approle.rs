//! `vault_approle_secret_id`: secret-ids of an AppRole role, minted and destroyed through the
//! daemon's own Vault login.
//!
//! Secret fields: `role_id`, `secret_id`, `secret_id_accessor`. The accessor is the handle used
//! to destroy a secret-id without sending the secret-id itself.
//!
//! Invariants: every minted secret-id expires (the configured TTL, the role's, or the planned
//! credential lifetime); verifying never logs in, so a limited-use secret-id keeps its uses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use secrecy::SecretString;

use super::{MintRequest, Minted, Mode, Provider, ProviderError, ProviderInfo};
use crate::config::AppRoleSecretIdConfig;
use crate::secret::SecretFields;
use crate::vault::{SecretIdInfo, SecretIdOptions, Vault, VaultError};

pub struct AppRoleProvider {
    cfg: AppRoleSecretIdConfig,
    vault: Arc<Vault>,
}

impl AppRoleProvider {
    pub fn new(cfg: AppRoleSecretIdConfig, vault: Arc<Vault>) -> Self {
        AppRoleProvider { cfg, vault }
    }

    /// A zero TTL means "the role's default" to Vault; treat it as not set.
    fn ttl(&self) -> Option<Duration> {
        self.cfg.secret_id_ttl.filter(|t| !t.is_zero())
    }

    fn what(&self) -> String {
        format!("approle {}/{}", self.cfg.mount, self.cfg.role_name)
    }

    /// Classify a Vault error for the rotation driver. The Vault error names a path and a
    /// status, never a secret value, so its text is safe to carry.
    fn map_err(&self, err: VaultError, op: Op) -> ProviderError {
        let reason = format!("{}: {err}", self.what());
        match err {
            // The generate request went out and its reply was lost: Vault may have created a
            // secret-id that nobody holds. (A refused connection is Unavailable: never sent.)
            VaultError::OutcomeUnknown { .. } if op == Op::Generate => {
                ProviderError::UnknownOutcome { reason }
            }
            // Every other call here is safe to repeat (lookups, destroy by accessor).
            e if e.is_retryable() => ProviderError::Transient {
                reason,
                retry_after: None,
            },
            // PermissionDenied (the daemon's own token lacks a policy), NotFound (no such role)
            // and the rest: nothing a retry or another secret-id fixes.
            _ => ProviderError::Config { reason },
        }
    }

    /// What Vault says of the secret's secret-id, without spending one of its uses.
    async fn lookup(&self, secret: &SecretFields) -> Result<Option<SecretIdInfo>, ProviderError> {
        let secret_id = SecretString::from(field(secret, "secret_id")?.to_string());
        self.vault
            .approle_lookup_secret_id(&self.cfg.mount, &self.cfg.role_name, &secret_id)
            .await
            .map_err(|e| self.map_err(e, Op::Other))
    }
}

impl AppRoleProvider {
    /// A generate whose answer was lost: look for the secret-id it may have created, by the
    /// attempt id in its metadata, among the role's accessors, and destroy it. Found and
    /// destroyed, the outcome is known (nothing live is left): `Transient`. Otherwise (none
    /// found: it may still land; the list or a lookup refused or failed; too many to look
    /// through) it stays an unknown outcome, and the driver notes a possible orphan.
    async fn reclaim(&self, attempt_id: &str, reason: String) -> ProviderError {
        let (mount, role) = (&self.cfg.mount, &self.cfg.role_name);
        let unknown = |why: String| ProviderError::UnknownOutcome {
            reason: format!("{reason}; {why}"),
        };
        let accessors = match self.vault.approle_list_accessors(mount, role).await {
            Ok(a) if a.len() <= RECLAIM_LOOKUPS => a,
            Ok(a) => {
                return unknown(format!(
                    "the role has {} secret-ids, too many to look the lost one up",
                    a.len()
                ))
            }
            Err(e) => {
                return unknown(format!(
                    "cannot list the role's secret-ids to find it ({e})"
                ))
            }
        };
        let mut destroyed = 0;
        for accessor in accessors {
            let ours = match self
                .vault
                .approle_accessor_metadata(mount, role, &accessor)
                .await
            {
                Ok(m) => m.is_some_and(|m| {
                    m.iter()
                        .any(|(k, v)| k == ATTEMPT_METADATA && v == attempt_id)
                }),
                Err(e) => return unknown(format!("cannot look a secret-id up to find it ({e})")),
            };
            if !ours {
                continue;
            }
            if let Err(e) = self
                .vault
                .approle_destroy_secret_id(mount, role, &accessor)
                .await
            {
                return unknown(format!("found it, but cannot destroy it ({e})"));
            }
            destroyed += 1;
        }
        if destroyed == 0 {
            return unknown("no secret-id of this attempt found (yet)".into());
        }
        tracing::info!(role = %role, attempt = %attempt_id, destroyed, "a secret-id whose answer was lost was found by its accessor and destroyed");
        ProviderError::Transient {
            reason: format!(
                "{reason}; the secret-id it created was found by its accessor and destroyed"
            ),
            retry_after: None,
        }
    }
}

/// The metadata key that names the attempt a secret-id was generated for.
const ATTEMPT_METADATA: &str = "rotation_attempt";
/// The most secret-ids looked up to find one whose answer was lost.
const RECLAIM_LOOKUPS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Generate,
    Other,
}

/// The `ttl` to ask for when generating a secret-id: the configured one; else none when the
/// role sets its own; else the credential lifetime the engine planned, so that a secret-id
/// nobody holds always expires.
fn requested_ttl(
    configured: Option<Duration>,
    role: Option<Duration>,
    req: &MintRequest,
) -> Option<Duration> {
    match (configured, role) {
        (Some(t), _) => Some(t),
        (None, Some(_)) => None,
        (None, None) => {
            let lifetime = (req.expires_at - req.now).to_std().unwrap_or_default();
            Some(lifetime.max(Duration::from_secs(1)))
        }
    }
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
            // Always: the configured TTL, the role's, or the planned lifetime (see mint).
            credentials_expire: true,
            async_revocation: false,
        }
    }

    async fn mint(&self, req: &MintRequest) -> Result<Minted, ProviderError> {
        let (mount, role) = (&self.cfg.mount, &self.cfg.role_name);
        let role_id = self
            .vault
            .approle_role_id(mount, role)
            .await
            .map_err(|e| self.map_err(e, Op::Other))?;
        let role_ttl = match self.ttl() {
            Some(_) => None,
            None => self
                .vault
                .approle_role_secret_id_ttl(mount, role)
                .await
                .map_err(|e| self.map_err(e, Op::Other))?,
        };
        let ttl = requested_ttl(self.ttl(), role_ttl, req);
        let opts = SecretIdOptions {
            ttl,
            // verify() looks the secret-id up without logging in: no use is spent, so the
            // dependent gets exactly the uses configured. 0 means unlimited.
            num_uses: self.cfg.secret_id_num_uses,
            metadata: vec![(ATTEMPT_METADATA.to_string(), req.attempt_id.clone())],
        };
        let generated = match self
            .vault
            .approle_generate_secret_id(mount, role, &opts)
            .await
        {
            Ok(g) => g,
            Err(e) => {
                return Err(match self.map_err(e, Op::Generate) {
                    ProviderError::UnknownOutcome { reason } => {
                        self.reclaim(&req.attempt_id, reason).await
                    }
                    other => other,
                })
            }
        };
        let mut secret = SecretFields::new();
        secret.insert("role_id", role_id);
        secret.insert(
            "secret_id",
            secrecy::ExposeSecret::expose_secret(&generated.secret_id).to_string(),
        );
        secret.insert("secret_id_accessor", generated.accessor);
        // Measured from the request time: never later than the real expiry.
        let expires_at = generated
            .ttl
            .or(ttl)
            .and_then(|t| chrono::Duration::from_std(t).ok())
            .map(|t| req.now + t);
        Ok(Minted { secret, expires_at })
    }

    /// Accepted when the stored role_id is the role's and the secret-id exists for the role and
    /// has not expired. A lookup, not a login: a limited-use secret-id keeps all its uses.
    async fn verify(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        if let Some(stored) = secret.expose("role_id").filter(|r| !r.is_empty()) {
            let role_id = self
                .vault
                .approle_role_id(&self.cfg.mount, &self.cfg.role_name)
                .await
                .map_err(|e| self.map_err(e, Op::Other))?;
            if stored != role_id {
                return Err(ProviderError::Rejected {
                    reason: format!("{}: the stored role_id is not the role's", self.what()),
                });
            }
        }
        match self.lookup(secret).await? {
            Some(info) if info.usable_at(Utc::now()) => Ok(()),
            Some(info) => Err(ProviderError::Rejected {
                reason: format!(
                    "{}: the secret-id expired at {}",
                    self.what(),
                    info.expires_at.map(crate::human::time).unwrap_or_default()
                ),
            }),
            None => Err(ProviderError::Rejected {
                reason: format!(
                    "{}: Vault does not know the secret-id (revoked, expired, used up, or not this role's)",
                    self.what()
                ),
            }),
        }
    }

    /// Destroy by accessor. A secret adopted by hand may hold only the secret-id: its accessor
    /// is looked up first (gone already is success).
    async fn revoke(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let accessor = match secret
            .expose("secret_id_accessor")
            .filter(|a| !a.is_empty())
        {
            Some(a) => a.to_string(),
            None => match self.lookup(secret).await? {
                Some(info) => info.accessor,
                None => return Ok(()),
            },
        };
        self.vault
            .approle_destroy_secret_id(&self.cfg.mount, &self.cfg.role_name, &accessor)
            .await
            .map_err(|e| self.map_err(e, Op::Other))
    }

    /// Revoked when Vault no longer knows the secret-id, or it expired. A lookup: no use spent.
    async fn verify_revoked(&self, secret: &SecretFields) -> Result<bool, ProviderError> {
        Ok(match self.lookup(secret).await? {
            Some(info) => !info.usable_at(Utc::now()),
            None => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_id_always_gets_a_ttl_unless_the_role_sets_one() {
        let now = Utc::now();
        let req = MintRequest {
            attempt_id: "a".into(),
            now,
            expires_at: now + chrono::Duration::hours(2),
        };
        let h = |n: u64| Duration::from_secs(n * 3600);
        let cases = [
            ("configured wins", Some(h(1)), Some(h(5)), Some(h(1))),
            ("configured, role without", Some(h(1)), None, Some(h(1))),
            ("role's own applies", None, Some(h(5)), None),
            ("neither: the planned lifetime", None, None, Some(h(2))),
        ];
        for (name, configured, role, expected) in cases {
            assert_eq!(requested_ttl(configured, role, &req), expected, "{name}");
        }
        let past = MintRequest {
            expires_at: now - chrono::Duration::hours(1),
            ..req
        };
        assert_eq!(
            requested_ttl(None, None, &past),
            Some(Duration::from_secs(1)),
            "a lifetime already over still expires"
        );
    }
}
