//! Specification of the configuration file, as tests.
//!
//! `check(toml, expected)` parses a text and compares the errors (key, line, message fragment) with
//! the expected ones; adding a case is adding a row to `MALFORMED`. Tests never touch the process
//! environment: `FakeEnvironment` answers from a map and a set of file names.
//!
//! Most cases write `[vault]` as one inline line, so that line numbers stay small and obvious.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

struct FakeEnvironment {
    vars: HashMap<String, String>,
    files: HashSet<PathBuf>,
}

impl FakeEnvironment {
    /// `VAULT_TOKEN` set, `CREDENTIALS_DIRECTORY` unset, a few files present.
    fn new() -> Self {
        FakeEnvironment {
            vars: HashMap::from([("VAULT_TOKEN".to_string(), "dev-root".to_string())]),
            files: [
                "/etc/secret-rotator/ca.pem",
                "/etc/secret-rotator/vault-token",
                "/etc/secret-rotator/secret-id",
                "/run/credentials/secret-rotator.service/secret-id",
                "/run/credentials/secret-rotator.service/role-id",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        }
    }

    fn with_var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    fn without_var(mut self, name: &str) -> Self {
        self.vars.remove(name);
        self
    }
}

impl Environment for FakeEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn file_exists(&self, path: &Path) -> bool {
        self.files.contains(path)
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }
}

/// Parses `toml` and asserts that exactly the `expected` errors come out, in order:
/// `(key, line, fragment of the message)`.
fn check(toml: &str, expected: &[(&str, usize, &str)]) {
    let errors = match parse(toml, "test.toml", &FakeEnvironment::new()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.errors,
    };
    let matches = errors.len() == expected.len()
        && errors
            .iter()
            .zip(expected)
            .all(|(error, (key, line, fragment))| {
                error.key == *key && error.line == *line && error.message.contains(fragment)
            });
    assert!(
        matches,
        "\n--- config:\n{toml}\n--- expected:\n{expected:#?}\n--- got:\n{}\n",
        errors.iter().map(|e| format!("{e}\n")).collect::<String>()
    );
}

