//! A typed client for the admin API, so tests elsewhere never hand-build admin requests.

use std::time::Duration;

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::admin_api::*;
use crate::scopes::Scopes;

#[derive(Debug, Error)]
pub enum AdminClientError {
    #[error("admin request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("admin API answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("invalid emulator base URL `{0}`")]
    BaseUrl(String),
}

pub type AdminResult<T> = Result<T, AdminClientError>;

/// Route segments of the two kinds of Basic-auth accounts.
const LEGACY: &str = "legacy-accounts";
const USERS: &str = "users";

#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    /// `base_url` is the emulator's, e.g. `http://127.0.0.1:PORT`.
    pub fn new(base_url: &str, admin_token: &str) -> AdminClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a plain HTTP client builds");
        AdminClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            token: admin_token.to_string(),
        }
    }

    /// `/__admin/` + the segments, each percent-encoded.
    fn url(&self, segments: &[&str]) -> AdminResult<Url> {
        let mut url = Url::parse(&format!("{}/__admin", self.base))
            .map_err(|_| AdminClientError::BaseUrl(self.base.clone()))?;
        url.path_segments_mut()
            .map_err(|_| AdminClientError::BaseUrl(self.base.clone()))?
            .extend(segments);
        Ok(url)
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<serde_json::Value>,
    ) -> AdminResult<reqwest::Response> {
        let mut req = self
            .http
            .request(method, self.url(segments)?)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<AdminErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or(text);
        Err(AdminClientError::Status { status, message })
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> AdminResult<T> {
        Ok(self.call(Method::GET, segments, None).await?.json().await?)
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> AdminResult<T> {
        let value = serde_json::to_value(body).expect("admin bodies serialise");
        Ok(self
            .call(method, segments, Some(value))
            .await?
            .json()
            .await?)
    }

    async fn delete(&self, segments: &[&str]) -> AdminResult<()> {
        self.call(Method::DELETE, segments, None).await?;
        Ok(())
    }

    // --- stores -------------------------------------------------------------------------

    pub async fn health(&self) -> AdminResult<()> {
        self.call(Method::GET, &["health"], None).await?;
        Ok(())
    }

    pub async fn stores(&self) -> AdminResult<Vec<StoreView>> {
        self.get(&["stores"]).await
    }

    pub async fn store(&self, hash: &str) -> AdminResult<StoreView> {
        self.get(&["stores", hash]).await
    }

    pub async fn set_store_settings(
        &self,
        hash: &str,
        settings: &StoreSettings,
    ) -> AdminResult<StoreView> {
        self.send(Method::PUT, &["stores", hash, "settings"], settings)
            .await
    }

    /// Sets the store's quota per window.
    pub async fn set_rate_limit(
        &self,
        hash: &str,
        quota: u32,
        window: Duration,
    ) -> AdminResult<StoreView> {
        let settings = StoreSettings {
            rate_limit_quota: Some(quota),
            rate_limit_window_ms: Some(window.as_millis() as u64),
            ..StoreSettings::default()
        };
        self.set_store_settings(hash, &settings).await
    }

    pub async fn set_revocation_delay(
        &self,
        hash: &str,
        delay: Duration,
    ) -> AdminResult<StoreView> {
        let settings = StoreSettings {
            revocation_delay_ms: Some(delay.as_millis() as u64),
            ..StoreSettings::default()
        };
        self.set_store_settings(hash, &settings).await
    }

    pub async fn credentials(&self, hash: &str) -> AdminResult<Credentials> {
        self.get(&["stores", hash, "credentials"]).await
    }

    // --- store-level API accounts ---------------------------------------------------------

    pub async fn api_accounts(&self, hash: &str) -> AdminResult<Vec<ApiAccountView>> {
        self.get(&["stores", hash, "api-accounts"]).await
    }

    pub async fn create_api_account(
        &self,
        hash: &str,
        name: &str,
        scopes: Scopes,
    ) -> AdminResult<ApiAccountView> {
        let body = NewApiAccount {
            name: name.to_string(),
            scopes,
        };
        self.send(Method::POST, &["stores", hash, "api-accounts"], &body)
            .await
    }

    pub async fn delete_api_account(&self, hash: &str, client_id: &str) -> AdminResult<()> {
        self.delete(&["stores", hash, "api-accounts", client_id])
            .await
    }

    pub async fn set_scopes(
        &self,
        hash: &str,
        client_id: &str,
        scopes: Scopes,
    ) -> AdminResult<ApiAccountView> {
        self.send(
            Method::PUT,
            &["stores", hash, "api-accounts", client_id, "scopes"],
            &SetScopes { scopes },
        )
        .await
    }

    // --- legacy accounts and users ---------------------------------------------------------
    //
    // Both are Basic-auth accounts with the same routes under their own segment
    // (`legacy-accounts`, `users`); the public methods name the control panel's words.

    pub async fn legacy_accounts(&self, hash: &str) -> AdminResult<Vec<BasicAccountView>> {
        self.get(&["stores", hash, LEGACY]).await
    }

    /// Permissions default to modify on every resource.
    pub async fn create_legacy_account(
        &self,
        hash: &str,
        username: &str,
        permissions: Option<Scopes>,
    ) -> AdminResult<BasicAccountView> {
        self.create_basic(LEGACY, hash, username, permissions).await
    }

    /// "Generate New Token" + Save: the old token dies at once.
    pub async fn regenerate_legacy_token(
        &self,
        hash: &str,
        username: &str,
    ) -> AdminResult<BasicAccountView> {
        self.regenerate_basic(LEGACY, hash, username).await
    }

    pub async fn set_legacy_permissions(
        &self,
        hash: &str,
        username: &str,
        permissions: Scopes,
    ) -> AdminResult<BasicAccountView> {
        self.set_basic_permissions(LEGACY, hash, username, permissions)
            .await
    }

    pub async fn delete_legacy_account(&self, hash: &str, username: &str) -> AdminResult<()> {
        self.delete(&["stores", hash, LEGACY, username]).await
    }

    pub async fn users(&self, hash: &str) -> AdminResult<Vec<BasicAccountView>> {
        self.get(&["stores", hash, USERS]).await
    }

    pub async fn create_user(
        &self,
        hash: &str,
        username: &str,
        permissions: Option<Scopes>,
    ) -> AdminResult<BasicAccountView> {
        self.create_basic(USERS, hash, username, permissions).await
    }

    /// "Regenerate API Token" + Save: the old token dies at once.
    pub async fn regenerate_user_token(
        &self,
        hash: &str,
        username: &str,
    ) -> AdminResult<BasicAccountView> {
        self.regenerate_basic(USERS, hash, username).await
    }

    pub async fn set_user_permissions(
        &self,
        hash: &str,
        username: &str,
        permissions: Scopes,
    ) -> AdminResult<BasicAccountView> {
        self.set_basic_permissions(USERS, hash, username, permissions)
            .await
    }

    async fn create_basic(
        &self,
        kind: &str,
        hash: &str,
        username: &str,
        permissions: Option<Scopes>,
    ) -> AdminResult<BasicAccountView> {
        let body = NewBasicAccount {
            username: username.to_string(),
            permissions,
        };
        self.send(Method::POST, &["stores", hash, kind], &body)
            .await
    }

    async fn regenerate_basic(
        &self,
        kind: &str,
        hash: &str,
        username: &str,
    ) -> AdminResult<BasicAccountView> {
        self.send(
            Method::POST,
            &["stores", hash, kind, username, "regenerate"],
            &serde_json::json!({}),
        )
        .await
    }

    async fn set_basic_permissions(
        &self,
        kind: &str,
        hash: &str,
        username: &str,
        permissions: Scopes,
    ) -> AdminResult<BasicAccountView> {
        self.send(
            Method::PUT,
            &["stores", hash, kind, username, "permissions"],
            &SetPermissions { permissions },
        )
        .await
    }

    pub async fn set_user_api_enabled(
        &self,
        hash: &str,
        username: &str,
        enabled: bool,
    ) -> AdminResult<BasicAccountView> {
        self.send(
            Method::PUT,
            &["stores", hash, "users", username, "api-access"],
            &SetApiEnabled { enabled },
        )
        .await
    }

    pub async fn delete_user(&self, hash: &str, username: &str) -> AdminResult<()> {
        self.delete(&["stores", hash, USERS, username]).await
    }

    // --- storefront tokens ---------------------------------------------------------------

    /// Every token the store issued, in order, whatever its state.
    pub async fn storefront_tokens(&self, hash: &str) -> AdminResult<Vec<StorefrontTokenView>> {
        self.get(&["stores", hash, "storefront-tokens"]).await
    }

    /// Tokens in state `live`: not expired, no revocation asked for.
    pub async fn live_storefront_tokens(
        &self,
        hash: &str,
    ) -> AdminResult<Vec<StorefrontTokenView>> {
        let all = self.storefront_tokens(hash).await?;
        Ok(all
            .into_iter()
            .filter(|t| t.state == crate::store::TokenState::Live)
            .collect())
    }

    /// Revokes a token at once, without the store's delay.
    pub async fn revoke_storefront_token(
        &self,
        hash: &str,
        jti: &str,
    ) -> AdminResult<RevokedToken> {
        Ok(self
            .call(
                Method::DELETE,
                &["stores", hash, "storefront-tokens", jti],
                None,
            )
            .await?
            .json()
            .await?)
    }

    // --- counters, clock, faults ---------------------------------------------------------

    pub async fn counters(&self) -> AdminResult<Counters> {
        self.get(&["counters"]).await
    }

    pub async fn reset_counters(&self) -> AdminResult<()> {
        self.delete(&["counters"]).await
    }

    pub async fn clock(&self) -> AdminResult<ClockView> {
        self.get(&["clock"]).await
    }

    pub async fn set_clock_offset(&self, offset_ms: i64) -> AdminResult<ClockView> {
        let body = SetClock {
            offset_ms: Some(offset_ms),
            advance_ms: None,
        };
        self.send(Method::PUT, &["clock"], &body).await
    }

    /// Moves the emulator's clock forward (tokens expire, revocations and windows elapse).
    pub async fn advance_clock(&self, by: Duration) -> AdminResult<ClockView> {
        let body = SetClock {
            offset_ms: None,
            advance_ms: Some(by.as_millis() as i64),
        };
        self.send(Method::PUT, &["clock"], &body).await
    }

    pub async fn faults(&self) -> AdminResult<Vec<FaultView>> {
        self.get(&["faults"]).await
    }

    pub async fn set_fault(&self, spec: FaultSpec) -> AdminResult<FaultView> {
        self.send(Method::POST, &["faults"], &spec).await
    }

    pub async fn clear_fault(&self, id: u64) -> AdminResult<()> {
        self.delete(&["faults", &id.to_string()]).await
    }

    pub async fn clear_faults(&self) -> AdminResult<()> {
        self.delete(&["faults"]).await
    }
}
