//! Providers: one module per kind of credential, behind one trait.
//!
//! Invariant: a provider does IO only with its own backend (the BigCommerce API, Vault through
//! [`crate::vault::Vault`], the configured programs of `exec`, the configured requests of `http`); it never writes the credential's secret path or the rotation state —
//! that is the rotation driver's job. Errors summarise the provider's answer without secrets.

pub mod bigcommerce_assisted;
pub mod bigcommerce_storefront;
pub mod exec;
pub mod http;
pub mod outcome;
pub mod rate_budget;
pub mod vault_approle;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Credential, ProviderConfig};
use crate::secret::SecretFields;
use crate::vault::Vault;

/// How a provider rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The daemon mints and revokes through an API.
    Automatic,
    /// A person regenerates the credential (control panel) and supplies it.
    Assisted,
}

/// What a provider is: the rotation driver adapts to these facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderInfo {
    pub mode: Mode,
    /// Minted credentials carry an expiry, so one nobody holds dies on its own.
    pub credentials_expire: bool,
    /// A revoke call is accepted before it takes effect: poll until the credential is rejected.
    pub async_revocation: bool,
}

/// What the driver tells a provider about the attempt it mints for.
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub attempt_id: String,
    pub now: DateTime<Utc>,
    /// For expiring credentials: the new one must expire at this time.
    pub expires_at: DateTime<Utc>,
}

/// A freshly minted credential.
#[derive(Debug, Clone)]
pub struct Minted {
    pub secret: SecretFields,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a provider call did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered and said no (401, 403 on a required scope, invalid secret-id).
    #[error("rejected by the provider: {reason}")]
    Rejected { reason: String },
    /// The request was not processed (429, 5xx before processing, connection refused): safe to
    /// send again after `retry_after` (or a growing backoff).
    #[error("provider unavailable: {reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The request may or may not have been processed (timeout or connection dropped after it
    /// was sent). For a mint: a credential may exist that nobody holds.
    #[error("outcome unknown: {reason}")]
    UnknownOutcome { reason: String },
    /// The provider cannot work as configured (parent credential missing in Vault, bad answer).
    #[error("provider misconfigured: {reason}")]
    Config { reason: String },
}

impl ProviderError {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::Transient { .. } => "transient",
            ProviderError::UnknownOutcome { .. } => "unknown_outcome",
            ProviderError::Config { .. } => "config",
        }
    }

    /// A parent secret could not be read from Vault (`reason` says which, with Vault's error):
    /// transient when Vault's error may pass; otherwise (not found, permission denied) the
    /// configuration or the daemon's policy is wrong.
    pub fn parent_unreadable(reason: String, e: &crate::vault::VaultError) -> ProviderError {
        if e.is_retryable() {
            ProviderError::Transient {
                reason,
                retry_after: None,
            }
        } else {
            ProviderError::Config { reason }
        }
    }
}

/// One kind of credential. Every call is idempotent or safe to repeat after a crash: revoking a
/// credential that is already revoked succeeds.
#[async_trait]
pub trait Provider: Send + Sync {
    fn info(&self) -> ProviderInfo;

    /// The fields a stored credential of this kind must hold (checked before anything is
    /// minted, so a malformed secret is refused with its path instead of half-rotated).
    fn required_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// For assisted providers: the steps a person takes, in the provider's own words.
    fn assisted_steps(&self) -> Vec<String> {
        Vec::new()
    }

    /// For assisted providers: supplying the new credential kills the old one at once (a
    /// regenerated token), rather than two overlapping credentials living until a person
    /// deletes the old one.
    fn old_dies_at_supply(&self) -> bool {
        false
    }

    /// Create a new credential.
    async fn mint(&self, req: &MintRequest) -> Result<Minted, ProviderError>;

    /// `Ok(())`: the provider accepts this credential. `Err(Rejected)`: it does not.
    async fn verify(&self, secret: &SecretFields) -> Result<(), ProviderError>;

    /// Ask the provider to revoke this credential. Already revoked is success.
    async fn revoke(&self, secret: &SecretFields) -> Result<(), ProviderError>;

