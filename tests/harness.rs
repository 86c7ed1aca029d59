//! The test harness itself: the loopback proxy in front of a real OpenBao, and the shipped example
//! Vault policy (`config/vault-policy.hcl`) that the end-to-end tests run the daemon with.

mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{example_policy, OpenBao, PolicyRule, EXAMPLE_STATE, ROOT_TOKEN};
use serde_json::{json, Value};

/// One API call as root through `base` (the proxy or OpenBao): the status and JSON body, or the
/// transport error the client saw.
async fn call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http
        .request(method, format!("{base}/v1/{path}"))
        .header("X-Vault-Token", ROOT_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// A KV v2 write of `{"n": n}` at `secret/app` with check-and-set `cas`.
fn cas_write(cas: u64, n: u64) -> Option<Value> {
    Some(json!({ "options": { "cas": cas }, "data": { "n": n } }))
}

/// The secret's current version and its `n`, read from OpenBao directly.
async fn landed(bao: &OpenBao) -> (u64, u64) {
    let v = bao.root("GET", "secret/data/app", None).await;
    (
        v["data"]["metadata"]["version"].as_u64().unwrap(),
        v["data"]["data"]["n"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_pass_through_the_proxy_and_every_request_is_counted() {
    let bao = OpenBao::start().await;
    let proxy = Proxy::start(bao.socket_addr()).await;
    // One client: its requests share keep-alive connections through the proxy.
    let http = reqwest::Client::new();
    let via = proxy.url();

    for (cas, n) in [(0, 10), (1, 11)] {
        let (status, v) = call(&http, &via, "POST", "secret/data/app", cas_write(cas, n))
            .await
            .unwrap();
        assert_eq!(
            (status, v["data"]["version"].as_u64()),
            (200, Some(cas + 1))
        );
    }
    for _ in 0..3 {
        let (status, v) = call(&http, &via, "GET", "secret/data/app", None)
            .await
            .unwrap();
        assert_eq!((status, v["data"]["data"]["n"].as_u64()), (200, Some(11)));
    }
    // A reply large enough that OpenBao sends it chunked.
    let big = "x".repeat(64 * 1024);
    call(
        &http,
        &via,
        "POST",
        "secret/data/big",
        Some(json!({ "data": { "big": big } })),
    )
    .await
    .unwrap();
    let (status, v) = call(&http, &via, "GET", "secret/data/big", None)
        .await
        .unwrap();
    assert_eq!(
        (status, v["data"]["data"]["big"].as_str()),
        (200, Some(big.as_str()))
    );
    let (status, v) = call(&http, &via, "LIST", "secret/metadata/", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["data"]["keys"], json!(["app", "big"]));
    // A 404 has a body too, and the connection goes on.
    let (status, _) = call(&http, &via, "GET", "secret/data/missing", None)
        .await
        .unwrap();
    assert_eq!(status, 404);

    assert_eq!(landed(&bao).await, (2, 11));
    for (method, path, expected) in [
        ("POST", "secret/data/app", 2),
        ("GET", "secret/data/app", 3),
        ("get", "secret/data/app", 3),
        ("GET", "secret/data/", 5),
        ("POST", "secret/data/big", 1),
        ("LIST", "secret/metadata", 1),
        ("GET", "secret/metadata", 0),
        ("DELETE", "secret/data/app", 0),
    ] {
        assert_eq!(proxy.count(method, path), expected, "{method} {path}");
    }
    assert_eq!(proxy.requests().len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_reply_leaves_the_client_with_an_error_while_the_write_landed() {
    let bao = OpenBao::start().await;
    let proxy = Proxy::start(bao.socket_addr()).await;
    let http = reqwest::Client::new();
    let via = proxy.url();
    proxy.drop_reply("POST", "secret/data/app", 2);

    call(&http, &via, "POST", "secret/data/app", cas_write(0, 1))
        .await
        .expect("the first write is answered");
    let lost = call(&http, &via, "POST", "secret/data/app", cas_write(1, 2)).await;
    assert!(lost.is_err(), "the reply was dropped: {lost:?}");
    assert_eq!(
        landed(&bao).await,
        (2, 2),
        "OpenBao applied the write whose reply was lost"
    );
    // The client cannot tell: sending the same check-and-set write again now fails.
    let (status, _) = call(&http, &via, "POST", "secret/data/app", cas_write(1, 2))
        .await
        .unwrap();
    assert_eq!(status, 400, "check-and-set against the old version");
    assert_eq!(proxy.count("POST", "secret/data/app"), 3);
    // The rule fired once.
    call(&http, &via, "POST", "secret/data/app", cas_write(2, 3))
        .await
        .expect("later writes are answered");
    assert_eq!(landed(&bao).await, (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reply_arrives_after_the_stall() {
    let bao = OpenBao::start().await;
    bao.write_secret("secret", "app", json!({ "n": 7 })).await;
    let proxy = Proxy::start(bao.socket_addr()).await;
    let http = reqwest::Client::new();
    let via = proxy.url();
    let stall = Duration::from_millis(1500);
    proxy.stall_reply("GET", "secret/data/app", 1, stall);

    let start = Instant::now();
    let (status, v) = call(&http, &via, "GET", "secret/data/app", None)
        .await
        .unwrap();
    assert!(
        start.elapsed() >= stall,
        "answered after {:?}",
        start.elapsed()
    );
    assert_eq!((status, v["data"]["data"]["n"].as_u64()), (200, Some(7)));

    let start = Instant::now();
    call(&http, &via, "GET", "secret/data/app", None)
        .await
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "only the first reply is held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_never_reaches_openbao() {
    let bao = OpenBao::start().await;
    let proxy = Proxy::start(bao.socket_addr()).await;
    let http = reqwest::Client::new();
    let via = proxy.url();
    // Rules count from when they are set, and each one fires on its own Nth match only.
    call(&http, &via, "GET", "secret/data/app", None)
        .await
        .unwrap();
    proxy.refuse("POST", "secret/data/app", 1);
    proxy.refuse("GET", "secret/data/app", 2);

    let refused = call(&http, &via, "POST", "secret/data/app", cas_write(0, 1)).await;
    assert!(refused.is_err(), "{refused:?}");
    let (status, _) = call(&http, &via, "GET", "secret/data/app", None)
        .await
        .unwrap();
    assert_eq!(status, 404, "the refused write never happened");
    let refused = call(&http, &via, "GET", "secret/data/app", None).await;
    assert!(
        refused.is_err(),
        "the second GET since the rule: {refused:?}"
    );

    call(&http, &via, "POST", "secret/data/app", cas_write(0, 1))
        .await
        .unwrap();
    assert_eq!(landed(&bao).await, (1, 1));
    assert_eq!(
        proxy.count("POST", "secret/data/app"),
        2,
        "refused ones count"
    );
    assert_eq!(proxy.count("GET", "secret/data/app"), 3);
}

/// What a set of rules grants on a path, with Vault's matching: an exact path, or a path ending in
/// `*` as a prefix. Sorted; empty when nothing matches.
fn granted(rules: &[PolicyRule], path: &str) -> Vec<String> {
    let rule = rules.iter().find(|r| r.path == path).or_else(|| {
        rules
            .iter()
            .filter(|r| r.path.ends_with('*') && path.starts_with(r.path.trim_end_matches('*')))
            .max_by_key(|r| r.path.len())
    });
    let mut caps = rule.map(|r| r.capabilities.clone()).unwrap_or_default();
    caps.sort();
    caps
}

fn caps(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|c| c.to_string()).collect();
    v.sort();
    v
}

#[test]
fn the_example_policy_grants_what_the_example_config_needs() {
    use secret_rotator::config::{ProviderConfig, Sink};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/example.toml")).unwrap();
    let config = secret_rotator::config::parse(
        &text,
        "example.toml",
        &secret_rotator::config::ProcessEnvironment,
    )
    .expect("config/example.toml is valid");
    let rules = example_policy();

    let read_write = ["read", "create", "update"];
    let (mount, prefix) = (&config.vault.state_mount, &config.vault.state_prefix);
    assert_eq!((mount.as_str(), prefix.as_str()), EXAMPLE_STATE);
    let mut needs: Vec<(String, &[&str])> = vec![
        (
            format!("{mount}/data/{prefix}/credentials/any"),
            &read_write,
        ),
        (
            format!("{mount}/data/{prefix}/history/any/attempt"),
            &read_write,
        ),
        (
            format!("{mount}/metadata/{prefix}/history/"),
            &["read", "update", "list", "delete"],
        ),
        ("sys/health".into(), &["read"]),
        ("sys/internal/ui/mounts/secret".into(), &["read"]),
        ("sys/capabilities-self".into(), &["update"]),
        ("auth/token/lookup-self".into(), &["read"]),
        ("auth/token/renew-self".into(), &["update"]),
    ];
    for cred in &config.credentials {
        let (m, p) = (&cred.secret.mount, &cred.secret.path);
        needs.push((format!("{m}/data/{p}"), &read_write));
        needs.push((format!("{m}/metadata/{p}"), &["read"]));
        match &*cred.provider() {
            ProviderConfig::BigCommerceStorefront(c) => {
                let s = &c.access_token.secret;
                needs.push((format!("{}/data/{}", s.mount, s.path), &["read"]));
            }
            ProviderConfig::VaultAppRoleSecretId(c) => {
                let role = format!("auth/{}/role/{}", c.mount, c.role_name);
                for action in [
                    "secret-id",
                    "secret-id/lookup",
                    "secret-id/destroy",
                    "secret-id-accessor/lookup",
                    "secret-id-accessor/destroy",
                ] {
                    needs.push((format!("{role}/{action}"), &["update"]));
                }
                needs.push((format!("{role}/role-id"), &["read"]));
                needs.push((format!("{role}/secret-id-ttl"), &["read"]));
                // To find a secret-id whose generate answer was lost.
                needs.push((format!("{role}/secret-id"), &["list"]));
            }
            _ => {}
        }
        for dependent in &cred.dependents {
            if let Sink::Webhook { signing_key, .. } = &dependent.sink {
                let s = &signing_key.secret;
                needs.push((format!("{}/data/{}", s.mount, s.path), &["read"]));
            }
        }
    }
    for (path, need) in needs {
        let has = granted(&rules, &path);
        let missing: Vec<&&str> = need
            .iter()
            .filter(|c| !has.iter().any(|h| h == *c))
            .collect();
        assert!(
            missing.is_empty(),
            "{path}: lacks {missing:?} (has {has:?})"
        );
    }
    // Nothing broader than needed: no `sudo`, no globs but the state prefix and the mounts preflight.
    for rule in &rules {
        assert!(!rule.capabilities.iter().any(|c| c == "sudo"), "{rule:?}");
        if rule.path.contains('*') || rule.path.contains('+') {
            assert!(
                rule.path.starts_with(&format!("{mount}/data/{prefix}/"))
                    || rule
                        .path
                        .starts_with(&format!("{mount}/metadata/{prefix}/"))
                    || rule.path == "sys/internal/ui/mounts/*",
                "a glob outside the state prefix: {rule:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_policy_moved_onto_a_tests_paths_grants_exactly_this_table() {
    let bao = OpenBao::start().await;
    let paths = common::stack::policy_paths().approle(("approle", "billing"), ("approle", "app"));
    let token = bao.token_with_exact_policy("rotator", &paths.hcl()).await;

    let rw = caps(&["create", "read", "update"]);
    let state_meta = caps(&["delete", "list", "read", "update"]);
    let deny = caps(&["deny"]);
    let table: Vec<(&str, Vec<String>)> = vec![
        // The stack's credential and the access token it reads (which the example rotates too).
        ("secret/data/bigcommerce/storefront-main", rw.clone()),
        (
            "secret/metadata/bigcommerce/storefront-main",
            caps(&["read"]),
        ),
        (
            "secret/destroy/bigcommerce/storefront-main",
            caps(&["update"]),
        ),
        ("secret/delete/bigcommerce/storefront-main", deny.clone()),
        ("secret/data/bigcommerce/abc123/store-api", rw.clone()),
        // The state prefix.
        (
            "secret/data/secret-rotator/credentials/storefront-main",
            rw.clone(),
        ),
        (
            "secret/data/secret-rotator/history/storefront-main/a1",
            rw.clone(),
        ),
        (
            "secret/metadata/secret-rotator/credentials/storefront-main",
            state_meta.clone(),
        ),
        ("secret/metadata/secret-rotator/history/", state_meta),
        (
            "secret/destroy/secret-rotator/credentials/storefront-main",
            deny.clone(),
        ),
        // The AppRole role, renamed from the example's `billing`.
        // Generate; list to find a secret-id whose generate answer was lost.
        ("auth/approle/role/app/secret-id", caps(&["list", "update"])),
        ("auth/approle/role/app/secret-id/lookup", caps(&["update"])),
        ("auth/approle/role/app/secret-id/destroy", caps(&["update"])),
        (
            "auth/approle/role/app/secret-id-accessor/lookup",
            caps(&["update"]),
        ),
        (
            "auth/approle/role/app/secret-id-accessor/destroy",
            caps(&["update"]),
        ),
        ("auth/approle/role/app/role-id", caps(&["read"])),
        ("auth/approle/role/app/secret-id-ttl", caps(&["read"])),
        ("auth/approle/role/app", deny.clone()),
        ("auth/approle/role/billing/secret-id", deny.clone()),
        // The daemon-wide paths.
        ("sys/health", caps(&["read"])),
        ("sys/internal/ui/mounts/secret", caps(&["read"])),
        ("sys/capabilities-self", caps(&["update"])),
        ("auth/token/lookup-self", caps(&["read"])),
        ("auth/token/renew-self", caps(&["update"])),
        // Verification looks a secret-id up without logging in: no token to revoke.
        ("auth/token/revoke", deny.clone()),
        // The webhook dependent's signing key: read only.
        ("secret/data/webhooks/shop-frontend", caps(&["read"])),
        ("secret/metadata/webhooks/shop-frontend", deny.clone()),
        // The example's other credentials are left out, and nothing else is granted.
        ("secret/data/bigcommerce/storefront-private", deny.clone()),
        ("secret/data/other", deny.clone()),
        ("secret/data/secret-rotator", deny.clone()),
        ("sys/policies/acl/rotator", deny.clone()),
        ("auth/token/create", deny.clone()),
        ("sys/mounts/secret", deny),
    ];
    for (path, expected) in table {
        let (status, v) = bao
            .call_as(
                &token,
                "POST",
                "sys/capabilities-self",
                Some(json!({ "paths": [path] })),
            )
            .await;
        assert_eq!(status, 200, "{path}: {v}");
        let mut got: Vec<String> = serde_json::from_value(v[path].clone()).unwrap();
        got.sort();
        assert_eq!(got, expected, "{path}");
    }
    // The token holds no other policy, not even `default`.
    let (_, me) = bao
        .call_as(&token, "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(me["data"]["policies"], json!(["rotator"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approle_provider_rotates_with_the_example_policy() {
    let bao = OpenBao::start().await;
    let (_, _, old_accessor) = bao.adopted_approle_secret_id().await;
    let policy = common::PolicyPaths::new()
        .state("secret", "secret-rotator")
        .secret(
            ("secret", "approle/billing/secret-id"),
            ("secret", "apps/app"),
        )
        .approle(("approle", "billing"), ("approle", "app"));
    let token = bao.token_with_exact_policy("rotator", &policy.hcl()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[vault]\naddress = \"{}\"\n[vault.auth]\nmethod = \"token\"\n[defaults]\nmax_age = \"1h\"\ngrace = \"1s\"\n[[credentials]]\nname = \"app\"\npath = \"apps/app\"\nexpiry_lead = \"30m\"\n[credentials.vault_approle_secret_id]\nrole_name = \"app\"\n",
            bao.addr
        ),
    )
    .unwrap();
    let tokens_before = bao.root("LIST", "auth/token/accessors", None).await["data"]["keys"]
        .as_array()
        .unwrap()
        .len();
    let (code, stdout, stderr) = common::run_cli(
        &config,
        &["rotate", "app", "--wait"],
        &[("VAULT_TOKEN", &token)],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v = bao.root("GET", "secret/data/apps/app", None).await;
    assert_eq!(v["data"]["metadata"]["version"], 2);
    let (status, _) = bao
        .call_as(
            ROOT_TOKEN,
            "POST",
            "auth/approle/role/app/secret-id-accessor/lookup",
            Some(json!({ "secret_id_accessor": old_accessor })),
        )
        .await;
    assert_ne!(status, 200, "the old secret-id is destroyed");
    let tokens_after = bao.root("LIST", "auth/token/accessors", None).await["data"]["keys"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        tokens_after, tokens_before,
        "verification logs in nowhere: no token is left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_runs_the_daemon_with_the_example_policy_and_through_the_proxy_on_request() {
    use common::stack::{Stack, StackOptions, CRED, SECRET_PATH};
    let s = Stack::with(StackOptions {
        proxy: true,
        ..Default::default()
    })
    .await;
    assert_ne!(s.token, ROOT_TOKEN);
    let out = s.cli(&["rotate", CRED, "--wait"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(s.current().await.0, 2);

    let proxy = s.proxy.as_ref().unwrap();
    let secret = format!("secret/data/{SECRET_PATH}");
    assert_eq!(proxy.count("POST", &secret), 1, "one commit of the secret");
    assert!(proxy.count("POST", "secret/data/secret-rotator/") >= 2);
    assert!(proxy.count("GET", &secret) >= 1);
}
