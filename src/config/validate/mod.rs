//! The second stage: raw structs -> the validated model.
//!
//! Every check runs even after an earlier one failed, so one run reports every problem in the file.
//! Each check function records its problems and returns `None` on failure; the model is assembled
//! with `?` only after all of its parts were checked.
//!
//! One `Validator`, its methods spread over files by concern: `vault` ([vault]), `policy` (the
//! policy keys and their conflicts), `credentials` (one credential and its provider table), one file
//! per provider, `dependents`, and `values` (checks of single values that the others share).

mod admin;
mod approle;
mod basic_auth;
mod credentials;
mod daemon;
mod dependents;
mod exec;
mod http;
mod policy;
mod sets;
pub(crate) mod store_account;
mod storefront;
mod values;

/// The longest names, paths, URLs and store hashes a config may hold (README "Limits").
#[cfg(test)]
pub mod limits {
    pub use super::values::{MAX_NAME, MAX_PATH, MAX_STORE_HASH, MAX_URL};
}
mod vault;

/// The longest name, and path, a member of a credential set may have.
pub(crate) const MAX_NAME_CHARS: usize = values::MAX_NAME;
pub(crate) const MAX_PATH_CHARS: usize = values::MAX_PATH;

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use super::error::Problem;
use super::model::*;
use super::raw::*;
use super::Environment;

/// Validates the raw config. `problems` holds what reading already found; it is extended here.
pub(crate) fn validate(
    raw: RawConfig,
    problems: Vec<Problem>,
    env: &dyn Environment,
) -> Result<Config, Vec<Problem>> {
    let mut v = Validator { env, problems };
    let config = v.config(&raw);
    sets::unmark(&mut v.problems, &raw);
    match config {
        Some(config) if v.problems.is_empty() => Ok(config),
        _ => Err(v.problems),
    }
}

/// Where a policy value was written, so that a conflict between two values is reported at the
/// key the user wrote. `None` in a slot: the built-in default.
#[derive(Debug, Clone, Default)]
struct Origins {
    max_age: Option<Origin>,
    schedule: Option<Origin>,
    expiry_lead: Option<Origin>,
    grace: Option<Origin>,
    jitter: Option<Origin>,
    credential_lifetime: Option<Origin>,
}

#[derive(Debug, Clone)]
struct Origin {
    key: String,
    span: Range<usize>,
}

impl Origin {
    fn of<T>(key: &str, value: &Spanned<T>) -> Option<Origin> {
        Some(Origin {
            key: key.to_string(),
            span: value.span(),
        })
    }
}

/// The credential a Vault reference (`access_token`, `signing_key`) is written in: the mount the
/// reference defaults to, and the secrets it must not point at.
#[derive(Debug, Clone, Copy)]
struct Home<'a> {
    /// The credential's mount; `None` when it is invalid (reported already).
    mount: Option<&'a str>,
    /// The credential's own secret; `None` when it is invalid (reported already).
    secret: Option<&'a KvPath>,
    /// The daemon's state location, `state_mount` + `state_prefix`.
    state: &'a KvPath,
}

struct Validator<'e> {
    env: &'e dyn Environment,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn error(
        &mut self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem::new(key, span, message));
    }

    /// Reports a problem with a value at its own position.
    fn bad<T>(&mut self, key: &str, value: &Spanned<T>, message: impl Into<String>) {
        self.error(key, Some(value.span()), message);
    }

    /// A required key: reports its absence at the table that should hold it.
    fn required<'r, T>(
        &mut self,
        value: &'r Option<Spanned<T>>,
        key: &str,
        table: Range<usize>,
    ) -> Option<&'r Spanned<T>> {
        if value.is_none() {
            let name = key.rsplit('.').next().unwrap_or(key);
            self.error(key, Some(table), format!("missing required key `{name}`"));
        }
        value.as_ref()
    }

    /// A required key, checked by `check` when present: the one shape of nearly every key.
    fn require<T, U>(
        &mut self,
        value: &Option<Spanned<T>>,
        key: &str,
        table: Range<usize>,
        check: impl FnOnce(&mut Self, &str, &Spanned<T>) -> Option<U>,
    ) -> Option<U> {
        let value = self.required(value, key, table)?;
        check(self, key, value)
    }

    /// Reports keys that are present but mean nothing in this context.
    fn unused(&mut self, prefix: &str, present: &[(&str, Option<Range<usize>>)], context: &str) {
        for (name, span) in present {
            if let Some(span) = span {
                self.error(
                    format!("{prefix}.{name}"),
                    Some(span.clone()),
                    format!("`{name}` is not used by {context}"),
                );
            }
        }
    }

    fn config(&mut self, raw: &RawConfig) -> Option<Config> {
        let vault = match &raw.vault {
            Some(vault) => self.vault(vault),
            None => {
                self.error("vault", None, "missing required table [vault]");
                None
            }
        };

        let builtin = Policy::default();
        let defaults = match &raw.defaults {
            Some(defaults) => self.policy(defaults, "defaults", &builtin, &Origins::default()),
            None => Some((builtin.clone(), Origins::default())),
        };
        if let Some((policy, origins)) = &defaults {
            self.check_policy(policy, origins, "defaults");
        }

        // Credentials are checked against whatever could be read of [vault] and [defaults], so
        // their own problems are reported even when those sections have some.
        let (state_mount, state_prefix) = match &vault {
            Some(vault) => (vault.state_mount.clone(), vault.state_prefix.clone()),
            None => vault::state_location(raw),
        };
        let state = KvPath {
            mount: state_mount,
            path: state_prefix,
        };
        let (base, base_origins) = defaults
            .clone()
            .unwrap_or_else(|| (builtin, Origins::default()));
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut secrets: HashMap<KvPath, usize> = HashMap::new();
        // Sized once: grown by doubling, a fleet's list would keep up to half its size unused.
        let mut credentials = Some(Vec::with_capacity(raw.credentials.len()));
        for (index, credential) in raw.credentials.iter().enumerate() {
            let checked = self.credential(
                "credentials",
                index,
                credential,
                &state,
                &base,
                &base_origins,
                &mut names,
                &mut secrets,
            );
            match (checked, credentials.as_mut()) {
                (Some(checked), Some(list)) => list.push(checked),
                _ => credentials = None,
            }
        }

        let credential_sets = self.credential_sets(
            raw,
            &state,
            &base,
            &base_origins,
            credentials.as_deref().unwrap_or_default(),
        );

        let admin = match &raw.admin {
            Some(admin) => self.admin(admin).map(Some),
            None => Some(None),
        };

        let daemon = match &raw.daemon {
            Some(daemon) => self.daemon(daemon),
            None => Some(Default::default()),
        };

        Some(Config {
            admin: admin?,
            daemon: daemon?,
            vault: vault?,
            defaults: defaults?.0,
            credentials: credentials?,
            credential_sets: credential_sets?,
        })
    }
}

/// What the table tests of the validation modules share.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use crate::config::Environment;

    /// No variable set, no file present.
    pub(crate) struct NoEnvironment;

    impl Environment for NoEnvironment {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
        fn file_exists(&self, _: &Path) -> bool {
            false
        }
    }

    /// A `[vault]` table on line 1, for tests of the tables after it.
    pub(crate) const VAULT: &str =
        "vault = { address = \"https://v:8200\", auth = { method = \"token\" } }\n";
}
