//! Storefront tokens: creation and its validation, ES256 JWTs, GraphQL verification,
//! asynchronous revocation, expiry.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bigcommerce_emulator::credentials::sha256_hex;
use bigcommerce_emulator::{
    demo, Access, EmulatorConfig, Resource, Scopes, Seed, TokenKind, TokenState,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::{graphql_error, in_secs, send, Emu};

fn decode_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn each_kind_mints_a_listed_es256_jwt() {
    let emu = Emu::demo().await;
    let expires = in_secs(600);
    let cases = [
        (
            "api-token",
            json!({"channel_id": 1, "expires_at": expires, "allowed_cors_origins": ["https://shop.example"]}),
            "storefront",
        ),
        (
            "api-token-private",
            json!({"channel_ids": [1], "expires_at": expires, "scopes": ["Customer", "B2B"]}),
            "private",
        ),
        (
            "api-token-customer-impersonation",
            json!({"channel_id": 1, "expires_at": expires}),
            "customer_impersonation",
        ),
    ];
    let mut jtis = vec![];
    for (endpoint, body, kind) in cases {
        let a = send(
            emu.api(
                Method::POST,
                &format!("/stores/abc123/v3/storefront/{endpoint}"),
            )
            .json(&body),
        )
        .await;
        assert_eq!(a.status, 200, "{endpoint}: {}", a.body);
        assert_eq!(a.body["meta"], json!({}));
        let token = a.body["data"]["token"].as_str().unwrap();
        assert_eq!(decode_part(token, 0), json!({"typ": "JWT", "alg": "ES256"}));
        let claims = decode_part(token, 1);
        assert_eq!(claims["exp"], expires, "{endpoint}");
        assert_eq!(claims["cid"], json!([1]));
        assert_eq!(claims["token_kind"], kind);
        assert_eq!(claims["sub"], "abc123");
        let listed = emu.admin.storefront_tokens("abc123").await.unwrap();
        let entry = listed
            .iter()
            .find(|t| t.jti == claims["jti"])
            .expect("listed by jti");
        assert_eq!(entry.sha256, sha256_hex(token));
        assert_eq!(entry.expires_at, expires);
        assert_eq!(entry.state, TokenState::Live);
        assert_eq!(emu.graphql(token).await.status, 200, "{endpoint}");
        jtis.push(claims["jti"].as_str().unwrap().to_string());
    }
    jtis.dedup();
    assert_eq!(jtis.len(), 3, "jti values are unique");
    let kinds: Vec<TokenKind> = emu
        .admin
        .live_storefront_tokens("abc123")
        .await
        .unwrap()
        .iter()
        .map(|t| t.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            TokenKind::Storefront,
            TokenKind::Private,
            TokenKind::CustomerImpersonation
        ]
    );
    assert_eq!(emu.admin.counters().await.unwrap().tokens_minted, 3);
}

#[tokio::test]
async fn bad_bodies_get_422_naming_the_field() {
    let emu = Emu::demo().await;
    let later = in_secs(600);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("api-token", json!({"expires_at": later}), "channel_id"),
        (
            "api-token",
            json!({"channel_id": 1, "channel_ids": [1], "expires_at": later}),
            "channel_id",
        ),
        (
            "api-token",
            json!({"channel_id": 0, "expires_at": later}),
            "channel_id",
        ),
        (
            "api-token",
            json!({"channel_ids": [], "expires_at": later}),
            "channel_ids",
        ),
        ("api-token", json!({"channel_id": 1}), "expires_at"),
        (
            "api-token",
            json!({"channel_id": 1, "expires_at": in_secs(-10)}),
            "expires_at",
        ),
        (
            "api-token",
            json!({"channel_id": 1, "expires_at": later, "allowed_cors_origins": []}),
            "allowed_cors_origins",
        ),
        (
            "api-token",
            json!({"channel_id": 1, "expires_at": later, "allowed_cors_origins": ["a", "b", "c"]}),
            "allowed_cors_origins",
        ),
        (
            "api-token-private",
            json!({"channel_id": 1, "expires_at": later}),
            "scopes",
        ),
        (
            "api-token-private",
            json!({"channel_id": 1, "expires_at": later, "scopes": []}),
            "scopes",
        ),
        (
            "api-token-private",
            json!({"channel_id": 1, "expires_at": later, "scopes": ["Admin"]}),
            "scopes",
        ),
        (
            "api-token-customer-impersonation",
            json!({"channel_id": 1}),
            "expires_at",
        ),
        ("api-token", json!("a string"), "body"),
    ];
    for (endpoint, body, field) in cases {
        let a = send(
            emu.api(
                Method::POST,
                &format!("/stores/abc123/v3/storefront/{endpoint}"),
            )
            .json(&body),
        )
        .await;
        assert_eq!(a.status, 422, "{endpoint} {body}");
        assert_eq!(a.body["status"], 422);
        assert!(
            a.body["errors"][field].is_string(),
            "{endpoint} {body}: {}",
            a.body
        );
    }
    let empty = send(emu.api(Method::POST, "/stores/abc123/v3/storefront/api-token")).await;
    assert_eq!(empty.status, 422);
    assert!(
        emu.admin
            .storefront_tokens("abc123")
            .await
            .unwrap()
            .is_empty(),
        "nothing minted"
    );
}

