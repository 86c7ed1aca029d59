//! The validated configuration model: what the rest of the daemon uses.
//!
//! Invariant: a value of these types has passed validation. Every path is non-empty, every duration
//! is in range, every credential name is unique, no credential lives inside the daemon's own state
//! prefix. None of these types holds a secret value: only Vault paths and file paths.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveTime;

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub vault: VaultConfig,
    pub defaults: Policy,
    /// The credentials written out, then (once discovered: `App::build`, the daemon's
    /// discovery) the members of the credential sets.
    pub credentials: Vec<Credential>,
    /// `[[credential_sets]]`: many credentials described once, found in Vault.
    pub credential_sets: Vec<super::sets::CredentialSet>,
    /// The health and metrics server; `None` (off) unless `[admin]` is configured.
    pub admin: Option<AdminConfig>,
    /// The planner and its limits (`[daemon]`, defaults when absent).
    pub daemon: DaemonConfig,
}

/// `[daemon]`: how the run loop plans and paces its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Each credential's metadata is read again once per interval while nothing is due (spread
    /// over the interval). Default 10 minutes.
    pub reconcile_interval: Duration,
    /// Instances sharing credentials start a new attempt up to this much after it is due, by an
    /// offset stable per instance and credential version. Default 5 s.
    pub stagger: Duration,
    /// Rotations in flight at once. Default 16.
    pub max_rotations: usize,
    /// Rotations in flight at once against one provider instance (a store, an AppRole mount, a
    /// program, an API). Default 4.
    pub max_rotations_per_provider: usize,
    /// Instances sharing a `state_prefix` form a group: each member's record in Vault stands
    /// this long without a renewal (renewed every half of it); a dead member's credentials
    /// move to the others within it. Default 60 s.
    pub group_lease_ttl: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            reconcile_interval: Duration::from_secs(600),
            stagger: Duration::from_secs(5),
            max_rotations: 16,
            max_rotations_per_provider: 4,
            group_lease_ttl: Duration::from_secs(60),
        }
    }
}

/// Where the admin server (`/healthz`, `/readyz`, `/metrics`, `/v1/status`) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminConfig {
    /// A TCP address: loopback unless `allow_remote = true`.
    Listen(std::net::SocketAddr),
    /// A unix socket path (absolute).
    Socket(PathBuf),
}

impl Config {
    pub fn credential(&self, name: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.name == name)
    }

    /// The credential set a member belongs to (its name up to the first '/').
    pub fn set_of(&self, name: &str) -> Option<&super::sets::CredentialSet> {
        let (set, _) = name.split_once('/')?;
        self.credential_sets.iter().find(|s| s.name == set)
    }
}

impl Credential {
    /// A credential as written in the file.
    pub fn new(
        name: String,
        secret: KvPath,
        provider: ProviderConfig,
        policy: Policy,
        dependents: Vec<Dependent>,
    ) -> Credential {
        Credential {
            name,
            secret,
            provider: Arc::new(provider),
            policy: Arc::new(policy),
            dependents,
            templated: false,
        }
    }

    /// A member of a credential set named `name`: the set's template with the member's own name
    /// and path, sharing the template's provider settings (`templated`: they hold the set's
    /// segment markers, filled in by [`Credential::provider`] from the name) and its policy.
    pub(crate) fn member_of(
        template: &Credential,
        name: String,
        path: String,
        templated: bool,
    ) -> Credential {
        Credential {
            name,
            secret: KvPath {
                mount: template.secret.mount.clone(),
                path,
            },
            provider: template.provider.clone(),
            policy: template.policy.clone(),
            dependents: template.dependents.clone(),
            templated,
        }
    }

    /// The provider settings, with a set member's segment values filled in.
    pub fn provider(&self) -> Cow<'_, ProviderConfig> {
        if !self.templated {
            return Cow::Borrowed(&self.provider);
        }
        let values: Vec<&str> = self.name.split('/').skip(1).collect();
        Cow::Owned(super::sets::rendered(&self.provider, &values))
    }

    /// The provider settings as written: for a set's member, the set's template.
    pub(crate) fn provider_template(&self) -> &ProviderConfig {
        &self.provider
    }

    /// The name of the credential set this credential is a member of; `None` for one written
    /// out in the file (no name written there holds a '/').
    pub fn set_name(&self) -> Option<&str> {
        self.name.split_once('/').map(|(set, _)| set)
    }
}

