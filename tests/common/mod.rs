//! Test harness: a real OpenBao dev server on a free loopback port, and helpers to drive it as an
//! operator would (root token over the HTTP API).
#![allow(dead_code)]

pub mod stack;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const ROOT_TOKEN: &str = "root";

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

/// A running `bao server -dev`, killed on drop.
pub struct OpenBao {
    pub addr: String,
    child: Child,
    pub http: reqwest::Client,
}

impl OpenBao {
    pub async fn start() -> OpenBao {
        OpenBao::launch(None).await
    }

    /// A dev server with TLS (`-dev-tls`): its CA is written to `cert_dir/vault-ca.pem`.
    pub async fn start_tls(cert_dir: &std::path::Path) -> OpenBao {
        OpenBao::launch(Some(cert_dir)).await
    }

    async fn launch(tls: Option<&std::path::Path>) -> OpenBao {
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
                child,
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
            let _ = bao.child.kill();
            let _ = bao.child.wait();
        }
        panic!("could not start an OpenBao dev server");
    }

    async fn wait_healthy(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
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

    /// A token limited to the given policy HCL.
    pub async fn token_with_policy(&self, name: &str, hcl: &str) -> String {
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
                Some(json!({ "policies": [name], "ttl": "1h" })),
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

    pub async fn seal(&self) {
        self.root("PUT", "sys/seal", None).await;
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
