//! Providers against real servers: the AppRole provider against an OpenBao dev server, the
//! BigCommerce storefront provider against the in-repo emulator (secrets kept in OpenBao).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bigcommerce_emulator::{
    demo, Access, AdminClient, EmulatorConfig, FaultMode, FaultSpec, Resource, RunningEmulator,
    Scopes, Seed,
};
use chrono::Utc;
use common::{vault_config, OpenBao, ROOT_TOKEN};
use secrecy::SecretString;
use secret_rotator::config::{
    AppRoleSecretIdConfig, KvPath, StorefrontConfig, StorefrontTokenKind, VaultField,
};
use secret_rotator::providers::bigcommerce_storefront::StorefrontProvider;
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
async fn approle_verification_does_not_spend_a_limited_use_secret_id() {
    let bao = OpenBao::start().await;
    bao.approle_role("limited", json!({ "secret_id_num_uses": 1 }))
        .await;
    let vault = vault_as(&bao.addr, ROOT_TOKEN).await;
    let cfg = AppRoleSecretIdConfig {
        secret_id_ttl: None,
        ..approle_cfg("limited")
    };
    let p = AppRoleProvider::new(cfg, vault.clone());
    let minted = p.mint(&mint_request("a1")).await.unwrap();

    // The driver verifies (and may check more than once); the dependent keeps its one login.
    p.verify(&minted.secret).await.expect("verification");
    p.verify(&minted.secret).await.expect("verification again");
    assert!(!p.verify_revoked(&minted.secret).await.unwrap());
    let secret_id = SecretString::from(minted.secret.expose("secret_id").unwrap().to_string());
    let role_id = minted.secret.expose("role_id").unwrap();
    assert!(
        vault
            .approle_try_login("approle", role_id, &secret_id)
            .await
            .unwrap(),
        "the dependent's one login"
    );
    assert!(!vault
        .approle_try_login("approle", role_id, &secret_id)
        .await
        .unwrap());

    // Used up: Vault forgets it.
    assert!(matches!(
        p.verify(&minted.secret).await,
        Err(ProviderError::Rejected { .. })
    ));
    assert!(p.verify_revoked(&minted.secret).await.unwrap());
}

