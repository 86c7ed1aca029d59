//! Test harness: a real OpenBao dev server on a free loopback port, and helpers to drive it as an
//! operator would (root token over the HTTP API).
#![allow(dead_code)]

pub mod bench;
pub mod daemon;
pub mod fleet;
pub mod hostile;
pub mod proxy;
pub mod raft;
pub mod receiver;
pub mod stack;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const ROOT_TOKEN: &str = "root";

/// The head of a test configuration: Vault at `bao` with the token from `VAULT_TOKEN`, and the
/// defaults' `max_age` and `grace`.
#[allow(dead_code)]
pub fn token_config_head(bao: &str, max_age: &str, grace: &str) -> String {
    format!(
        "[vault]\naddress = \"{bao}\"\n[vault.auth]\nmethod = \"token\"\n\n[defaults]\nmax_age = \"{max_age}\"\ngrace = \"{grace}\"\n"
    )
}

/// The one way tests build an engine over a Vault client: its records where the stack's config
/// keeps them (`secret/secret-rotator`), events kept in memory, default settings.
pub fn engine(
    vault: &std::sync::Arc<secret_rotator::vault::Vault>,
    owner: &str,
) -> secret_rotator::rotation::Engine {
    secret_rotator::rotation::Engine::over_vault(
        vault.clone(),
        "secret",
        "secret-rotator",
        std::sync::Arc::new(secret_rotator::events::MemorySink::default()),
        owner,
    )
}

/// The delivery worker beside [`engine`]: same records, default delivery policy.
pub fn deliverer(
    vault: &std::sync::Arc<secret_rotator::vault::Vault>,
    owner: &str,
    wakeup: secret_rotator::notify::deliver::Wakeup,
) -> secret_rotator::notify::deliver::Deliverer {
    let records =
        secret_rotator::records::RecordStore::new(vault.clone(), "secret", "secret-rotator");
    secret_rotator::notify::deliver::Deliverer::new(
        vault.clone(),
        records,
        owner,
        Default::default(),
        wakeup,
    )
}

