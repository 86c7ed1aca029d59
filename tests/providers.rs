//! Providers against real servers: the AppRole provider against an OpenBao dev server, the
//! BigCommerce storefront provider against the in-repo emulator (secrets kept in OpenBao).

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{vault_config, OpenBao, ROOT_TOKEN};
use secrecy::SecretString;
use secret_rotator::config::AppRoleSecretIdConfig;
use secret_rotator::providers::vault_approle::AppRoleProvider;
use secret_rotator::providers::{MintRequest, Provider, ProviderError};
use secret_rotator::secret::SecretFields;
use secret_rotator::vault::{Login, Vault};
use serde_json::json;

async fn vault_as(addr: &str, token: &str) -> Arc<Vault> {
    Arc::new(
        Vault::connect(
            &vault_config(addr),
            Login::Token(SecretString::from(token.to_string())),
        )
        .await
        .expect("connect"),
    )
}

fn mint_request(attempt: &str) -> MintRequest {
    let now = Utc::now();
    MintRequest {
        attempt_id: attempt.to_string(),
        now,
        expires_at: now + chrono::Duration::hours(1),
    }
}

/// Every value of `secret` must be absent from `text` (an error message or a log line).
fn assert_no_secret_in(text: &str, secret: &SecretFields) {
    for key in secret.keys() {
        let value = secret.expose(key).unwrap();
        // Short values (a kind, a timestamp) are not secrets and may legitimately appear.
        if value.len() >= 16 && key != "expires_at" && key != "secret_id_accessor" {
            assert!(!text.contains(value), "`{key}` leaked into: {text}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AppRole secret-ids
// ---------------------------------------------------------------------------------------------

fn approle_cfg(role: &str) -> AppRoleSecretIdConfig {
    AppRoleSecretIdConfig {
        mount: "approle".into(),
        role_name: role.into(),
        secret_id_ttl: Some(Duration::from_secs(3600)),
        secret_id_num_uses: None,
    }
}

async fn approle_setup(role: &str) -> (OpenBao, Arc<Vault>) {
    let bao = OpenBao::start().await;
    bao.approle_role(role, json!({ "token_ttl": "60s" })).await;
    let vault = vault_as(&bao.addr, ROOT_TOKEN).await;
    (bao, vault)
}

#[tokio::test]
async fn approle_mint_then_verify_then_revoke() {
    let (bao, vault) = approle_setup("app").await;
    let p = AppRoleProvider::new(approle_cfg("app"), vault);
    let info = p.info();
    assert!(info.credentials_expire);
    assert!(!info.async_revocation);

    let req = mint_request("attempt-42");
    let minted = p.mint(&req).await.expect("mint");
    let keys: Vec<&str> = minted.secret.keys().collect();
    assert_eq!(keys, ["role_id", "secret_id", "secret_id_accessor"]);
    assert_eq!(
        minted.secret.expose("role_id"),
        Some(bao.role_id("app").await.as_str())
    );
    let expires_at = minted.expires_at.expect("ttl set: the secret-id expires");
    assert_eq!((expires_at - req.now).num_seconds(), 3600);

    // The attempt id is attached to the secret-id, so an orphan can be traced.
    let accessor = minted.secret.expose("secret_id_accessor").unwrap();
    let lookup = bao
        .root(
            "POST",
            "auth/approle/role/app/secret-id-accessor/lookup",
            Some(json!({ "secret_id_accessor": accessor })),
        )
        .await;
    assert_eq!(lookup["data"]["metadata"]["rotation_attempt"], "attempt-42");
    assert_eq!(lookup["data"]["secret_id_ttl"], 3600);

    p.verify(&minted.secret)
        .await
        .expect("a fresh secret-id logs in");
    assert!(!p.verify_revoked(&minted.secret).await.unwrap());

    p.revoke(&minted.secret).await.expect("revoke");
    assert!(p.verify_revoked(&minted.secret).await.unwrap());
    match p.verify(&minted.secret).await {
        Err(ProviderError::Rejected { reason }) => assert_no_secret_in(&reason, &minted.secret),
        other => panic!("expected Rejected after revoke, got {other:?}"),
    }
    // Revoking again is fine: already gone is success.
    p.revoke(&minted.secret).await.expect("second revoke");
}

#[tokio::test]
async fn approle_verification_does_not_spend_the_dependents_uses() {
    let (_bao, vault) = approle_setup("limited").await;
    let cfg = AppRoleSecretIdConfig {
        secret_id_ttl: None,
        secret_id_num_uses: Some(1),
        ..approle_cfg("limited")
    };
    let p = AppRoleProvider::new(cfg, vault.clone());
    assert!(!p.info().credentials_expire);
    let minted = p.mint(&mint_request("a1")).await.unwrap();
    assert!(minted.expires_at.is_none());

    // The driver verifies once; the dependent still has its one login.
    p.verify(&minted.secret).await.expect("verification login");
    let secret_id = SecretString::from(minted.secret.expose("secret_id").unwrap().to_string());
    let role_id = minted.secret.expose("role_id").unwrap();
    assert!(vault
        .approle_try_login("approle", role_id, &secret_id)
        .await
        .unwrap());
    assert!(!vault
        .approle_try_login("approle", role_id, &secret_id)
        .await
        .unwrap());
}

#[tokio::test]
async fn approle_rejects_foreign_and_garbage_secret_ids() {
    let (bao, vault) = approle_setup("app").await;
    bao.approle_role("other", json!({})).await;
    let p = AppRoleProvider::new(approle_cfg("app"), vault);
    let role_id = bao.role_id("app").await;
    let (foreign_secret_id, foreign_accessor) = bao.new_secret_id("other").await;

    let cases = [
        (
            "garbage secret-id",
            SecretFields::new()
                .with("role_id", role_id.clone())
                .with("secret_id", "00000000-0000-0000-0000-000000000000"),
        ),
        (
            "another role's secret-id",
            SecretFields::new()
                .with("role_id", role_id.clone())
                .with("secret_id", foreign_secret_id.clone())
                .with("secret_id_accessor", foreign_accessor.clone()),
        ),
        (
            "no role_id stored: the role's own is used",
            SecretFields::new().with("secret_id", "11111111-0000-0000-0000-000000000000"),
        ),
    ];
    for (name, secret) in cases {
        match p.verify(&secret).await {
            Err(ProviderError::Rejected { reason }) => assert_no_secret_in(&reason, &secret),
            other => panic!("{name}: expected Rejected, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn approle_without_permission_is_a_config_error() {
    let (bao, _root) = approle_setup("app").await;
    let token = bao
        .token_with_policy(
            "kv-only",
            r#"path "secret/data/*" { capabilities = ["read"] }"#,
        )
        .await;
    let p = AppRoleProvider::new(approle_cfg("app"), vault_as(&bao.addr, &token).await);
    match p.mint(&mint_request("a1")).await {
        Err(ProviderError::Config { reason }) => {
            assert!(reason.contains("permission denied"), "{reason}")
        }
        other => panic!("expected Config, got {other:?}"),
    }

    let missing = AppRoleProvider::new(
        approle_cfg("no-such-role"),
        vault_as(&bao.addr, ROOT_TOKEN).await,
    );
    assert!(matches!(
        missing.mint(&mint_request("a2")).await,
        Err(ProviderError::Config { .. })
    ));
}

#[tokio::test]
async fn approle_transport_failures_are_transient_or_unknown() {
    // Nothing listens: the request never left, so trying again is safe.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = AppRoleProvider::new(
        approle_cfg("app"),
        vault_as(&format!("http://127.0.0.1:{closed}"), ROOT_TOKEN).await,
    );
    assert!(matches!(
        p.mint(&mint_request("a1")).await,
        Err(ProviderError::Transient { .. })
    ));

    // A server that answers the role-id read but never answers the generate: the secret-id
    // may exist, so the outcome is unknown.
    let addr = half_silent_vault().await;
    let mut cfg = vault_config(&format!("http://{addr}"));
    cfg.request_timeout = Duration::from_millis(500);
    let vault = Vault::connect(
        &cfg,
        Login::Token(SecretString::from(ROOT_TOKEN.to_string())),
    )
    .await
    .unwrap();
    let p = AppRoleProvider::new(approle_cfg("app"), Arc::new(vault));
    match p.mint(&mint_request("a2")).await {
        Err(ProviderError::UnknownOutcome { reason }) => {
            assert!(reason.contains("approle/app"), "{reason}")
        }
        other => panic!("expected UnknownOutcome, got {other:?}"),
    }
}

/// A fake Vault on loopback: answers `GET .../role-id`, holds every other request open forever.
async fn half_silent_vault() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                if head.starts_with("GET ") && head.contains("/role-id ") {
                    let body = r#"{"data":{"role_id":"fake-role-id"}}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                } else {
                    // Keep the connection open and silent.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(sock);
                }
            });
        }
    });
    addr
}
