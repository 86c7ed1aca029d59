//! A whole rotation stack for end-to-end tests: a real OpenBao, the BigCommerce emulator
//! in-process, a config file pointing the daemon binary at both, and a storefront token written to
//! Vault by hand as version 1 (as an operator would adopt an existing credential).
//!
//! The daemon runs with a token that holds exactly the shipped example policy
//! (`config/vault-policy.hcl`), moved onto the stack's paths, unless the options ask for the root
//! token.

use std::path::PathBuf;
use std::time::Duration;

use bigcommerce_emulator::{demo, AdminClient, EmulatorConfig, RunningEmulator, Seed, TokenState};
use serde_json::{json, Value};

use super::proxy::Proxy;
use super::{OpenBao, PolicyPaths, ROOT_TOKEN};

pub const STORE: &str = demo::STORE_HASH;
pub const CRED: &str = "storefront-main";
pub const SECRET_PATH: &str = "bigcommerce/storefront-main";
/// Where the storefront credential's parent access token is kept.
pub const ACCESS_TOKEN_PATH: &str = "bigcommerce/abc123/store-api";
/// Where a webhook dependent's signing key is kept (readable under the example policy).
pub const WEBHOOK_KEY_PATH: &str = "webhooks/shop-frontend";

pub struct Stack {
    pub bao: OpenBao,
    pub emu: RunningEmulator,
    pub admin: AdminClient,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub events: PathBuf,
    pub http: reqwest::Client,
    /// The Vault token the daemon runs with (`cli`): the example policy's, or root.
    pub token: String,
    /// The proxy between the daemon and OpenBao, when the options ask for one.
    pub proxy: Option<Proxy>,
}

