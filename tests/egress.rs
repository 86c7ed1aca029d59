//! The egress policy from outside: a redirect to another host never receives a credential.
//!
//! Every provider kind that speaks HTTP (the BigCommerce storefront kinds, the assisted
//! verification probes, the generic `http` provider), the Vault transport (which the AppRole
//! provider uses) and the webhook sink are pointed at a loopback server that answers every
//! request with a redirect (301, 302, 307, 308) to a second loopback listener on another port,
//! named `127.0.0.1` or `localhost`. That listener records every request it gets: it must get
//! none, and each call must fail with an error that names the endpoint, says it was a redirect,
//! and holds no secret. A control shows that a client following redirects does deliver the
//! store's token there (the defect this policy closes), so the listener would have seen it.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigcommerce_emulator::{demo, AdminClient, EmulatorConfig, Seed};
use chrono::Utc;
use common::receiver::TEST_KEY;
use common::{vault_config, OpenBao, ROOT_TOKEN};
use secrecy::SecretString;
use secret_rotator::config::{
    BasicAuthAccountConfig, HttpProviderConfig, HttpRequestConfig, KvPath, ScopeLevel,
    StoreAccountConfig, StorefrontConfig, StorefrontTokenKind, VaultField,
};
use secret_rotator::egress;
use secret_rotator::notify::webhook::{Outcome, WebhookSink};
use secret_rotator::providers::bigcommerce_assisted::{
    BasicAuthProvider, BasicKind, StoreAccountProvider,
};
use secret_rotator::providers::bigcommerce_storefront::StorefrontProvider;
use secret_rotator::providers::http::HttpProvider;
use secret_rotator::providers::{MintRequest, Provider, ProviderError};
use secret_rotator::secret::SecretFields;
use secret_rotator::vault::{Login, Vault};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const STORE: &str = demo::STORE_HASH;
const ACCESS_TOKEN_PATH: &str = "bigcommerce/abc123/store-api";
/// Secrets no other server than the configured one may see.
const BASIC_TOKEN: &str = "legacy-basic-token-8d1f0c2b7a";
const STORE_ACCOUNT_TOKEN: &str = "store-account-token-4e9a1b7c3d";
const VAULT_TOKEN: &str = "hvs.redirect-probe-token-51c0a9e2";

/// A request one of the loopback servers got: its request line and headers.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
}

/// A loopback HTTP/1.1 server: answers every request with `status` (and `Location`, when
/// given), and keeps what it was sent.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(status: u16, location: Option<String>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let location = location.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let line = lines.next().unwrap_or_default().to_string();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let length: usize = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + 4 + length {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    log.lock().unwrap().push(Seen { line, headers });
                    let location = location
                        .map(|l| format!("location: {l}\r\n"))
                        .unwrap_or_default();
                    let answer = format!(
                        "HTTP/1.1 {status} Whatever\r\n{location}content-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Server {
            base: format!("http://127.0.0.1:{port}"),
            seen,
        }
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// OpenBao holding the store's access token, the emulator it belongs to, and a storefront
/// token minted there (so that verify and revoke have a real credential to carry).
struct World {
    _bao: OpenBao,
    vault: Arc<Vault>,
    _emulator: bigcommerce_emulator::RunningEmulator,
    access_token: String,
    jwt: String,
}

impl World {
    async fn start() -> World {
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
        let access_token = admin.api_accounts(STORE).await.unwrap()[0]
            .access_token
            .clone();
        bao.write_secret(
            "secret",
            ACCESS_TOKEN_PATH,
            json!({ "access_token": access_token }),
        )
        .await;
        let vault = Arc::new(
            Vault::connect(
                &vault_config(&bao.addr),
                Login::Token(SecretString::from(ROOT_TOKEN.to_string())),
            )
            .await
            .expect("connect"),
        );
        // The same provider against the store itself works: a failure below is the redirect's.
        let at_store = StorefrontProvider::new(
            storefront_cfg(&emulator.base_url(), StorefrontTokenKind::Storefront),
            vault.clone(),
            client(),
        );
        let minted = at_store
            .mint(&mint_request())
            .await
            .expect("mint at the store");
        at_store
            .verify(&minted.secret)
            .await
            .expect("verify at the store");
        let jwt = minted.secret.expose("token").unwrap().to_string();
        World {
            _bao: bao,
            vault,
            _emulator: emulator,
            access_token,
            jwt,
        }
    }

    /// Every secret a call below may carry.
    fn secrets(&self) -> Vec<&str> {
        vec![
            &self.access_token,
            &self.jwt,
            BASIC_TOKEN,
            STORE_ACCOUNT_TOKEN,
            VAULT_TOKEN,
            TEST_KEY,
            TEST_KEY.trim_start_matches("whsec_"),
        ]
    }
}

