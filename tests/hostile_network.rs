//! A hostile network in front of the real binary: for every remote call the daemon makes and
//! every fault of `common::hostile` (a redirect to another host, a gateway's 502 or 504 after
//! the origin acted, the reply dropped, stalled past every timeout, a body larger than any cap,
//! a reset in the middle of the body, a certificate for another name or from an untrusted CA),
//! `secret-rotator rotate` (or `supply`) runs with the fault armed for that call once. The
//! calls: the storefront provider's mint, verify and revoke; the `http` provider's; AppRole's
//! secret-id generate, lookup and destroy through Vault; the probes that verify a supplied
//! store account and a regenerated legacy token (a user token's probe is the same code); the
//! state record's writes to Vault; a webhook delivery. (The `exec` provider and the `file` and
//! `exec` dependents make no network call.) For each case:
//! - no credential reaches another host: the redirect target receives nothing, and no request
//!   is sent over a connection whose certificate was wrong;
//! - every mint is accounted for: at the end, every live storefront token at the emulator and
//!   every secret-id of each AppRole role is current in Vault or a possible orphan the daemon
//!   reported, expiring by the bound it reported;
//! - no hot loop: the faulted call is sent at most 3 times in the case, and the remote sees a
//!   bounded number of requests;
//! - what the daemon says names the endpoint and the fault, and holds no secret.
//!
//! One lane per call (its own credential, config file and proxies) runs its faults in turn;
//! the lanes run at once, sharing one OpenBao, one emulator and one webhook receiver.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bigcommerce_emulator::admin_api::ApiAccountView;
use bigcommerce_emulator::{Access, Resource, Scopes, TokenState};
use chrono::{DateTime, Utc};
use common::hostile::{Certs, Fault, Hostile, Recorder, OVERSIZE};
use common::receiver::{HookReceiver, TEST_KEY};
use common::stack::{sha256_hex, Stack, StackOptions, ACCESS_TOKEN_PATH, STORE, WEBHOOK_KEY_PATH};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Storefront,
    Http,
    AppRole,
    /// A store-level API account (assisted): the probes that verify a supplied token.
    StoreAccount,
    /// A legacy API account (assisted, Basic auth; a user token's probe is the same code): the
    /// probe on the API path that verifies a regenerated token.
    LegacyAccount,
    /// The storefront credential's state record writes (the Vault transport under the engine).
    Records,
    /// A webhook dependent of a storefront credential.
    Webhook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Mint,
    Verify,
    Revoke,
    RecordWrite,
    Deliver,
}

/// Which remote a call goes to, as the proxy in front of it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remote {
    StoreApi,
    Graphql,
    Vault,
    Hook,
}

fn calls() -> Vec<(Provider, Call)> {
    let mut lanes = Vec::new();
    for p in [Provider::Storefront, Provider::Http, Provider::AppRole] {
        for c in [Call::Mint, Call::Verify, Call::Revoke] {
            lanes.push((p, c));
        }
    }
    lanes.push((Provider::StoreAccount, Call::Verify));
    lanes.push((Provider::LegacyAccount, Call::Verify));
    lanes.push((Provider::Records, Call::RecordWrite));
    lanes.push((Provider::Webhook, Call::Deliver));
    lanes
}

fn faults() -> Vec<Fault> {
    vec![
        Fault::Redirect,
        Fault::Gateway(502),
        Fault::Gateway(504),
        Fault::DropReply,
        Fault::Stall,
        Fault::Oversize,
        Fault::ResetMidBody,
        Fault::TlsOtherName,
        Fault::TlsUntrusted,
    ]
}

/// Everything the lanes share.
struct World {
    stack: Stack,
    certs: Certs,
    recorder: Recorder,
    hook: HookReceiver,
    /// The Vault token the daemon runs with (a policy token: its value is a secret to look for).
    token: String,
}

struct Lane {
    name: String,
    provider: Provider,
    call: Call,
    remote: Remote,
    plain: Hostile,
    tls: Hostile,
    dir: PathBuf,
    /// A store account lane's current account, and how many it made.
    account: Mutex<(Option<ApiAccountView>, usize)>,
}

