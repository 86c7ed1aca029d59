//! One store's credentials, issued storefront tokens and quotas, and the rules that judge a
//! presented credential.
//!
//! Invariant: pure; times are passed in (milliseconds of the emulator's clock), randomness
//! comes from the caller. The HTTP layer decides nothing about credentials itself.

use std::collections::HashMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::credentials::{self, sha256_hex};
use crate::jwt::{Claims, JwtError, StoreKey};
use crate::rate_limit::{RollingHour, Window};
use crate::scopes::Scopes;
use crate::seed::{Plan, StoreSeed, MAX_API_ACCOUNTS};
use crate::storefront::{TokenKind, TokenRequest};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiAccount {
    pub name: String,
    pub client_id: String,
    pub client_secret: String,
    pub access_token: String,
    pub scopes: Scopes,
    pub created_at: i64,
}

/// A legacy API account or a user with API access: both use Basic auth on the API path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicAccount {
    pub username: String,
    pub token: String,
    pub permissions: Scopes,
    /// Users can have API access switched off; legacy accounts always have it.
    pub api_enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    pub jti: String,
    pub kind: TokenKind,
    pub channel_ids: Vec<u64>,
    pub issued_at: i64,
    pub expires_at: i64,
    /// SHA-256 hex of the token string.
    pub sha256: String,
    /// Emulator time (ms) from which the token is rejected, once a revocation was asked for.
    pub revoked_from_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// Accepted, no revocation pending.
    Live,
    /// Still accepted; revocation takes effect at `revoked_from_ms`.
    RevocationScheduled,
    Revoked,
    Expired,
}

impl IssuedToken {
    pub fn state(&self, now_ms: u64) -> TokenState {
        let now_secs = (now_ms / 1000) as i64;
        match self.revoked_from_ms {
            Some(at) if at <= now_ms => TokenState::Revoked,
            _ if now_secs >= self.expires_at => TokenState::Expired,
            Some(_) => TokenState::RevocationScheduled,
            None => TokenState::Live,
        }
    }
}

/// Why the storefront GraphQL endpoint rejects a bearer token. Messages are the API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorefrontAuthError {
    Missing,
    Malformed,
    SignatureInvalid,
    Expired,
    Unknown,
}

