//! Contract tests: the emulator started in-process on port 0 and driven over loopback HTTP,
//! one module per part of the reference (`shared/reference/bigcommerce-api.md`).

mod admin;
mod binary;
mod faults;
mod legacy;
mod rate_limits;
mod rest;
mod storefront;

use std::time::{SystemTime, UNIX_EPOCH};

use bigcommerce_emulator::{demo, start, AdminClient, EmulatorConfig, RunningEmulator, Seed};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

/// The one helper: a running emulator, its admin client and a plain HTTP client.
pub struct Emu {
    pub running: RunningEmulator,
    pub admin: AdminClient,
    pub http: reqwest::Client,
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Emu {
    /// The demo seed: store `abc123`, a full-scope account, a legacy account, a user.
    pub async fn demo() -> Emu {
        Emu::with(EmulatorConfig::new(Seed::demo())).await
    }

    pub async fn with(cfg: EmulatorConfig) -> Emu {
        let running = start(cfg).await.expect("emulator starts");
        let admin = running.admin();
        Emu {
            running,
            admin,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.running.base_url(), path)
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A request with the demo account's `X-Auth-Token`.
    pub fn api(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.req(method, path)
            .header("X-Auth-Token", demo::ACCESS_TOKEN)
    }

    /// Mints a storefront token with the demo account; panics unless 200.
    pub async fn mint(&self, endpoint: &str, body: Value) -> String {
        let a = send(
            self.api(
                Method::POST,
                &format!("/stores/abc123/v3/storefront/{endpoint}"),
            )
            .json(&body),
        )
        .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.body["data"]["token"].as_str().expect("token").to_string()
    }

    /// A storefront token for channel 1, valid one hour.
    pub async fn mint_storefront(&self) -> String {
        self.mint(
            "api-token",
            json!({"channel_id": 1, "expires_at": in_secs(3600)}),
        )
        .await
    }

    /// The minimal storefront GraphQL query with `Authorization: Bearer <token>`.
    pub async fn graphql(&self, token: &str) -> Answer {
        send(
            self.req(Method::POST, "/store-abc123/graphql")
                .bearer_auth(token)
                .json(&json!({"query": "{ site { settings { storeName } } }"})),
        )
        .await
    }

    pub async fn revoke(&self, token: &str) -> Answer {
        send(
            self.api(Method::DELETE, "/stores/abc123/v3/storefront/api-token")
                .header("Sf-Api-Token", token),
        )
        .await
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("an answer");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("a body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        headers,
        body,
    }
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn in_secs(secs: i64) -> i64 {
    now_secs() + secs
}

/// The documented v3 body of a 403 for a missing scope (reference §4).
pub fn missing_scope_body() -> Value {
    json!({
        "status": 403,
        "title": "You don't have a required scope to access the endpoint",
        "type": "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes",
        "errors": {}
    })
}

pub fn graphql_error(message: &str) -> Value {
    json!({"data": null, "errors": [{"message": message}]})
}

pub const RATE_HEADERS: [&str; 4] = [
    "x-rate-limit-time-window-ms",
    "x-rate-limit-time-reset-ms",
    "x-rate-limit-requests-quota",
    "x-rate-limit-requests-left",
];