/// One case's result, for the table printed at the end.
#[derive(Debug)]
struct Row {
    lane: String,
    fault: Option<Fault>,
    exit: Option<i32>,
    sent: usize,
    total: usize,
    /// The line that names the endpoint and the fault.
    line: String,
    problems: Vec<String>,
    said: String,
    secs: f64,
}

impl Lane {
    async fn start(w: &World, provider: Provider, call: Call) -> Lane {
        let name = format!("{provider:?}-{call:?}").to_lowercase();
        let remote = match (provider, call) {
            (Provider::AppRole | Provider::Records, _) => Remote::Vault,
            (Provider::Webhook, _) => Remote::Hook,
            (Provider::StoreAccount | Provider::LegacyAccount, _) => Remote::StoreApi,
            (_, Call::Verify) => Remote::Graphql,
            _ => Remote::StoreApi,
        };
        let upstream = match remote {
            Remote::StoreApi | Remote::Graphql => emulator_addr(&w.stack),
            Remote::Vault => w.stack.bao.socket_addr(),
            Remote::Hook => w
                .hook
                .url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap(),
        };
        let plain = Hostile::start(upstream, &w.recorder, None).await;
        let tls = Hostile::start(upstream, &w.recorder, Some(&w.certs)).await;
        let dir = w.stack.dir.path().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let lane = Lane {
            name,
            provider,
            call,
            remote,
            plain,
            tls,
            dir,
            account: Mutex::new((None, 0)),
        };
        lane.adopt(w).await;
        lane
    }

    /// The secret's path in Vault.
    fn path(&self) -> String {
        format!("hostile/{}", self.name)
    }

