//! The generic providers against real programs and real servers: `http` rotates the emulator's
//! storefront tokens from config alone through `secret-rotator rotate` (real OpenBao, the daemon
//! holding the shipped least-privilege policy); `exec` runs small shell scripts, and a script
//! that rejects, fails for now, prints garbage, exits 3 or hangs gives a clear error each time.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bigcommerce_emulator::{demo, TokenState};
use chrono::Utc;
use common::stack::{sha256_hex, Stack, ACCESS_TOKEN_PATH, CRED, SECRET_PATH, STORE};
use common::{run_cli, OpenBao};
use secret_rotator::config::ExecProviderConfig;
use secret_rotator::providers::exec::ExecProvider;
use secret_rotator::providers::{MintRequest, Provider, ProviderError};
use secret_rotator::secret::SecretFields;
use serde_json::{json, Value};

/// The storefront credential of `common::stack`, rotated by the `http` provider instead of the
/// native `bigcommerce_storefront` one: the same requests, written in the config file.
fn http_storefront_config(s: &Stack) -> String {
    let base = s.emu.base_url();
    let bao = s
        .proxy
        .as_ref()
        .map_or(s.bao.addr.clone(), common::proxy::Proxy::url);
    let head = common::token_config_head(&bao, "1h", "1s");
    format!(
        r#"
{head}
[[credentials]]
name = "{CRED}"
path = "{SECRET_PATH}"

[credentials.http]
parents = {{ access_token = {{ path = "{ACCESS_TOKEN_PATH}", key = "access_token" }} }}

[credentials.http.mint]
method = "POST"
url = "{base}/stores/{STORE}/v3/storefront/api-token"
headers = {{ X-Auth-Token = "{{{{parent.access_token}}}}", Content-Type = "application/json", Accept = "application/json" }}
body = '{{"channel_id": 1, "expires_at": {{{{expires_at_unix}}}}}}'
fields = {{ token = "/data/token" }}

[credentials.http.verify]
method = "POST"
url = "{base}/store-{STORE}/graphql"
headers = {{ Authorization = "Bearer {{{{current.token}}}}", Content-Type = "application/json" }}
body = '{{"query": "{{ site {{ settings {{ storeName }} }} }}"}}'
ok = [200]
reject = [401]

[credentials.http.revoke]
method = "DELETE"
url = "{base}/stores/{STORE}/v3/storefront/api-token"
headers = {{ X-Auth-Token = "{{{{parent.access_token}}}}", Sf-Api-Token = "{{{{current.token}}}}", Accept = "application/json" }}
ok = [200]
reject = [401, 403, 422]
"#
    )
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_provider_rotates_a_storefront_token_from_config_alone() {
    let s = Stack::start().await;
    std::fs::write(&s.config, http_storefront_config(&s)).unwrap();
    let (v1, old) = s.current().await;
    assert_eq!(v1, 1);

    let check = s.cli(&["check-config"], &[]).await;
    assert_eq!(check.code, Some(0), "{check:?}");
    assert!(
        check
            .stdout
            .contains("1 credential(s) (1 automatic, 0 assisted)"),
        "{}",
        check.stdout
    );

    let out = s.cli(&["rotate", CRED, "--wait"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");

    let (v, new) = s.current().await;
    assert_eq!(v, 2, "Vault holds the new version");
    assert_ne!(new, old);
    let written = s
        .bao
        .root("GET", &format!("secret/data/{SECRET_PATH}"), None)
        .await;
    assert_eq!(
        written["data"]["data"],
        json!({ "token": new }),
        "the fields the http provider's mint names (the native provider writes three)"
    );
    assert_eq!(s.graphql_status(&new).await, 200, "the new token works");
    assert_eq!(
        s.graphql_status(&old).await,
        401,
        "the old token is revoked"
    );
    let revoked = s.tokens_in_state(TokenState::Revoked).await;
    assert!(
        revoked.iter().any(|(sha, _)| *sha == sha256_hex(&old)),
        "the emulator revoked the old token: {revoked:?}"
    );
    let live = s.tokens_in_state(TokenState::Live).await;
    assert_eq!(live.len(), 1, "exactly one live token: {live:?}");
    assert_eq!(live[0].0, sha256_hex(&new));
    // The mint body asked for the planned expiry, so the token dies on its own.
    let expires_in = live[0].1 - Utc::now().timestamp();
    assert!(expires_in > 3600, "expires in {expires_in} s");

    let history = s.history().await;
    assert_eq!(history["attempts"][0]["outcome"], "rotated", "{history}");
    assert_eq!(
        kinds(&s.events()),
        ["credential.rotated", "credential.revoked"]
    );
    let all = format!(
        "{}{}{}",
        out.stdout,
        out.stderr,
        std::fs::read_to_string(&s.events).unwrap()
    );
    for secret in [new.as_str(), old.as_str(), demo::ACCESS_TOKEN] {
        assert!(!all.contains(secret), "a secret in the output");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_mint_the_store_refuses_says_so_without_a_secret() {
    let s = Stack::start().await;
    // The parent token lacks nothing but is wrong: the store answers 401.
    s.bao
        .write_secret(
            "secret",
            ACCESS_TOKEN_PATH,
            json!({ "access_token": "wrongaccesstoken000000000000000" }),
        )
        .await;
    std::fs::write(&s.config, http_storefront_config(&s)).unwrap();
    let (_, old) = s.current().await;

    let out = s.cli(&["rotate", CRED, "--wait"], &[]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("http provider mint: status 401"),
        "the error names the step and the status: {text}"
    );
    assert!(!text.contains("wrongaccesstoken") && !text.contains(&old));
    assert_eq!(s.current().await.0, 1, "nothing was written");
}

// --- exec ---------------------------------------------------------------------------------

/// A tiny credential backend in a directory: one file per live token.
const BACKEND: &str = r#"#!/bin/sh
# usage: backend.sh STEP DIR   (JSON request on stdin)
step=$1; dir=$2
input=$(cat)
token=$(printf '%s' "$input" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
case $step in
  mint)
    new=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    : > "$dir/$new"
    printf '{"fields":{"token":"%s"}}' "$new" ;;
  verify)
    [ -n "$token" ] && [ -f "$dir/$token" ] || { echo "unknown token" >&2; exit 2; } ;;
  revoke)
    rm -f "$dir/$token" ;;
  verify_revoked)
    if [ -f "$dir/$token" ]; then echo '{"revoked":false}'; else echo '{"revoked":true}'; fi ;;
esac
"#;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn argv(script: &Path, args: &[&str]) -> Vec<String> {
    let mut v = vec!["/bin/sh".to_string(), script.display().to_string()];
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

fn exec_config(mint: Vec<String>, verify: Vec<String>, revoke: Vec<String>) -> ExecProviderConfig {
    ExecProviderConfig {
        mint,
        verify,
        revoke,
        verify_revoked: None,
        timeout: Duration::from_secs(5),
        fields: vec!["token".into()],
        credentials_expire: false,
    }
}

fn mint_request() -> MintRequest {
    MintRequest {
        attempt_id: "attempt-1".into(),
        now: Utc::now(),
        expires_at: Utc::now() + chrono::Duration::hours(2),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exec_provider_rotates_through_a_script() {
    let bao = OpenBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    std::fs::write(live.join("firsttoken"), "").unwrap();
    bao.write_secret("secret", "apps/exec", json!({ "token": "firsttoken" }))
        .await;
    let backend = script(dir.path(), "backend.sh", BACKEND);
    let step = |name: &str| {
        format!(
            "[\"/bin/sh\", \"{}\", \"{name}\", \"{}\"]",
            backend.display(),
            live.display()
        )
    };
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[vault]
address = "{addr}"
[vault.auth]
method = "token"

[[credentials]]
name = "exec-app"
path = "apps/exec"
max_age = "1h"
grace = "1s"
[credentials.exec]
mint = {mint}
verify = {verify}
revoke = {revoke}
verify_revoked = {verify_revoked}
fields = ["token"]
timeout = "10s"
"#,
            addr = bao.addr,
            mint = step("mint"),
            verify = step("verify"),
            revoke = step("revoke"),
            verify_revoked = step("verify_revoked"),
        ),
    )
    .unwrap();

    let (code, stdout, stderr) = run_cli(&config, &["rotate", "exec-app", "--wait"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let current = bao.root("GET", "secret/data/apps/exec", None).await;
    assert_eq!(current["data"]["metadata"]["version"], 2);
    let new = current["data"]["data"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let files: Vec<String> = std::fs::read_dir(&live)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        files,
        [new.as_str()],
        "the old token is revoked, the new one live"
    );
    assert!(
        !format!("{stdout}{stderr}").contains(&new),
        "no secret in the output"
    );
}

/// Each misbehaving program gives its own clear error, naming the step and the program, never
/// what it printed on stdout.
#[tokio::test]
async fn misbehaving_programs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let secret_out = "s3cr3t-on-stdout";
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "rejected",
            "echo 'no such account' >&2; exit 2".into(),
            "rejected",
            "mint.sh): rejected (exit status 2); stderr: no such account",
        ),
        (
            "transient",
            "echo 'backend down' >&2; exit 75".into(),
            "transient",
            "temporary failure (exit status 75); stderr: backend down",
        ),
        (
            "exit 3",
            format!("echo {secret_out}; exit 3"),
            "unknown_outcome",
            "exited with status 3; a credential may have been created",
        ),
        (
            "garbage",
            format!("echo 'this is {secret_out}, not JSON'"),
            "unknown_outcome",
            "exited 0 but stdout is not a JSON object",
        ),
        (
            "a field missing",
            "echo '{\"fields\": {\"id\": \"x\"}}'".into(),
            "unknown_outcome",
            "its answer lacks the field(s) token",
        ),
        (
            "not found",
            String::new(),
            "config",
            "cannot start the program",
        ),
    ];
    for (what, body, kind, fragment) in cases {
        let mint = if what == "not found" {
            vec![dir.path().join("missing").display().to_string()]
        } else {
            argv(&script(dir.path(), "mint.sh", &body), &[])
        };
        let p = ExecProvider::new(exec_config(mint, vec![], vec![]), "app");
        let err = p.mint(&mint_request()).await.expect_err(what);
        let text = err.to_string();
        assert_eq!(err.kind(), kind, "{what}: {text}");
        assert!(text.contains(fragment), "{what}: {text}");
        assert!(!text.contains(secret_out), "{what}: stdout quoted: {text}");
    }
}

/// At the timeout the program's whole process group dies: a grandchild too.
#[tokio::test]
async fn a_hanging_program_is_killed_with_its_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    let body = format!("sleep 300 &\necho $! > {}\nwait\n", pid_file.display());
    let mut cfg = exec_config(
        argv(&script(dir.path(), "hang.sh", &body), &[]),
        vec![],
        vec![],
    );
    cfg.timeout = Duration::from_millis(500);
    let p = ExecProvider::new(cfg, "app");
    let started = Instant::now();
    let err = p.mint(&mint_request()).await.expect_err("times out");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, ProviderError::UnknownOutcome { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("no answer within 500ms; its process group was killed"),
        "{err}"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        assert!(Instant::now() < deadline, "the grandchild {pid} still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// What a program gets on stdin, per step: the step, the credential, and the fields the step
/// acts on (mint: the planned expiry instead); verify and revoke map exit 2 to a rejection, and
/// without `verify_revoked` a rejected verify means revoked.
#[tokio::test]
async fn each_step_gets_its_request_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let record = script(
        dir.path(),
        "record.sh",
        &format!(
            "cat >> {seen}; echo >> {seen}; echo \"$SECRET_ROTATOR_STEP $SECRET_ROTATOR_CREDENTIAL\" >> {seen}; \
             case $SECRET_ROTATOR_STEP in mint) echo '{{\"fields\":{{\"token\":\"t2\"}},\"expires_at\":1900000000}}';; verify) exit 2;; esac",
            seen = seen.display()
        ),
    );
    let program = argv(&record, &[]);
    let p = ExecProvider::new(
        exec_config(program.clone(), program.clone(), program),
        "app",
    );
    let req = mint_request();
    let minted = p.mint(&req).await.unwrap();
    assert_eq!(minted.secret.expose("token"), Some("t2"));
    assert_eq!(minted.expires_at.unwrap().timestamp(), 1_900_000_000);
    let old = SecretFields::new().with("token", "t1");
    assert!(matches!(
        p.verify(&old).await,
        Err(ProviderError::Rejected { .. })
    ));
    p.revoke(&old).await.unwrap();
    assert!(
        p.verify_revoked(&old).await.unwrap(),
        "verify exit 2: revoked"
    );

    let text = std::fs::read_to_string(&seen).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mint: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(mint["step"], "mint");
    assert_eq!(mint["credential"], "app");
    assert_eq!(mint["attempt_id"], "attempt-1");
    assert_eq!(mint["expires_at_unix"], req.expires_at.timestamp());
    assert!(mint.get("fields").is_none());
    assert_eq!(
        lines[1], "mint app",
        "the step and the credential in the environment"
    );
    let verify: Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(
        verify,
        json!({"step": "verify", "credential": "app", "fields": {"token": "t1"}})
    );
    let revoke: Value = serde_json::from_str(lines[4]).unwrap();
    assert_eq!(revoke["step"], "revoke");
}