/// Options of a stack: the policy's grace and the emulator's revocation delay.
pub struct StackOptions {
    pub grace: &'static str,
    pub revocation_delay_ms: u64,
    /// More `[defaults]` lines.
    pub extra_defaults: &'static str,
    pub max_age: &'static str,
    /// Run the daemon with the root token instead of the example policy's.
    pub root_token: bool,
    /// Put a `Proxy` between the daemon and OpenBao (the config's address is the proxy's).
    pub proxy: bool,
    /// TOML appended after the storefront credential: its `[[credentials.dependents]]`, then
    /// any further credentials.
    pub dependents: String,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            grace: "1s",
            revocation_delay_ms: 300,
            extra_defaults: "",
            max_age: "1h",
            root_token: false,
            proxy: false,
            dependents: String::new(),
        }
    }
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::with(StackOptions::default()).await
    }

    pub async fn with(opts: StackOptions) -> Stack {
        Stack::on(OpenBao::start().await, &[], opts).await
    }

    /// A stack on a Vault run elsewhere: `bao` is a handle on it (as root), `addresses` what the
    /// config lists (every node of a cluster), or none for `bao`'s own address.
    pub async fn on(bao: OpenBao, addresses: &[String], opts: StackOptions) -> Stack {
        let emu = bigcommerce_emulator::start(EmulatorConfig::new(Seed::demo()))
            .await
            .expect("start the emulator");
        let admin = emu.admin();
        admin
            .set_revocation_delay(STORE, Duration::from_millis(opts.revocation_delay_ms))
            .await
            .expect("set revocation delay");
        bao.write_secret(
            "secret",
            ACCESS_TOKEN_PATH,
            json!({ "access_token": demo::ACCESS_TOKEN }),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let events = dir.path().join("events.jsonl");
        let base = emu.base_url();
        let proxy = if opts.proxy {
            Some(Proxy::start(bao.socket_addr()).await)
        } else {
            None
        };
        let vault_address = match (&proxy, addresses) {
            (Some(proxy), _) => format!("address = {:?}", proxy.url()),
            (None, []) => format!("address = {:?}", bao.addr),
            (None, all) => format!("addresses = {all:?}"),
        };
        let token = if opts.root_token {
            ROOT_TOKEN.to_string()
        } else {
            bao.token_with_exact_policy("secret-rotator", &policy_paths().hcl())
                .await
        };
        std::fs::write(
            &config,
            format!(
                r#"
[vault]
{bao}
[vault.auth]
method = "token"

[defaults]
max_age = "{max_age}"
grace = "{grace}"
{extra}
{credential}
{dependents}
"#,
                credential = storefront_credential(CRED, SECRET_PATH, &base),
                dependents = opts.dependents,
                bao = vault_address,
                grace = opts.grace,
                extra = opts.extra_defaults,
                max_age = opts.max_age,
            ),
        )
        .unwrap();
        let stack = Stack {
            bao,
            emu,
            admin,
            dir,
            config,
            events,
            http: reqwest::Client::new(),
            token,
            proxy,
        };
        let first = stack.mint_by_hand().await;
        stack
            .bao
            .write_secret("secret", SECRET_PATH, json!({ "token": first }))
            .await;
        stack
    }

    /// For each name, a token minted by hand written as the secret `secret/{folder}/{name}`.
    #[allow(dead_code)]
    pub async fn seed_tokens_by_hand(&self, folder: &str, names: &[impl AsRef<str>]) {
        for name in names {
            let token = self.mint_by_hand().await;
            self.bao
                .write_secret(
                    "secret",
                    &format!("{folder}/{}", name.as_ref()),
                    json!({ "token": token }),
                )
                .await;
        }
    }

    /// Mint a storefront token over the API, as an operator did before adopting the daemon.
    pub async fn mint_by_hand(&self) -> String {
        let expires = chrono::Utc::now().timestamp() + 30 * 86_400;
        let resp = self
            .http
            .post(format!(
                "{}/stores/{STORE}/v3/storefront/api-token",
                self.emu.base_url()
            ))
            .header("X-Auth-Token", demo::ACCESS_TOKEN)
            .json(&json!({ "channel_id": 1, "expires_at": expires }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let v: Value = resp.json().await.unwrap();
        v["data"]["token"].as_str().unwrap().to_string()
    }

    /// The GraphQL status a token gets now (200 accepted, 401 rejected).
    pub async fn graphql_status(&self, token: &str) -> u16 {
        self.http
            .post(format!("{}/store-{STORE}/graphql", self.emu.base_url()))
            .bearer_auth(token)
            .json(&json!({ "query": "{ site { settings { storeName } } }" }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Poll until the token is rejected (revocation is asynchronous); false after `limit`.
    pub async fn rejected_within(&self, token: &str, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if self.graphql_status(token).await == 401 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The secret's current version and token, read as root.
    pub async fn current(&self) -> (u64, String) {
        let v = self
            .bao
            .root("GET", &format!("secret/data/{SECRET_PATH}"), None)
            .await;
        (
            v["data"]["metadata"]["version"].as_u64().unwrap(),
            v["data"]["data"]["token"].as_str().unwrap().to_string(),
        )
    }

    pub async fn token_at(&self, version: u64) -> String {
        let v = self
            .bao
            .root(
                "GET",
                &format!("secret/data/{SECRET_PATH}?version={version}"),
                None,
            )
            .await;
        v["data"]["data"]["token"].as_str().unwrap().to_string()
    }

    /// Run the daemon binary (async, so the in-process emulator keeps serving).
    pub async fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = tokio::process::Command::new(super::binary());
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--events-file")
            .arg(&self.events)
            .args(args)
            .env("VAULT_TOKEN", &self.token)
            .env("SECRET_ROTATOR_INSTANCE_ID", "test-instance")
            .env_remove("SECRET_ROTATOR_CRASH_AT")
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("secret-rotator did not finish within 120 s")
            .expect("run secret-rotator");
        use std::os::unix::process::ExitStatusExt;
        Output {
            code: out.status.code(),
            signal: out.status.signal(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Start the binary in the background (the daemon, usually), its log in `daemon.log` in the
    /// stack's directory; killed when dropped.
    pub fn daemon(&self, args: &[&str]) -> tokio::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        tokio::process::Command::new(super::binary())
            .arg("--config")
            .arg(&self.config)
            .arg("--events-file")
            .arg(&self.events)
            .args(args)
            .env("VAULT_TOKEN", &self.token)
            .env("SECRET_ROTATOR_INSTANCE_ID", "test-instance")
            .env_remove("SECRET_ROTATOR_CRASH_AT")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// What the background daemons logged.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `history NAME --json`.
    pub async fn history(&self) -> Value {
        let out = self.cli(&["history", CRED, "--json"], &[]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// Every event the daemon appended.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// sha256 hex of each storefront token the emulator has in a given state.
    pub async fn tokens_in_state(&self, state: TokenState) -> Vec<(String, i64)> {
        self.admin
            .storefront_tokens(STORE)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.state == state)
            .map(|t| (t.sha256, t.expires_at))
            .collect()
    }
}

/// The example policy on the stack's paths: its state prefix, its credential's secret and the
/// parent access token (which the example also rotates, so the file grants it writes too).
/// A `[[credentials]]` table for a storefront token of the emulator at `base`.
pub fn storefront_credential(name: &str, path: &str, base: &str) -> String {
    format!(
        r#"
[[credentials]]
name = "{name}"
path = "{path}"
[credentials.bigcommerce_storefront]
store_hash = "{STORE}"
api_url = "{base}"
storefront_url = "{base}/store-{{store_hash}}"
access_token = {{ path = "{ACCESS_TOKEN_PATH}", key = "access_token" }}
kind = "storefront"
channel_ids = [1]
"#
    )
}

/// A `[[credentials.dependents]]` webhook table whose signing key is at [`WEBHOOK_KEY_PATH`]
/// (timeout 2 s unless `extra` sets one).
pub fn webhook_dependent(name: &str, url: &str, extra: &str) -> String {
    let timeout = if extra.lines().any(|l| l.starts_with("timeout =")) {
        ""
    } else {
        "timeout = \"2s\""
    };
    format!(
        r#"
[[credentials.dependents]]
type = "webhook"
name = "{name}"
url = "{url}"
signing_key = {{ path = "{WEBHOOK_KEY_PATH}", key = "signing_key" }}
{timeout}
{extra}
"#
    )
}

pub fn policy_paths() -> PolicyPaths {
    PolicyPaths::new()
        .state("secret", "secret-rotator")
        .secret(
            ("secret", "bigcommerce/storefront-main"),
            ("secret", SECRET_PATH),
        )
        .secret(
            ("secret", "bigcommerce/abc123/store-api"),
            ("secret", ACCESS_TOKEN_PATH),
        )
        .read_only(
            ("secret", "webhooks/shop-frontend"),
            ("secret", WEBHOOK_KEY_PATH),
        )
}

#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(s.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