/// The scope is checked before the body: 401, then 403, then 422. Storefront and private tokens
/// need Storefront API Tokens (modify); customer impersonation tokens need Storefront API
/// Customer Impersonation Tokens (modify), and the other scope does not stand in for it.
#[tokio::test]
async fn creation_needs_the_modify_scope_of_the_token_kind() {
    let emu = Emu::demo().await;
    let account = |name: &'static str, scopes: Scopes| {
        let admin = emu.admin.clone();
        async move {
            admin
                .create_api_account("abc123", name, scopes)
                .await
                .unwrap()
                .access_token
        }
    };
    let tokens_ro = account(
        "tokens-ro",
        Scopes::none().with(Resource::StorefrontApiTokens, Access::ReadOnly),
    )
    .await;
    let tokens = account(
        "tokens",
        Scopes::none().with(Resource::StorefrontApiTokens, Access::Modify),
    )
    .await;
    let impersonation_ro = account(
        "impersonation-ro",
        Scopes::none().with(
            Resource::StorefrontApiCustomerImpersonation,
            Access::ReadOnly,
        ),
    )
    .await;
    let impersonation = account(
        "impersonation",
        Scopes::none().with(Resource::StorefrontApiCustomerImpersonation, Access::Modify),
    )
    .await;
    let good = json!({"channel_id": 1, "expires_at": in_secs(60)});
    let private = json!({"channel_id": 1, "expires_at": in_secs(60), "scopes": ["Customer"]});
    // (endpoint, access token, body, expected status)
    let cases: Vec<(&str, Option<&str>, Option<&Value>, u16)> = vec![
        (
            "api-token",
            Some("nottherightaccesstoken000000000"),
            Some(&good),
            401,
        ),
        ("api-token", None, Some(&good), 401),
        ("api-token", Some(&tokens_ro), Some(&good), 403),
        ("api-token", Some(&tokens_ro), None, 403),
        ("api-token", Some(&impersonation), Some(&good), 403),
        ("api-token", Some(&tokens), Some(&good), 200),
        ("api-token", Some(demo::ACCESS_TOKEN), None, 422),
        ("api-token-private", Some(&tokens_ro), Some(&private), 403),
        (
            "api-token-private",
            Some(&impersonation),
            Some(&private),
            403,
        ),
        ("api-token-private", Some(&tokens), Some(&private), 200),
        ("api-token-private", Some(demo::ACCESS_TOKEN), None, 422),
        (
            "api-token-customer-impersonation",
            Some("nottherightaccesstoken000000000"),
            Some(&good),
            401,
        ),
        ("api-token-customer-impersonation", None, Some(&good), 401),
        (
            "api-token-customer-impersonation",
            Some(&tokens),
            Some(&good),
            403,
        ),
        ("api-token-customer-impersonation", Some(&tokens), None, 403),
        (
            "api-token-customer-impersonation",
            Some(&impersonation_ro),
            Some(&good),
            403,
        ),
        (
            "api-token-customer-impersonation",
            Some(&impersonation),
            Some(&good),
            200,
        ),
        (
            "api-token-customer-impersonation",
            Some(&impersonation),
            None,
            422,
        ),
        (
            "api-token-customer-impersonation",
            Some(demo::ACCESS_TOKEN),
            None,
            422,
        ),
    ];
    for (endpoint, token, body, expected) in cases {
        let mut req = emu.req(
            Method::POST,
            &format!("/stores/abc123/v3/storefront/{endpoint}"),
        );
        if let Some(t) = token {
            req = req.header("X-Auth-Token", t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let a = send(req).await;
        assert_eq!(a.status, expected, "{endpoint} {token:?} {body:?}");
        if expected == 403 {
            assert_eq!(a.body, crate::missing_scope_body());
        }
    }
}

/// Each token scope has a read level too, probed with `GET` on its creation path; and either
/// scope at modify may revoke (the docs name no scope for revocation).
#[tokio::test]
async fn token_scopes_have_read_probes_and_either_one_revokes() {
    let emu = Emu::demo().await;
    let with = |resource, access| Scopes::none().with(resource, access);
    let mut accounts = Vec::new();
    for (name, scopes) in [
        ("none", Scopes::none()),
        (
            "tokens-ro",
            with(Resource::StorefrontApiTokens, Access::ReadOnly),
        ),
        (
            "tokens",
            with(Resource::StorefrontApiTokens, Access::Modify),
        ),
        (
            "imp-ro",
            with(
                Resource::StorefrontApiCustomerImpersonation,
                Access::ReadOnly,
            ),
        ),
        (
            "imp",
            with(Resource::StorefrontApiCustomerImpersonation, Access::Modify),
        ),
    ] {
        let a = emu
            .admin
            .create_api_account("abc123", name, scopes)
            .await
            .unwrap();
        accounts.push((name, a.access_token));
    }
    let token_of = |name: &str| {
        accounts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone())
            .unwrap()
    };
    // (account, path, expected GET status)
    let probes = [
        ("none", "api-token", 403),
        ("tokens-ro", "api-token", 200),
        ("imp", "api-token", 403),
        ("none", "api-token-customer-impersonation", 403),
        ("tokens", "api-token-customer-impersonation", 403),
        ("imp-ro", "api-token-customer-impersonation", 200),
        ("imp", "api-token-customer-impersonation", 200),
    ];
    for (name, path, expected) in probes {
        let a = send(
            emu.req(Method::GET, &format!("/stores/abc123/v3/storefront/{path}"))
                .header("X-Auth-Token", token_of(name)),
        )
        .await;
        assert_eq!(a.status, expected, "{name} GET {path}");
    }
    // (account, expected DELETE status for a fresh impersonation token)
    let revokes = [
        ("none", 403),
        ("tokens-ro", 403),
        ("imp-ro", 403),
        ("tokens", 200),
        ("imp", 200),
    ];
    for (name, expected) in revokes {
        let minted = send(
            emu.api(
                Method::POST,
                "/stores/abc123/v3/storefront/api-token-customer-impersonation",
            )
            .json(&json!({"channel_id": 1, "expires_at": in_secs(600)})),
        )
        .await;
        let jwt = minted.body["data"]["token"].as_str().unwrap().to_string();
        let a = send(
            emu.req(Method::DELETE, "/stores/abc123/v3/storefront/api-token")
                .header("X-Auth-Token", token_of(name))
                .header("Sf-Api-Token", jwt),
        )
        .await;
        assert_eq!(a.status, expected, "{name} revokes");
    }
}

