//! `[vault]`: addresses, auth, and where the daemon keeps its state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::values::{check_kv_path, quote};
use super::Validator;
use crate::config::model::*;
use crate::config::raw::*;
use crate::config::redact_url;

pub(super) const DEFAULT_STATE_MOUNT: &str = "secret";
pub(super) const DEFAULT_STATE_PREFIX: &str = "secret-rotator";
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const DEFAULT_APPROLE_MOUNT: &str = "approle";
/// systemd sets this to the directory of the unit's `LoadCredential=` files.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

impl Validator<'_> {
    pub(super) fn vault(&mut self, raw: &Spanned<RawVault>) -> Option<VaultConfig> {
        let table = raw.span();
        let raw = raw.get_ref();

        let addresses = match (&raw.address, &raw.addresses) {
            (Some(_), Some(list)) => {
                self.bad(
                    "vault.addresses",
                    list,
                    "set either `address` or `addresses`, not both",
                );
                None
            }
            (Some(address), None) => self.url("vault.address", address).map(|a| vec![a]),
            (None, Some(list)) => {
                if list.get_ref().is_empty() {
                    self.bad("vault.addresses", list, "must list at least one address");
                }
                let mut all: Option<Vec<String>> = Some(Vec::new());
                for (i, address) in list.get_ref().iter().enumerate() {
                    let key = format!("vault.addresses[{i}]");
                    match (self.url(&key, address), all.as_mut()) {
                        (Some(url), Some(seen)) if seen.contains(&url) => {
                            self.bad(&key, address, "lists the same node twice");
                            all = None;
                        }
                        (Some(url), Some(seen)) => seen.push(url),
                        _ => all = None,
                    }
                }
                all.filter(|all| !all.is_empty())
            }
            (None, None) => {
                self.error(
                    "vault.address",
                    Some(table.clone()),
                    "missing required key `address` (or `addresses`)",
                );
                None
            }
        };

        let namespace = match &raw.namespace {
            None => Some(None),
            Some(ns) => {
                let trimmed = ns.get_ref().trim_matches('/');
                if trimmed.is_empty() {
                    self.bad("vault.namespace", ns, "must not be empty");
                    None
                } else {
                    Some(Some(trimmed.to_string()))
                }
            }
        };

        let ca_file = match &raw.ca_file {
            None => Some(None),
            Some(path) => self.absolute_existing_file("vault.ca_file", path).map(Some),
        };

        let state_mount =
            self.kv_path_or("vault.state_mount", &raw.state_mount, DEFAULT_STATE_MOUNT);
        let state_prefix = self.kv_path_or(
            "vault.state_prefix",
            &raw.state_prefix,
            DEFAULT_STATE_PREFIX,
        );
        let request_timeout = self.positive_duration_or(
            "vault.request_timeout",
            &raw.request_timeout,
            DEFAULT_REQUEST_TIMEOUT,
        );

        let auth = match &raw.auth {
            Some(auth) => self.auth(auth),
            None => {
                self.error(
                    "vault.auth",
                    Some(table),
                    "missing required table [vault.auth]",
                );
                None
            }
        };

        Some(VaultConfig {
            addresses: addresses?,
            namespace: namespace?,
            ca_file: ca_file?,
            auth: auth?,
            state_mount: state_mount?,
            state_prefix: state_prefix?,
            request_timeout: request_timeout?,
        })
    }

    pub(super) fn auth(&mut self, raw: &Spanned<RawAuth>) -> Option<VaultAuth> {
        let table = raw.span();
        let raw = raw.get_ref();
        let method = self.required(&raw.method, "vault.auth.method", table.clone())?;
        let span = |value: &Option<Spanned<String>>| value.as_ref().map(|v| v.span());
        match method.get_ref().as_str() {
            "token" => {
                self.unused(
                    "vault.auth",
                    &[
                        ("path", span(&raw.path)),
                        ("mount", span(&raw.mount)),
                        ("role_id", span(&raw.role_id)),
                        ("role_id_file", span(&raw.role_id_file)),
                        ("secret_id_file", span(&raw.secret_id_file)),
                    ],
                    "method `token`",
                );
                // VAULT_TOKEN is read when the daemon starts, not here: a config is checked on
                // machines (CI, a package build) that never hold the token.
                Some(VaultAuth::TokenEnv)
            }
            "token_file" => {
                self.unused(
                    "vault.auth",
                    &[
                        ("mount", span(&raw.mount)),
                        ("role_id", span(&raw.role_id)),
                        ("role_id_file", span(&raw.role_id_file)),
                        ("secret_id_file", span(&raw.secret_id_file)),
                    ],
                    "method `token_file`",
                );
                let path = self.required(&raw.path, "vault.auth.path", table)?;
                let path = self.credential_file("vault.auth.path", path)?;
                Some(VaultAuth::TokenFile { path })
            }
            "approle" => {
                self.unused(
                    "vault.auth",
                    &[("path", span(&raw.path))],
                    "method `approle`",
                );
                let mount = self.kv_path_or("vault.auth.mount", &raw.mount, DEFAULT_APPROLE_MOUNT);
                let role_id = match (&raw.role_id, &raw.role_id_file) {
                    (Some(_), Some(file)) => {
                        self.bad(
                            "vault.auth.role_id_file",
                            file,
                            "set either `role_id` or `role_id_file`, not both",
                        );
                        None
                    }
                    (Some(id), None) => {
                        if id.get_ref().trim().is_empty() {
                            self.bad("vault.auth.role_id", id, "must not be empty");
                            None
                        } else {
                            Some(RoleId::Inline(id.get_ref().trim().to_string()))
                        }
                    }
                    (None, Some(file)) => self
                        .credential_file("vault.auth.role_id_file", file)
                        .map(RoleId::File),
                    (None, None) => {
                        self.error(
                            "vault.auth.role_id",
                            Some(table.clone()),
                            "missing required key `role_id` (or `role_id_file`)",
                        );
                        None
                    }
                };
                let secret_id_file = self.require(
                    &raw.secret_id_file,
                    "vault.auth.secret_id_file",
                    table,
                    Self::credential_file,
                );
                Some(VaultAuth::AppRole {
                    mount: mount?,
                    role_id: role_id?,
                    secret_id_file: secret_id_file?,
                })
            }
            other => {
                self.bad(
                    "vault.auth.method",
                    method,
                    format!(
                        "unknown auth method {}; known methods: token, token_file, approle",
                        quote(other)
                    ),
                );
                None
            }
        }
    }

    /// A file the daemon reads a secret from. A relative path is resolved against
    /// `$CREDENTIALS_DIRECTORY`, where systemd's `LoadCredential=` puts such files.
    pub(super) fn credential_file(
        &mut self,
        key: &str,
        value: &Spanned<String>,
    ) -> Option<PathBuf> {
        let path = Path::new(value.get_ref());
        if value.get_ref().is_empty() {
            self.bad(key, value, "must not be empty");
            return None;
        }
        let resolved = if path.is_absolute() {
            path.to_path_buf()
        } else {
            match self
                .env
                .var(CREDENTIALS_DIRECTORY)
                .filter(|d| !d.is_empty())
            {
                Some(dir) => Path::new(&dir).join(path),
                None => {
                    self.bad(
                        key,
                        value,
                        format!(
                            "relative path {} is resolved against ${CREDENTIALS_DIRECTORY}, which is not set (use an absolute path, or LoadCredential= in the unit)",
                            quote(&path.display().to_string())
                        ),
                    );
                    return None;
                }
            }
        };
        if !self.env.file_exists(&resolved) {
            self.bad(
                key,
                value,
                format!(
                    "file not found: {}",
                    redact_url(&resolved.display().to_string())
                ),
            );
            return None;
        }
        Some(resolved)
    }

    pub(super) fn absolute_existing_file(
        &mut self,
        key: &str,
        value: &Spanned<String>,
    ) -> Option<PathBuf> {
        let path = Path::new(value.get_ref());
        if !path.is_absolute() {
            self.bad(
                key,
                value,
                format!(
                    "must be an absolute path, got {}",
                    quote(&path.display().to_string())
                ),
            );
            return None;
        }
        if !self.env.file_exists(path) {
            self.bad(
                key,
                value,
                format!(
                    "file not found: {}",
                    redact_url(&path.display().to_string())
                ),
            );
            return None;
        }
        Some(path.to_path_buf())
    }
}

/// When `[vault]` did not validate, credentials are still checked against the state location it
/// names (if those keys are fine) or the defaults.
pub(super) fn state_location(raw: &RawConfig) -> (String, String) {
    let vault = raw.vault.as_ref().map(|v| v.get_ref());
    let pick = |value: Option<&Option<Spanned<String>>>, default: &str| {
        value
            .and_then(|v| v.as_ref())
            .map(|v| v.get_ref().clone())
            .filter(|v| check_kv_path(v).is_ok())
            .unwrap_or_else(|| default.to_string())
    };
    (
        pick(vault.map(|v| &v.state_mount), DEFAULT_STATE_MOUNT),
        pick(vault.map(|v| &v.state_prefix), DEFAULT_STATE_PREFIX),
    )
}