fn client() -> egress::Client {
    egress::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn mint_request() -> MintRequest {
    let now = Utc::now();
    MintRequest {
        attempt_id: "egress-test".into(),
        now,
        expires_at: now + chrono::Duration::hours(1),
    }
}

fn access_token_field() -> VaultField {
    VaultField {
        secret: KvPath {
            mount: "secret".into(),
            path: ACCESS_TOKEN_PATH.into(),
        },
        key: "access_token".into(),
    }
}

fn storefront_cfg(base: &str, kind: StorefrontTokenKind) -> StorefrontConfig {
    StorefrontConfig {
        api_url: base.to_string(),
        storefront_url: format!("{base}/store-{{store_hash}}"),
        store_hash: STORE.into(),
        access_token: access_token_field(),
        kind,
        channel_ids: vec![1],
        allowed_cors_origins: vec![],
        scopes: match kind {
            StorefrontTokenKind::Private => vec!["Customer".into()],
            _ => vec![],
        },
    }
}

fn request(method: &str, url: String, headers: &[(&str, &str)]) -> HttpRequestConfig {
    HttpRequestConfig {
        method: method.into(),
        url,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: Some("{}".into()),
        ok: vec![],
        reject: vec![401, 403],
        retry: vec![429, 502, 503, 504],
    }
}

/// The generic `http` provider written for the storefront API, as `tests/generic_providers.rs`
/// does.
fn http_cfg(base: &str) -> HttpProviderConfig {
    let api = format!("{base}/stores/{STORE}/v3/storefront/api-token");
    HttpProviderConfig {
        parents: vec![("access_token".into(), access_token_field())],
        timeout: Duration::from_secs(5),
        credentials_expire: true,
        mint: request(
            "POST",
            api.clone(),
            &[("X-Auth-Token", "{{parent.access_token}}")],
        ),
        verify: request(
            "POST",
            format!("{base}/store-{STORE}/graphql"),
            &[("Authorization", "Bearer {{current.token}}")],
        ),
        revoke: request(
            "DELETE",
            api,
            &[
                ("X-Auth-Token", "{{parent.access_token}}"),
                ("Sf-Api-Token", "{{current.token}}"),
            ],
        ),
        fields: vec![("token".into(), "/data/token".into())],
        expires_at: None,
    }
}

/// One call through the egress policy (or the Vault transport), against `front`.
#[derive(Debug, Clone, Copy)]
enum Call {
    Storefront(StorefrontTokenKind, Step),
    Http(Step),
    StoreAccount(Step),
    Basic(BasicKind),
    Vault,
    Webhook,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Mint,
    Verify,
    Revoke,
    VerifyRevoked,
}

async fn provider_call(p: &dyn Provider, step: Step, secret: &SecretFields) -> String {
    let result = match step {
        Step::Mint => p.mint(&mint_request()).await.map(|_| ()),
        Step::Verify => p.verify(secret).await,
        Step::Revoke => p.revoke(secret).await,
        Step::VerifyRevoked => p.verify_revoked(secret).await.map(|_| ()),
    };
    match result {
        // The origin refused it here: not retried, no credential made.
        Err(e @ ProviderError::Config { .. }) => format!("{e} {e:?}"),
        other => panic!("{step:?}: expected a Config error, got {other:?}"),
    }
}

/// Makes the call against `front` and returns the error's text (Display and Debug).
async fn run(call: Call, front: &str, world: &World) -> String {
    let mut jwt = SecretFields::new();
    jwt.insert("token", world.jwt.as_str());
    match call {
        Call::Storefront(kind, step) => {
            let p =
                StorefrontProvider::new(storefront_cfg(front, kind), world.vault.clone(), client())
                    .with_access_token_reuse(Duration::ZERO);
            provider_call(&p, step, &jwt).await
        }
        Call::Http(step) => {
            let p = HttpProvider::new(http_cfg(front), "egress", world.vault.clone()).unwrap();
            provider_call(&p, step, &jwt).await
        }
        Call::StoreAccount(step) => {
            let cfg = StoreAccountConfig {
                api_url: front.to_string(),
                store_hash: STORE.into(),
                required_scopes: vec![("orders".into(), ScopeLevel::ReadOnly)],
                probe: "v2/time".into(),
            };
            let p = StoreAccountProvider::new(cfg, client(), "egress");
            let mut account = SecretFields::new();
            account.insert("client_id", "egress-client");
            account.insert("access_token", STORE_ACCOUNT_TOKEN);
            provider_call(&p, step, &account).await
        }
        Call::Basic(kind) => {
            let api_path = format!("{front}/api/v2/");
            let cfg = BasicAuthAccountConfig {
                store_hash: STORE.into(),
                username: "admin".into(),
                api_path: api_path.clone(),
                probe: "time".into(),
                required_permissions: vec![],
            };
            let p = BasicAuthProvider::new(cfg, kind, client(), "egress");
            let mut token = SecretFields::new();
            token.insert("username", "admin");
            token.insert("token", BASIC_TOKEN);
            token.insert("api_path", api_path);
            provider_call(&p, Step::Verify, &token).await
        }
        Call::Vault => {
            let vault = Vault::connect(
                &vault_config(front),
                Login::Token(SecretString::from(VAULT_TOKEN.to_string())),
            )
            .await
            .expect("connect");
            let e = vault
                .read(&KvPath {
                    mount: "secret".into(),
                    path: "egress/probe".into(),
                })
                .await
                .expect_err("a redirect elsewhere is an error");
            format!("{e} {e:?}")
        }
        Call::Webhook => {
            let sink =
                WebhookSink::new(&format!("{front}/hook"), Duration::from_secs(5), None).unwrap();
            let keys = [SecretString::from(TEST_KEY.to_string())];
            match sink.deliver_as("msg_egress", b"{}", &keys).await {
                Outcome::Failed { reason, retryable } => {
                    assert!(!retryable, "a redirect is not retried: {reason}");
                    reason
                }
                Outcome::Delivered => panic!("a redirect is not a delivery"),
            }
        }
    }
}

fn calls() -> Vec<Call> {
    let mut calls = Vec::new();
    for kind in [
        StorefrontTokenKind::Storefront,
        StorefrontTokenKind::Private,
        StorefrontTokenKind::CustomerImpersonation,
    ] {
        for step in [Step::Mint, Step::Verify, Step::Revoke] {
            calls.push(Call::Storefront(kind, step));
        }
    }
    for step in [Step::Mint, Step::Verify, Step::Revoke] {
        calls.push(Call::Http(step));
    }
    calls.push(Call::StoreAccount(Step::Verify));
    calls.push(Call::StoreAccount(Step::VerifyRevoked));
    calls.push(Call::Basic(BasicKind::Legacy));
    calls.push(Call::Basic(BasicKind::User));
    calls.push(Call::Vault);
    calls.push(Call::Webhook);
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host_never_receives_a_credential() {
    let world = World::start().await;
    for status in [301, 302, 307, 308] {
        for host in ["127.0.0.1", "localhost"] {
            let elsewhere = Server::start(200, None).await;
            let target = format!("http://{host}:{}/stolen", elsewhere.port());
            let front = Server::start(status, Some(target.clone())).await;
            for call in calls() {
                let case = format!("{call:?}, {status} to {target}");
                let before = front.seen().len();
                let error = run(call, &front.base, &world).await;
                assert!(front.seen().len() > before, "{case}: never sent");
                assert_eq!(elsewhere.seen().len(), 0, "{case}: followed: {error}");
                let lower = error.to_lowercase();
                assert!(lower.contains("redirect"), "{case}: {error}");
                // The endpoint is named (the Vault transport names its address).
                let endpoint = front.base.trim_start_matches("http://");
                assert!(error.contains(endpoint), "{case}: no {endpoint} in {error}");
                for secret in world.secrets() {
                    assert!(!error.contains(secret), "{case}: a secret in {error}");
                }
            }
        }
    }
}

/// The defect the policy closes, as the harness above sees it: a client that follows
/// redirects takes `X-Auth-Token` to the other listener (reqwest strips only `Authorization`).
#[tokio::test]
async fn control_a_client_following_redirects_delivers_the_token_elsewhere() {
    for host in ["127.0.0.1", "localhost"] {
        let elsewhere = Server::start(200, None).await;
        let target = format!("http://{host}:{}/stolen", elsewhere.port());
        let front = Server::start(307, Some(target)).await;
        let following = reqwest::Client::new();
        let resp = following
            .get(format!("{}/stores/{STORE}/v3/x", front.base))
            .header("X-Auth-Token", "the-store-token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let seen = elsewhere.seen();
        assert_eq!(seen.len(), 1, "{host}");
        assert!(
            seen[0]
                .headers
                .contains(&("x-auth-token".into(), "the-store-token".into())),
            "{host}: {seen:?}"
        );
        assert!(seen[0].line.starts_with("GET /stolen"), "{seen:?}");
    }
}