    fn config_file(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The request the lane's faults are armed for: (method, target pattern).
    fn matcher(&self) -> (&'static str, String) {
        match (self.provider, self.call) {
            (Provider::AppRole, Call::Mint) => ("POST", format!("role/{}/secret-id$", self.name)),
            (Provider::AppRole, Call::Verify) => {
                ("POST", format!("role/{}/secret-id/lookup", self.name))
            }
            (Provider::AppRole, _) => (
                "POST",
                format!("role/{}/secret-id-accessor/destroy", self.name),
            ),
            (Provider::StoreAccount, _) => ("GET", "/v2/time".into()),
            (Provider::LegacyAccount, _) => ("GET", "/api/v2/time".into()),
            (Provider::Records, _) => ("POST", format!("secret-rotator/credentials/{}", self.name)),
            (Provider::Webhook, _) => ("POST", "/hook".into()),
            (_, Call::Verify) => ("POST", "/graphql".into()),
            (_, Call::Revoke) => ("DELETE", "/v3/storefront/api-token".into()),
            _ => ("POST", "/v3/storefront/api-token".into()),
        }
    }

    fn proxy(&self, fault: Fault) -> &Hostile {
        if fault.is_tls() {
            &self.tls
        } else {
            &self.plain
        }
    }

    /// Write the config, with the lane's remote behind `through`.
    fn write_config(&self, w: &World, through: &Hostile) {
        let base = w.stack.emu.base_url();
        let front = through.url();
        let (api, graphql, vault, hook) = match self.remote {
            Remote::StoreApi => (
                front.as_str(),
                base.as_str(),
                w.stack.bao.addr.as_str(),
                w.hook.url.clone(),
            ),
            Remote::Graphql => (
                base.as_str(),
                front.as_str(),
                w.stack.bao.addr.as_str(),
                w.hook.url.clone(),
            ),
            Remote::Vault => (
                base.as_str(),
                base.as_str(),
                front.as_str(),
                w.hook.url.clone(),
            ),
            Remote::Hook => (
                base.as_str(),
                base.as_str(),
                w.stack.bao.addr.as_str(),
                format!("{front}/hook"),
            ),
        };
        let ca = w.certs.ca_file.display();
        // Short where Vault is the remote under test (its stalls end fast), else room for a
        // loaded machine.
        let vault_timeout = if self.remote == Remote::Vault {
            "2s"
        } else {
            "10s"
        };
        let name = &self.name;
        let path = self.path();
        let provider = match self.provider {
            Provider::Storefront | Provider::Records | Provider::Webhook => format!(
                r#"
[credentials.bigcommerce_storefront]
store_hash = "{STORE}"
api_url = "{api}"
storefront_url = "{graphql}/store-{{store_hash}}"
access_token = {{ path = "{ACCESS_TOKEN_PATH}", key = "access_token" }}
kind = "storefront"
channel_ids = [1]
"#
            ),
            Provider::Http => format!(
                r#"
[credentials.http]
parents = {{ access_token = {{ path = "{ACCESS_TOKEN_PATH}", key = "access_token" }} }}
credentials_expire = true
timeout = "2s"

[credentials.http.mint]
method = "POST"
url = "{api}/stores/{STORE}/v3/storefront/api-token"
headers = {{ X-Auth-Token = "{{{{parent.access_token}}}}", Content-Type = "application/json", Accept = "application/json" }}
body = '{{"channel_id": 1, "expires_at": {{{{expires_at_unix}}}}}}'
fields = {{ token = "/data/token" }}

[credentials.http.verify]
method = "POST"
url = "{graphql}/store-{STORE}/graphql"
headers = {{ Authorization = "Bearer {{{{current.token}}}}", Content-Type = "application/json" }}
body = '{{"query": "{{ site {{ settings {{ storeName }} }} }}"}}'
ok = [200]
reject = [401]

[credentials.http.revoke]
method = "DELETE"
url = "{api}/stores/{STORE}/v3/storefront/api-token"
headers = {{ X-Auth-Token = "{{{{parent.access_token}}}}", Sf-Api-Token = "{{{{current.token}}}}", Accept = "application/json" }}
ok = [200, 204]
reject = [401, 403, 422]
"#
            ),
            Provider::StoreAccount => format!(
                r#"
[credentials.bigcommerce_store_account]
store_hash = "{STORE}"
api_url = "{api}"
required_scopes = {{ information_and_settings = "read-only", orders = "modify" }}
"#
            ),
            Provider::LegacyAccount => format!(
                r#"
[credentials.bigcommerce_legacy_account]
store_hash = "{STORE}"
username = "{name}"
api_path = "{api}/store-{STORE}/api/v2/"
"#
            ),
            Provider::AppRole => format!(
                r#"
[credentials.vault_approle_secret_id]
mount = "approle"
role_name = "{name}"
secret_id_ttl = "1h"
"#
            ),
        };
        let dependents = match self.provider {
            Provider::Webhook => format!(
                r#"
[[credentials.dependents]]
type = "webhook"
name = "hook"
url = "{hook}"
signing_key = {{ path = "{WEBHOOK_KEY_PATH}", key = "signing_key" }}
timeout = "2s"
ca_file = "{ca}"
"#
            ),
            _ => String::new(),
        };
        let text = format!(
            r#"
[vault]
address = "{vault}"
ca_file = "{ca}"
request_timeout = "{vault_timeout}"
[vault.auth]
method = "token"

[defaults]
max_age = "1h"
grace = "1s"
expiry_lead = "10m"

[[credentials]]
name = "{name}"
path = "{path}"
{provider}
{dependents}
"#
        );
        std::fs::write(self.config_file(), text).unwrap();
    }

    /// The credential as an operator adopted it: version 1 of its secret.
    async fn adopt(&self, w: &World) {
        let bao = &w.stack.bao;
        let data = match self.provider {
            Provider::AppRole => {
                bao.approle_role(
                    &self.name,
                    json!({ "token_ttl": "60s", "secret_id_ttl": "3h" }),
                )
                .await;
                let role_id = bao.role_id(&self.name).await;
                let (secret_id, accessor) = bao.new_secret_id(&self.name).await;
                json!({ "role_id": role_id, "secret_id": secret_id, "secret_id_accessor": accessor })
            }
            Provider::StoreAccount => {
                let account = self.new_account(w).await;
                let data =
                    json!({ "client_id": account.client_id, "access_token": account.access_token });
                self.account.lock().unwrap().0 = Some(account);
                data
            }
            Provider::LegacyAccount => {
                let account = w
                    .stack
                    .admin
                    .create_legacy_account(STORE, &self.name, None)
                    .await
                    .unwrap();
                json!({ "username": account.username, "token": account.token, "api_path": account.api_path })
            }
            _ => json!({ "token": w.stack.mint_by_hand().await }),
        };
        bao.write_secret("secret", &self.path(), data).await;
    }

    /// Run the binary on the lane's config; (exit code, stdout and stderr).
    async fn cli(&self, w: &World, args: &[&str]) -> (Option<i32>, String) {
        self.cli_with_stdin(w, args, "").await
    }

    async fn cli_with_stdin(&self, w: &World, args: &[&str], stdin: &str) -> (Option<i32>, String) {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(common::binary())
            .arg("--config")
            .arg(self.config_file())
            .arg("--events-file")
            .arg(self.dir.join("events.jsonl"))
            .args(args)
            .env("VAULT_TOKEN", &w.token)
            .env(
                "SECRET_ROTATOR_INSTANCE_ID",
                format!("hostile-{}", self.name),
            )
            .env("SECRET_ROTATOR_LOG", "info")
            // The test CA, trusted for the providers' remotes as a system root would be.
            .env("SSL_CERT_FILE", &w.certs.ca_file)
            .env_remove("SSL_CERT_DIR")
            .env_remove("SECRET_ROTATOR_CRASH_AT")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let out = child.wait_with_output();
        let out = tokio::time::timeout(Duration::from_secs(100), out)
            .await
            .unwrap_or_else(|_| panic!("{}: {args:?} did not finish within 100 s", self.name))
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }

    /// How many possible orphans the lane's history reports.
    async fn orphans(&self, w: &World) -> usize {
        if self.call != Call::Mint {
            return 0;
        }
        lane_standing(w, self).await.0.len()
    }

    async fn new_account(&self, w: &World) -> ApiAccountView {
        let n = {
            let mut a = self.account.lock().unwrap();
            a.1 += 1;
            a.1
        };
        let scopes = Scopes::none()
            .with(Resource::InformationAndSettings, Access::ReadOnly)
            .with(Resource::Orders, Access::Modify);
        w.stack
            .admin
            .create_api_account(STORE, &format!("{}-{n}", self.name), scopes)
            .await
            .unwrap()
    }

    /// `supply` with `input`, the fault armed for the lane's call, and once more without it
    /// when that failed; what it said goes to `said`.
    async fn supply(
        &self,
        w: &World,
        proxy: &Hostile,
        fault: Option<Fault>,
        input: &str,
        said: &mut String,
    ) -> Option<i32> {
        let (method, pattern) = self.matcher();
        if let Some(fault) = fault {
            proxy.arm(method, &pattern, fault);
        }
        let (mut code, out) = self.cli_with_stdin(w, &["supply", &self.name], input).await;
        said.push_str(&out);
        if code != Some(0) {
            proxy.disarm();
            let (again, out) = self.cli_with_stdin(w, &["supply", &self.name], input).await;
            code = again;
            said.push_str(&out);
        }
        code
    }

    /// The lane's secret holds `value` in `field`: the supplied credential is committed.
    async fn assert_committed(&self, w: &World, field: &str, value: &str, said: &str) {
        let stored = w
            .stack
            .bao
            .root("GET", &format!("secret/data/{}", self.path()), None)
            .await;
        assert_eq!(
            stored["data"]["data"][field].as_str(),
            Some(value),
            "{}: the supplied credential is not committed:\n{said}",
            self.name
        );
    }

    /// An assisted rotation of a store account: asked for, a new account supplied with the
    /// fault armed for its probe (and supplied again when that failed), the old account
    /// deleted and confirmed dead.
    async fn supply_a_new_account(
        &self,
        w: &World,
        proxy: &Hostile,
        fault: Option<Fault>,
    ) -> (Option<i32>, String) {
        let mut said = String::new();
        let (_, out) = self.cli(w, &["rotate", &self.name]).await;
        said.push_str(&out);
        let new = self.new_account(w).await;
        let input = json!({
            "client_id": new.client_id,
            "access_token": new.access_token,
            "client_secret": new.client_secret,
        })
        .to_string();
        let code = self.supply(w, proxy, fault, &input, &mut said).await;
        let old = self.account.lock().unwrap().0.replace(new.clone());
        if let Some(old) = old {
            w.stack
                .admin
                .delete_api_account(STORE, &old.client_id)
                .await
                .unwrap();
            said.push_str(&format!("[the test deleted {} at the store]\n", old.name));
        }
        let (confirm, out) = self.cli(w, &["confirm-revoked", &self.name]).await;
        said.push_str(&out);
        self.assert_committed(w, "access_token", &new.access_token, &said)
            .await;
        (code.and(confirm), said)
    }

    /// An assisted rotation of a legacy account: asked for, the token regenerated (the old one
    /// dies at once), supplied with the fault armed for its probe (and supplied again when that
    /// failed); the old token is checked dead by the supply itself.
    async fn supply_a_regenerated_token(
        &self,
        w: &World,
        proxy: &Hostile,
        fault: Option<Fault>,
    ) -> (Option<i32>, String) {
        let (_, mut said) = self.cli(w, &["rotate", &self.name]).await;
        let new = w
            .stack
            .admin
            .regenerate_legacy_token(STORE, &self.name)
            .await
            .unwrap();
        // Username and API path: the configured ones.
        let input = json!({ "token": new.token }).to_string();
        let code = self.supply(w, proxy, fault, &input, &mut said).await;
        self.assert_committed(w, "token", &new.token, &said).await;
        (code, said)
    }

    /// One case: the fault armed for the lane's call, a rotation, the checks.
    async fn case(&self, w: &World, fault: Option<Fault>) -> Row {
        let start = Instant::now();
        let proxy = fault.map_or(&self.plain, |f| self.proxy(f));
        self.write_config(w, proxy);
        let (method, pattern) = self.matcher();
        let mut said = String::new();
        if self.call == Call::Revoke {
            // Up to the grace period, in a process of its own, so the revocation opens the
            // next process's connections (a TLS fault fires at a connection).
            let (_, out) = self.cli(w, &["rotate", &self.name]).await;
            said.push_str(&out);
        }
        let orphans_before = self.orphans(w).await;
        let (mut exit, out) = if self.provider == Provider::StoreAccount {
            self.supply_a_new_account(w, proxy, fault).await
        } else if self.provider == Provider::LegacyAccount {
            self.supply_a_regenerated_token(w, proxy, fault).await
        } else {
            if let Some(fault) = fault {
                proxy.arm(method, &pattern, fault);
            }
            self.cli(w, &["rotate", &self.name, "--wait"]).await
        };
        said.push_str(&out);
        let orphans = self.orphans(w).await - orphans_before;
        if self.call == Call::Deliver {
            // A delivery that failed backs off for seconds: send it again now.
            let (_, out) = self
                .cli(w, &["deliveries", &self.name, "--retry", "hook"])
                .await;
            said.push_str(&out);
        }
        let fired = fault.is_none() || proxy.fired();
        proxy.disarm();
        let mut problems = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                problems.push(what);
            }
        };
        check(fired, "the fault never fired".into());
        // Requests counted for the no-hot-loop bound (checked against the lane's baseline).
        // The faulted call from the fault on (without one: in the whole run).
        let sent = match fault {
            Some(_) => proxy.count_since_armed(method, &pattern),
            None => proxy.count_since(start, method, &pattern),
        };
        let total = proxy.total_since(start);
        // No credential reaches another host.
        check(
            w.recorder.connections() == 0,
            format!(
                "the redirect target was contacted: {}",
                w.recorder.received()
            ),
        );
        check(
            proxy.leaked() == 0,
            "a request over a bad certificate".into(),
        );
        // Every mint accounted for, case by case: a mint whose answer was lost after the
        // origin made the credential is one possible orphan (AppRole: none when the lost
        // secret-id was found by its accessor and destroyed, as it is unless a lookup fails);
        // nothing else leaves one.
        let lost_mint = self.call == Call::Mint && fault.is_some_and(Fault::after_forwarding);
        let expected = match (lost_mint, self.provider) {
            (false, _) => 0..=0,
            (true, Provider::AppRole) => 0..=1,
            (true, _) => 1..=1,
        };
        check(
            expected.contains(&orphans),
            format!("{orphans} possible orphans reported, {expected:?} expected"),
        );
        if fault == Some(Fault::Oversize) {
            check(
                proxy.oversize_sent() < OVERSIZE,
                format!(
                    "the whole oversize body ({} bytes) was read",
                    proxy.oversize_sent()
                ),
            );
        }
        // The fault is named, with the endpoint; no secret is.
        let line = match fault {
            None => Some(String::new()),
            Some(fault) => said
                .lines()
                .find(|l| {
                    says_the_outcome(l, self, fault)
                        && (accepted(self, fault) || names_the_endpoint(l, self, proxy))
                })
                .map(str::to_string),
        };
        check(
            line.is_some(),
            "no line names the endpoint and the fault".into(),
        );
        for secret in w.secrets(self).await {
            check(
                !said.contains(&secret),
                format!(
                    "a secret in the output ({}...)",
                    &secret[..3.min(secret.len())]
                ),
            );
        }
        if exit.is_none() {
            exit = Some(-1);
        }
        Row {
            lane: self.name.clone(),
            fault,
            exit,
            sent,
            total,
            line: match fault {
                Some(Fault::Oversize) => format!(
                    "[{} MiB sent] {}",
                    proxy.oversize_sent() >> 20,
                    line.unwrap_or_default()
                ),
                _ => line.unwrap_or_default(),
            },
            problems,
            said,
            secs: start.elapsed().as_secs_f64(),
        }
    }
}