fn parse_ok(toml: &str, env: &FakeEnvironment) -> Config {
    match parse(toml, "test.toml", env) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

type Expected = &'static [(&'static str, usize, &'static str)];

/// One malformed config per row: (what is wrong, the file, the errors it must produce).
const MALFORMED: &[(&str, &str, Expected)] = &[
    (
        "a secret-id that would be due as soon as it is written",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "app"
path = "apps/app"
[credentials.vault_approle_secret_id]
role_name = "app"
secret_id_ttl = "2h"
"#,
        &[(
            "credentials[0].vault_approle_secret_id.secret_id_ttl",
            7,
            "must be longer than expiry_lead",
        )],
    ),
    (
        "TOML syntax error",
        "vault = { address = \"https://v:8200\"\n",
        &[("", 1, "invalid TOML")],
    ),
    (
        "a value of the wrong type",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "shop"
path = "shop"
max_age = 7
"#,
        &[("credentials[0].max_age", 5, "invalid type")],
    ),
    (
        "a value of the wrong type in a provider table, after an unknown provider",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "shop"
path = "shop"
[credentials.no_such_provider]
x = 1
[credentials.exec]
mint = "/bin/true"
"#,
        &[
            ("credentials[0].no_such_provider", 5, "unknown provider"),
            ("credentials[0].exec.mint", 8, "invalid type"),
        ],
    ),
    (
        "a secret value where none belongs: there is no key for it",
        r#"[vault]
address = "https://v:8200"
[vault.auth]
method = "token"
token = "hvs.not-here"
"#,
        &[("vault.auth.token", 5, "unknown field `token`")],
    ),
    (
        "no [vault] table",
        "[defaults]\nmax_age = \"1d\"\n",
        &[("vault", 0, "missing required table [vault]")],
    ),
    (
        "no address",
        r#"[vault]
namespace = "a"
[vault.auth]
method = "token"
"#,
        &[("vault.address", 1, "missing required key `address`")],
    ),
    (
        "both address and addresses",
        r#"[vault]
address = "https://v:8200"
addresses = ["https://w:8200"]
auth = { method = "token" }
"#,
        &[("vault.addresses", 3, "not both")],
    ),
    (
        "address that is not http(s)",
        r#"[vault]
address = "ftp://v:8200"
auth = { method = "token" }
"#,
        &[("vault.address", 2, "http:// or https://")],
    ),
    (
        "address with a password in it",
        r#"[vault]
addresses = ["https://v:8200", "https://root:hunter2@w:8200"]
auth = { method = "token" }
"#,
        &[("vault.addresses[1]", 2, "user name or password")],
    ),
    (
        "an empty list of addresses",
        r#"[vault]
addresses = []
auth = { method = "token" }
"#,
        &[("vault.addresses", 2, "at least one address")],
    ),
    (
        "one node listed twice",
        r#"[vault]
addresses = ["https://v-1:8200", "https://v-2:8200",
             "https://v-1:8200/"]
auth = { method = "token" }
"#,
        &[("vault.addresses[2]", 3, "the same node twice")],
    ),
    (
        "ca_file that does not exist",
        r#"[vault]
address = "https://v:8200"
ca_file = "/etc/secret-rotator/missing.pem"
auth = { method = "token" }
"#,
        &[("vault.ca_file", 3, "file not found")],
    ),
    (
        "unknown auth method",
        r#"[vault]
address = "https://v:8200"
[vault.auth]
method = "kerberos"
"#,
        &[(
            "vault.auth.method",
            4,
            "known methods: token, token_file, approle",
        )],
    ),
    (
        "token_file that does not exist",
        r#"[vault]
address = "https://v:8200"
[vault.auth]
method = "token_file"
path = "/etc/secret-rotator/missing-token"
"#,
        &[("vault.auth.path", 5, "file not found")],
    ),
    (
        "approle: relative secret_id_file without $CREDENTIALS_DIRECTORY",
        r#"[vault]
address = "https://v:8200"
[vault.auth]
method = "approle"
role_id = "role-1"
secret_id_file = "secret-id"
"#,
        &[("vault.auth.secret_id_file", 6, "$CREDENTIALS_DIRECTORY")],
    ),
    (
        "approle: role_id_file that does not exist, and a key of another method",
        r#"[vault]
address = "https://v:8200"
[vault.auth]
method = "approle"
path = "/etc/secret-rotator/vault-token"
role_id_file = "/etc/secret-rotator/role-id"
secret_id_file = "/etc/secret-rotator/secret-id"
"#,
        &[
            ("vault.auth.path", 5, "not used by method `approle`"),
            ("vault.auth.role_id_file", 6, "file not found"),
        ],
    ),
    (
        "bad name characters",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "shop main"
path = "shop"
vault_approle_secret_id = { role_name = "shop" }
"#,
        &[("credentials[0].name", 3, "invalid name `shop main`")],
    ),
    (
        "duplicate credential names: reported at the second",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "shop"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials]]
name = "shop"
path = "b"
vault_approle_secret_id = { role_name = "b" }
"#,
        &[("credentials[1].name", 7, "duplicate credential name `shop`")],
    ),
    (
        "two credentials sharing one secret",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "shared"
vault_approle_secret_id = { role_name = "a" }
[[credentials]]
name = "b"
mount = "secret"
path = "shared"
vault_approle_secret_id = { role_name = "b" }
"#,
        &[("credentials[1].path", 9, "already used by credentials[0]")],
    ),
    (
        "secret inside the daemon's own state prefix",
        r#"vault = { address = "https://v:8200", state_prefix = "rotator", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "rotator/a"
vault_approle_secret_id = { role_name = "a" }
"#,
        &[(
            "credentials[0].path",
            4,
            "inside the daemon's own state prefix `secret/rotator`",
        )],
    ),
    (
        "empty path, and a path with '..'",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = ""
vault_approle_secret_id = { role_name = "a" }
[[credentials]]
name = "b"
path = "apps/../b"
vault_approle_secret_id = { role_name = "b" }
"#,
        &[
            ("credentials[0].path", 4, "must not be empty"),
            ("credentials[1].path", 8, "'..'"),
        ],
    ),
    (
        "missing path",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
vault_approle_secret_id = { role_name = "a" }
"#,
        &[("credentials[0].path", 2, "missing required key `path`")],
    ),
    (
        "bad duration",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
max_age = "7 fortnights"
vault_approle_secret_id = { role_name = "a" }
"#,
        &[(
            "credentials[0].max_age",
            5,
            "invalid duration `7 fortnights`",
        )],
    ),
    (
        "bad cron expression",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[defaults]
schedule = "0 3 * * FUNDAY"
"#,
        &[("defaults.schedule", 3, "invalid cron expression")],
    ),
    (
        "bad timezone",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[defaults]
timezone = "Mars/Olympus_Mons"
"#,
        &[("defaults.timezone", 3, "unknown timezone")],
    ),
    (
        "bad window",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
window = "2am-5am"
vault_approle_secret_id = { role_name = "a" }
"#,
        &[("credentials[0].window", 5, "HH:MM-HH:MM")],
    ),
    (
        "grace not shorter than max_age",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
max_age = "1h"
grace = "2h"
vault_approle_secret_id = { role_name = "a" }
"#,
        &[(
            "credentials[0].grace",
            6,
            "grace (2h) must be shorter than max_age (1h)",
        )],
    ),
    (
        "grace in [defaults] against a credential's short max_age: reported at the max_age",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[defaults]
grace = "1h"
[[credentials]]
name = "a"
path = "a"
max_age = "30m"
vault_approle_secret_id = { role_name = "a" }
"#,
        &[(
            "credentials[0].max_age",
            7,
            "grace (1h) must be shorter than max_age (30m)",
        )],
    ),
    (
        "nothing makes a credential due",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
max_age = "never"
vault_approle_secret_id = { role_name = "a" }
"#,
        &[("credentials[0].max_age", 5, "set `max_age` or `schedule`")],
    ),
    (
        "unknown provider table: lists the known ones",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.shopify_storefront]
shop = "a"
"#,
        &[
            ("credentials[0]", 2, "no provider table"),
            (
                "credentials[0].shopify_storefront",
                5,
                "known providers: bigcommerce_storefront, vault_approle_secret_id",
            ),
        ],
    ),
    (
        "no provider table",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
"#,
        &[("credentials[0]", 2, "no provider table; add exactly one of")],
    ),
    (
        "two provider tables",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
bigcommerce_user_token = { store_hash = "abc123", username = "ops" }
"#,
        &[(
            "credentials[0].bigcommerce_user_token",
            6,
            "exactly one provider table",
        )],
    ),
    (
        "invalid store hash",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_legacy_account]