/// How to reach Vault/OpenBao and where the daemon keeps its own state.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// One or more base addresses (`https://vault-1:8200`). The first healthy active node is used.
    pub addresses: Vec<String>,
    pub namespace: Option<String>,
    /// PEM bundle of extra trusted CAs. TLS verification is always on.
    pub ca_file: Option<PathBuf>,
    pub auth: VaultAuth,
    /// KV v2 mount of the daemon's own state records (default `secret`).
    pub state_mount: String,
    /// Path prefix under `state_mount` that the daemon owns (default `secret-rotator`).
    pub state_prefix: String,
    /// Per-request timeout (default 10 s).
    pub request_timeout: Duration,
}

/// How the daemon logs in to Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// The token comes from the `VAULT_TOKEN` environment variable at run time.
    TokenEnv,
    /// The token is read from a file (for example under `$CREDENTIALS_DIRECTORY`).
    TokenFile { path: PathBuf },
    /// AppRole login. The secret-id is read from a file; a relative path is resolved against
    /// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
    AppRole {
        mount: String,
        role_id: RoleId,
        secret_id_file: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleId {
    Inline(String),
    File(PathBuf),
}

/// When a credential is due, and how its rotation behaves. `[defaults]` merged with the
/// credential's own overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Rotate when the current version is older than this (default 30 days).
    pub max_age: Option<Duration>,
    /// Calendar schedule (cron), evaluated in `timezone`.
    pub schedule: Option<CronSchedule>,
    pub timezone: chrono_tz::Tz,
    /// For credentials that expire: rotate this long before the expiry (default 7 days).
    pub expiry_lead: Duration,
    /// Daily window in `timezone` in which rotations may start. `None`: any time.
    pub window: Option<Window>,
    /// A deterministic offset in `[0, jitter)` per credential version, to spread load: rotations
    /// on max age or expiry start that much earlier (a deadline is a promise), scheduled ones
    /// that much later (default 0).
    pub jitter: Duration,
    /// How long the old credential stays valid after the new one is committed (default 1 h).
    pub grace: Duration,
    /// Destroy the old KV version after the old credential is revoked (default false).
    pub destroy_old_version: bool,
    /// Lifetime of credentials the daemon mints, for providers whose credentials expire.
    /// Default: 2 x max_age + grace, so a token nobody holds still dies on its own.
    pub credential_lifetime: Option<Duration>,
    /// When the credential cannot be rotated (parked or failing), warn its dependents
    /// (`credential.expiring`) this long before it reaches `max_age` or its expiry (default 3
    /// days).
    pub expiring_warning: Duration,
    /// Assisted credentials: how long past the due time a person has to supply the new
    /// credential before the attempt needs attention (default 7 days).
    pub supply_deadline: Duration,
    /// Assisted credentials: the first wait before `rotation.due` is sent again; it doubles up to
    /// a day while nobody supplies (default 1 h). Also the wait between reminders that the old
    /// store-level account still lives.
    pub supply_reminder: Duration,
    /// How often the current credential is verified to catch a change made outside the daemon
    /// (`credential.drift`); `None` (`"never"`): not checked (default 1 h).
    pub drift_interval: Option<Duration>,
}

/// A cron expression that parsed, kept with its text for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    pub expression: String,
}

/// A daily time window `start..end`; `end < start` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// A secret in a KV v2 mount.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KvPath {
    pub mount: String,
    pub path: String,
}

impl std::fmt::Display for KvPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.mount, self.path)
    }
}

/// One field of a KV v2 secret: where a provider finds its own parent credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultField {
    pub secret: KvPath,
    pub key: String,
}