#[tokio::test]
async fn revocation_is_asynchronous() {
    let emu = Emu::demo().await;
    emu.admin
        .set_revocation_delay("abc123", Duration::from_millis(400))
        .await
        .unwrap();
    let token = emu.mint_storefront().await;
    let keep = emu.mint_storefront().await;
    let a = emu.revoke(&token).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["data"]["message"], "revocation has been scheduled");
    assert_eq!(
        emu.graphql(&token).await.status,
        200,
        "still accepted before the delay"
    );
    let listed = emu.admin.storefront_tokens("abc123").await.unwrap();
    assert_eq!(listed[0].state, TokenState::RevocationScheduled);
    assert!(listed[0].accepted);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rejected = emu.graphql(&token).await;
    assert_eq!(rejected.status, 401);
    assert_eq!(rejected.body, graphql_error("Unknown JWT token"));
    assert_eq!(
        emu.graphql(&keep).await.status,
        200,
        "the other token lives on"
    );
    let live = emu.admin.live_storefront_tokens("abc123").await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].sha256, sha256_hex(&keep));
    assert_eq!(emu.admin.counters().await.unwrap().tokens_revoked, 1);
    // Revoking again is accepted and changes nothing.
    assert_eq!(emu.revoke(&token).await.status, 200);
    assert_eq!(emu.admin.counters().await.unwrap().tokens_revoked, 1);
}