store_hash = "ABC-123"
username = "ops"
"#,
        &[(
            "credentials[0].bigcommerce_legacy_account.store_hash",
            6,
            "invalid store hash",
        )],
    ),
    (
        "private token without scopes",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_storefront]
store_hash = "abc123"
access_token = { path = "store-api", key = "access_token" }
kind = "private"
channel_ids = [1]
"#,
        &[(
            "credentials[0].bigcommerce_storefront.scopes",
            5,
            "need `scopes`",
        )],
    ),
    (
        "private token with an unknown scope",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_storefront]
store_hash = "abc123"
access_token = { path = "store-api", key = "access_token" }
kind = "private"
channel_ids = [1]
scopes = ["Customer",
  "Admin"]
"#,
        &[(
            "credentials[0].bigcommerce_storefront.scopes[1]",
            11,
            "unknown scope `Admin`",
        )],
    ),
    (
        "more than two CORS origins",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_storefront]
store_hash = "abc123"
access_token = { path = "store-api", key = "access_token" }
channel_ids = [1]
allowed_cors_origins = ["https://a.example", "https://b.example", "https://c.example"]
"#,
        &[(
            "credentials[0].bigcommerce_storefront.allowed_cors_origins",
            9,
            "at most 2 origins",
        )],
    ),
    (
        "CORS origins on an impersonation token",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_storefront]
store_hash = "abc123"
access_token = { path = "store-api", key = "access_token" }
kind = "customer_impersonation"
channel_ids = [1]
allowed_cors_origins = ["https://a.example"]
"#,
        &[(
            "credentials[0].bigcommerce_storefront.allowed_cors_origins",
            10,
            "only tokens of kind `storefront`",
        )],
    ),
    (
        "empty channel_ids, and a bad api_url",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_storefront]
store_hash = "abc123"
api_url = "api.bigcommerce.com"
access_token = { path = "store-api", key = "access_token" }
channel_ids = []
"#,
        &[
            (
                "credentials[0].bigcommerce_storefront.api_url",
                7,
                "http:// or https://",
            ),
            (
                "credentials[0].bigcommerce_storefront.channel_ids",
                9,
                "at least one channel id",
            ),
        ],
    ),
    (
        "store account with an unknown scope level",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_store_account]
store_hash = "abc123"
required_scopes = { products = "write" }
"#,
        &[(
            "credentials[0].bigcommerce_store_account.required_scopes.products",
            7,
            "read-only, modify",
        )],
    ),
    (
        "a probe that is not a relative path, and an unknown permission",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_user_token]
store_hash = "abc123"
username = "ops@example.com"
probe = "/orders?limit=1"
required_permissions = { ordrs = "read-only", products = "write" }
"#,
        &[
            (
                "credentials[0].bigcommerce_user_token.probe",
                8,
                "must be a path relative to the API path",
            ),
            (
                "credentials[0].bigcommerce_user_token.required_permissions.ordrs",
                9,
                "unknown permission `ordrs` (did you mean `orders`?)",
            ),
            (
                "credentials[0].bigcommerce_user_token.required_permissions.products",
                9,
                "unknown permission level `write`",
            ),
        ],
    ),
    (
        "a store account probe that climbs out of the store",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_store_account]
store_hash = "abc123"
required_scopes = { orders = "read-only" }
probe = "../other/v2/time"
"#,
        &[(
            "credentials[0].bigcommerce_store_account.probe",
            8,
            "without a leading '/', '..' or a query",
        )],
    ),
    (
        "unknown dependent type",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "carrier-pigeon"
name = "coo"
"#,
        &[(
            "credentials[0].dependents[0].type",
            7,
            "known types: webhook, file, exec",
        )],
    ),
    (
        "dependent keys that its type does not use, and a relative file path",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "out/token"
url = "https://example.com"
"#,
        &[
            ("credentials[0].dependents[0].path", 9, "absolute path"),
            (
                "credentials[0].dependents[0].url",
                10,
                "not used by dependent type `file`",
            ),
        ],
    ),
    (
        "webhook without a signing key",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "webhook"
name = "hook"
url = "https://example.com/hook"
"#,
        &[(
            "credentials[0].dependents[0].signing_key",
            6,
            "missing required key `signing_key`",
        )],
    ),
    (
        "a store account scope that does not exist: names the nearest known one",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_store_account]
store_hash = "abc123"
required_scopes = { prodcts = "read-only",
  store_v2_information = "read-only", teleport = "modify" }