/// One configured credential.
///
/// Kept small, as a daemon may hold a million of them (the members of its credential sets, most
/// owned by other members of its group): the provider settings and the policy are shared, by
/// every member of a set, with the set's template ([`Credential::provider`] fills a member's
/// segment values in where the settings use them, from its name, on each use).
#[derive(Debug, Clone)]
pub struct Credential {
    pub name: String,
    /// Where the live secret is kept (what dependents read).
    pub secret: KvPath,
    /// As written; for a set's member whose settings use its segments (`templated`), the set's
    /// template with a marker in place of each segment.
    provider: Arc<ProviderConfig>,
    pub policy: Arc<Policy>,
    pub dependents: Vec<Dependent>,
    /// `provider` holds the set's segment markers, filled in from the name on use.
    templated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderConfig {
    BigCommerceStorefront(StorefrontConfig),
    VaultAppRoleSecretId(AppRoleSecretIdConfig),
    BigCommerceLegacyAccount(BasicAuthAccountConfig),
    BigCommerceUserToken(BasicAuthAccountConfig),
    BigCommerceStoreAccount(StoreAccountConfig),
    Exec(ExecProviderConfig),
    /// Boxed: much larger than the others.
    Http(Box<HttpProviderConfig>),
}

impl ProviderConfig {
    /// The provider's name as written in the config file.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::BigCommerceStorefront(_) => "bigcommerce_storefront",
            ProviderConfig::VaultAppRoleSecretId(_) => "vault_approle_secret_id",
            ProviderConfig::BigCommerceLegacyAccount(_) => "bigcommerce_legacy_account",
            ProviderConfig::BigCommerceUserToken(_) => "bigcommerce_user_token",
            ProviderConfig::BigCommerceStoreAccount(_) => "bigcommerce_store_account",
            ProviderConfig::Exec(_) => "exec",
            ProviderConfig::Http(_) => "http",
        }
    }

    /// Whether the daemon rotates it through an API (or programs) on its own; the others are
    /// assisted: a person regenerates the credential.
    pub fn automatic(&self) -> bool {
        matches!(
            self,
            ProviderConfig::BigCommerceStorefront(_)
                | ProviderConfig::VaultAppRoleSecretId(_)
                | ProviderConfig::Exec(_)
                | ProviderConfig::Http(_)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorefrontTokenKind {
    Storefront,
    Private,
    CustomerImpersonation,
}

/// `bigcommerce_storefront`: GraphQL storefront / private / customer impersonation tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct StorefrontConfig {
    /// REST base (default `https://api.bigcommerce.com`); `/stores/{hash}/v3/...` is appended.
    pub api_url: String,
    /// Storefront base, with `{store_hash}` substituted (default
    /// `https://store-{store_hash}.mybigcommerce.com`); `/graphql` is appended.
    pub storefront_url: String,
    pub store_hash: String,
    /// The store-level access token (needs Storefront API Tokens: modify).
    pub access_token: VaultField,
    pub kind: StorefrontTokenKind,
    pub channel_ids: Vec<u32>,
    pub allowed_cors_origins: Vec<String>,
    /// Private tokens only: non-empty subset of Unauthenticated, Customer, B2B.
    pub scopes: Vec<String>,
}

/// `vault_approle_secret_id`: secret-ids of an AppRole role, through the daemon's own Vault login.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRoleSecretIdConfig {
    pub mount: String,
    pub role_name: String,
    pub secret_id_ttl: Option<Duration>,
    pub secret_id_num_uses: Option<u32>,
}

/// `bigcommerce_legacy_account` and `bigcommerce_user_token` (both assisted): Basic auth with a
/// username and an API token on the store's API path; a legacy account's token or a v1-style
/// user's token.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicAuthAccountConfig {
    pub store_hash: String,
    pub username: String,
    /// The API path (default `https://store-{store_hash}.mybigcommerce.com/api/v2/`), ending
    /// in '/'.
    pub api_path: String,
    /// The resource under the API path that proves a token is known (`GET {api_path}{probe}`;
    /// default `time`). A 2xx or a 403 proves it, a 401 rejects it.
    pub probe: String,
    /// Permissions checked when a token is supplied (resource -> level); empty: none.
    pub required_permissions: Vec<(String, ScopeLevel)>,
}

/// `bigcommerce_store_account` (assisted): store-level API account with OAuth scopes; rotated by
/// creating a second account with the same scopes and deleting the old one.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreAccountConfig {
    pub api_url: String,
    pub store_hash: String,
    /// Required scopes: resource name -> "read-only" | "modify".
    pub required_scopes: Vec<(String, ScopeLevel)>,
    /// The resource under `/stores/{hash}/` that proves a token is known (default `v2/time`).
    pub probe: String,
}