/// A fault after a 2xx status line that the call does not need the body of: a webhook's
/// receiver accepted the event, a store account's probe proved the token.
fn accepted(lane: &Lane, fault: Fault) -> bool {
    matches!(
        lane.provider,
        Provider::Webhook | Provider::StoreAccount | Provider::LegacyAccount
    ) && matches!(fault, Fault::Oversize | Fault::ResetMidBody)
}

/// The line the daemon must say: the error naming the fault; for a webhook whose receiver
/// answered 2xx before the body went wrong, the delivery (a 2xx is the receiver's acceptance,
/// its body is not read); for a store account's probe likewise, the supply committed.
fn says_the_outcome(line: &str, lane: &Lane, fault: Fault) -> bool {
    let l = line.to_lowercase();
    if accepted(lane, fault) {
        return match lane.provider {
            Provider::Webhook => l.contains("delivered credential="),
            _ => l.contains("committed"),
        };
    }
    let any = |words: &[&str]| words.iter().any(|w| l.contains(w));
    match fault {
        Fault::Redirect => any(&["redirect"]),
        Fault::Gateway(s) => l.contains(&s.to_string()),
        Fault::DropReply => any(&[
            "closed",
            "connection lost",
            "no answer",
            "reset",
            "incomplete",
        ]),
        Fault::Stall => any(&[
            "timed out",
            "timeout",
            "deadline",
            "answer within",
            "in time",
        ]),
        // Cut off at the cap, or (a slow reader of Vault's 48 MiB) at the timeout first.
        Fault::Oversize => any(&["cap", "too large", "larger than", "timed out"]),
        Fault::ResetMidBody => any(&["reset", "connection lost", "closed", "incomplete", "body"]),
        Fault::TlsOtherName | Fault::TlsUntrusted => any(&["certificate"]),
    }
}

