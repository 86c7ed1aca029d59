//! The second stage: raw structs -> the validated model.
//!
//! Every check runs even after an earlier one failed, so one run reports every problem in the file.
//! Each check function records its problems and returns `None` on failure; the model is assembled
//! with `?` only after all of its parts were checked.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveTime;
use toml::Spanned;

use super::error::Problem;
use super::model::*;
use super::raw::*;
use super::Environment;

const DEFAULT_STATE_MOUNT: &str = "secret";
const DEFAULT_STATE_PREFIX: &str = "secret-rotator";
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_SECRET_MOUNT: &str = "secret";
const DEFAULT_APPROLE_MOUNT: &str = "approle";
const DEFAULT_BIGCOMMERCE_API_URL: &str = "https://api.bigcommerce.com";
const DEFAULT_STOREFRONT_URL: &str = "https://store-{store_hash}.mybigcommerce.com";
const DEFAULT_LEGACY_API_PATH: &str = "https://store-{store_hash}.mybigcommerce.com/api/v2/";
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
const DAY: u64 = 24 * 60 * 60;
/// Upper bound for every duration: far beyond any sensible rotation period, and far below the
/// range where adding it to a timestamp could overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * DAY);
/// Written instead of a duration or cron expression to switch a trigger off.
const NEVER: &str = "never";
const PRIVATE_TOKEN_SCOPES: [&str; 3] = ["Unauthenticated", "Customer", "B2B"];
const DEPENDENT_TYPES: [&str; 3] = ["webhook", "file", "exec"];
/// systemd sets this to the directory of the unit's `LoadCredential=` files.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// The built-in policy, before `[defaults]` and the credential's own keys are applied.
pub(crate) fn builtin_policy() -> Policy {
    Policy {
        max_age: Some(Duration::from_secs(30 * DAY)),
        schedule: None,
        timezone: chrono_tz::UTC,
        expiry_lead: Duration::from_secs(7 * DAY),
        window: None,
        jitter: Duration::ZERO,
        grace: Duration::from_secs(60 * 60),
        destroy_old_version: false,
        credential_lifetime: None,
    }
}