/// `exec`: one program (argv, no shell) per step, with JSON on stdin and stdout.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecProviderConfig {
    pub mint: Vec<String>,
    pub verify: Vec<String>,
    pub revoke: Vec<String>,
    /// `None`: `verify`, where a rejection means revoked.
    pub verify_revoked: Option<Vec<String>>,
    /// How long one program may run before its process group is killed (default 30 s).
    pub timeout: Duration,
    /// The fields `mint` answers and a stored credential holds (non-empty, unique).
    pub fields: Vec<String>,
    /// Minted credentials carry an expiry (default false).
    pub credentials_expire: bool,
}

/// `http`: one request per step, described in the file, with templates.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpProviderConfig {
    /// Secrets the templates use as `{{parent.NAME}}`, read from Vault for each call.
    pub parents: Vec<(String, VaultField)>,
    /// The longest one request may take, the answer included (default 30 s).
    pub timeout: Duration,
    /// Minted credentials carry an expiry (default: the mint request names the planned expiry,
    /// or the answer gives one).
    pub credentials_expire: bool,
    pub mint: HttpRequestConfig,
    pub verify: HttpRequestConfig,
    pub revoke: HttpRequestConfig,
    /// The new credential's fields: field name -> JSON pointer into the mint answer.
    pub fields: Vec<(String, String)>,
    /// JSON pointer to the new credential's expiry in the mint answer (RFC 3339 or unix seconds).
    pub expires_at: Option<String>,
}

/// One request: templates (`{{...}}` placeholders, checked by validation) and status classes.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequestConfig {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Statuses that mean done; empty: any 2xx.
    pub ok: Vec<u16>,
    /// Statuses that mean the provider said no (default 401, 403).
    pub reject: Vec<u16>,
    /// Statuses that mean not processed, try again later (default 429, 502, 503, 504).
    pub retry: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeLevel {
    ReadOnly,
    Modify,
}

/// Something that must learn about a new or revoked credential.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependent {
    /// Unique within its credential.
    pub name: String,
    /// Whether the old credential waits for this dependent's ack of the new one.
    pub ack: Ack,
    pub sink: Sink,
}

/// `require_ack`, `ack_timeout`, `on_ack_timeout` of a dependent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The old credential is not revoked before this dependent accepted `credential.rotated`
    /// (default: true for `file`, false for the others).
    pub required: bool,
    /// How long past the grace period the old credential waits for the ack (default 1 h).
    pub timeout: Duration,
    /// What happens then (default `hold`).
    pub on_timeout: OnAckTimeout,
}

/// What happens when a required ack has not come by `ack_timeout` after the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAckTimeout {
    /// Revoke anyway and report it.
    Revoke,
    /// Keep the old credential alive and ask for an operator.
    Hold,
}

/// How a dependent is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    /// Standard Webhooks-signed POST; the signing key is read from Vault.
    Webhook {
        url: String,
        signing_key: VaultField,
        timeout: Duration,
        /// A PEM bundle trusted besides the system's roots.
        ca_file: Option<PathBuf>,
    },
    /// Render the secret into a file (0600 unless configured, replaced atomically).
    File {
        path: PathBuf,
        format: FileFormat,
        /// Permission bits (default 0o600). Never group- or world-writable, no special bits.
        mode: u32,
        /// Owner of the file: a user name or a numeric uid, resolved when the file is written.
        owner: Option<String>,
        /// Group of the file: a group name or a numeric gid, resolved when the file is written.
        group: Option<String>,
        /// A command (argv, no shell) run after the file is in place, e.g. to reload the reader.
        exec: Option<Vec<String>>,
        /// How long `exec` may run (default 30 s).
        exec_timeout: Duration,
    },
    /// Run a command (argv, no shell) with a timeout.
    Exec {
        command: Vec<String>,
        timeout: Duration,
    },
}

impl Sink {
    /// The `type` key's value.
    pub fn kind(&self) -> &'static str {
        match self {
            Sink::Webhook { .. } => "webhook",
            Sink::File { .. } => "file",
            Sink::Exec { .. } => "exec",
        }
    }
}

/// How a `file` dependent renders the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFormat {
    /// One field's value, bare: no quotes, no trailing newline.
    Field(String),
    /// All fields as one JSON object of strings.
    Json,
    /// `KEY=value` lines, one per field. A name is `prefix` followed by the field name
    /// upper-cased, with every character other than A-Z and 0-9 turned into `_`.
    Env { prefix: String },
}
