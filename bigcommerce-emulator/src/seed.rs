//! The seed file: which stores and credentials exist when the emulator starts.
//!
//! Two stages, as in the rest of the project: `raw` structs mirror the TOML, then `Seed` is the
//! validated model. Values left out (tokens, client ids, secrets) are generated at start.
//! Invariant: pure, no IO; `from_toml_str` is the only entry point for text.

use std::collections::HashSet;

use serde::Deserialize;
use thiserror::Error;

use crate::credentials::{is_access_token, is_store_hash};
use crate::scopes::{Access, Resource, Scopes};

/// Default quota of requests per window, Standard and Plus plans.
pub const DEFAULT_QUOTA: u32 = 150;
/// Default rate-limit window.
pub const DEFAULT_WINDOW_MS: u64 = 30_000;
/// Default delay between a revocation request and its effect.
pub const DEFAULT_REVOCATION_DELAY_MS: u64 = 2_000;
/// Default rolling-hour quota reported to legacy accounts in `X-BC-ApiLimit-Remaining`.
pub const DEFAULT_LEGACY_HOURLY_QUOTA: u32 = 20_000;
/// At most this many store-level API accounts per store.
pub const MAX_API_ACCOUNTS: usize = 50;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SeedError {
    #[error("seed is not valid TOML: {0}")]
    Toml(String),
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
}

fn invalid(at: impl Into<String>, message: impl Into<String>) -> SeedError {
    SeedError::Invalid {
        at: at.into(),
        message: message.into(),
    }
}

/// The validated seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Seed {
    /// Seeds the emulator's random generator (credentials, keys, fault dice). None: from the OS.
    pub rng_seed: Option<u64>,
    pub stores: Vec<StoreSeed>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreSeed {
    pub hash: String,
    pub name: String,
    pub plan: Plan,
    pub rate_limit_quota: u32,
    pub rate_limit_window_ms: u64,
    pub revocation_delay_ms: u64,
    pub legacy_hourly_quota: u32,
    /// Channel ids that storefront tokens may name.
    pub channels: Vec<u64>,
    pub api_accounts: Vec<ApiAccountSeed>,
    pub legacy_accounts: Vec<LegacyAccountSeed>,
    pub users: Vec<UserSeed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Standard,
    Plus,
    Pro,
    Enterprise,
}