"#,
        &[
            (
                "credentials[0].bigcommerce_store_account.required_scopes.prodcts",
                7,
                "unknown scope `prodcts` (did you mean `products`?)",
            ),
            (
                "credentials[0].bigcommerce_store_account.required_scopes.store_v2_information",
                8,
                "(did you mean `information_and_settings`?)",
            ),
            (
                "credentials[0].bigcommerce_store_account.required_scopes.teleport",
                8,
                "unknown scope `teleport`; known scopes: content, customers,",
            ),
        ],
    ),
    (
        "a schedule that never fires (30 February)",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[defaults]
schedule = "0 4 30 2 *"
"#,
        &[("defaults.schedule", 3, "never fires")],
    ),
    (
        "a schedule that fires only on 29 February is fine",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[defaults]
schedule = "0 4 29 2 *"
"#,
        &[],
    ),
    (
        "jitter not shorter than max_age",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
max_age = "2h"
grace = "1m"
jitter = "2h"
vault_approle_secret_id = { role_name = "a" }
"#,
        &[(
            "credentials[0].jitter",
            7,
            "jitter (2h) must be shorter than max_age (2h)",
        )],
    ),
    (
        "jitter in [defaults] against a credential's short max_age: reported at the max_age",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[defaults]
jitter = "1d"
[[credentials]]
name = "a"
path = "a"
max_age = "12h"
vault_approle_secret_id = { role_name = "a" }
"#,
        &[(
            "credentials[0].max_age",
            7,
            "jitter (1d) must be shorter than max_age (12h)",
        )],
    ),
    (
        "an access token kept inside the daemon's state prefix",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_storefront]
store_hash = "abc123"
channel_ids = [1]
access_token = { path = "secret-rotator/store-api", key = "access_token" }
"#,
        &[(
            "credentials[0].bigcommerce_storefront.access_token",
            8,
            "`secret/secret-rotator/store-api` is inside the daemon's own state prefix",
        )],
    ),
    (
        "an access token kept in the credential's own secret",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
mount = "kv"
path = "shop/token"
[credentials.bigcommerce_storefront]
store_hash = "abc123"
channel_ids = [1]
access_token = { path = "shop/token", key = "access_token" }
"#,
        &[(
            "credentials[0].bigcommerce_storefront.access_token",
            9,
            "`kv/shop/token` is this credential's own secret",
        )],
    ),
    (
        "a webhook signing key inside a moved state prefix, and one in the credential's own secret",
        r#"vault = { address = "https://v:8200", state_mount = "ops", state_prefix = "rot", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "webhook"
name = "one"
url = "https://hooks.example/one"
signing_key = { mount = "ops", path = "rot/keys/one", key = "k" }
[[credentials.dependents]]
type = "webhook"
name = "two"
url = "https://hooks.example/two"
signing_key = { mount = "secret", path = "a", key = "k" }
"#,
        &[
            (
                "credentials[0].dependents[0].signing_key",
                10,
                "inside the daemon's own state prefix `ops/rot`",
            ),
            (
                "credentials[0].dependents[1].signing_key",
                15,
                "`secret/a` is this credential's own secret",
            ),
        ],
    ),
    (
        "a file format nobody reads",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
format = "yaml"
"#,
        &[(
            "credentials[0].dependents[0].format",
            10,
            "known formats: field, json, env",
        )],
    ),
    (
        "format field without the field to write",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
format = "field"
"#,
        &[("credentials[0].dependents[0].field", 6, "needs `field`")],
    ),
    (
        "a field with a format that writes all fields",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
format = "json"
field = "token"
"#,
        &[(
            "credentials[0].dependents[0].field",
            11,
            "not used by format `json`",
        )],
    ),
    (
        "an env prefix without the env format",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
env_prefix = "APP_"
"#,
        &[(
            "credentials[0].dependents[0].env_prefix",
            10,
            "not used by format `json`",
        )],
    ),
    (
        "an env prefix that is not an env name",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
format = "env"
env_prefix = "1-APP"
"#,
        &[(
            "credentials[0].dependents[0].env_prefix",
            11,
            "invalid env_prefix",
        )],
    ),
    (
        "a file mode that is not octal",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
mode = "rw-------"
"#,
        &[("credentials[0].dependents[0].mode", 10, "invalid mode")],
    ),
    (
        "a group-writable file mode",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
mode = "0660"
"#,
        &[(
            "credentials[0].dependents[0].mode",
            10,
            "lets others than the owner write",
        )],
    ),
    (
        "a world-writable file mode",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
mode = "602"
"#,
        &[(
            "credentials[0].dependents[0].mode",
            10,
            "lets others than the owner write",
        )],
    ),
    (
        "a setuid file mode",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
mode = "4600"
"#,
        &[(
            "credentials[0].dependents[0].mode",
            10,
            "setuid, setgid or sticky",
        )],
    ),
    (
        "an owner and a group that are neither names nor ids",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
owner = ""
group = "web server"
"#,
        &[
            ("credentials[0].dependents[0].owner", 10, "invalid user"),
            ("credentials[0].dependents[0].group", 11, "invalid group"),
        ],
    ),
    (
        "a file exec that names no program",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
exec = []
"#,
        &[(
            "credentials[0].dependents[0].exec",
            10,
            "must name a program",
        )],
    ),
    (
        "an exec timeout without an exec",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
exec_timeout = "5s"
"#,
        &[(
            "credentials[0].dependents[0].exec_timeout",
            10,
            "not used by a file dependent without `exec`",
        )],
    ),
    (
        "an exec dependent with file keys",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "exec"
name = "reload"
command = ["/bin/true"]
mode = "0600"
exec = ["/bin/true"]
"#,
        &[
            (
                "credentials[0].dependents[0].mode",
                10,
                "not used by dependent type `exec`",
            ),
            (
                "credentials[0].dependents[0].exec",
                11,
                "not used by dependent type `exec`",
            ),
        ],
    ),
    (
        "ack keys without require_ack",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "exec"
name = "reload"
command = ["/bin/true"]
ack_timeout = "5m"
on_ack_timeout = "revoke"
"#,
        &[
            (
                "credentials[0].dependents[0].ack_timeout",
                10,
                "not used by a dependent without `require_ack = true`",
            ),
            (
                "credentials[0].dependents[0].on_ack_timeout",
                11,
                "not used by a dependent without `require_ack = true`",
            ),
        ],
    ),
    (
        "an unknown on_ack_timeout and a zero ack_timeout",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
ack_timeout = "0s"
on_ack_timeout = "ignore"
"#,
        &[
            (
                "credentials[0].dependents[0].ack_timeout",
                10,
                "longer than zero",
            ),
            (
                "credentials[0].dependents[0].on_ack_timeout",
                11,
                "must be one of hold, revoke, got `ignore`",
            ),
        ],
    ),
    (
        "a ca_file on a file dependent, a relative one on a webhook",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "out"
path = "/run/app/token"
ca_file = "/etc/ca.pem"
[[credentials.dependents]]
type = "webhook"
name = "hook"
url = "https://hooks.example.com/x"
signing_key = { path = "hooks/key", key = "k" }
ca_file = "ca.pem"
"#,
        &[
            (
                "credentials[0].dependents[0].ca_file",
                10,
                "not used by dependent type `file`",
            ),
            (
                "credentials[0].dependents[1].ca_file",
                16,
                "must be an absolute path",
            ),
        ],
    ),
];