#[tokio::test]
async fn approle_secret_ids_always_expire() {
    let bao = OpenBao::start().await;
    let vault = vault_as(&bao.addr, ROOT_TOKEN).await;
    let hour = Duration::from_secs(3600);
    // (role settings, configured secret_id_ttl, expected TTL in seconds)
    let cases = [
        ("forever", json!({}), None, 3600),
        ("forever-configured", json!({}), Some(hour * 2), 7200),
        ("role-ttl", json!({ "secret_id_ttl": "3h" }), None, 10_800),
    ];
    for (role, settings, configured, ttl) in cases {
        bao.approle_role(role, settings).await;
        let cfg = AppRoleSecretIdConfig {
            secret_id_ttl: configured,
            ..approle_cfg(role)
        };
        let p = AppRoleProvider::new(cfg, vault.clone());
        assert!(p.info().credentials_expire, "{role}");
        let req = mint_request("a1"); // plans a lifetime of one hour
        let minted = p.mint(&req).await.expect("mint");
        let expires_at = minted.expires_at.expect("every secret-id expires");
        assert_eq!((expires_at - req.now).num_seconds(), ttl, "{role}");

        let lookup = bao
            .root(
                "POST",
                &format!("auth/approle/role/{role}/secret-id-accessor/lookup"),
                Some(json!({ "secret_id_accessor": minted.secret.expose("secret_id_accessor") })),
            )
            .await;
        assert_eq!(lookup["data"]["secret_id_ttl"], ttl, "{role}");
        let expiration: chrono::DateTime<Utc> = lookup["data"]["expiration_time"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let off = (expiration - expires_at).num_seconds();
        assert!(
            (0..5).contains(&off),
            "{role}: Vault's expiry {expiration} vs {expires_at}"
        );
    }
}

#[tokio::test]
async fn approle_revokes_a_secret_id_adopted_by_hand() {
    let (bao, vault) = approle_setup("app").await;
    let p = AppRoleProvider::new(approle_cfg("app"), vault);
    let (secret_id, accessor) = bao.new_secret_id("app").await;
    // An operator stored the secret-id alone: no accessor, no role_id.
    let adopted = SecretFields::new().with("secret_id", secret_id);
    p.verify(&adopted).await.expect("a live secret-id");

    p.revoke(&adopted).await.expect("revoke");
    let (status, _) = bao
        .call_as(
            ROOT_TOKEN,
            "POST",
            "auth/approle/role/app/secret-id-accessor/lookup",
            Some(json!({ "secret_id_accessor": accessor })),
        )
        .await;
    assert_eq!(status, 404, "destroyed through the accessor it looked up");
    assert!(p.verify_revoked(&adopted).await.unwrap());
    p.revoke(&adopted).await.expect("already gone is success");
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

// ---------------------------------------------------------------------------------------------
// BigCommerce storefront tokens, against the emulator
// ---------------------------------------------------------------------------------------------

const STORE: &str = demo::STORE_HASH;
const ACCESS_TOKEN_PATH: &str = "bigcommerce/abc123/store-api";

/// An OpenBao holding the store's access token, and an emulator with the demo seed.
struct Storefront {
    bao: OpenBao,
    vault: Arc<Vault>,
    emulator: RunningEmulator,
    admin: AdminClient,
    /// The store-level access token the provider reads from Vault.
    access_token: String,
}

impl Storefront {
    async fn start() -> Storefront {
        let bao = OpenBao::start().await;
        let emulator = bigcommerce_emulator::start(EmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            seed: Seed::demo(),
            state_file: None,
            admin_token: None,
        })
        .await
        .expect("start the emulator");
        let admin = AdminClient::new(&emulator.base_url(), emulator.admin_token());
        // The operator's store-level token, as the control panel shows it.
        let access_token = admin.api_accounts(STORE).await.unwrap()[0]
            .access_token
            .clone();
        bao.write_secret(
            "secret",
            ACCESS_TOKEN_PATH,
            json!({ "access_token": access_token }),
        )
        .await;
        let vault = vault_as(&bao.addr, ROOT_TOKEN).await;
        Storefront {
            bao,
            vault,
            emulator,
            admin,
            access_token,
        }
    }

    fn cfg(&self, kind: StorefrontTokenKind) -> StorefrontConfig {
        let base = self.emulator.base_url();
        StorefrontConfig {
            api_url: base.clone(),
            storefront_url: format!("{base}/store-{{store_hash}}"),
            store_hash: STORE.into(),
            access_token: VaultField {
                secret: KvPath {
                    mount: "secret".into(),
                    path: ACCESS_TOKEN_PATH.into(),
                },
                key: "access_token".into(),
            },
            kind,
            channel_ids: vec![1],
            allowed_cors_origins: match kind {
                StorefrontTokenKind::Storefront => vec!["https://shop.example.com".into()],
                _ => vec![],
            },
            scopes: match kind {
                StorefrontTokenKind::Private => vec!["Customer".into()],
                _ => vec![],
            },
        }
    }

    /// A provider that reads the access token for every call (the reuse has a test of its own).
    fn provider(&self, kind: StorefrontTokenKind) -> StorefrontProvider {
        StorefrontProvider::new(self.cfg(kind), self.vault.clone(), http())
            .with_access_token_reuse(Duration::ZERO)
    }

    /// The store-level account rotated by hand: a new account's token in Vault, the demo
    /// account deleted.
    async fn replace_store_account(&self) {
        let fresh = self
            .admin
            .create_api_account(STORE, "replacement", Scopes::all(Access::Modify))
            .await
            .unwrap();
        self.bao
            .write_secret(
                "secret",
                ACCESS_TOKEN_PATH,
                json!({ "access_token": fresh.access_token }),
            )
            .await;
        self.admin
            .delete_api_account(STORE, demo::CLIENT_ID)
            .await
            .unwrap();
    }

    async fn fault(&self, endpoint: &str, mode: FaultMode, count: Option<u64>) {
        let mut spec = FaultSpec::new(endpoint, mode);
        spec.count = count;
        self.admin.set_fault(spec).await.unwrap();
    }

    async fn status_count(&self, status: &str) -> u64 {
        let c = self.admin.counters().await.unwrap();
        c.requests_by_status.get(status).copied().unwrap_or(0)
    }

    /// No error text may carry the JWT or the store's access token.
    fn assert_clean(&self, err: &ProviderError, token: Option<&str>) {
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains(&self.access_token),
            "access token in: {text}"
        );
        if let Some(t) = token {
            assert!(!text.contains(t), "JWT in: {text}");
        }
    }
}

