//! Wire types of the admin API under `/__admin/`, shared by the server and [`crate::AdminClient`].

use serde::{Deserialize, Serialize};

use crate::scopes::Scopes;
use crate::seed::Plan;
use crate::store::TokenState;
use crate::storefront::TokenKind;

pub use crate::counters::Counters;
pub use crate::faults::{FaultMode, FaultSpec, FaultView};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreView {
    pub hash: String,
    pub id: u64,
    pub name: String,
    pub plan: Plan,
    pub channels: Vec<u64>,
    pub rate_limit_quota: u32,
    pub rate_limit_window_ms: u64,
    pub revocation_delay_ms: u64,
    pub legacy_hourly_quota: u32,
    /// Base URL of the REST API: `http://HOST:PORT/stores/{hash}/`.
    pub api_path: String,
    /// Base URL of the legacy API: `http://HOST:PORT/store-{hash}/api/v2/`.
    pub legacy_api_path: String,
    /// URL of the storefront GraphQL endpoint.
    pub graphql_url: String,
}

/// Body of `PUT /__admin/stores/{hash}/settings`; fields left out are unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_quota: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_window_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_delay_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewApiAccount {
    pub name: String,
    #[serde(default)]
    pub scopes: Scopes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiAccountView {
    pub name: String,
    pub client_id: String,
    pub client_secret: String,
    pub access_token: String,
    pub api_path: String,
    pub scopes: Scopes,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetScopes {
    pub scopes: Scopes,
}

/// Body to create a legacy account or a user. Permissions default to modify on everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewBasicAccount {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Scopes>,
}

/// A legacy account or a user with API access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicAccountView {
    pub username: String,
    pub token: String,
    /// The legacy API path to use with Basic auth.
    pub api_path: String,
    pub permissions: Scopes,
    pub api_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPermissions {
    pub permissions: Scopes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetApiEnabled {
    pub enabled: bool,
}

/// Every live credential of one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub store_hash: String,
    pub api_accounts: Vec<ApiAccountView>,
    pub legacy_accounts: Vec<BasicAccountView>,
    pub users: Vec<BasicAccountView>,
}

/// One issued storefront token. The token itself is never listed, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorefrontTokenView {
    pub jti: String,
    pub kind: TokenKind,
    pub channel_ids: Vec<u64>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub state: TokenState,
    /// Whether the GraphQL endpoint accepts it now (live, or revocation not yet in effect).
    pub accepted: bool,
    /// Emulator time (ms since the epoch) from which it is rejected, if a revocation was asked.
    pub revoked_from_ms: Option<u64>,
    /// Lowercase hex SHA-256 of the token string.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockView {
    /// The emulator's time, ms since the Unix epoch (system time + offset).
    pub now_ms: u64,
    pub offset_ms: i64,
}

/// Body of `PUT /__admin/clock`: set the offset, or move it by `advance_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetClock {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance_ms: Option<i64>,
}

/// Answer of `DELETE /__admin/stores/{hash}/storefront-tokens/{jti}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    pub jti: String,
    /// False when a revocation had already been asked for.
    pub newly_revoked: bool,
}

/// Error body of every admin route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminErrorBody {
    pub error: String,
}