/// Validates the raw config. `problems` holds what reading already found; it is extended here.
pub(crate) fn validate(
    raw: RawConfig,
    problems: Vec<Problem>,
    env: &dyn Environment,
) -> Result<Config, Vec<Problem>> {
    let mut v = Validator { env, problems };
    let config = v.config(&raw);
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

        let builtin = builtin_policy();
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
            None => state_location(raw),
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
        let mut credentials = Some(Vec::new());
        for (index, credential) in raw.credentials.iter().enumerate() {
            let checked = self.credential(
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

        Some(Config {
            vault: vault?,
            defaults: defaults?.0,
            credentials: credentials?,
        })
    }

    // ----- [vault] -----

    fn vault(&mut self, raw: &Spanned<RawVault>) -> Option<VaultConfig> {
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
                let mut all = Some(Vec::new());
                for (i, address) in list.get_ref().iter().enumerate() {
                    match (
                        self.url(&format!("vault.addresses[{i}]"), address),
                        all.as_mut(),
                    ) {
                        (Some(address), Some(all)) => all.push(address),
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

    fn auth(&mut self, raw: &Spanned<RawAuth>) -> Option<VaultAuth> {
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
                let secret_id_file = self
                    .required(&raw.secret_id_file, "vault.auth.secret_id_file", table)
                    .and_then(|file| self.credential_file("vault.auth.secret_id_file", file));
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
                        "unknown auth method `{other}`; known methods: token, token_file, approle"
                    ),
                );
                None
            }
        }
    }

    /// A file the daemon reads a secret from. A relative path is resolved against
    /// `$CREDENTIALS_DIRECTORY`, where systemd's `LoadCredential=` puts such files.
    fn credential_file(&mut self, key: &str, value: &Spanned<String>) -> Option<PathBuf> {
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
                            "relative path `{}` is resolved against ${CREDENTIALS_DIRECTORY}, which is not set (use an absolute path, or LoadCredential= in the unit)",
                            path.display()
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
                format!("file not found: {}", resolved.display()),
            );
            return None;
        }
        Some(resolved)
    }

    fn absolute_existing_file(&mut self, key: &str, value: &Spanned<String>) -> Option<PathBuf> {
        let path = Path::new(value.get_ref());
        if !path.is_absolute() {
            self.bad(
                key,
                value,
                format!("must be an absolute path, got `{}`", path.display()),
            );
            return None;
        }
        if !self.env.file_exists(path) {
            self.bad(key, value, format!("file not found: {}", path.display()));
            return None;
        }
        Some(path.to_path_buf())
    }

    // ----- policy -----

    /// Applies the policy keys in `raw` on top of `base`.
    fn policy(
        &mut self,
        raw: &RawPolicy,
        prefix: &str,
        base: &Policy,
        base_origins: &Origins,
    ) -> Option<(Policy, Origins)> {
        let key = |name: &str| format!("{prefix}.{name}");
        let mut origins = base_origins.clone();

        let max_age = match &raw.max_age {
            None => Some(base.max_age),
            Some(value) => {
                origins.max_age = Origin::of(&key("max_age"), value);
                if value.get_ref().trim() == NEVER {
                    Some(None)
                } else {
                    self.positive_duration(&key("max_age"), value).map(Some)
                }
            }
        };
        let schedule = match &raw.schedule {
            None => Some(base.schedule.clone()),
            Some(value) => {
                origins.schedule = Origin::of(&key("schedule"), value);
                if value.get_ref().trim() == NEVER {
                    Some(None)
                } else {
                    self.cron(&key("schedule"), value).map(Some)
                }
            }
        };
        let timezone = match &raw.timezone {
            None => Some(base.timezone),
            Some(value) => match chrono_tz::Tz::from_str(value.get_ref().trim()) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    self.bad(
                        &key("timezone"),
                        value,
                        format!(
                            "unknown timezone `{}`; use an IANA name such as `UTC` or `Europe/Berlin`",
                            value.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let expiry_lead = match &raw.expiry_lead {
            None => Some(base.expiry_lead),
            Some(value) => {
                origins.expiry_lead = Origin::of(&key("expiry_lead"), value);
                self.duration(&key("expiry_lead"), value)
            }
        };
        let window = match &raw.window {
            None => Some(base.window),
            Some(value) => self.window(&key("window"), value).map(Some),
        };
        let jitter = match &raw.jitter {
            None => Some(base.jitter),
            Some(value) => self.duration(&key("jitter"), value),
        };
        let grace = match &raw.grace {
            None => Some(base.grace),
            Some(value) => {
                origins.grace = Origin::of(&key("grace"), value);
                self.duration(&key("grace"), value)
            }
        };
        let destroy_old_version = match &raw.destroy_old_version {
            None => base.destroy_old_version,
            Some(value) => *value.get_ref(),
        };
        let credential_lifetime = match &raw.credential_lifetime {
            None => Some(base.credential_lifetime),
            Some(value) => {
                origins.credential_lifetime = Origin::of(&key("credential_lifetime"), value);
                self.positive_duration(&key("credential_lifetime"), value)
                    .map(Some)
            }
        };

        let policy = Policy {
            max_age: max_age?,
            schedule: schedule?,
            timezone: timezone?,
            expiry_lead: expiry_lead?,
            window: window?,
            jitter: jitter?,
            grace: grace?,
            destroy_old_version,
            credential_lifetime: credential_lifetime?,
        };
        Some((policy, origins))
    }

    /// Checks between policy values. A conflict is reported only at the level (`defaults` or one
    /// credential) that wrote one of the two values, so a bad `[defaults]` is reported once, not
    /// once per credential.
    fn check_policy(&mut self, policy: &Policy, origins: &Origins, prefix: &str) {
        let here = |origin: &Option<Origin>| {
            origin
                .as_ref()
                .is_some_and(|o| o.key.starts_with(&format!("{prefix}.")))
        };
        if let Some(max_age) = policy.max_age {
            if policy.grace >= max_age && (here(&origins.grace) || here(&origins.max_age)) {
                let at = pick_here(&origins.grace, &origins.max_age, prefix);
                self.at(
                    at,
                    prefix,
                    format!(
                        "grace ({}) must be shorter than max_age ({})",
                        show(policy.grace),
                        show(max_age)
                    ),
                );
            }
        }
        if let Some(lifetime) = policy.credential_lifetime {
            if policy.expiry_lead >= lifetime
                && (here(&origins.expiry_lead) || here(&origins.credential_lifetime))
            {
                let at = pick_here(&origins.expiry_lead, &origins.credential_lifetime, prefix);
                self.at(
                    at,
                    prefix,
                    format!(
                        "expiry_lead ({}) must be shorter than credential_lifetime ({})",
                        show(policy.expiry_lead),
                        show(lifetime)
                    ),
                );
            }
        }
    }

    fn at(&mut self, origin: Option<Origin>, fallback_key: &str, message: String) {
        match origin {
            Some(origin) => self.error(origin.key, Some(origin.span), message),
            None => self.error(fallback_key, None, message),
        }
    }

    fn duration(&mut self, key: &str, value: &Spanned<String>) -> Option<Duration> {
        match humantime::parse_duration(value.get_ref().trim()) {
            Ok(duration) if duration > MAX_DURATION => {
                self.bad(
                    key,
                    value,
                    format!("duration `{}` is longer than 10 years", value.get_ref()),
                );
                None
            }
            Ok(duration) => Some(duration),
            // humantime's own message lists every unit spelling; an example says more.
            Err(_) => {
                self.bad(
                    key,
                    value,
                    format!(
                        "invalid duration `{}`; write e.g. `90s`, `10m`, `1h`, `7d`",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn positive_duration(&mut self, key: &str, value: &Spanned<String>) -> Option<Duration> {
        let duration = self.duration(key, value)?;
        if duration.is_zero() {
            self.bad(key, value, "must be longer than zero");
            return None;
        }
        Some(duration)
    }

    fn positive_duration_or(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Option<Duration> {
        match value {
            None => Some(default),
            Some(value) => self.positive_duration(key, value),
        }
    }

    fn cron(&mut self, key: &str, value: &Spanned<String>) -> Option<CronSchedule> {
        let expression = value.get_ref().trim();
        match croner::Cron::from_str(expression) {
            Ok(_) => Some(CronSchedule {
                expression: expression.to_string(),
            }),
            Err(error) => {
                self.bad(
                    key,
                    value,
                    format!("invalid cron expression `{expression}`: {error}"),
                );
                None
            }
        }
    }

    fn window(&mut self, key: &str, value: &Spanned<String>) -> Option<Window> {
        let text = value.get_ref().trim();
        let parsed = text.split_once('-').and_then(|(start, end)| {
            let start = NaiveTime::parse_from_str(start.trim(), "%H:%M").ok()?;
            let end = NaiveTime::parse_from_str(end.trim(), "%H:%M").ok()?;
            Some(Window { start, end })
        });
        match parsed {
            None => {
                self.bad(
                    key,
                    value,
                    format!("invalid window `{text}`; write `HH:MM-HH:MM`, e.g. `22:00-04:00`"),
                );
                None
            }
            Some(window) if window.start == window.end => {
                // Ambiguous (empty, or the whole day): leave the key out for "any time".
                self.bad(
                    key,
                    value,
                    "window start and end are equal; leave `window` out to allow any time",
                );
                None
            }
            Some(window) => Some(window),
        }
    }

    // ----- credentials -----

    #[allow(clippy::too_many_arguments)]
    fn credential(
        &mut self,
        index: usize,
        raw: &Spanned<RawCredential>,
        state: &KvPath,
        base: &Policy,
        base_origins: &Origins,
        names: &mut HashMap<String, usize>,
        secrets: &mut HashMap<KvPath, usize>,
    ) -> Option<Credential> {
        let prefix = format!("credentials[{index}]");
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();

        let name = self.unique_name(
            &key("name"),
            &raw.name,
            table.clone(),
            names,
            index,
            "credential",
        );

        let mount = self.kv_path_or(&key("mount"), &raw.mount, DEFAULT_SECRET_MOUNT);
        let path = self
            .required(&raw.path, &key("path"), table.clone())
            .and_then(|path| self.kv_path(&key("path"), path));
        let secret = match (&mount, &path) {
            (Some(mount), Some(path)) => Some(KvPath {
                mount: mount.clone(),
                path: path.clone(),
            }),
            _ => None,
        };
        if let (Some(secret), Some(value)) = (&secret, &raw.path) {
            if secret.mount == state.mount && is_under(&secret.path, &state.path) {
                self.bad(
                    &key("path"),
                    value,
                    format!("`{secret}` is inside the daemon's own state prefix `{state}`"),
                );
            } else if let Some(first) = secrets.get(secret) {
                self.bad(
                    &key("path"),
                    value,
                    format!("secret `{secret}` is already used by credentials[{first}]"),
                );
            } else {
                secrets.insert(secret.clone(), index);
            }
        }

        let policy =
            self.policy(&raw.policy(), &prefix, base, base_origins)
                .map(|(policy, origins)| {
                    self.check_policy(&policy, &origins, &prefix);
                    if policy.max_age.is_none() && policy.schedule.is_none() {
                        let at = origins.max_age.clone().or(origins.schedule.clone());
                        let at = at.or(Some(Origin {
                            key: prefix.clone(),
                            span: table.clone(),
                        }));
                        self.at(
                            at,
                            &prefix,
                            "nothing makes this credential due: set `max_age` or `schedule`"
                                .to_string(),
                        );
                    }
                    policy
                });

        let provider = self.provider(&prefix, table.clone(), raw, mount.as_deref());

        // A secret-id lives `secret_id_ttl`; rotating `expiry_lead` before its expiry must leave
        // it some life, or every new secret-id would be due the moment it is written.
        if let (
            Some(policy),
            Some(ProviderConfig::VaultAppRoleSecretId(AppRoleSecretIdConfig {
                secret_id_ttl: Some(ttl),
                ..
            })),
            Some(approle),
        ) = (&policy, &provider, &raw.vault_approle_secret_id)
        {
            if policy.expiry_lead >= *ttl {
                let at = approle.get_ref().secret_id_ttl.as_ref().map(|v| Origin {
                    key: format!("{prefix}.{}.secret_id_ttl", PROVIDERS[1]),
                    span: v.span(),
                });
                self.at(
                    at,
                    &format!("{prefix}.{}.secret_id_ttl", PROVIDERS[1]),
                    format!(
                        "secret_id_ttl ({}) must be longer than expiry_lead ({}); lower expiry_lead for this credential",
                        show(*ttl),
                        show(policy.expiry_lead)
                    ),
                );
            }
        }

        let mut dependents = Some(Vec::new());
        let mut dependent_names: HashMap<String, usize> = HashMap::new();
        for (j, dependent) in raw.dependents.iter().enumerate() {
            let checked = self.dependent(
                &format!("{prefix}.dependents[{j}]"),
                dependent,
                mount.as_deref(),
                &mut dependent_names,
                j,
            );
            match (checked, dependents.as_mut()) {
                (Some(checked), Some(list)) => list.push(checked),
                _ => dependents = None,
            }
        }

        Some(Credential {
            name: name?,
            secret: secret?,
            provider: provider?,
            policy: policy?,
            dependents: dependents?,
        })
    }

    fn provider(
        &mut self,
        prefix: &str,
        table: Range<usize>,
        raw: &RawCredential,
        mount: Option<&str>,
    ) -> Option<ProviderConfig> {
        let present: Vec<(&str, Range<usize>)> = [
            (
                PROVIDERS[0],
                raw.bigcommerce_storefront.as_ref().map(|p| p.span()),
            ),
            (
                PROVIDERS[1],
                raw.vault_approle_secret_id.as_ref().map(|p| p.span()),
            ),
            (
                PROVIDERS[2],
                raw.bigcommerce_legacy_account.as_ref().map(|p| p.span()),
            ),
            (
                PROVIDERS[3],
                raw.bigcommerce_user_token.as_ref().map(|p| p.span()),
            ),
            (
                PROVIDERS[4],
                raw.bigcommerce_store_account.as_ref().map(|p| p.span()),
            ),
        ]
        .into_iter()
        .filter_map(|(name, span)| span.map(|span| (name, span)))
        .collect();
        match present.as_slice() {
            [] => {
                self.error(
                    prefix,
                    Some(table),
                    format!(
                        "no provider table; add exactly one of: {}",
                        PROVIDERS.join(", ")
                    ),
                );
                return None;
            }
            [_] => {}
            [(first, _), rest @ ..] => {
                for (name, span) in rest {
                    self.error(
                        format!("{prefix}.{name}"),
                        Some(span.clone()),
                        format!("a credential has exactly one provider table; this one also has `{first}`"),
                    );
                }
            }
        }

        // Every present table is checked, even when there are two, so all problems show at once.
        let mut checked = Vec::new();
        if let Some(p) = &raw.bigcommerce_storefront {
            let key = format!("{prefix}.{}", PROVIDERS[0]);
            checked.push(
                self.storefront(&key, p, mount)
                    .map(ProviderConfig::BigCommerceStorefront),
            );
        }
        if let Some(p) = &raw.vault_approle_secret_id {
            let key = format!("{prefix}.{}", PROVIDERS[1]);
            checked.push(
                self.approle_secret_id(&key, p)
                    .map(ProviderConfig::VaultAppRoleSecretId),
            );
        }
        if let Some(p) = &raw.bigcommerce_legacy_account {
            let key = format!("{prefix}.{}", PROVIDERS[2]);
            checked.push(
                self.basic_auth_account(&key, p)
                    .map(ProviderConfig::BigCommerceLegacyAccount),
            );
        }
        if let Some(p) = &raw.bigcommerce_user_token {
            let key = format!("{prefix}.{}", PROVIDERS[3]);
            checked.push(
                self.basic_auth_account(&key, p)
                    .map(ProviderConfig::BigCommerceUserToken),
            );
        }
        if let Some(p) = &raw.bigcommerce_store_account {
            let key = format!("{prefix}.{}", PROVIDERS[4]);
            checked.push(
                self.store_account(&key, p)
                    .map(ProviderConfig::BigCommerceStoreAccount),
            );
        }
        if checked.len() != 1 {
            return None;
        }
        checked.pop().flatten()
    }

    fn storefront(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawStorefront>,
        mount: Option<&str>,
    ) -> Option<StorefrontConfig> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();

        let store_hash = self
            .required(&raw.store_hash, &key("store_hash"), table.clone())
            .and_then(|hash| self.store_hash(&key("store_hash"), hash));
        let api_url = self.url_or(
            &key("api_url"),
            &raw.api_url,
            DEFAULT_BIGCOMMERCE_API_URL,
            store_hash.as_deref(),
        );
        let storefront_url = self.url_or(
            &key("storefront_url"),
            &raw.storefront_url,
            DEFAULT_STOREFRONT_URL,
            store_hash.as_deref(),
        );
        let access_token = self
            .required(&raw.access_token, &key("access_token"), table.clone())
            .and_then(|field| self.vault_field(&key("access_token"), field, mount));

        let kind = match &raw.kind {
            None => Some(StorefrontTokenKind::Storefront),
            Some(kind) => match kind.get_ref().as_str() {
                "storefront" => Some(StorefrontTokenKind::Storefront),
                "private" => Some(StorefrontTokenKind::Private),
                "customer_impersonation" => Some(StorefrontTokenKind::CustomerImpersonation),
                other => {
                    self.bad(
                        &key("kind"),
                        kind,
                        format!("unknown token kind `{other}`; known kinds: storefront, private, customer_impersonation"),
                    );
                    None
                }
            },
        };

        let channel_ids = self
            .required(&raw.channel_ids, &key("channel_ids"), table.clone())
            .and_then(|ids| {
                if ids.get_ref().is_empty() {
                    self.bad(
                        &key("channel_ids"),
                        ids,
                        "must list at least one channel id",
                    );
                    return None;
                }
                let mut all = Some(Vec::new());
                for (i, id) in ids.get_ref().iter().enumerate() {
                    let checked = match u32::try_from(*id.get_ref()) {
                        Ok(id) if id >= 1 => Some(id),
                        _ => {
                            self.bad(
                                &format!("{prefix}.channel_ids[{i}]"),
                                id,
                                format!(
                                    "channel id must be a whole number >= 1, got {}",
                                    id.get_ref()
                                ),
                            );
                            None
                        }
                    };
                    match (checked, all.as_mut()) {
                        (Some(id), Some(all)) => all.push(id),
                        _ => all = None,
                    }
                }
                all
            });

        let allowed_cors_origins = match &raw.allowed_cors_origins {
            None => Some(Vec::new()),
            Some(origins) => {
                let mut ok = true;
                if kind.is_some_and(|k| k != StorefrontTokenKind::Storefront) {
                    self.bad(
                        &key("allowed_cors_origins"),
                        origins,
                        "only tokens of kind `storefront` take allowed_cors_origins",
                    );
                    ok = false;
                }
                if origins.get_ref().len() > 2 {
                    self.bad(
                        &key("allowed_cors_origins"),
                        origins,
                        format!(
                            "at most 2 origins are allowed, got {}",
                            origins.get_ref().len()
                        ),
                    );
                    ok = false;
                }
                let mut all = Vec::new();
                for (i, origin) in origins.get_ref().iter().enumerate() {
                    match self.origin(&format!("{prefix}.allowed_cors_origins[{i}]"), origin) {
                        Some(origin) => all.push(origin),
                        None => ok = false,
                    }
                }
                ok.then_some(all)
            }
        };

        let scopes = match (&raw.scopes, kind) {
            (None, Some(StorefrontTokenKind::Private)) => {
                self.error(
                    key("scopes"),
                    Some(table),
                    format!(
                        "tokens of kind `private` need `scopes`, a non-empty subset of {}",
                        PRIVATE_TOKEN_SCOPES.join(", ")
                    ),
                );
                None
            }
            (None, _) => Some(Vec::new()),
            (Some(scopes), Some(StorefrontTokenKind::Private)) => {
                self.private_scopes(&key("scopes"), scopes)
            }
            (Some(scopes), _) => {
                self.bad(
                    &key("scopes"),
                    scopes,
                    "only tokens of kind `private` take scopes",
                );
                None
            }
        };

        Some(StorefrontConfig {
            api_url: api_url?,
            storefront_url: storefront_url?,
            store_hash: store_hash?,
            access_token: access_token?,
            kind: kind?,
            channel_ids: channel_ids?,
            allowed_cors_origins: allowed_cors_origins?,
            scopes: scopes?,
        })
    }

    fn private_scopes(
        &mut self,
        key: &str,
        scopes: &Spanned<Vec<Spanned<String>>>,
    ) -> Option<Vec<String>> {
        if scopes.get_ref().is_empty() {
            self.bad(
                key,
                scopes,
                format!(
                    "must list at least one of {}",
                    PRIVATE_TOKEN_SCOPES.join(", ")
                ),
            );
            return None;
        }
        let mut all: Option<Vec<String>> = Some(Vec::new());
        for (i, scope) in scopes.get_ref().iter().enumerate() {
            let name = scope.get_ref();
            let problem = if !PRIVATE_TOKEN_SCOPES.contains(&name.as_str()) {
                Some(format!(
                    "unknown scope `{name}`; known scopes: {}",
                    PRIVATE_TOKEN_SCOPES.join(", ")
                ))
            } else if all.as_ref().is_some_and(|all| all.contains(name)) {
                Some(format!("scope `{name}` is listed twice"))
            } else {
                None
            };
            match (problem, all.as_mut()) {
                (Some(problem), _) => {
                    self.bad(&format!("{key}[{i}]"), scope, problem);
                    all = None;
                }
                (None, Some(all)) => all.push(name.clone()),
                (None, None) => {}
            }
        }
        all
    }

    /// A required, well-formed name that no earlier entry of the same list (`{what}s`) has.
    fn unique_name(
        &mut self,
        key: &str,
        raw: &Option<Spanned<String>>,
        table: std::ops::Range<usize>,
        names: &mut HashMap<String, usize>,
        index: usize,
        what: &str,
    ) -> Option<String> {
        let name = self
            .required(raw, key, table)
            .and_then(|name| self.name(key, name));
        if let (Some(name), Some(value)) = (&name, raw) {
            if let Some(first) = names.get(name) {
                self.bad(
                    key,
                    value,
                    format!("duplicate {what} name `{name}` (also {what}s[{first}])"),
                );
            } else {
                names.insert(name.clone(), index);
            }
        }
        name
    }

    fn approle_secret_id(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawAppRoleSecretId>,
    ) -> Option<AppRoleSecretIdConfig> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();
        let mount = self.kv_path_or(&key("mount"), &raw.mount, DEFAULT_APPROLE_MOUNT);
        let role_name = self
            .required(&raw.role_name, &key("role_name"), table)
            .and_then(|name| self.name(&key("role_name"), name));
        let secret_id_ttl = match &raw.secret_id_ttl {
            None => Some(None),
            Some(ttl) => self.positive_duration(&key("secret_id_ttl"), ttl).map(Some),
        };
        let secret_id_num_uses = match &raw.secret_id_num_uses {
            None => Some(None),
            Some(uses) => match u32::try_from(*uses.get_ref()) {
                Ok(uses) => Some(Some(uses)),
                Err(_) => {
                    self.bad(
                        &key("secret_id_num_uses"),
                        uses,
                        format!(
                            "must be a whole number >= 0 (0 = unlimited), got {}",
                            uses.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        Some(AppRoleSecretIdConfig {
            mount: mount?,
            role_name: role_name?,
            secret_id_ttl: secret_id_ttl?,
            secret_id_num_uses: secret_id_num_uses?,
        })
    }

    /// `bigcommerce_legacy_account` and `bigcommerce_user_token`.
    fn basic_auth_account(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawBasicAuthAccount>,
    ) -> Option<BasicAuthAccountConfig> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();
        let store_hash = self
            .required(&raw.store_hash, &key("store_hash"), table.clone())
            .and_then(|hash| self.store_hash(&key("store_hash"), hash));
        let username = self
            .required(&raw.username, &key("username"), table)
            .and_then(|name| {
                // Basic auth joins username and token with ':', so the username cannot hold one.
                let text = name.get_ref().trim();
                if text.is_empty() || text.contains(':') {
                    self.bad(
                        &key("username"),
                        name,
                        "must be non-empty and must not contain ':'",
                    );
                    None
                } else {
                    Some(text.to_string())
                }
            });
        let api_path = self
            .url_or(
                &key("api_path"),
                &raw.api_path,
                DEFAULT_LEGACY_API_PATH,
                store_hash.as_deref(),
            )
            // Endpoints are appended to the API path (`{api_path}time`), so it ends in '/'.
            .map(|path| format!("{path}/"));
        Some(BasicAuthAccountConfig {
            store_hash: store_hash?,
            username: username?,
            api_path: api_path?,
        })
    }

    fn store_account(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawStoreAccount>,
    ) -> Option<StoreAccountConfig> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();
        let store_hash = self
            .required(&raw.store_hash, &key("store_hash"), table.clone())
            .and_then(|hash| self.store_hash(&key("store_hash"), hash));
        let api_url = self.url_or(
            &key("api_url"),
            &raw.api_url,
            DEFAULT_BIGCOMMERCE_API_URL,
            store_hash.as_deref(),
        );
        let required_scopes = self
            .required(&raw.required_scopes, &key("required_scopes"), table)
            .and_then(|scopes| {
                if scopes.get_ref().is_empty() {
                    self.bad(
                        &key("required_scopes"),
                        scopes,
                        "must name at least one scope, e.g. { store_v2_information = \"read-only\" }",
                    );
                    return None;
                }
                let mut all = Some(Vec::new());
                for (name, level) in scopes.get_ref() {
                    let scope_key = format!("{prefix}.required_scopes.{name}");
                    let name_ok = is_identifier(name);
                    if !name_ok {
                        self.bad(
                            &scope_key,
                            level,
                            format!("scope name `{name}` must be lowercase letters, digits and '_'"),
                        );
                    }
                    let level = match level.get_ref().as_str() {
                        "read-only" => Some(ScopeLevel::ReadOnly),
                        "modify" => Some(ScopeLevel::Modify),
                        other => {
                            self.bad(
                                &scope_key,
                                level,
                                format!("unknown scope level `{other}`; known levels: read-only, modify"),
                            );
                            None
                        }
                    };
                    match (name_ok, level, all.as_mut()) {
                        (true, Some(level), Some(all)) => all.push((name.clone(), level)),
                        _ => all = None,
                    }
                }
                all
            });
        Some(StoreAccountConfig {
            api_url: api_url?,
            store_hash: store_hash?,
            required_scopes: required_scopes?,
        })
    }

    // ----- dependents -----

    fn dependent(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawDependent>,
        mount: Option<&str>,
        names: &mut HashMap<String, usize>,
        index: usize,
    ) -> Option<Dependent> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();

        let name = self.unique_name(
            &key("name"),
            &raw.name,
            table.clone(),
            names,
            index,
            "dependent",
        );

        let kind = self.required(&raw.kind, &key("type"), table.clone())?;
        // Where each type-specific key is, to report keys that the chosen type does not use.
        let url = raw.url.as_ref().map(|v| v.span());
        let signing_key = raw.signing_key.as_ref().map(|v| v.span());
        let timeout = raw.timeout.as_ref().map(|v| v.span());
        let path = raw.path.as_ref().map(|v| v.span());
        let field = raw.field.as_ref().map(|v| v.span());
        let command = raw.command.as_ref().map(|v| v.span());

        let dependent_type = kind.get_ref().as_str();
        let context = format!("dependent type `{dependent_type}`");
        match dependent_type {
            "webhook" => {
                self.unused(
                    prefix,
                    &[("path", path), ("field", field), ("command", command)],
                    &context,
                );
                let url = self
                    .required(&raw.url, &key("url"), table.clone())
                    .and_then(|url| self.url(&key("url"), url));
                let signing_key = self
                    .required(&raw.signing_key, &key("signing_key"), table)
                    .and_then(|field| self.vault_field(&key("signing_key"), field, mount));
                let timeout = self.positive_duration_or(
                    &key("timeout"),
                    &raw.timeout,
                    DEFAULT_WEBHOOK_TIMEOUT,
                );
                Some(Dependent::Webhook {
                    name: name?,
                    url: url?,
                    signing_key: signing_key?,
                    timeout: timeout?,
                })
            }
            "file" => {
                self.unused(
                    prefix,
                    &[
                        ("url", url),
                        ("signing_key", signing_key),
                        ("timeout", timeout),
                        ("command", command),
                    ],
                    &context,
                );
                let path = self
                    .required(&raw.path, &key("path"), table)
                    .and_then(|path| {
                        if Path::new(path.get_ref()).is_absolute() {
                            Some(PathBuf::from(path.get_ref()))
                        } else {
                            self.bad(
                                &key("path"),
                                path,
                                format!("must be an absolute path, got `{}`", path.get_ref()),
                            );
                            None
                        }
                    });
                let field = match &raw.field {
                    None => Some(None),
                    Some(field) if field.get_ref().trim().is_empty() => {
                        self.bad(
                            &key("field"),
                            field,
                            "must not be empty (leave it out to write all fields)",
                        );
                        None
                    }
                    Some(field) => Some(Some(field.get_ref().trim().to_string())),
                };
                Some(Dependent::File {
                    name: name?,
                    path: path?,
                    field: field?,
                })
            }
            "exec" => {
                self.unused(
                    prefix,
                    &[
                        ("url", url),
                        ("signing_key", signing_key),
                        ("path", path),
                        ("field", field),
                    ],
                    &context,
                );
                let command = self
                    .required(&raw.command, &key("command"), table)
                    .and_then(|command| {
                        let argv: Vec<String> = command.get_ref().iter().map(|a| a.get_ref().clone()).collect();
                        if argv.first().is_none_or(|program| program.trim().is_empty()) {
                            self.bad(&key("command"), command, "must name a program: [\"/usr/bin/systemctl\", \"reload\", \"app\"]");
                            None
                        } else {
                            Some(argv)
                        }
                    });
                let timeout =
                    self.positive_duration_or(&key("timeout"), &raw.timeout, DEFAULT_EXEC_TIMEOUT);
                Some(Dependent::Exec {
                    name: name?,
                    command: command?,
                    timeout: timeout?,
                })
            }
            other => {
                self.bad(
                    &key("type"),
                    kind,
                    format!(
                        "unknown dependent type `{other}`; known types: {}",
                        DEPENDENT_TYPES.join(", ")
                    ),
                );
                None
            }
        }
    }

    // ----- values -----

    fn name(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        let name = value.get_ref();
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            self.bad(
                key,
                value,
                format!("invalid name `{name}`: use letters, digits, '_', '.' and '-'"),
            );
            return None;
        }
        Some(name.clone())
    }

    fn store_hash(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        let hash = value.get_ref();
        let ok = !hash.is_empty()
            && hash
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            self.bad(
                key,
                value,
                format!(
                    "invalid store hash `{hash}`: lowercase letters and digits only, e.g. `abc123`"
                ),
            );
            return None;
        }
        Some(hash.clone())
    }

    fn kv_path(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        match check_kv_path(value.get_ref()) {
            Ok(()) => Some(value.get_ref().clone()),
            Err(problem) => {
                self.bad(
                    key,
                    value,
                    format!("invalid path `{}`: {problem}", value.get_ref()),
                );
                None
            }
        }
    }

    fn kv_path_or(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: &str,
    ) -> Option<String> {
        match value {
            None => Some(default.to_string()),
            Some(value) => self.kv_path(key, value),
        }
    }

    fn vault_field(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawVaultField>,
        default_mount: Option<&str>,
    ) -> Option<VaultField> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();
        let mount = match &raw.mount {
            Some(mount) => self.kv_path(&key("mount"), mount),
            // The credential's own mount; if that one is invalid it was reported already.
            None => default_mount.map(str::to_string),
        };
        let path = self
            .required(&raw.path, &key("path"), table.clone())
            .and_then(|path| self.kv_path(&key("path"), path));
        let field = self
            .required(&raw.key, &key("key"), table)
            .and_then(|field| {
                if field.get_ref().trim().is_empty() {
                    self.bad(&key("key"), field, "must not be empty");
                    None
                } else {
                    Some(field.get_ref().clone())
                }
            });
        Some(VaultField {
            secret: KvPath {
                mount: mount?,
                path: path?,
            },
            key: field?,
        })
    }

    /// An http(s) URL, without a trailing '/', so paths can be appended with one.
    fn url(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        match check_url(value.get_ref()) {
            Ok(()) => Some(value.get_ref().trim_end_matches('/').to_string()),
            Err(problem) => {
                self.bad(
                    key,
                    value,
                    format!("invalid URL `{}`: {problem}", value.get_ref()),
                );
                None
            }
        }
    }

    /// A URL with an optional `{store_hash}` placeholder, or `default` (which has one) when absent.
    /// Without a valid store hash there is nothing to check: that problem is reported already.
    fn url_or(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: &str,
        store_hash: Option<&str>,
    ) -> Option<String> {
        let store_hash = store_hash?;
        match value {
            None => Some(
                default
                    .replace("{store_hash}", store_hash)
                    .trim_end_matches('/')
                    .to_string(),
            ),
            Some(value) => {
                let url = value.get_ref().replace("{store_hash}", store_hash);
                if url.contains(['{', '}']) {
                    self.bad(
                        key,
                        value,
                        format!(
                            "invalid URL `{}`: the only placeholder is {{store_hash}}",
                            value.get_ref()
                        ),
                    );
                    return None;
                }
                self.url(key, &Spanned::new(value.span(), url))
            }
        }
    }

    /// A CORS origin: scheme, host and optional port, nothing else.
    fn origin(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        let origin = value.get_ref();
        let problem = match check_url(origin) {
            Err(problem) => Some(problem.to_string()),
            Ok(())
                if origin
                    .split("://")
                    .nth(1)
                    .is_some_and(|rest| rest.contains(['/', '?', '#'])) =>
            {
                Some("an origin is scheme://host[:port], without a path".to_string())
            }
            Ok(()) => None,
        };
        match problem {
            Some(problem) => {
                self.bad(key, value, format!("invalid origin `{origin}`: {problem}"));
                None
            }
            None => Some(origin.clone()),
        }
    }
}

/// Of two origins, the one written at this level (`prefix`), preferring the first.
fn pick_here(first: &Option<Origin>, second: &Option<Origin>, prefix: &str) -> Option<Origin> {
    let here = |origin: &&Origin| origin.key.starts_with(&format!("{prefix}."));
    first
        .as_ref()
        .filter(here)
        .or(second.as_ref().filter(here))
        .cloned()
}

/// When `[vault]` did not validate, credentials are still checked against the state location it
/// names (if those keys are fine) or the defaults.
fn state_location(raw: &RawConfig) -> (String, String) {
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

/// `path` equals `prefix` or lies below it.
fn is_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A KV v2 mount or secret path: segments separated by single '/', no '.' or '..' segments.
fn check_kv_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("must not be empty");
    }
    if path.starts_with('/') || path.ends_with('/') {
        return Err("must not start or end with '/'");
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace");
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("must not contain '//'"),
            "." | ".." => return Err("must not contain '.' or '..' segments"),
            _ => {}
        }
    }
    Ok(())
}

/// http or https with a host; no whitespace; no user info (which would put a secret in the file).
fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("must not contain a user name or password");
    }
    let host = match authority.rsplit_once(':') {
        // A port: digits after the last ':' (and not inside an IPv6 literal).
        Some((host, port)) if !port.contains(']') => {
            if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
                return Err("has an invalid port");
            }
            host
        }
        _ => authority,
    };
    if host.is_empty() {
        return Err("has no host");
    }
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn show(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}