fn http() -> secret_rotator::egress::Client {
    secret_rotator::egress::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn poll_until_revoked(p: &StorefrontProvider, secret: &SecretFields) -> Duration {
    let start = std::time::Instant::now();
    loop {
        if p.verify_revoked(secret).await.expect("verify_revoked") {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still accepted 15 s after revoke"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn storefront_mint_verify_revoke_for_every_kind() {
    let sf = Storefront::start().await;
    let kinds = [
        (StorefrontTokenKind::Storefront, "storefront"),
        (StorefrontTokenKind::Private, "private"),
        (
            StorefrontTokenKind::CustomerImpersonation,
            "customer_impersonation",
        ),
    ];
    for (kind, name) in kinds {
        let p = sf.provider(kind);
        let info = p.info();
        assert!(info.credentials_expire && info.async_revocation);

        let req = mint_request(&format!("attempt-{name}"));
        let minted = p.mint(&req).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let keys: Vec<&str> = minted.secret.keys().collect();
        assert_eq!(keys, ["expires_at", "kind", "token"], "{name}");
        assert_eq!(minted.secret.expose("kind"), Some(name));
        let expires_at = minted.expires_at.unwrap();
        assert_eq!(expires_at.timestamp(), req.expires_at.timestamp());
        assert_eq!(
            minted.secret.expose("expires_at").unwrap(),
            expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let token = minted.secret.expose("token").unwrap().to_string();
        assert!(token.starts_with("eyJ"), "{name}: a JWT");

        // The emulator issued exactly this token, with the asked-for expiry.
        let live = sf.admin.live_storefront_tokens(STORE).await.unwrap();
        let issued = live.last().expect("one live token");
        assert_eq!(issued.expires_at, req.expires_at.timestamp(), "{name}");

        p.verify(&minted.secret)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        p.revoke(&minted.secret).await.expect("revoke");
        poll_until_revoked(&p, &minted.secret).await;
        match p.verify(&minted.secret).await {
            Err(e @ ProviderError::Rejected { .. }) => {
                assert!(e.to_string().contains("Unknown JWT token"), "{e}");
                sf.assert_clean(&e, Some(&token));
            }
            other => panic!("{name}: expected Rejected after revocation, got {other:?}"),
        }
        // Revoking again (a retry after a crash) is fine.
        p.revoke(&minted.secret).await.expect("second revoke");
    }
    assert!(sf
        .admin
        .live_storefront_tokens(STORE)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn storefront_revocation_is_asynchronous() {
    let sf = Storefront::start().await;
    sf.admin
        .set_revocation_delay(STORE, Duration::from_millis(1500))
        .await
        .unwrap();
    let p = sf.provider(StorefrontTokenKind::Storefront);
    let minted = p.mint(&mint_request("a1")).await.unwrap();
    p.revoke(&minted.secret).await.unwrap();
    // Accepted right after the revoke; rejected once the store's delay has passed.
    assert!(!p.verify_revoked(&minted.secret).await.unwrap());
    let waited = poll_until_revoked(&p, &minted.secret).await;
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
    p.revoke(&minted.secret)
        .await
        .expect("revoke after it took effect");
}

#[tokio::test]
async fn storefront_rejects_garbage_foreign_and_expired_tokens() {
    let sf = Storefront::start().await;
    let p = sf.provider(StorefrontTokenKind::Storefront);

    // A token issued by another store's emulator (another signing key / unknown id).
    let other = Storefront::start().await;
    let foreign = other
        .provider(StorefrontTokenKind::Storefront)
        .mint(&mint_request("foreign"))
        .await
        .unwrap();

    // A token of this store, past its expiry.
    let expiring = p.mint(&mint_request("expiring")).await.unwrap();
    sf.admin
        .advance_clock(Duration::from_secs(7200))
        .await
        .unwrap();

    // (name, secret, whether the store accepts its revocation)
    let cases = [
        (
            "garbage",
            SecretFields::new().with("token", "not-a-jwt"),
            false,
        ),
        ("foreign", foreign.secret.clone(), false),
        ("expired", expiring.secret.clone(), true),
    ];
    for (name, secret, revocable) in cases {
        let token = secret.expose("token").unwrap().to_string();
        match p.verify(&secret).await {
            Err(e @ ProviderError::Rejected { .. }) => sf.assert_clean(&e, Some(&token)),
            other => panic!("{name}: expected Rejected, got {other:?}"),
        }
        assert!(p.verify_revoked(&secret).await.unwrap(), "{name}");
        // A token the store does not know is not one it revoked: an error, never "revoked".
        match (p.revoke(&secret).await, revocable) {
            (Ok(()), true) => {}
            (Err(e @ ProviderError::Rejected { .. }), false) => {
                assert!(e.to_string().contains("status 422"), "{name}: {e}");
                sf.assert_clean(&e, Some(&token));
            }
            (other, _) => panic!("{name}: revoke gave {other:?}"),
        }
    }
}

#[tokio::test]
async fn storefront_a_revoke_the_store_refuses_is_an_error() {
    let sf = Storefront::start().await;
    let p = sf.provider(StorefrontTokenKind::Storefront);
    let revoked_before = sf.admin.counters().await.unwrap().tokens_revoked;
    let refused = SecretFields::new()
        .with("token", "42")
        .with("expires_at", "2999-01-01T00:00:00Z");
    match p.revoke(&refused).await {
        Err(e @ ProviderError::Rejected { .. }) => {
            let text = format!("{e} {e:?}");
            assert!(text.contains("status 422"), "{text}");
            assert!(text.contains("may still be live"), "{text}");
            assert!(!text.contains(&sf.emulator.base_url()), "no URL in: {text}");
            sf.assert_clean(&e, None);
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(
        sf.admin.counters().await.unwrap().tokens_revoked,
        revoked_before
    );

    // Past its recorded expiry a token is dead whatever the store says about it.
    let expired = SecretFields::new()
        .with("token", "42")
        .with("expires_at", "2001-01-01T00:00:00Z");
    p.revoke(&expired).await.expect("nothing left to revoke");
}

#[tokio::test]
async fn storefront_parent_token_without_the_scope_is_rejected() {
    let sf = Storefront::start().await;
    let minted = sf
        .provider(StorefrontTokenKind::Storefront)
        .mint(&mint_request("a0"))
        .await
        .unwrap();

    // Swap in an account that can do everything but Storefront API Tokens.
    let weak = sf
        .admin
        .create_api_account(
            STORE,
            "no-storefront-scope",
            // Neither token scope: the impersonation scope alone may revoke.
            Scopes::all(Access::Modify)
                .with(Resource::StorefrontApiTokens, Access::None)
                .with(Resource::StorefrontApiCustomerImpersonation, Access::None),
        )
        .await
        .unwrap();
    sf.bao
        .write_secret(
            "secret",
            ACCESS_TOKEN_PATH,
            json!({ "access_token": weak.access_token }),
        )
        .await;
    let p = sf.provider(StorefrontTokenKind::Storefront);
    for (name, result) in [
        ("mint", p.mint(&mint_request("a1")).await.map(|_| ())),
        ("revoke", p.revoke(&minted.secret).await),
    ] {
        match result {
            Err(e @ ProviderError::Rejected { .. }) => {
                assert!(e.to_string().contains("403"), "{name}: {e}");
                let text = format!("{e:?}");
                assert!(!text.contains(&weak.access_token), "{name}: {text}");
                sf.assert_clean(&e, minted.secret.expose("token"));
            }
            other => panic!("{name}: expected Rejected, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn storefront_reads_the_parent_token_afresh_for_every_call() {
    let sf = Storefront::start().await;
    let p = sf.provider(StorefrontTokenKind::Storefront);
    p.mint(&mint_request("before")).await.unwrap();

    // The store-level account is rotated by hand: new account in Vault, old one deleted.
    sf.replace_store_account().await;

    let minted = p
        .mint(&mint_request("after"))
        .await
        .expect("the new token is used");
    p.revoke(&minted.secret)
        .await
        .expect("revoke with the new token");

    // A parent token missing from Vault is a configuration problem.
    sf.bao
        .write_secret("secret", ACCESS_TOKEN_PATH, json!({ "other": "x" }))
        .await;
    assert!(matches!(
        p.mint(&mint_request("missing")).await,
        Err(ProviderError::Config { .. })
    ));
}

#[tokio::test]
async fn storefront_reuses_the_parent_token_briefly_and_drops_it_when_the_store_refuses_it() {
    let sf = Storefront::start().await;
    let reuse = Duration::from_millis(800);
    let p = StorefrontProvider::new(
        sf.cfg(StorefrontTokenKind::Storefront),
        sf.vault.clone(),
        http(),
    )
    .with_access_token_reuse(reuse);
    let reads = || {
        sf.vault
            .stats
            .reads
            .load(std::sync::atomic::Ordering::Relaxed)
    };

    // A mint and its revoke within the reuse time read the token once.
    let before = reads();
    let minted = p.mint(&mint_request("one")).await.unwrap();
    p.revoke(&minted.secret).await.unwrap();
    assert_eq!(reads() - before, 1, "one read for a mint and a revoke");

    // The account is replaced by hand within the reuse time: the store refuses the token read
    // before, so it is read again at once and the refused call made once more.
    sf.replace_store_account().await;
    let before = reads();
    let created_before = sf.status_count("200").await;
    let minted = p
        .mint(&mint_request("after"))
        .await
        .expect("the refused call is made again with the token now in Vault");
    assert_eq!(reads() - before, 1, "read again once");
    assert_eq!(
        sf.status_count("200").await,
        created_before + 1,
        "one token created"
    );
    p.revoke(&minted.secret).await.unwrap();

    // A change in Vault that the store would not refuse is seen once the reuse time is over.
    sf.bao
        .write_secret("secret", ACCESS_TOKEN_PATH, json!({ "other": "x" }))
        .await;
    tokio::time::sleep(reuse).await;
    assert!(matches!(
        p.mint(&mint_request("missing")).await,
        Err(ProviderError::Config { .. })
    ));
}

/// Spends the store's whole quota from outside the provider (another client of the store).
async fn spend_quota(sf: &Storefront, quota: u32) {
    let url = format!("{}/stores/{STORE}/v2/time", sf.emulator.base_url());
    for _ in 0..quota {
        let resp = http()
            .get(&url)
            .header("X-Auth-Token", &sf.access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn storefront_sends_once_and_paces_rate_limits_within_the_call_deadline() {
    let sf = Storefront::start().await;
    let p = sf.provider(StorefrontTokenKind::Storefront);
    let minted = p.mint(&mint_request("good")).await.unwrap();

    // A 429 without headers (platform overload), or with them: each call sends once and leaves
    // the retrying to its caller, with the store's wait when it gave one.
    sf.admin
        .set_rate_limit(STORE, 150, Duration::from_millis(500))
        .await
        .unwrap();
    for with_headers in [false, true] {
        sf.fault(
            "storefront_token_revoke",
            FaultMode::RateLimitStorm { with_headers },
            None,
        )
        .await;
        let before = sf.status_count("429").await;
        match p.revoke(&minted.secret).await {
            Err(ProviderError::Transient { retry_after, .. }) => {
                assert_eq!(retry_after.is_some(), with_headers, "{retry_after:?}")
            }
            other => panic!("expected Transient, got {other:?}"),
        }
        assert_eq!(sf.status_count("429").await, before + 1, "{with_headers}");
        sf.admin.clear_faults().await.unwrap();
    }

    // A real 429 (another client spent the quota): Transient with the wait the store asked for.
    sf.admin
        .set_rate_limit(STORE, 1, Duration::from_millis(800))
        .await
        .unwrap();
    // Past the current window, so that the one request below opens a fresh one.
    tokio::time::sleep(Duration::from_millis(900)).await;
    spend_quota(&sf, 1).await;
    let before = sf.status_count("429").await;
    let wait = match p.mint(&mint_request("limited")).await {
        Err(ProviderError::Transient {
            retry_after: Some(w),
            reason,
        }) => {
            assert!(reason.contains("429"), "{reason}");
            w
        }
        other => panic!("expected Transient with a wait, got {other:?}"),
    };
    assert!(
        wait > Duration::from_millis(500) && wait <= Duration::from_millis(800),
        "{wait:?}"
    );
    assert_eq!(sf.status_count("429").await, before + 1);
    // The next call waits that short time out before sending, well within its deadline.
    let start = std::time::Instant::now();
    let paced = p
        .mint(&mint_request("paced"))
        .await
        .expect("mint after the wait");
    assert!(start.elapsed() >= wait / 2, "{:?}", start.elapsed());
    assert_eq!(sf.status_count("429").await, before + 1, "no second 429");
    p.verify(&paced.secret).await.unwrap();
}

#[tokio::test]
async fn storefront_a_wait_longer_than_the_call_deadline_returns_transient_at_once() {
    let sf = Storefront::start().await;
    // The 429 says 5 s; the call may wait 300 ms: it returns at once with that wait, and the
    // next call returns at once too, sending nothing.
    sf.admin
        .set_rate_limit(STORE, 1, Duration::from_secs(5))
        .await
        .unwrap();
    spend_quota(&sf, 1).await;
    let short = sf
        .provider(StorefrontTokenKind::Storefront)
        .with_call_deadline(Duration::from_millis(300));
    let creates = || async {
        let counters = sf.admin.counters().await.unwrap();
        counters
            .requests_by_endpoint
            .get("storefront_token_create")
            .copied()
            .unwrap_or(0)
    };
    for (call, sends) in [("429", 1), ("paced", 0)] {
        let sent_before = creates().await;
        let start = std::time::Instant::now();
        match short.mint(&mint_request("too-long")).await {
            Err(ProviderError::Transient {
                retry_after: Some(w),
                ..
            }) => assert!(w > Duration::from_secs(3), "{call}: {w:?}"),
            other => panic!("{call}: expected Transient with a wait, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_millis(300), "{call}");
        assert_eq!(creates().await, sent_before + sends, "{call}");
    }
}

#[tokio::test]
async fn storefront_waits_for_a_spent_quota_instead_of_hitting_429() {
    let sf = Storefront::start().await;
    sf.admin
        .set_rate_limit(STORE, 2, Duration::from_millis(1500))
        .await
        .unwrap();
    let p = sf.provider(StorefrontTokenKind::Storefront);
    let start = std::time::Instant::now();
    for i in 0..3 {
        p.mint(&mint_request(&format!("q{i}"))).await.unwrap();
    }
    // The second answer said "0 left": the third request waited for the window to refresh.
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(sf.status_count("429").await, 0);
}

#[tokio::test]
async fn storefront_classifies_faults() {
    let sf = Storefront::start().await;
    let p = sf.provider(StorefrontTokenKind::Storefront);
    let good = p.mint(&mint_request("good")).await.unwrap();
    let good_token = good.secret.expose("token").unwrap().to_string();

    // Minted, then the connection closed without an answer: a live token nobody holds.
    sf.fault(
        "storefront_token_create",
        FaultMode::DropAfterCommit,
        Some(1),
    )
    .await;
    let live_before = sf.admin.live_storefront_tokens(STORE).await.unwrap().len();
    match p.mint(&mint_request("dropped")).await {
        Err(e @ ProviderError::UnknownOutcome { .. }) => sf.assert_clean(&e, None),
        other => panic!("expected UnknownOutcome, got {other:?}"),
    }
    let live = sf.admin.live_storefront_tokens(STORE).await.unwrap();
    assert_eq!(
        live.len(),
        live_before + 1,
        "the dropped mint created a token"
    );

    // Status faults, one call each: (endpoint, status, call, expected kind). A mint's 502 or 504
    // may come from a gateway after the store minted (`providers::outcome`): unknown, although
    // this emulator fault did nothing; the store's own 503 (its JSON error body) did nothing.
    let cases = [
        ("storefront_token_create", 500, "mint", "unknown_outcome"),
        ("storefront_token_create", 502, "mint", "unknown_outcome"),
        ("storefront_token_create", 504, "mint", "unknown_outcome"),
        ("storefront_token_create", 503, "mint", "transient"),
        ("storefront_token_create", 401, "mint", "rejected"),
        ("storefront_graphql", 401, "verify", "rejected"),
        ("storefront_graphql", 503, "verify", "transient"),
        ("storefront_token_revoke", 503, "revoke", "transient"),
        ("storefront_token_revoke", 500, "revoke", "transient"),
        ("storefront_token_revoke", 401, "revoke", "rejected"),
    ];
    for (endpoint, status, call, expected) in cases {
        sf.fault(endpoint, FaultMode::Error { status }, Some(1))
            .await;
        let result = match call {
            "mint" => p.mint(&mint_request("f")).await.map(|_| ()),
            "verify" => p.verify(&good.secret).await,
            _ => p.revoke(&good.secret).await,
        };
        match result {
            Err(e) => {
                assert_eq!(e.kind(), expected, "{endpoint} {status}: {e}");
                sf.assert_clean(&e, Some(&good_token));
            }
            Ok(()) => panic!("{endpoint} {status}: expected {expected}, got Ok"),
        }
    }
    // The injected 401 on GraphQL was a one-off: the token itself is still good.
    p.verify(&good.secret).await.unwrap();
}

#[tokio::test]
async fn storefront_unreachable_or_silent_store() {
    let sf = Storefront::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = sf.cfg(StorefrontTokenKind::Storefront);
    // URLs with a password and a query: neither may reach an error.
    cfg.api_url = format!("http://user:hunter2@127.0.0.1:{closed}");
    cfg.storefront_url =
        format!("http://user:hunter2@127.0.0.1:{closed}/store-{{store_hash}}?key=sekrit");
    let p = StorefrontProvider::new(cfg, sf.vault.clone(), http());
    let secret = SecretFields::new().with("token", "eyJ.some.token");
    for (name, result) in [
        ("mint", p.mint(&mint_request("a")).await.map(|_| ())),
        ("verify", p.verify(&secret).await),
        ("revoke", p.revoke(&secret).await),
    ] {
        let Err(e @ ProviderError::Transient { .. }) = result else {
            panic!("{name}: expected Transient, got {result:?}");
        };
        let text = format!("{e} {e:?}");
        for leak in ["hunter2", "sekrit", "127.0.0.1", "eyJ.some.token"] {
            assert!(!text.contains(leak), "{name}: {leak} in {text}");
        }
        sf.assert_clean(&e, None);
    }

    // Latency beyond the client's timeout: a mint may have happened; a verify may be retried.
    let p = StorefrontProvider::new(
        sf.cfg(StorefrontTokenKind::Storefront),
        sf.vault.clone(),
        secret_rotator::egress::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    sf.fault("*", FaultMode::Latency { latency_ms: 1000 }, Some(2))
        .await;
    assert!(matches!(
        p.mint(&mint_request("slow")).await,
        Err(ProviderError::UnknownOutcome { .. })
    ));
    assert!(matches!(
        p.verify(&secret).await,
        Err(ProviderError::Transient { .. })
    ));
}