#[test]
fn malformed_configs_are_reported_at_the_right_key_and_line() {
    for (what, toml, expected) in MALFORMED {
        eprintln!("case: {what}");
        check(toml, expected);
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    check(
        r#"[vault]
address = "https://v:8200"
request_timeout = "soon"
[vault.auth]
method = "token"

[defaults]
window = "25:00-26:00"

[[credentials]]
name = "a b"
path = "/a"
[credentials.bigcommerce_storefront]
store_hash = "abc123"
access_token = { path = "store-api", key = "access_token" }
channel_ids = [0]
[[credentials.dependents]]
type = "exec"
name = "reload"
command = []
"#,
        &[
            ("vault.request_timeout", 3, "invalid duration"),
            ("defaults.window", 8, "HH:MM-HH:MM"),
            ("credentials[0].name", 11, "invalid name"),
            ("credentials[0].path", 12, "must not start or end with '/'"),
            (
                "credentials[0].bigcommerce_storefront.channel_ids[0]",
                16,
                ">= 1",
            ),
            (
                "credentials[0].dependents[0].command",
                20,
                "must name a program",
            ),
        ],
    );
}

#[test]
fn unknown_providers_are_reported_together_with_validation_problems() {
    check(
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
max_age = "forever"
vault_approle_secret_id = { role_name = "a" }
[credentials.stripe_key]
id = 1
"#,
        &[
            ("credentials[0].max_age", 5, "invalid duration"),
            (
                "credentials[0].stripe_key",
                7,
                "unknown provider `stripe_key`",
            ),
        ],
    );
}

#[test]
fn a_secret_written_inline_is_rejected_without_repeating_it() {
    let errors = parse(
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_storefront]
store_hash = "abc123"
access_token = "shpat_0123456789abcdef"
channel_ids = [1]
"#,
        "test.toml",
        &FakeEnvironment::new(),
    )
    .unwrap_err();
    let error = &errors.errors[0];
    assert_eq!(errors.errors.len(), 1);
    assert_eq!(
        error.key,
        "credentials[0].bigcommerce_storefront.access_token"
    );
    assert_eq!(error.line, 7);
    assert!(error
        .message
        .contains("secret values do not belong in this file"));
    assert!(!errors.to_string().contains("shpat_"));
}

#[test]
fn token_auth_reads_vault_token_at_run_time_not_in_validation() {
    let env = FakeEnvironment::new().without_var("VAULT_TOKEN");
    let config = parse(
        "vault = { address = \"https://v:8200\", auth = { method = \"token\" } }\n",
        "test.toml",
        &env,
    )
    .expect("a token config validates without the token");
    assert_eq!(config.vault.auth, VaultAuth::TokenEnv);
}