impl StorefrontAuthError {
    pub fn message(self) -> &'static str {
        match self {
            StorefrontAuthError::Missing => "JWT token is missing",
            StorefrontAuthError::Malformed => "Invalid JWT token",
            StorefrontAuthError::SignatureInvalid => "JWT signature is invalid",
            StorefrontAuthError::Expired => "JWT is expired",
            StorefrontAuthError::Unknown => "Unknown JWT token",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicAuth<'a> {
    Allowed(&'a BasicAccount),
    /// Unknown username, wrong token, or API access disabled: 401.
    Invalid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Store {
    pub hash: String,
    /// Numeric store id, the `sid`-like id shown by `/v2/store`.
    pub id: u64,
    pub name: String,
    pub plan: Plan,
    pub channels: Vec<u64>,
    pub rate_limit_quota: u32,
    pub rate_limit_window_ms: u64,
    pub revocation_delay_ms: u64,
    pub legacy_hourly_quota: u32,
    pub api_accounts: Vec<ApiAccount>,
    pub legacy_accounts: Vec<BasicAccount>,
    pub users: Vec<BasicAccount>,
    pub tokens: Vec<IssuedToken>,
    #[serde(with = "key_b64")]
    pub key: StoreKey,
    #[serde(skip, default = "empty_index")]
    by_sha256: HashMap<String, usize>,
    #[serde(skip, default = "unset_window")]
    window: Window,
    #[serde(skip, default = "unset_hour")]
    legacy_hour: RollingHour,
}

fn empty_index() -> HashMap<String, usize> {
    HashMap::new()
}
fn unset_window() -> Window {
    Window::new(1, 1)
}
fn unset_hour() -> RollingHour {
    RollingHour::new(1)
}

mod key_b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::jwt::StoreKey;

    pub fn serialize<S: Serializer>(key: &StoreKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&key.to_secret_b64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StoreKey, D::Error> {
        let text = String::deserialize(d)?;
        StoreKey::from_secret_b64(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountError {
    TooMany,
    NameTaken,
    NotFound,
    InvalidName,
}

impl Store {
    /// Builds a store from its seed, generating every value the seed leaves out.
    pub fn from_seed(seed: &StoreSeed, id: u64, now_secs: i64, rng: &mut impl Rng) -> Store {
        let api_accounts = seed
            .api_accounts
            .iter()
            .map(|a| ApiAccount {
                name: a.name.clone(),
                client_id: a
                    .client_id
                    .clone()
                    .unwrap_or_else(|| credentials::client_id(rng)),
                client_secret: a
                    .client_secret
                    .clone()
                    .unwrap_or_else(|| credentials::client_secret(rng)),
                access_token: a
                    .access_token
                    .clone()
                    .unwrap_or_else(|| credentials::access_token(rng)),
                scopes: a.scopes.clone(),
                created_at: now_secs,
            })
            .collect();
        let legacy_accounts = seed
            .legacy_accounts
            .iter()
            .map(|l| BasicAccount {
                username: l.username.clone(),
                token: l
                    .token
                    .clone()
                    .unwrap_or_else(|| credentials::basic_token(rng)),
                permissions: l.permissions.clone(),
                api_enabled: true,
            })
            .collect();
        let users = seed
            .users
            .iter()
            .map(|u| BasicAccount {
                username: u.username.clone(),
                token: u
                    .api_token
                    .clone()
                    .unwrap_or_else(|| credentials::basic_token(rng)),
                permissions: u.permissions.clone(),
                api_enabled: u.api_enabled,
            })
            .collect();
        let mut store = Store {
            hash: seed.hash.clone(),
            id,
            name: seed.name.clone(),
            plan: seed.plan,
            channels: seed.channels.clone(),
            rate_limit_quota: seed.rate_limit_quota,
            rate_limit_window_ms: seed.rate_limit_window_ms,
            revocation_delay_ms: seed.revocation_delay_ms,
            legacy_hourly_quota: seed.legacy_hourly_quota,
            api_accounts,
            legacy_accounts,
            users,
            tokens: vec![],
            key: StoreKey::generate(rng),
            by_sha256: HashMap::new(),
            window: unset_window(),
            legacy_hour: unset_hour(),
        };
        store.rebuild_runtime();
        store
    }

    /// Rebuilds what is not persisted: the token index and fresh rate-limit windows.
    pub fn rebuild_runtime(&mut self) {
        self.by_sha256 = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.sha256.clone(), i))
            .collect();
        self.window = Window::new(self.rate_limit_quota, self.rate_limit_window_ms);
        self.legacy_hour = RollingHour::new(self.legacy_hourly_quota);
    }

    pub fn window(&mut self) -> &mut Window {
        &mut self.window
    }

    pub fn legacy_hour(&mut self) -> &mut RollingHour {
        &mut self.legacy_hour
    }

    pub fn set_rate_limit(&mut self, quota: u32, window_ms: u64) {
        self.rate_limit_quota = quota;
        self.rate_limit_window_ms = window_ms;
        self.window.configure(quota, window_ms);
    }

    pub fn api_path(&self) -> String {
        format!("/stores/{}/", self.hash)
    }

    pub fn legacy_api_path(&self) -> String {
        format!("/store-{}/api/v2/", self.hash)
    }

    // --- store-level API accounts -------------------------------------------------------

    pub fn account_by_access_token(&self, token: &str) -> Option<&ApiAccount> {
        self.api_accounts.iter().find(|a| a.access_token == token)
    }

    pub fn create_api_account(
        &mut self,
        name: &str,
        scopes: Scopes,
        now_secs: i64,
        rng: &mut impl Rng,
    ) -> Result<&ApiAccount, AccountError> {
        if name.trim().is_empty() {
            return Err(AccountError::InvalidName);
        }
        if self.api_accounts.len() >= MAX_API_ACCOUNTS {
            return Err(AccountError::TooMany);
        }
        self.api_accounts.push(ApiAccount {
            name: name.to_string(),
            client_id: credentials::client_id(rng),
            client_secret: credentials::client_secret(rng),
            access_token: credentials::access_token(rng),
            scopes,
            created_at: now_secs,
        });
        Ok(self.api_accounts.last().expect("just pushed"))
    }

    pub fn delete_api_account(&mut self, client_id: &str) -> Result<(), AccountError> {
        let before = self.api_accounts.len();
        self.api_accounts.retain(|a| a.client_id != client_id);
        if self.api_accounts.len() == before {
            return Err(AccountError::NotFound);
        }
        Ok(())
    }

    pub fn set_scopes(
        &mut self,
        client_id: &str,
        scopes: Scopes,
    ) -> Result<&ApiAccount, AccountError> {
        let account = self
            .api_accounts
            .iter_mut()
            .find(|a| a.client_id == client_id)
            .ok_or(AccountError::NotFound)?;
        account.scopes = scopes;
        Ok(account)
    }

    // --- legacy accounts and users ------------------------------------------------------

    fn username_taken(&self, username: &str) -> bool {
        self.legacy_accounts
            .iter()
            .chain(self.users.iter())
            .any(|a| a.username == username)
    }

    /// Creates a legacy account (`is_user` false) or a user with API access.
    pub fn create_basic_account(
        &mut self,
        is_user: bool,
        username: &str,
        permissions: Scopes,
        rng: &mut impl Rng,
    ) -> Result<&BasicAccount, AccountError> {
        if username.is_empty() || username.contains(':') {
            return Err(AccountError::InvalidName);
        }
        if self.username_taken(username) {
            return Err(AccountError::NameTaken);
        }
        let list = if is_user {
            &mut self.users
        } else {
            &mut self.legacy_accounts
        };
        list.push(BasicAccount {
            username: username.to_string(),
            token: credentials::basic_token(rng),
            permissions,
            api_enabled: true,
        });
        Ok(list.last().expect("just pushed"))
    }

    fn basic_account_mut(
        &mut self,
        is_user: bool,
        username: &str,
    ) -> Result<&mut BasicAccount, AccountError> {
        let list = if is_user {
            &mut self.users
        } else {
            &mut self.legacy_accounts
        };
        list.iter_mut()
            .find(|a| a.username == username)
            .ok_or(AccountError::NotFound)
    }

    /// "Generate New Token" + Save: the old token stops working at once.
    pub fn regenerate_basic_token(
        &mut self,
        is_user: bool,
        username: &str,
        rng: &mut impl Rng,
    ) -> Result<&BasicAccount, AccountError> {
        let token = credentials::basic_token(rng);
        let account = self.basic_account_mut(is_user, username)?;
        account.token = token;
        Ok(account)
    }

    pub fn set_api_enabled(
        &mut self,
        username: &str,
        enabled: bool,
    ) -> Result<&BasicAccount, AccountError> {
        let account = self.basic_account_mut(true, username)?;
        account.api_enabled = enabled;
        Ok(account)
    }

    pub fn set_permissions(
        &mut self,
        is_user: bool,
        username: &str,
        permissions: Scopes,
    ) -> Result<&BasicAccount, AccountError> {
        let account = self.basic_account_mut(is_user, username)?;
        account.permissions = permissions;
        Ok(account)
    }

    pub fn delete_basic_account(
        &mut self,
        is_user: bool,
        username: &str,
    ) -> Result<(), AccountError> {
        let list = if is_user {
            &mut self.users
        } else {
            &mut self.legacy_accounts
        };
        let before = list.len();
        list.retain(|a| a.username != username);
        if list.len() == before {
            return Err(AccountError::NotFound);
        }
        Ok(())
    }

    pub fn authenticate_basic(&self, username: &str, token: &str) -> BasicAuth<'_> {
        self.legacy_accounts
            .iter()
            .chain(self.users.iter())
            .find(|a| a.username == username && a.token == token && a.api_enabled)
            .map_or(BasicAuth::Invalid, BasicAuth::Allowed)
    }

    // --- storefront tokens --------------------------------------------------------------

    /// Signs and records a new token; returns the token string.
    pub fn mint(
        &mut self,
        kind: TokenKind,
        req: TokenRequest,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> (String, String) {
        let now_secs = (now_ms / 1000) as i64;
        let jti = credentials::jti(rng);
        let claims = Claims {
            iss: "BC".to_string(),
            sub: self.hash.clone(),
            iat: now_secs,
            exp: req.expires_at,
            eat: req.expires_at,
            jti: jti.clone(),
            cid: req.channel_ids.clone(),
            cors: req.allowed_cors_origins,
            token_kind: kind,
            scopes: req.scopes,
        };
        let token = self.key.sign(&claims);
        let sha256 = sha256_hex(&token);
        self.by_sha256.insert(sha256.clone(), self.tokens.len());
        self.tokens.push(IssuedToken {
            jti: jti.clone(),
            kind,
            channel_ids: req.channel_ids,
            issued_at: now_secs,
            expires_at: req.expires_at,
            sha256,
            revoked_from_ms: None,
        });
        (token, jti)
    }

    /// Finds the record of a token this store issued. A token issued here is recognised by
    /// its SHA-256 (its signature was checked when it was made); anything else is checked
    /// against the store's key so that a forgery is told apart from an unknown token.
    fn find_token(&self, token: &str) -> Result<usize, StorefrontAuthError> {
        if let Some(&i) = self.by_sha256.get(&sha256_hex(token)) {
            return Ok(i);
        }
        match self.key.verify(token) {
            Err(JwtError::Malformed) => Err(StorefrontAuthError::Malformed),
            Err(JwtError::BadSignature) => Err(StorefrontAuthError::SignatureInvalid),
            Ok(_) => Err(StorefrontAuthError::Unknown),
        }
    }

    /// Judges a bearer token presented to the storefront GraphQL endpoint.
    pub fn check_storefront_token(
        &self,
        token: &str,
        now_ms: u64,
    ) -> Result<&IssuedToken, StorefrontAuthError> {
        let record = &self.tokens[self.find_token(token)?];
        match record.state(now_ms) {
            TokenState::Live | TokenState::RevocationScheduled => Ok(record),
            TokenState::Expired => Err(StorefrontAuthError::Expired),
            TokenState::Revoked => Err(StorefrontAuthError::Unknown),
        }
    }

    /// Schedules the revocation of a token this store issued, `revocation_delay_ms` from now.
    /// Returns the jti and whether this call scheduled it (false if it already was).
    pub fn schedule_revocation(
        &mut self,
        token: &str,
        now_ms: u64,
    ) -> Result<(String, bool), StorefrontAuthError> {
        let i = self.find_token(token)?;
        let at = now_ms + self.revocation_delay_ms;
        let record = &mut self.tokens[i];
        let fresh = record.revoked_from_ms.is_none();
        if fresh {
            record.revoked_from_ms = Some(at);
        }
        Ok((record.jti.clone(), fresh))
    }

    /// Revokes a token at once (the admin's lever). Returns whether it was found, and whether
    /// it was not already asked to be revoked.
    pub fn revoke_now(&mut self, jti: &str, now_ms: u64) -> Option<bool> {
        let record = self.tokens.iter_mut().find(|t| t.jti == jti)?;
        let fresh = record.revoked_from_ms.is_none();
        if record.revoked_from_ms.is_none_or(|at| at > now_ms) {
            record.revoked_from_ms = Some(now_ms);
        }
        Some(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::Seed;
    use rand::SeedableRng;

    fn store() -> (Store, rand::rngs::StdRng) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let s = Store::from_seed(&Seed::demo().stores[0], 1, 0, &mut rng);
        (s, rng)
    }

    fn request(expires_at: i64) -> TokenRequest {
        TokenRequest {
            channel_ids: vec![1],
            expires_at,
            allowed_cors_origins: vec![],
            scopes: vec![],
        }
    }

    #[test]
    fn a_token_lives_until_revocation_takes_effect() {
        let (mut s, mut rng) = store();
        let (token, jti) = s.mint(TokenKind::Storefront, request(100), 10_000, &mut rng);
        assert!(s.check_storefront_token(&token, 10_000).is_ok());
        assert_eq!(
            s.schedule_revocation(&token, 20_000),
            Ok((jti.clone(), true))
        );
        assert_eq!(s.schedule_revocation(&token, 21_000), Ok((jti, false)));
        let cases = [
            (20_000, Ok(TokenState::RevocationScheduled)),
            (21_999, Ok(TokenState::RevocationScheduled)),
            (22_000, Err(StorefrontAuthError::Unknown)),
        ];
        for (now, expected) in cases {
            assert_eq!(
                s.check_storefront_token(&token, now).map(|t| t.state(now)),
                expected,
                "{now}"
            );
        }
    }

    #[test]
    fn expiry_forgery_and_garbage() {
        let (mut s, mut rng) = store();
        let (token, _) = s.mint(TokenKind::Private, request(100), 10_000, &mut rng);
        let mut other_rng = rand::rngs::StdRng::seed_from_u64(99);
        let (other, _) = Store::from_seed(&Seed::demo().stores[0], 1, 0, &mut other_rng).mint(
            TokenKind::Private,
            request(100),
            10_000,
            &mut other_rng,
        );
        let cases = [
            (token.as_str(), 99_999, Ok(())),
            (token.as_str(), 100_000, Err(StorefrontAuthError::Expired)),
            (
                other.as_str(),
                10_000,
                Err(StorefrontAuthError::SignatureInvalid),
            ),
            ("not-a-jwt", 10_000, Err(StorefrontAuthError::Malformed)),
        ];
        for (t, now, expected) in cases {
            assert_eq!(
                s.check_storefront_token(t, now).map(|_| ()),
                expected,
                "{now}"
            );
        }
    }

    #[test]
    fn regenerating_a_basic_token_kills_the_old_one() {
        let (mut s, mut rng) = store();
        let old = s.legacy_accounts[0].token.clone();
        let user = s.legacy_accounts[0].username.clone();
        assert!(matches!(
            s.authenticate_basic(&user, &old),
            BasicAuth::Allowed(_)
        ));
        let new = s
            .regenerate_basic_token(false, &user, &mut rng)
            .unwrap()
            .token
            .clone();
        assert_ne!(old, new);
        assert_eq!(s.authenticate_basic(&user, &old), BasicAuth::Invalid);
        assert!(matches!(
            s.authenticate_basic(&user, &new),
            BasicAuth::Allowed(_)
        ));
    }

    #[test]
    fn at_most_fifty_api_accounts() {
        let (mut s, mut rng) = store();
        for i in 1..MAX_API_ACCOUNTS {
            s.create_api_account(&format!("a{i}"), Scopes::none(), 0, &mut rng)
                .unwrap();
        }
        assert_eq!(
            s.create_api_account("one-too-many", Scopes::none(), 0, &mut rng)
                .map(|_| ()),
            Err(AccountError::TooMany)
        );
    }
}