impl Plan {
    /// The documented quota per 30 s window.
    pub fn default_quota(self) -> u32 {
        match self {
            Plan::Standard | Plan::Plus => DEFAULT_QUOTA,
            Plan::Pro => 450,
            Plan::Enterprise => 450,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiAccountSeed {
    pub name: String,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub access_token: Option<String>,
    pub scopes: Scopes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LegacyAccountSeed {
    pub username: String,
    pub token: Option<String>,
    pub permissions: Scopes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserSeed {
    pub username: String,
    pub api_token: Option<String>,
    pub api_enabled: bool,
    pub permissions: Scopes,
}

/// Fixed credentials of [`Seed::demo`], for tests.
pub mod demo {
    pub const STORE_HASH: &str = "abc123";
    pub const STORE_NAME: &str = "Demo Store";
    pub const ACCOUNT_NAME: &str = "full-access";
    pub const CLIENT_ID: &str = "democlientid0000000000000000001";
    pub const CLIENT_SECRET: &str =
        "demosecret00000000000000000000000000000000000000000000000000001";
    pub const ACCESS_TOKEN: &str = "demoaccesstoken0000000000000001";
    pub const LEGACY_USERNAME: &str = "legacy-app";
    pub const LEGACY_TOKEN: &str = "0000000000000000000000000000000000legacy";
    pub const USER_USERNAME: &str = "jane@example.com";
    pub const USER_TOKEN: &str = "00000000000000000000000000000000000user1";
}

impl Seed {
    /// One store `abc123` with a full-scope account, a legacy account and a user (all modify),
    /// with the fixed credentials of [`demo`].
    pub fn demo() -> Seed {
        Seed {
            // Fresh keys each time: two demo emulators must not accept each other's tokens.
            rng_seed: None,
            stores: vec![StoreSeed {
                hash: demo::STORE_HASH.to_string(),
                name: demo::STORE_NAME.to_string(),
                plan: Plan::Standard,
                rate_limit_quota: DEFAULT_QUOTA,
                rate_limit_window_ms: DEFAULT_WINDOW_MS,
                revocation_delay_ms: DEFAULT_REVOCATION_DELAY_MS,
                legacy_hourly_quota: DEFAULT_LEGACY_HOURLY_QUOTA,
                channels: vec![1],
                api_accounts: vec![ApiAccountSeed {
                    name: demo::ACCOUNT_NAME.to_string(),
                    client_id: Some(demo::CLIENT_ID.to_string()),
                    client_secret: Some(demo::CLIENT_SECRET.to_string()),
                    access_token: Some(demo::ACCESS_TOKEN.to_string()),
                    scopes: Scopes::all(Access::Modify),
                }],
                legacy_accounts: vec![LegacyAccountSeed {
                    username: demo::LEGACY_USERNAME.to_string(),
                    token: Some(demo::LEGACY_TOKEN.to_string()),
                    permissions: Scopes::all(Access::Modify),
                }],
                users: vec![UserSeed {
                    username: demo::USER_USERNAME.to_string(),
                    api_token: Some(demo::USER_TOKEN.to_string()),
                    api_enabled: true,
                    permissions: Scopes::all(Access::Modify),
                }],
            }],
        }
    }

    /// Parses and validates a seed file.
    pub fn from_toml_str(text: &str) -> Result<Seed, SeedError> {
        let raw: raw::SeedFile =
            toml::from_str(text).map_err(|e| SeedError::Toml(e.to_string()))?;
        resolve(raw)
    }
}

mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::Plan;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SeedFile {
        #[serde(default)]
        pub emulator: Emulator,
        #[serde(default)]
        pub stores: Vec<Store>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Emulator {
        pub rng_seed: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Store {
        pub hash: String,
        pub name: Option<String>,
        pub plan: Option<Plan>,
        pub rate_limit_quota: Option<u32>,
        pub rate_limit_window_ms: Option<u64>,
        pub revocation_delay_ms: Option<u64>,
        pub legacy_hourly_quota: Option<u32>,
        pub channels: Option<Vec<u64>>,
        #[serde(default)]
        pub api_accounts: Vec<ApiAccount>,
        #[serde(default)]
        pub legacy_accounts: Vec<LegacyAccount>,
        #[serde(default)]
        pub users: Vec<User>,
    }

    /// Resource name (or `all`) to level.
    pub type ScopeMap = BTreeMap<String, String>;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ApiAccount {
        pub name: String,
        pub client_id: Option<String>,
        pub client_secret: Option<String>,
        pub access_token: Option<String>,
        #[serde(default)]
        pub scopes: ScopeMap,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct LegacyAccount {
        pub username: String,
        pub token: Option<String>,
        pub permissions: Option<ScopeMap>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct User {
        pub username: String,
        pub api_token: Option<String>,
        pub api_enabled: Option<bool>,
        pub permissions: Option<ScopeMap>,
    }
}

fn parse_access(at: &str, level: &str) -> Result<Access, SeedError> {
    match level {
        "none" => Ok(Access::None),
        "read-only" => Ok(Access::ReadOnly),
        "modify" => Ok(Access::Modify),
        other => Err(invalid(
            at,
            format!("level `{other}` is not one of none, read-only, modify"),
        )),
    }
}

/// `all` sets every resource; named resources then override it.
fn parse_scopes(at: &str, map: &raw::ScopeMap) -> Result<Scopes, SeedError> {
    let mut scopes = match map.get("all") {
        Some(level) => Scopes::all(parse_access(&format!("{at}.all"), level)?),
        None => Scopes::none(),
    };
    for (name, level) in map.iter().filter(|(name, _)| name.as_str() != "all") {
        let here = format!("{at}.{name}");
        let resource: Resource = name.parse().map_err(|m: String| invalid(&here, m))?;
        scopes.set(resource, parse_access(&here, level)?);
    }
    Ok(scopes)
}

fn check_basic_username(at: &str, username: &str) -> Result<(), SeedError> {
    if username.is_empty() || username.contains(':') {
        return Err(invalid(at, "username must be non-empty and contain no `:`"));
    }
    Ok(())
}

fn check_basic_token(at: &str, token: &Option<String>) -> Result<(), SeedError> {
    match token {
        Some(t) if t.is_empty() || t.contains(':') || t.chars().any(char::is_whitespace) => Err(
            invalid(at, "token must be non-empty, without `:` or whitespace"),
        ),
        _ => Ok(()),
    }
}

fn resolve(raw: raw::SeedFile) -> Result<Seed, SeedError> {
    let mut hashes = HashSet::new();
    let mut access_tokens = HashSet::new();
    let mut stores = Vec::new();
    for (i, s) in raw.stores.into_iter().enumerate() {
        let at = format!("stores[{i}]");
        if !is_store_hash(&s.hash) {
            return Err(invalid(
                format!("{at}.hash"),
                "a store hash is 1 to 32 lowercase letters and digits",
            ));
        }
        if !hashes.insert(s.hash.clone()) {
            return Err(invalid(
                format!("{at}.hash"),
                format!("duplicate store `{}`", s.hash),
            ));
        }
        let plan = s.plan.unwrap_or(Plan::Standard);
        let quota = s.rate_limit_quota.unwrap_or(plan.default_quota());
        if quota == 0 {
            return Err(invalid(
                format!("{at}.rate_limit_quota"),
                "must be at least 1",
            ));
        }
        let window = s.rate_limit_window_ms.unwrap_or(DEFAULT_WINDOW_MS);
        if window == 0 {
            return Err(invalid(
                format!("{at}.rate_limit_window_ms"),
                "must be at least 1",
            ));
        }
        let channels = s.channels.unwrap_or_else(|| vec![1]);
        if channels.is_empty() || channels.contains(&0) {
            return Err(invalid(
                format!("{at}.channels"),
                "list at least one channel id, each >= 1",
            ));
        }
        if s.api_accounts.len() > MAX_API_ACCOUNTS {
            return Err(invalid(
                format!("{at}.api_accounts"),
                format!("at most {MAX_API_ACCOUNTS} store-level API accounts per store"),
            ));
        }
        let mut api_accounts = Vec::new();
        let mut client_ids = HashSet::new();
        for (j, a) in s.api_accounts.into_iter().enumerate() {
            let at = format!("{at}.api_accounts[{j}]");
            if a.name.trim().is_empty() {
                return Err(invalid(format!("{at}.name"), "must not be empty"));
            }
            if let Some(t) = &a.access_token {
                if !is_access_token(t) {
                    return Err(invalid(
                        format!("{at}.access_token"),
                        "an access token is 31 lowercase letters and digits",
                    ));
                }
                if !access_tokens.insert(t.clone()) {
                    return Err(invalid(
                        format!("{at}.access_token"),
                        "duplicate access token",
                    ));
                }
            }
            if let Some(c) = &a.client_id {
                if c.is_empty() || !client_ids.insert(c.clone()) {
                    return Err(invalid(
                        format!("{at}.client_id"),
                        "empty or duplicate client id",
                    ));
                }
            }
            api_accounts.push(ApiAccountSeed {
                scopes: parse_scopes(&format!("{at}.scopes"), &a.scopes)?,
                name: a.name,
                client_id: a.client_id,
                client_secret: a.client_secret,
                access_token: a.access_token,
            });
        }
        let mut usernames = HashSet::new();
        let mut legacy_accounts = Vec::new();
        for (j, l) in s.legacy_accounts.into_iter().enumerate() {
            let at = format!("{at}.legacy_accounts[{j}]");
            check_basic_username(&format!("{at}.username"), &l.username)?;
            check_basic_token(&format!("{at}.token"), &l.token)?;
            if !usernames.insert(l.username.clone()) {
                return Err(invalid(
                    format!("{at}.username"),
                    "duplicate username in this store",
                ));
            }
            let permissions = match &l.permissions {
                Some(map) => parse_scopes(&format!("{at}.permissions"), map)?,
                None => Scopes::all(Access::Modify),
            };
            legacy_accounts.push(LegacyAccountSeed {
                username: l.username,
                token: l.token,
                permissions,
            });
        }
        let mut users = Vec::new();
        for (j, u) in s.users.into_iter().enumerate() {
            let at = format!("{at}.users[{j}]");
            check_basic_username(&format!("{at}.username"), &u.username)?;
            check_basic_token(&format!("{at}.api_token"), &u.api_token)?;
            if !usernames.insert(u.username.clone()) {
                return Err(invalid(
                    format!("{at}.username"),
                    "duplicate username in this store",
                ));
            }
            let permissions = match &u.permissions {
                Some(map) => parse_scopes(&format!("{at}.permissions"), map)?,
                None => Scopes::all(Access::Modify),
            };
            users.push(UserSeed {
                username: u.username,
                api_token: u.api_token,
                api_enabled: u.api_enabled.unwrap_or(true),
                permissions,
            });
        }
        stores.push(StoreSeed {
            name: s.name.unwrap_or_else(|| format!("Store {}", s.hash)),
            hash: s.hash,
            plan,
            rate_limit_quota: quota,
            rate_limit_window_ms: window,
            revocation_delay_ms: s.revocation_delay_ms.unwrap_or(DEFAULT_REVOCATION_DELAY_MS),
            legacy_hourly_quota: s.legacy_hourly_quota.unwrap_or(DEFAULT_LEGACY_HOURLY_QUOTA),
            channels,
            api_accounts,
            legacy_accounts,
            users,
        });
    }
    Ok(Seed {
        rng_seed: raw.emulator.rng_seed,
        stores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/emulator-seed.toml");

    #[test]
    fn the_example_seed_parses() {
        let seed = Seed::from_toml_str(EXAMPLE).unwrap();
        assert!(!seed.stores.is_empty());
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let seed = Seed::from_toml_str(
            r#"
            [[stores]]
            hash = "x1"
            [[stores.api_accounts]]
            name = "a"
            scopes = { all = "read-only", orders = "modify", content = "none" }
            "#,
        )
        .unwrap();
        let s = &seed.stores[0];
        assert_eq!(s.rate_limit_quota, 150);
        assert_eq!(s.rate_limit_window_ms, 30_000);
        assert_eq!(s.revocation_delay_ms, 2_000);
        assert_eq!(s.channels, vec![1]);
        let scopes = &s.api_accounts[0].scopes;
        assert_eq!(scopes.get(Resource::Orders), Access::Modify);
        assert_eq!(scopes.get(Resource::Content), Access::None);
        assert_eq!(scopes.get(Resource::Products), Access::ReadOnly);
        assert!(s.api_accounts[0].access_token.is_none());
    }

    #[test]
    fn invalid_seeds_name_the_field() {
        let cases = [
            ("[[stores]]\nhash = \"ABC\"", "stores[0].hash"),
            ("[[stores]]\nhash = \"a\"\n[[stores]]\nhash = \"a\"", "stores[1].hash"),
            (
                "[[stores]]\nhash = \"a\"\n[[stores.api_accounts]]\nname = \"n\"\naccess_token = \"short\"",
                "stores[0].api_accounts[0].access_token",
            ),
            (
                "[[stores]]\nhash = \"a\"\n[[stores.api_accounts]]\nname = \"n\"\nscopes = { orders = \"write\" }",
                "stores[0].api_accounts[0].scopes.orders",
            ),
            (
                "[[stores]]\nhash = \"a\"\n[[stores.api_accounts]]\nname = \"n\"\nscopes = { nope = \"modify\" }",
                "stores[0].api_accounts[0].scopes.nope",
            ),
            (
                "[[stores]]\nhash = \"a\"\n[[stores.legacy_accounts]]\nusername = \"u\"\n[[stores.users]]\nusername = \"u\"",
                "stores[0].users[0].username",
            ),
            ("[[stores]]\nhash = \"a\"\nrate_limit_quota = 0", "stores[0].rate_limit_quota"),
            ("[[stores]]\nhash = \"a\"\nchannels = []", "stores[0].channels"),
        ];
        for (text, field) in cases {
            match Seed::from_toml_str(text) {
                Err(SeedError::Invalid { at, .. }) => assert_eq!(at, field, "{text}"),
                other => panic!("{text}: expected an error at {field}, got {other:?}"),
            }
        }
        assert!(matches!(
            Seed::from_toml_str("stores = 3"),
            Err(SeedError::Toml(_))
        ));
    }

    #[test]
    fn the_demo_seed_uses_valid_formats() {
        let seed = Seed::demo();
        assert!(is_access_token(demo::ACCESS_TOKEN));
        assert!(is_access_token(demo::CLIENT_ID));
        assert_eq!(seed.stores[0].hash, demo::STORE_HASH);
    }
}