#[test]
fn defaults_apply_and_credentials_override_them() {
    let config = parse_ok(
        r#"vault = { address = "https://v:8200/", auth = { method = "token" } }
[defaults]
max_age = "10d"
timezone = "Europe/Berlin"
window = "22:00-04:00"
[[credentials]]
name = "a"
path = "a"
grace = "5m"
vault_approle_secret_id = { role_name = "a" }
"#,
        &FakeEnvironment::new(),
    );
    assert_eq!(config.vault.addresses, vec!["https://v:8200".to_string()]);
    assert_eq!(config.vault.state_mount, "secret");
    assert_eq!(config.vault.state_prefix, "secret-rotator");
    assert_eq!(config.vault.request_timeout, Duration::from_secs(10));
    let policy = &config.credential("a").unwrap().policy;
    assert_eq!(policy.max_age, Some(Duration::from_secs(10 * 86400)));
    assert_eq!(policy.grace, Duration::from_secs(300));
    assert_eq!(policy.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(policy.expiry_lead, Duration::from_secs(7 * 86400));
    assert_eq!(policy.jitter, Duration::ZERO);
    assert_eq!(policy.credential_lifetime, None);
    let window = policy.window.unwrap();
    assert!(window.end < window.start, "a window may wrap past midnight");
    assert_eq!(config.credentials[0].secret.to_string(), "secret/a");
}

#[test]
fn relative_credential_files_resolve_against_credentials_directory() {
    let env = FakeEnvironment::new().with_var(
        "CREDENTIALS_DIRECTORY",
        "/run/credentials/secret-rotator.service",
    );
    let config = parse_ok(
        r#"[vault]
address = "https://v:8200"
[vault.auth]
method = "approle"
role_id_file = "role-id"
secret_id_file = "secret-id"
"#,
        &env,
    );
    assert_eq!(
        config.vault.auth,
        VaultAuth::AppRole {
            mount: "approle".to_string(),
            role_id: RoleId::File("/run/credentials/secret-rotator.service/role-id".into()),
            secret_id_file: "/run/credentials/secret-rotator.service/secret-id".into(),
        }
    );
}

#[test]
fn file_dependents_default_to_json_0600_and_take_every_file_key() {
    let config = parse_ok(
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "file"
name = "all"
path = "/run/app/secret.json"
[[credentials.dependents]]
type = "file"
name = "one"
path = "/run/app/token"
field = "token"
[[credentials.dependents]]
type = "file"
name = "env"
path = "/run/app/env"
format = "env"
env_prefix = "APP_"
mode = "0640"
owner = "0"
group = "www-data"
exec = ["/usr/bin/systemctl", "reload", "app.service"]
exec_timeout = "5s"
require_ack = false
[[credentials.dependents]]
type = "exec"
name = "cmd"
command = ["/usr/local/bin/reload"]
require_ack = true
ack_timeout = "10m"
on_ack_timeout = "revoke"
"#,
        &FakeEnvironment::new(),
    );
    let dependents = &config.credential("a").unwrap().dependents;
    let dependent = |name: &str, required: bool, sink: Sink| Dependent {
        name: name.to_string(),
        ack: Ack {
            required,
            timeout: Duration::from_secs(3600),
            on_timeout: OnAckTimeout::Hold,
        },
        sink,
    };
    let expected = [
        dependent(
            "all",
            true,
            Sink::File {
                path: "/run/app/secret.json".into(),
                format: FileFormat::Json,
                mode: 0o600,
                owner: None,
                group: None,
                exec: None,
                exec_timeout: Duration::from_secs(30),
            },
        ),
        dependent(
            "one",
            true,
            Sink::File {
                path: "/run/app/token".into(),
                format: FileFormat::Field("token".to_string()),
                mode: 0o600,
                owner: None,
                group: None,
                exec: None,
                exec_timeout: Duration::from_secs(30),
            },
        ),
        dependent(
            "env",
            false,
            Sink::File {
                path: "/run/app/env".into(),
                format: FileFormat::Env {
                    prefix: "APP_".to_string(),
                },
                mode: 0o640,
                owner: Some("0".to_string()),
                group: Some("www-data".to_string()),
                exec: Some(vec![
                    "/usr/bin/systemctl".to_string(),
                    "reload".to_string(),
                    "app.service".to_string(),
                ]),
                exec_timeout: Duration::from_secs(5),
            },
        ),
        Dependent {
            name: "cmd".to_string(),
            ack: Ack {
                required: true,
                timeout: Duration::from_secs(600),
                on_timeout: OnAckTimeout::Revoke,
            },
            sink: Sink::Exec {
                command: vec!["/usr/local/bin/reload".to_string()],
                timeout: Duration::from_secs(30),
            },
        },
    ];
    assert_eq!(dependents.as_slice(), expected.as_slice());
}

#[test]
fn example_config_is_valid() {
    let env = FakeEnvironment::new().with_var(
        "CREDENTIALS_DIRECTORY",
        "/run/credentials/secret-rotator.service",
    );
    let config = parse_ok(include_str!("../../config/example.toml"), &env);
    let kinds: Vec<&str> = config
        .credentials
        .iter()
        .map(|c| c.provider().kind())
        .collect();
    assert_eq!(
        kinds,
        [
            "bigcommerce_storefront",
            "bigcommerce_storefront",
            "vault_approle_secret_id",
            "bigcommerce_legacy_account",
            "bigcommerce_user_token",
            "bigcommerce_store_account",
        ]
    );
    assert_eq!(config.vault.addresses.len(), 2);
    let main = config.credential("storefront-main").unwrap();
    assert_eq!(main.dependents.len(), 3);
    assert_eq!(main.policy.timezone, chrono_tz::Europe::Berlin);
    let billing = config.credential("billing-secret-id").unwrap();
    assert_eq!(billing.policy.max_age, None);
    assert_eq!(billing.policy.timezone, chrono_tz::UTC);
    match &*config.credential("legacy-export").unwrap().provider() {
        ProviderConfig::BigCommerceLegacyAccount(legacy) => {
            assert_eq!(
                legacy.api_path,
                "https://store-abc123.mybigcommerce.com/api/v2/"
            );
            assert_eq!(legacy.probe, "time");
            assert_eq!(
                legacy.required_permissions,
                [("orders".to_string(), ScopeLevel::ReadOnly)]
            );
        }
        other => panic!("unexpected provider {other:?}"),
    }
    match &*config.credential("store-api").unwrap().provider() {
        ProviderConfig::BigCommerceStoreAccount(account) => assert_eq!(
            account.required_scopes,
            [
                ("information_and_settings".to_string(), ScopeLevel::ReadOnly),
                ("products".to_string(), ScopeLevel::ReadOnly),
                ("storefront_api_tokens".to_string(), ScopeLevel::Modify),
            ]
        ),
        other => panic!("unexpected provider {other:?}"),
    }
}

#[test]
fn demo_config_is_valid() {
    let config = parse_ok(
        include_str!("../../config/demo.toml"),
        &FakeEnvironment::new(),
    );
    assert_eq!(config.vault.addresses, ["http://127.0.0.1:8200"]);
    assert_eq!(config.vault.auth, VaultAuth::TokenEnv);
    let storefront = config.credential("demo-storefront").unwrap();
    assert_eq!(storefront.policy.max_age, Some(Duration::from_secs(3600)));
    assert_eq!(storefront.policy.grace, Duration::from_secs(5));
    match &*storefront.provider() {
        ProviderConfig::BigCommerceStorefront(sf) => {
            assert_eq!(sf.api_url, "http://127.0.0.1:9400");
            assert_eq!(sf.storefront_url, "http://127.0.0.1:9400/store-abc123");
            assert_eq!(sf.kind, StorefrontTokenKind::Storefront);
            assert_eq!(
                sf.access_token,
                VaultField {
                    secret: KvPath {
                        mount: "secret".to_string(),
                        path: "bigcommerce/abc123/store-api".to_string(),
                    },
                    key: "access_token".to_string(),
                }
            );
        }
        other => panic!("unexpected provider {other:?}"),
    }
    match &*config.credential("demo-app-secret-id").unwrap().provider() {
        ProviderConfig::VaultAppRoleSecretId(approle) => {
            assert_eq!(approle.role_name, "demo-app");
            assert_eq!(approle.mount, "approle");
        }
        other => panic!("unexpected provider {other:?}"),
    }
}

#[test]
fn errors_display_as_source_line_column_key_message() {
    let errors = parse(
        "[defaults]\nmax_age = \"5 fortnights\"\n",
        "/etc/secret-rotator/config.toml",
        &FakeEnvironment::new(),
    )
    .unwrap_err();
    assert_eq!(
        errors.to_string(),
        "/etc/secret-rotator/config.toml: vault: missing required table [vault]\n\
         /etc/secret-rotator/config.toml:2:11: defaults.max_age: invalid duration `5 fortnights`; \
         write e.g. `90s`, `10m`, `1h`, `7d`"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let errors = parse(
        "vault = { address = \"https://v:8200\", auth = { method = \"token\" } }\n\
         [defaults]\n\
         timezone = \"Zürich\" ; jitter = 1\n",
        "t",
        &FakeEnvironment::new(),
    );
    // Syntax error (two keys on one line) after a multi-byte character.
    let error = &errors.unwrap_err().errors[0];
    assert_eq!((error.line, error.column), (3, 21));
}

#[test]
fn an_unreadable_file_is_one_error_naming_it() {
    let path = Path::new("/nonexistent/secret-rotator/config.toml");
    let errors = load(path, &FakeEnvironment::new()).unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    assert_eq!(
        errors.errors[0].source,
        "/nonexistent/secret-rotator/config.toml"
    );
    assert!(errors.errors[0].message.contains("cannot read"));
}

/// Configs that quote a URL holding a password (`hunter2`) or a query token (`s3cr3t`) in a value
/// the validation rejects. No error may repeat either; each still names the host.
const URLS_WITH_SECRETS: &[(&str, &str)] = &[
    (
        "vault address with a password",
        r#"vault = { address = "https://root:hunter2@vault.internal:8200", auth = { method = "token" } }"#,
    ),
    (
        "vault address with a query token and a bad port",
        r#"vault = { addresses = ["https://vault.internal:82x0/?token=s3cr3t"], auth = { method = "token" } }"#,
    ),
    (
        "a password that holds a '/'",
        r#"vault = { address = "https://root:hun/ter2@vault.internal:8200", auth = { method = "token" } }"#,
    ),
    (
        "api_url and storefront_url of a storefront token",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_storefront]
store_hash = "abc123"
api_url = "https://ops:hunter2@api.internal?token=s3cr3t"
storefront_url = "https://store.internal/{shop}?token=s3cr3t"
access_token = { path = "store-api", key = "access_token" }
channel_ids = [1]
allowed_cors_origins = ["https://shop.internal/x?token=s3cr3t"]
"#,
    ),
    (
        "a webhook URL with a token in its query and a space",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "webhook"
name = "hook"
url = "https://hooks.internal/in ?token=s3cr3t"
signing_key = { path = "hooks", key = "k" }
"#,
    ),
    (
        "an API path with a password",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
bigcommerce_legacy_account = { store_hash = "abc123", username = "ops", api_path = "https://ops:hunter2@legacy.internal/api/v2/" }
"#,
    ),
    (
        "a URL written where a Vault path belongs",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "https://root:hunter2@vault.internal/v1/secret?token=s3cr3t"
vault_approle_secret_id = { role_name = "a" }
"#,
    ),
    (
        "a URL written where a number belongs (a type error)",
        r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "a"
path = "a"
[credentials.bigcommerce_storefront]
store_hash = "abc123"
access_token = { path = "store-api", key = "access_token" }
channel_ids = ["https://root:hunter2@vault.internal/?token=s3cr3t"]
"#,
    ),
];

#[test]
fn no_error_repeats_a_password_or_a_query_token_of_a_url() {
    for (what, toml) in URLS_WITH_SECRETS {
        let errors = parse(toml, "test.toml", &FakeEnvironment::new())
            .err()
            .unwrap_or_else(|| panic!("{what}: expected errors"));
        let text = errors.to_string();
        for secret in ["hunter2", "hun/ter2", "s3cr3t"] {
            assert!(!text.contains(secret), "{what}: {secret:?} in\n{text}");
        }
        assert!(
            text.contains(".internal"),
            "{what}: the host is gone:\n{text}"
        );
    }
}

#[test]
fn a_url_in_an_error_keeps_its_host_and_hides_its_user_info() {
    check(
        r#"vault = { address = "ftp://root:hunter2@vault.internal:8200/", auth = { method = "token" } }"#,
        &[(
            "vault.address",
            1,
            "invalid URL `ftp://***@vault.internal:8200/`",
        )],
    );
}

#[test]
fn whole_file_errors_have_no_position_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().display().to_string();
    let errors = load(dir.path(), &FakeEnvironment::new()).unwrap_err();
    assert_eq!(
        errors.to_string(),
        format!("{source}: is a directory, not a configuration file")
    );
}