    /// `Ok(true)`: the provider now rejects this credential.
    async fn verify_revoked(&self, secret: &SecretFields) -> Result<bool, ProviderError> {
        match self.verify(secret).await {
            Ok(()) => Ok(false),
            Err(ProviderError::Rejected { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }
}

/// Build the provider of a configured credential.
pub fn build(
    cred: &Credential,
    vault: Arc<Vault>,
    http: crate::egress::Client,
) -> Result<Box<dyn Provider>, ProviderError> {
    match &*cred.provider() {
        ProviderConfig::BigCommerceStorefront(c) => Ok(Box::new(
            bigcommerce_storefront::StorefrontProvider::new(c.clone(), vault, http),
        )),
        ProviderConfig::VaultAppRoleSecretId(c) => Ok(Box::new(
            vault_approle::AppRoleProvider::new(c.clone(), vault),
        )),
        ProviderConfig::Exec(c) => Ok(Box::new(exec::ExecProvider::new(c.clone(), &cred.name))),
        ProviderConfig::Http(c) => Ok(Box::new(http::HttpProvider::new(
            (**c).clone(),
            &cred.name,
            vault,
        )?)),
        ProviderConfig::BigCommerceStoreAccount(c) => Ok(Box::new(
            bigcommerce_assisted::StoreAccountProvider::new(c.clone(), http, &cred.name),
        )),
        ProviderConfig::BigCommerceLegacyAccount(c) => {
            Ok(Box::new(bigcommerce_assisted::BasicAuthProvider::new(
                c.clone(),
                bigcommerce_assisted::BasicKind::Legacy,
                http,
                &cred.name,
            )))
        }
        ProviderConfig::BigCommerceUserToken(c) => {
            Ok(Box::new(bigcommerce_assisted::BasicAuthProvider::new(
                c.clone(),
                bigcommerce_assisted::BasicKind::User,
                http,
                &cred.name,
            )))
        }
    }
}

/// The provider instance a credential's rotations count against (the planner's per-provider
/// limit): one store, one AppRole role, one program, one API host.
pub fn instance(provider: &ProviderConfig) -> String {
    use ProviderConfig as P;
    let kind = provider.kind();
    match provider {
        P::BigCommerceStorefront(c) => format!("{kind}:{}", c.store_hash),
        P::VaultAppRoleSecretId(c) => format!("{kind}:{}/{}", c.mount, c.role_name),
        P::BigCommerceLegacyAccount(c) | P::BigCommerceUserToken(c) => {
            format!("{kind}:{}", c.store_hash)
        }
        P::BigCommerceStoreAccount(c) => format!("{kind}:{}", c.store_hash),
        P::Exec(c) => format!("{kind}:{}", c.mint.first().map_or("", String::as_str)),
        P::Http(c) => {
            let host = reqwest::Url::parse(&c.mint.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            format!("{kind}:{host}")
        }
    }
}

/// Whether a timed drift check (a verification of the current credential) is worth making for
/// this kind: assisted kinds always; of the automatic ones, the storefront tokens (one GraphQL
/// request). Others' verification may have a cost (a program, a request that counts).
pub fn checks_for_drift(provider: &ProviderConfig) -> bool {
    !provider.automatic() || matches!(provider, ProviderConfig::BigCommerceStorefront(_))
}

/// What a dependent is told for an assisted credential that is due or drifted: the
/// control-panel steps, in the provider's own words, and the scopes to grant (both empty for
/// automatic kinds).
pub fn assisted_guidance(
    provider: &ProviderConfig,
    credential: &str,
) -> (Vec<String>, Vec<String>) {
    (
        bigcommerce_assisted::steps(provider, credential),
        bigcommerce_assisted::scopes_to_grant(provider),
    )
}

/// A 3xx answer, which the egress client never follows (`reason` names the endpoint): the
/// origin refused the request here (the configured address is wrong), and sending it again will
/// not help.
pub(crate) fn redirected(reason: String) -> ProviderError {
    ProviderError::Config { reason }
}

/// A header value that carries a secret, marked sensitive ([`crate::egress::sensitive`]). The
/// error never quotes the value.
pub(crate) fn secret_header(value: &str) -> Result<reqwest::header::HeaderValue, ProviderError> {
    crate::egress::sensitive(value).map_err(|_| ProviderError::Config {
        reason: "a secret holds characters a header cannot carry".into(),
    })
}