/// The endpoint: its address, or the store and step, the provider and step, the Vault path,
/// the dependent.
fn names_the_endpoint(line: &str, lane: &Lane, proxy: &Hostile) -> bool {
    let step = match lane.call {
        Call::Mint => "mint",
        Call::Verify => "verify",
        _ => "revoke",
    };
    line.contains(&proxy.host_port())
        || match lane.provider {
            Provider::Storefront => line.contains(&format!("store {STORE} {step}")),
            Provider::Http => line.contains(&format!("http provider {step}")),
            Provider::AppRole => line.contains(&format!("role/{}", lane.name)),
            // The probe's path on the store's API.
            Provider::StoreAccount => line.contains("GET /v2/time"),
            Provider::LegacyAccount => line.contains("/api/v2/time"),
            Provider::Records => {
                line.contains(&format!("secret-rotator/credentials/{}", lane.name))
            }
            Provider::Webhook => line.contains("dependent=hook"),
        }
}

fn emulator_addr(s: &Stack) -> std::net::SocketAddr {
    s.emu
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

impl World {
    /// Every secret the daemon handles for this lane: the store's access token, the Vault
    /// token, the webhook key, every version of the lane's secret; and the prefix of every
    /// storefront token (a JWT), lost ones included.
    async fn secrets(&self, lane: &Lane) -> Vec<String> {
        let mut secrets = vec![
            bigcommerce_emulator::demo::ACCESS_TOKEN.to_string(),
            self.token.clone(),
            TEST_KEY.to_string(),
            TEST_KEY.trim_start_matches("whsec_").to_string(),
            "eyJ".to_string(),
        ];
        let meta = self
            .stack
            .bao
            .root("GET", &format!("secret/metadata/{}", lane.path()), None)
            .await;
        let versions: Vec<u64> = meta["data"]["versions"]
            .as_object()
            .map(|o| o.keys().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default();
        for v in versions {
            let (status, data) = self
                .stack
                .bao
                .call_as(
                    common::ROOT_TOKEN,
                    "GET",
                    &format!("secret/data/{}?version={v}", lane.path()),
                    None,
                )
                .await;
            if status == 200 {
                for key in ["secret_id", "token", "access_token", "client_secret"] {
                    if let Some(s) = data["data"]["data"][key].as_str() {
                        secrets.push(s.to_string());
                    }
                }
            }
        }
        secrets
    }
}

/// (possible orphans the lane reported: their bounds, the lane's current secret).
async fn lane_standing(w: &World, lane: &Lane) -> (Vec<DateTime<Utc>>, Value) {
    let (code, out) = lane.cli(w, &["history", &lane.name, "--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let json_start = out.find('{').unwrap();
    let h: Value = serde_json::Deserializer::from_str(&out[json_start..])
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    let orphans = h["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["orphans"].as_array().cloned().unwrap_or_default())
        .map(|o| o["expires_at"].as_str().unwrap().parse().unwrap())
        .collect();
    let current = w
        .stack
        .bao
        .root("GET", &format!("secret/data/{}", lane.path()), None)
        .await;
    (orphans, current["data"]["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_under_every_fault_keeps_credentials_home_and_mints_accounted_for() {
    let t0 = Instant::now();
    let stack = Stack::with(StackOptions {
        root_token: true,
        ..StackOptions::default()
    })
    .await;
    stack
        .admin
        .set_rate_limit(STORE, 100_000, Duration::from_secs(30))
        .await
        .unwrap();
    stack
        .bao
        .write_secret(
            "secret",
            WEBHOOK_KEY_PATH,
            json!({ "signing_key": TEST_KEY }),
        )
        .await;
    let token = stack
        .bao
        .token_with_policy(
            "hostile",
            r#"path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }"#,
        )
        .await;
    let certs = Certs::generate(stack.dir.path());
    let world = Arc::new(World {
        recorder: Recorder::start().await,
        hook: HookReceiver::start(TEST_KEY).await,
        certs,
        stack,
        token,
    });
    let mut lanes = Vec::new();
    for (p, c) in calls() {
        lanes.push(Arc::new(Lane::start(&world, p, c).await));
    }
    let rows = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for lane in &lanes {
        let (w, lane, rows) = (world.clone(), lane.clone(), rows.clone());
        tasks.spawn(async move {
            // A rotation without a fault: what the lane's remote sees of one.
            let baseline = lane.case(&w, None).await;
            let mut done = vec![];
            for fault in faults() {
                let mut row = lane.case(&w, Some(fault)).await;
                // No hot loop: the faulted call at most twice more than in a rotation without
                // a fault (the fault, one retry), and the remote sees few more requests.
                if row.sent > baseline.sent + 2 || row.total > baseline.total + 15 {
                    row.problems.push(format!(
                        "{} calls, {} requests (without the fault: {}, {})",
                        row.sent, row.total, baseline.sent, baseline.total
                    ));
                }
                done.push(row);
            }
            done.insert(0, baseline);
            // Whatever the last fault left in flight (an old credential waiting for its
            // revocation) finishes, as the daemon would finish it.
            let (code, out) = lane.cli(&w, &["rotate", &lane.name, "--wait"]).await;
            assert_eq!(code, Some(0), "{}: {out}", lane.name);
            rows.lock().unwrap().extend(done);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let rows = std::mem::take(&mut *rows.lock().unwrap());
    for r in &rows {
        eprintln!(
            "{:<20} {:<14} exit {:>3?} sent {} total {:>3} {:>5.1}s | {}",
            r.lane,
            r.fault.map_or("none".to_string(), |f| format!("{f:?}")),
            r.exit.unwrap_or(-1),
            r.sent,
            r.total,
            r.secs,
            if r.problems.is_empty() {
                r.line.clone()
            } else {
                format!("FAILED: {}", r.problems.join("; "))
            }
        );
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.problems.is_empty())
        .map(|r| {
            format!(
                "{} x {:?}: {}\n{}",
                r.lane,
                r.fault,
                r.problems.join("; "),
                r.said
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} cases failed:\n{}",
        failed.len(),
        failed.join("\n\n")
    );

    // Every mint accounted for: the live storefront tokens at the store, and each role's
    // secret-ids.
    let mut current = vec![sha256_hex(&world.stack.current().await.1)];
    let mut bounds = Vec::new();
    let mut unaccounted = Vec::new();
    for lane in &lanes {
        let (orphans, secret) = lane_standing(&world, lane).await;
        match lane.provider {
            Provider::AppRole => {
                let (status, v) = world
                    .stack
                    .bao
                    .call_as(
                        common::ROOT_TOKEN,
                        "LIST",
                        &format!("auth/approle/role/{}/secret-id", lane.name),
                        None,
                    )
                    .await;
                assert_eq!(status, 200);
                let live = v["data"]["keys"].as_array().unwrap().len();
                if live > 1 + orphans.len() {
                    unaccounted.push(format!(
                        "{}: {live} secret-ids live, 1 current and {} reported",
                        lane.name,
                        orphans.len()
                    ));
                }
            }
            Provider::StoreAccount | Provider::LegacyAccount => {}
            _ => {
                current.push(sha256_hex(secret["token"].as_str().unwrap()));
                bounds.extend(orphans);
            }
        }
    }
    bounds.sort();
    let mut live: Vec<(String, i64)> = world
        .stack
        .tokens_in_state(TokenState::Live)
        .await
        .into_iter()
        .filter(|t| !current.contains(&t.0))
        .collect();
    live.sort_by_key(|t| t.1);
    for (hash, expires_at) in live {
        match bounds.iter().position(|b| expires_at <= b.timestamp()) {
            Some(i) => {
                bounds.remove(i);
            }
            None => unaccounted.push(format!(
                "a live storefront token the daemon does not report: {hash}"
            )),
        }
    }
    assert_eq!(unaccounted, Vec::<String>::new(), "mints not accounted for");
    eprintln!("{} cases in {:.1}s", rows.len(), t0.elapsed().as_secs_f64());
}