#[test]
fn a_file_larger_than_64_mib_is_refused_without_reading_it_all() {
    let max = super::MAX_FILE_SIZE as usize;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "#".repeat(max + 1)).unwrap();
    let errors = load(&big, &FakeEnvironment::new()).unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    assert!(
        errors.errors[0].message.contains("larger than 64 MiB"),
        "{errors}"
    );

    let just_fits = dir.path().join("fits.toml");
    let mut text =
        "vault = { address = \"https://v:8200\", auth = { method = \"token\" } }\n".to_string();
    text.push_str(&"#".repeat(max - text.len()));
    std::fs::write(&just_fits, text).unwrap();
    load(&just_fits, &FakeEnvironment::new()).expect("a file of exactly 64 MiB is read");
}

#[test]
fn devices_are_refused_before_reading() {
    let errors = load(Path::new("/dev/zero"), &FakeEnvironment::new()).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "/dev/zero: is a character device, not a configuration file"
    );
}

mod generic;

/// Names, paths, URLs and store hashes have limits (README "Limits"): at the limit a value is
/// taken, one character over it is refused at its key and line, with both lengths.
#[test]
fn values_over_their_limits_are_refused_at_their_key_and_line() {
    use crate::config::validate::limits::{MAX_NAME, MAX_PATH, MAX_STORE_HASH, MAX_URL};
    let config = |name: &str, path: &str, hash: &str, url: &str| {
        format!(
            r#"vault = {{ address = "https://v:8200", auth = {{ method = "token" }} }}
[[credentials]]
name = "{name}"
path = "{path}"
[credentials.bigcommerce_store_account]
store_hash = "{hash}"
api_url = "{url}"
required_scopes = {{ orders = "read-only" }}
"#
        )
    };
    let (name, path, hash) = (
        "a".repeat(MAX_NAME),
        "p".repeat(MAX_PATH),
        "h".repeat(MAX_STORE_HASH),
    );
    let url = format!("https://{}", "u".repeat(MAX_URL - "https://".len()));
    parse_ok(&config(&name, &path, &hash, &url), &FakeEnvironment::new());
    let over = |s: &str| format!("{s}x");
    let cases: [(String, (&str, usize, String)); 5] = [
        (
            config(&over(&name), &path, &hash, &url),
            (
                "credentials[0].name",
                3,
                format!("is {} characters long; at most {MAX_NAME}", MAX_NAME + 1),
            ),
        ),
        // 65,536 characters once passed, and `status` then panicked on the table's width.
        (
            config(&"n".repeat(65_536), &path, &hash, &url),
            (
                "credentials[0].name",
                3,
                format!("is 65536 characters long; at most {MAX_NAME}"),
            ),
        ),
        (
            config(&name, &over(&path), &hash, &url),
            (
                "credentials[0].path",
                4,
                format!("is {} characters long; at most {MAX_PATH}", MAX_PATH + 1),
            ),
        ),
        (
            config(&name, &path, &"h".repeat(MAX_STORE_HASH + 1), &url),
            (
                "credentials[0].bigcommerce_store_account.store_hash",
                6,
                format!(
                    "is {} characters long; at most {MAX_STORE_HASH}",
                    MAX_STORE_HASH + 1
                ),
            ),
        ),
        (
            config(&name, &path, &hash, &over(&url)),
            (
                "credentials[0].bigcommerce_store_account.api_url",
                7,
                format!("is {} characters long; at most {MAX_URL}", MAX_URL + 1),
            ),
        ),
    ];
    for (toml, (key, line, fragment)) in &cases {
        check(toml, &[(key, *line, fragment)]);
    }
}