#[tokio::test]
async fn the_default_delay_is_two_seconds_of_emulator_time() {
    let emu = Emu::demo().await;
    let token = emu.mint_storefront().await;
    assert_eq!(emu.revoke(&token).await.status, 200);
    emu.admin
        .advance_clock(Duration::from_millis(1_900))
        .await
        .unwrap();
    assert_eq!(emu.graphql(&token).await.status, 200);
    emu.admin
        .advance_clock(Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(
        emu.graphql(&token).await.body,
        graphql_error("Unknown JWT token")
    );
}

#[tokio::test]
async fn the_admin_revokes_at_once() {
    let emu = Emu::demo().await;
    let token = emu.mint_storefront().await;
    let jti = emu.admin.live_storefront_tokens("abc123").await.unwrap()[0]
        .jti
        .clone();
    let r = emu
        .admin
        .revoke_storefront_token("abc123", &jti)
        .await
        .unwrap();
    assert!(r.newly_revoked);
    assert_eq!(
        emu.graphql(&token).await.body,
        graphql_error("Unknown JWT token")
    );
    assert_eq!(
        emu.admin.storefront_tokens("abc123").await.unwrap()[0].state,
        TokenState::Revoked
    );
}

#[tokio::test]
async fn revocation_needs_a_valid_sf_api_token() {
    let emu = Emu::demo().await;
    let other = Emu::with(EmulatorConfig::new(Seed::demo())).await;
    let foreign = other.mint_storefront().await;
    let cases: [(Option<&str>, &str); 4] = [
        (None, "the Sf-Api-Token header is required"),
        (Some("garbage"), "Invalid JWT token"),
        (Some("a.b.c"), "Invalid JWT token"),
        (Some(foreign.as_str()), "JWT signature is invalid"),
    ];
    for (header, message) in cases {
        let mut req = emu.api(Method::DELETE, "/stores/abc123/v3/storefront/api-token");
        if let Some(h) = header {
            req = req.header("Sf-Api-Token", h);
        }
        let a = send(req).await;
        assert_eq!(a.status, 422, "{header:?}");
        assert_eq!(a.body["errors"]["Sf-Api-Token"], message);
    }
    let no_scope = emu
        .admin
        .create_api_account("abc123", "none", Scopes::none())
        .await
        .unwrap();
    let token = emu.mint_storefront().await;
    let a = send(
        emu.req(Method::DELETE, "/stores/abc123/v3/storefront/api-token")
            .header("X-Auth-Token", &no_scope.access_token)
            .header("Sf-Api-Token", &token),
    )
    .await;
    assert_eq!(a.status, 403);
    assert_eq!(
        emu.admin
            .live_storefront_tokens("abc123")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn graphql_rejections_are_401_with_graphql_errors() {
    let emu = Emu::demo().await;
    let other = Emu::with(EmulatorConfig::new(Seed::demo())).await;
    let foreign = other.mint_storefront().await;
    let token = emu.mint_storefront().await;
    let (head, _) = token.rsplit_once('.').unwrap();
    let mut claims = decode_part(&token, 1);
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 10_000);
    let forged = format!(
        "{}.{}.{}",
        head.split('.').next().unwrap(),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        token.rsplit('.').next().unwrap()
    );
    let cases = [
        (foreign.as_str(), "JWT signature is invalid"),
        (forged.as_str(), "JWT signature is invalid"),
        ("not-a-jwt", "Invalid JWT token"),
    ];
    for (bearer, message) in cases {
        let a = emu.graphql(bearer).await;
        assert_eq!(a.status, 401, "{message}");
        assert_eq!(a.body, graphql_error(message));
    }
    let missing = send(
        emu.req(Method::POST, "/store-abc123/graphql")
            .json(&json!({"query": "{ site { settings { storeName } } }"})),
    )
    .await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body, graphql_error("JWT token is missing"));
    let ok = emu.graphql(&token).await;
    assert_eq!(
        ok.body,
        json!({"data": {"site": {"settings": {"storeName": demo::STORE_NAME}}}})
    );
}

#[tokio::test]
async fn tokens_expire_on_the_emulator_clock() {
    let emu = Emu::demo().await;
    let token = emu
        .mint(
            "api-token",
            json!({"channel_id": 1, "expires_at": in_secs(60)}),
        )
        .await;
    assert_eq!(emu.graphql(&token).await.status, 200);
    emu.admin.set_clock_offset(61_000).await.unwrap();
    let a = emu.graphql(&token).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body, graphql_error("JWT is expired"));
    assert_eq!(
        emu.admin.storefront_tokens("abc123").await.unwrap()[0].state,
        TokenState::Expired
    );
    assert!(emu
        .admin
        .live_storefront_tokens("abc123")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn only_impersonation_tokens_may_name_a_customer() {
    let emu = Emu::demo().await;
    let storefront = emu.mint_storefront().await;
    let impersonation = emu
        .mint(
            "api-token-customer-impersonation",
            json!({"channel_id": 1, "expires_at": in_secs(60)}),
        )
        .await;
    let cases = [
        (impersonation.as_str(), "42", 200),
        (impersonation.as_str(), "zero", 400),
        (storefront.as_str(), "42", 401),
    ];
    for (token, customer, expected) in cases {
        let a = send(
            emu.req(Method::POST, "/store-abc123/graphql")
                .bearer_auth(token)
                .header("X-Bc-Customer-Id", customer)
                .json(&json!({"query": "{ site { settings { storeName } } }"})),
        )
        .await;
        assert_eq!(a.status, expected, "{customer}: {}", a.body);
    }
}