/// Path of the `bao` binary, installed on first use into `.cache/openbao`.
pub fn bao_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SECRET_ROTATOR_BAO_BIN") {
        return PathBuf::from(p);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/install-openbao.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/install-openbao.sh");
    assert!(out.status.success(), "installing OpenBao failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A free loopback port P whose neighbour P+1 is free too (dev mode binds the cluster port P+1).
pub fn free_port_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65535 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// A running `bao server -dev`, killed on drop; or (`attach`) a handle on a server run by
/// someone else.
pub struct OpenBao {
    pub addr: String,
    child: Option<Child>,
    pub http: reqwest::Client,
}

impl OpenBao {
    /// The server's process id, when this process started it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub async fn start() -> OpenBao {
        OpenBao::launch(None, None).await
    }

    /// A handle on a server this handle does not run (a node of a [`raft::RaftCluster`]): the
    /// helpers below, as root (`ROOT_TOKEN` must be a root token there).
    pub fn attach(addr: &str) -> OpenBao {
        OpenBao {
            addr: addr.to_string(),
            child: None,
            http: reqwest::Client::new(),
        }
    }

    /// A dev server with a file audit device logging every request to `log` (a `request` and a
    /// `response` JSON line each; values HMAC'd). Declared in a config file: OpenBao refuses to
    /// enable audit devices through the API.
    #[allow(dead_code)]
    pub async fn start_with_audit(log: &std::path::Path) -> OpenBao {
        let hcl = log.with_extension("hcl");
        std::fs::write(
            &hcl,
            format!(
                "audit \"file\" \"log\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                log.display()
            ),
        )
        .expect("write the audit config");
        OpenBao::launch(None, Some(&hcl)).await
    }

    /// A dev server with TLS (`-dev-tls`): its CA is written to `cert_dir/vault-ca.pem`.
    pub async fn start_tls(cert_dir: &std::path::Path) -> OpenBao {
        OpenBao::launch(Some(cert_dir), None).await
    }

    async fn launch(tls: Option<&std::path::Path>, config: Option<&std::path::Path>) -> OpenBao {
        let bin = bao_binary();
        for _ in 0..5 {
            let port = free_port_pair();
            let mut cmd = Command::new(&bin);
            cmd.args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ]);
            if let Some(config) = config {
                cmd.arg(format!("-config={}", config.display()));
            }
            if let Some(dir) = tls {
                cmd.arg("-dev-tls")
                    .arg(format!("-dev-tls-cert-dir={}", dir.display()));
            }
            let child = cmd
                .env_remove("VAULT_ADDR")
                .env_remove("BAO_ADDR")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn bao server -dev");
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut bao = OpenBao {
                addr: format!("{scheme}://127.0.0.1:{port}"),
                child: Some(child),
                http: reqwest::Client::new(),
            };
            if let Some(dir) = tls {
                // The CA appears once the server has started.
                let ca = dir.join("vault-ca.pem");
                let start = Instant::now();
                while !ca.exists() && start.elapsed() < Duration::from_secs(10) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let pem = std::fs::read(&ca).expect("dev-tls CA");
                let cert = reqwest::Certificate::from_pem(&pem).unwrap();
                bao.http = reqwest::Client::builder()
                    .add_root_certificate(cert)
                    .build()
                    .unwrap();
            }
            if bao.wait_healthy(Duration::from_secs(20)).await {
                return bao;
            }
            drop(bao);
        }
        panic!("could not start an OpenBao dev server");
    }

    async fn wait_healthy(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            if let Ok(r) = self
                .http
                .get(format!("{}/v1/sys/health", self.addr))
                .send()
                .await
            {
                if r.status().as_u16() == 200 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// A raw API call with a given token; returns (status, JSON body or Null).
    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}/v1/{}", self.addr, path))
            .header("X-Vault-Token", token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("openbao request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A raw API call as root that must succeed.
    pub async fn root(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call_as(ROOT_TOKEN, method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    /// Write a KV v2 secret by hand (no CAS), as an operator would; returns the new version.
    pub async fn write_secret(&self, mount: &str, path: &str, data: Value) -> u64 {
        let v = self
            .root(
                "POST",
                &format!("{mount}/data/{path}"),
                Some(json!({ "data": data })),
            )
            .await;
        v["data"]["version"].as_u64().unwrap()
    }

    /// The server's `host:port`, for a proxy in front of it.
    pub fn socket_addr(&self) -> std::net::SocketAddr {
        let host_port = self
            .addr
            .split("://")
            .nth(1)
            .expect("an address with a scheme");
        host_port.parse().expect("a loopback socket address")
    }

    /// A token that holds exactly this policy: not even OpenBao's `default` policy.
    pub async fn token_with_exact_policy(&self, name: &str, hcl: &str) -> String {
        self.token_for_policy(name, hcl, false).await
    }

    /// A token limited to the given policy HCL (plus OpenBao's `default` policy).
    pub async fn token_with_policy(&self, name: &str, hcl: &str) -> String {
        self.token_for_policy(name, hcl, true).await
    }

    async fn token_for_policy(&self, name: &str, hcl: &str, default_policy: bool) -> String {
        self.root(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await;
        let v = self
            .root(
                "POST",
                "auth/token/create",
                Some(json!({
                    "policies": [name],
                    "no_default_policy": !default_policy,
                    "ttl": "1h",
                })),
            )
            .await;
        v["auth"]["client_token"].as_str().unwrap().to_string()
    }

    /// Enable AppRole at `approle/` (idempotent) and create a role.
    pub async fn approle_role(&self, role: &str, settings: Value) {
        let (status, _) = self
            .call_as(
                ROOT_TOKEN,
                "POST",
                "sys/auth/approle",
                Some(json!({ "type": "approle" })),
            )
            .await;
        assert!(
            status == 204 || status == 200 || status == 400,
            "enable approle: {status}"
        );
        self.root("POST", &format!("auth/approle/role/{role}"), Some(settings))
            .await;
    }

    pub async fn role_id(&self, role: &str) -> String {
        let v = self
            .root("GET", &format!("auth/approle/role/{role}/role-id"), None)
            .await;
        v["data"]["role_id"].as_str().unwrap().to_string()
    }

    pub async fn new_secret_id(&self, role: &str) -> (String, String) {
        let v = self
            .root("POST", &format!("auth/approle/role/{role}/secret-id"), None)
            .await;
        (
            v["data"]["secret_id"].as_str().unwrap().to_string(),
            v["data"]["secret_id_accessor"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    /// An AppRole role `app` whose secret-id is kept, as an operator would adopt it, at
    /// `secret/apps/app` (role_id, secret_id, accessor): version 1. Returns those three.
    pub async fn adopted_approle_secret_id(&self) -> (String, String, String) {
        self.approle_role("app", json!({ "token_ttl": "60s", "secret_id_ttl": "3h" }))
            .await;
        let role_id = self.role_id("app").await;
        let (secret_id, accessor) = self.new_secret_id("app").await;
        self.write_secret(
            "secret",
            "apps/app",
            json!({ "role_id": role_id, "secret_id": secret_id, "secret_id_accessor": accessor }),
        )
        .await;
        (role_id, secret_id, accessor)
    }

    pub async fn seal(&self) {
        self.root("PUT", "sys/seal", None).await;
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A VaultConfig pointing at this server with the daemon's defaults.
pub fn vault_config(addr: &str) -> secret_rotator::config::VaultConfig {
    secret_rotator::config::VaultConfig {
        addresses: vec![addr.to_string()],
        namespace: None,
        ca_file: None,
        auth: secret_rotator::config::VaultAuth::TokenEnv,
        state_mount: "secret".into(),
        state_prefix: "secret-rotator".into(),
        request_timeout: Duration::from_secs(5),
    }
}

/// The daemon binary built for this test run.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_secret-rotator"))
}

/// Run the daemon binary with a config file and the root token; returns (exit code, stdout, stderr).
pub fn run_cli(
    config: &std::path::Path,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut cmd = Command::new(binary());
    cmd.arg("--config").arg(config).args(args);
    cmd.env("VAULT_TOKEN", ROOT_TOKEN)
        .env("SECRET_ROTATOR_INSTANCE_ID", "test-instance")
        .env_remove("SECRET_ROTATOR_CRASH_AT");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run secret-rotator");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One block of a policy file: `path "PATH" { capabilities = [...] }`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRule {
    pub path: String,
    pub capabilities: Vec<String>,
}

/// The shipped example policy, `config/vault-policy.hcl`, written for `config/example.toml`.
pub fn example_policy() -> Vec<PolicyRule> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/vault-policy.hcl");
    parse_policy(&std::fs::read_to_string(file).expect("read config/vault-policy.hcl"))
}

/// The blocks of a policy in the shape the example uses: `path "..." {`, one `capabilities` line,
/// `}`. Comments are skipped.
pub fn parse_policy(hcl: &str) -> Vec<PolicyRule> {
    let quoted =
        |s: &str| -> Vec<String> { s.split('"').skip(1).step_by(2).map(String::from).collect() };
    let mut rules = Vec::new();
    let mut path: Option<String> = None;
    for line in hcl.lines().map(str::trim) {
        if line.starts_with("path ") {
            path = quoted(line).into_iter().next();
        } else if line.starts_with("capabilities") {
            let path = path.take().expect("capabilities outside a path block");
            rules.push(PolicyRule {
                path,
                capabilities: quoted(line),
            });
        }
    }
    rules
}

/// Render rules back to HCL.
pub fn policy_hcl(rules: &[PolicyRule]) -> String {
    rules
        .iter()
        .map(|r| {
            let caps: Vec<String> = r.capabilities.iter().map(|c| format!("{c:?}")).collect();
            format!(
                "path {:?} {{\n  capabilities = [{}]\n}}\n",
                r.path,
                caps.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The example policy moved onto a test's own paths: each of the example's secrets, state prefix
/// and AppRole roles that the test uses is renamed to the test's; the blocks of the example's
/// other credentials are left out; the daemon-wide blocks (`sys/`, `auth/token/`) are kept as
/// they are. The capabilities are the file's, unchanged: the file is what the tests exercise.
#[derive(Debug, Clone, Default)]
pub struct PolicyPaths {
    /// (example prefix, test prefix): a rule whose path is the prefix or continues it with `/`.
    renames: Vec<(String, String)>,
}

/// The example config's state mount and prefix.
pub const EXAMPLE_STATE: (&str, &str) = ("secret", "secret-rotator");

impl PolicyPaths {
    pub fn new() -> PolicyPaths {
        PolicyPaths::default()
    }

    /// The state records: the example's `secret` / `secret-rotator` become `mount` / `prefix`.
    pub fn state(self, mount: &str, prefix: &str) -> PolicyPaths {
        self.secret(EXAMPLE_STATE, (mount, prefix))
    }

    /// A KV v2 secret (mount, path) of the example becomes the test's (mount, path): its `data`,
    /// `metadata` and `destroy` blocks, whatever the example grants there, and the listing of
    /// its folder's metadata (`detailed-metadata`), if the example has one.
    pub fn secret(mut self, example: (&str, &str), ours: (&str, &str)) -> PolicyPaths {
        for kind in ["data", "metadata", "destroy"] {
            self.renames.push((
                format!("{}/{kind}/{}", example.0, example.1),
                format!("{}/{kind}/{}", ours.0, ours.1),
            ));
        }
        let folder = |path: &str| {
            path.rsplit_once('/')
                .map_or(String::new(), |(f, _)| format!("{f}/"))
        };
        self.renames.push((
            format!("{}/detailed-metadata/{}", example.0, folder(example.1)),
            format!("{}/detailed-metadata/{}", ours.0, folder(ours.1)),
        ));
        self
    }

    /// A KV v2 secret the example only reads (its `data` block): a signing key, an access token.
    pub fn read_only(mut self, example: (&str, &str), ours: (&str, &str)) -> PolicyPaths {
        self.renames.push((
            format!("{}/data/{}", example.0, example.1),
            format!("{}/data/{}", ours.0, ours.1),
        ));
        self
    }

    /// An AppRole role (auth mount, role name) of the example becomes the test's.
    pub fn approle(mut self, example: (&str, &str), ours: (&str, &str)) -> PolicyPaths {
        self.renames.push((
            format!("auth/{}/role/{}", example.0, example.1),
            format!("auth/{}/role/{}", ours.0, ours.1),
        ));
        self
    }

    /// The example policy's rules on these paths. Panics when a rename matches no rule of the file
    /// (the file and the test drifted apart).
    pub fn rules(&self) -> Vec<PolicyRule> {
        let example = example_policy();
        let mut used = vec![false; self.renames.len()];
        let mut out = Vec::new();
        for rule in &example {
            if rule.path.starts_with("sys/") || rule.path.starts_with("auth/token/") {
                out.push(rule.clone());
                continue;
            }
            for (i, (from, to)) in self.renames.iter().enumerate() {
                let Some(rest) = rule.path.strip_prefix(from.as_str()) else {
                    continue;
                };
                if rest.is_empty() || rest.starts_with('/') {
                    used[i] = true;
                    out.push(PolicyRule {
                        path: format!("{to}{rest}"),
                        capabilities: rule.capabilities.clone(),
                    });
                }
            }
        }
        let unused: Vec<&str> = self
            .renames
            .iter()
            .zip(&used)
            .filter(|(r, used)| {
                !**used && !r.0.contains("/destroy/") && !r.0.contains("/detailed-metadata/")
            })
            .map(|(r, _)| r.0.as_str())
            .collect();
        assert!(
            unused.is_empty(),
            "config/vault-policy.hcl has no rule for {unused:?}"
        );
        out
    }

    /// The rendered policy, as HCL.
    pub fn hcl(&self) -> String {
        policy_hcl(&self.rules())
    }
}

/// The finished attempts of a state record as read raw from Vault (schema 5 keeps them as one
/// compressed text), as JSON.
pub fn history_of(record: &Value) -> Vec<Value> {
    #[derive(serde::Deserialize)]
    struct History {
        #[serde(default)]
        history: Option<Value>,
    }
    let Ok(History { history: Some(h) }) = serde_json::from_value::<History>(record.clone()) else {
        return Vec::new();
    };
    let mut minimal = serde_json::json!({ "schema": 5, "credential": "c", "attempt": null });
    minimal["history"] = h;
    let parsed: secret_rotator::rotation::StateRecord =
        serde_json::from_value(minimal).expect("a readable history");
    parsed
        .history
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect()
}
