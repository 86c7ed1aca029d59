//! A mint the store carries out whose answer is lost on the way back: a gateway's 502, its 504
//! after 3 s, the connection closed after the mint. Against a real OpenBao and the emulator
//! (`gateway_after_commit`, `drop_after_commit`), through `secret-rotator rotate --wait`, for the
//! native storefront provider and the `http` provider rotating the same tokens from config. After
//! each case every live token at the store is the current one or a possible orphan the daemon
//! reported (`history --json`), expiring no later than the bound it reported.

mod common;

use bigcommerce_emulator::{FaultMode, FaultSpec, TokenState};
use chrono::{DateTime, Utc};
use common::stack::{sha256_hex, Stack, ACCESS_TOKEN_PATH, CRED, SECRET_PATH, STORE};

/// The three lost answers, each for the next token creation only.
fn lost_answers() -> [(&'static str, FaultMode); 3] {
    [
        (
            "502 from a gateway",
            FaultMode::GatewayAfterCommit {
                status: 502,
                delay_ms: 0,
            },
        ),
        (
            "504 from a gateway after 3 s",
            FaultMode::GatewayAfterCommit {
                status: 504,
                delay_ms: 3000,
            },
        ),
        (
            "connection closed after the mint",
            FaultMode::DropAfterCommit,
        ),
    ]
}

/// The possible orphans the daemon reported, over every attempt in the history: their bounds.
async fn reported_orphans(s: &Stack) -> Vec<DateTime<Utc>> {
    let h = s.history().await;
    h["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["orphans"].as_array().cloned().unwrap_or_default())
        .map(|o| {
            o["expires_at"]
                .as_str()
                .expect("an orphan reported with the bound on its life")
                .parse()
                .unwrap()
        })
        .collect()
}

/// Live tokens at the store that are neither current in Vault nor reported as a possible orphan
/// expiring by the reported bound.
async fn unreported_live_tokens(s: &Stack) -> Vec<String> {
    let (_, current) = s.current().await;
    let mut bounds = reported_orphans(s).await;
    bounds.sort();
    let mut unreported = Vec::new();
    let mut others: Vec<(String, i64)> = s
        .tokens_in_state(TokenState::Live)
        .await
        .into_iter()
        .filter(|t| t.0 != sha256_hex(&current))
        .collect();
    // Match each live token with the earliest reported bound it respects.
    others.sort_by_key(|t| t.1);
    for (hash, expires_at) in others {
        match bounds.iter().position(|b| expires_at <= b.timestamp()) {
            Some(i) => {
                bounds.remove(i);
            }
            None => unreported.push(format!("{hash} (expires at {expires_at})")),
        }
    }
    unreported
}

/// Every lost answer in turn on one stack: each rotation completes, reports exactly one possible
/// orphan, and leaves no live token unaccounted for.
async fn every_lost_answer_is_reported(s: &Stack) {
    for (n, (case, fault)) in lost_answers().into_iter().enumerate() {
        s.admin
            .set_fault(FaultSpec::new("storefront_token_create", fault).count(1))
            .await
            .unwrap();
        let out = s.cli(&["rotate", CRED, "--wait"], &[]).await;
        assert_eq!(out.code, Some(0), "{case}: {out:?}");
        assert!(
            out.stdout.contains("possible orphan"),
            "{case}: {}",
            out.stdout
        );
        assert!(!out.stdout.contains("eyJ") && !out.stderr.contains("eyJ"));

        let (v, current) = s.current().await;
        assert_eq!(v, n as u64 + 2, "{case}: one rotation");
        assert_eq!(s.graphql_status(&current).await, 200, "{case}");
        assert_eq!(
            reported_orphans(s).await.len(),
            n + 1,
            "{case}: one possible orphan per lost answer"
        );
        let counters = s.admin.counters().await.unwrap();
        // By hand, then per case the lost one and the new one.
        assert_eq!(counters.tokens_minted, 1 + 2 * (n as u64 + 1), "{case}");
        assert_eq!(
            unreported_live_tokens(s).await,
            Vec::<String>::new(),
            "{case}: a live token the daemon does not report"
        );
    }
    // The lost tokens are live at the store: the check above is not vacuous.
    assert_eq!(s.tokens_in_state(TokenState::Live).await.len(), 1 + 3);
    // `status` names them too, each with its bound, and the check stays green: nothing is down.
    let out = s.cli(&["status", "--json"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let orphans = rows[0]["possible_orphans"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(orphans.len(), 3, "{rows}");
    assert!(
        orphans.iter().all(|o| o["expires_at"].is_string()),
        "{rows}"
    );
    let out = s.cli(&["status"], &[]).await;
    assert!(
        out.stdout
            .contains(&format!("{CRED}: 3 possible orphan credential(s)")),
        "{}",
        out.stdout
    );
    assert_eq!(s.cli(&["status", "--check"], &[]).await.code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storefront_mint_whose_answer_is_lost_is_a_reported_orphan_for_each_lost_answer() {
    let s = Stack::start().await;
    every_lost_answer_is_reported(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_provider_mint_whose_answer_is_lost_is_a_reported_orphan_for_each_lost_answer() {
    let s = Stack::start().await;
    std::fs::write(&s.config, http_storefront_config(&s)).unwrap();
    every_lost_answer_is_reported(&s).await;
}

/// The stack's storefront credential, rotated by the `http` provider (its default `retry`
/// list holds 502 and 504: a mint still takes them for unknown outcomes).
fn http_storefront_config(s: &Stack) -> String {
    let base = s.emu.base_url();
    let bao = &s.bao.addr;
    let head = common::token_config_head(bao, "1h", "1s");
    format!(
        r#"
{head}
[[credentials]]
name = "{CRED}"
path = "{SECRET_PATH}"

[credentials.http]
parents = {{ access_token = {{ path = "{ACCESS_TOKEN_PATH}", key = "access_token" }} }}
credentials_expire = true

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

/// An AppRole secret-id whose generate answer is lost (the proxy closes the connection after
/// OpenBao answered): the provider finds it by the attempt id in its metadata among the role's
/// accessors and destroys it, so nothing is left live and the outcome is known; without `list`
/// on the role's secret-ids it stays an unknown outcome (the driver reports a possible orphan,
/// bounded by the secret-id's TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approle_secret_id_whose_answer_is_lost_is_found_by_its_accessor_and_destroyed() {
    use common::proxy::Proxy;
    use common::{vault_config, OpenBao, ROOT_TOKEN};
    use secrecy::SecretString;
    use secret_rotator::config::AppRoleSecretIdConfig;
    use secret_rotator::providers::vault_approle::AppRoleProvider;
    use secret_rotator::providers::{MintRequest, Provider, ProviderError};
    use secret_rotator::vault::{Login, Vault};
    use std::sync::Arc;
    use std::time::Duration;

    let bao = OpenBao::start().await;
    bao.approle_role("app", serde_json::json!({ "token_ttl": "60s" }))
        .await;
    let without_list = bao
        .token_with_exact_policy(
            "no-list",
            r#"
path "auth/approle/role/app/role-id" { capabilities = ["read"] }
path "auth/approle/role/app/secret-id" { capabilities = ["update"] }
path "auth/approle/role/app/secret-id-accessor/lookup" { capabilities = ["update"] }
path "auth/approle/role/app/secret-id-accessor/destroy" { capabilities = ["update"] }
"#,
        )
        .await;
    // (token, expected error kind, secret-ids it leaves live)
    let cases = [
        (ROOT_TOKEN.to_string(), "transient", 0),
        (without_list, "unknown_outcome", 1),
    ];
    for (token, kind, left) in cases {
        let proxy = Proxy::start(bao.socket_addr()).await;
        let vault = Vault::connect(
            &vault_config(&proxy.url()),
            Login::Token(SecretString::from(token)),
        )
        .await
        .unwrap();
        let cfg = AppRoleSecretIdConfig {
            mount: "approle".into(),
            role_name: "app".into(),
            secret_id_ttl: Some(Duration::from_secs(3600)),
            secret_id_num_uses: None,
        };
        let p = AppRoleProvider::new(cfg, Arc::new(vault));
        let before = approle_accessors(&bao).await;
        proxy.drop_reply("POST", "auth/approle/role/app/secret-id", 1);
        let now = Utc::now();
        let req = MintRequest {
            attempt_id: format!("lost-{kind}"),
            now,
            expires_at: now + chrono::Duration::hours(1),
        };
        let err = p.mint(&req).await.expect_err("the answer was lost");
        assert_eq!(err.kind(), kind, "{err}");
        if let ProviderError::Transient { reason, .. } = &err {
            assert!(
                reason.contains("found by its accessor and destroyed"),
                "{reason}"
            );
        }
        assert_eq!(approle_accessors(&bao).await - before, left, "{kind}");
    }
}

/// How many secret-ids the role `app` has, as root sees them.
async fn approle_accessors(bao: &common::OpenBao) -> usize {
    let (status, v) = bao
        .call_as(
            common::ROOT_TOKEN,
            "LIST",
            "auth/approle/role/app/secret-id",
            None,
        )
        .await;
    match status {
        404 => 0,
        200 => v["data"]["keys"].as_array().unwrap().len(),
        other => panic!("list the role's secret-ids: {other}"),
    }
}
