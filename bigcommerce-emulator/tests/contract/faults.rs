//! Fault injection: latency, error statuses, 429 storms, drop-after-commit, a gateway's answer
//! after commit.

use std::time::{Duration, Instant};

use bigcommerce_emulator::{EmulatorConfig, FaultMode, FaultSpec, Seed, TokenState};
use reqwest::Method;
use serde_json::json;

use crate::{in_secs, send, Emu, RATE_HEADERS};

#[tokio::test]
async fn latency_delays_only_its_endpoint() {
    let emu = Emu::demo().await;
    emu.admin
        .set_fault(FaultSpec::new(
            "v2_time",
            FaultMode::Latency { latency_ms: 300 },
        ))
        .await
        .unwrap();
    let cases = [
        ("/stores/abc123/v2/time", true),
        ("/stores/abc123/v2/store", false),
    ];
    for (path, slow) in cases {
        let started = Instant::now();
        assert_eq!(send(emu.api(Method::GET, path)).await.status, 200);
        let took = started.elapsed();
        assert_eq!(
            took >= Duration::from_millis(300),
            slow,
            "{path} took {took:?}"
        );
    }
}

#[tokio::test]
async fn injected_statuses_hit_the_next_n_requests() {
    let emu = Emu::demo().await;
    let cases = [
        ("v2_time", "/stores/abc123/v2/time", 500),
        ("v2_store", "/stores/abc123/v2/store", 502),
        ("scope_probe", "/stores/abc123/v3/catalog/summary", 503),
        ("v2_time", "/stores/abc123/v2/time", 401),
    ];
    for (endpoint, path, status) in cases {
        emu.admin
            .set_fault(FaultSpec::new(endpoint, FaultMode::Error { status }).count(2))
            .await
            .unwrap();
        for _ in 0..2 {
            assert_eq!(
                send(emu.api(Method::GET, path)).await.status,
                status,
                "{endpoint}"
            );
        }
        assert_eq!(
            send(emu.api(Method::GET, path)).await.status,
            200,
            "{endpoint} after its count"
        );
    }
    assert!(emu.admin.faults().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_injected_401_makes_a_verifier_see_rejection() {
    let emu = Emu::demo().await;
    let token = emu.mint_storefront().await;
    emu.admin
        .set_fault(FaultSpec::new("storefront_graphql", FaultMode::Error { status: 401 }).count(1))
        .await
        .unwrap();
    let a = emu.graphql(&token).await;
    assert_eq!(a.status, 401);
    assert!(a.body["errors"][0]["message"].is_string());
    assert_eq!(emu.graphql(&token).await.status, 200);
}

#[tokio::test]
async fn the_error_rate_comes_from_a_seeded_generator() {
    let mut seed = Seed::demo();
    seed.rng_seed = Some(11);
    let emu = Emu::with(EmulatorConfig::new(seed)).await;
    emu.admin
        .set_rate_limit("abc123", 10_000, Duration::from_secs(30))
        .await
        .unwrap();
    emu.admin
        .set_fault(FaultSpec::new("*", FaultMode::Error { status: 503 }).rate(0.3))
        .await
        .unwrap();
    let mut failed = 0;
    for _ in 0..200 {
        if send(emu.api(Method::GET, "/stores/abc123/v2/time"))
            .await
            .status
            == 503
        {
            failed += 1;
        }
    }
    assert!((35..=85).contains(&failed), "{failed} of 200 at rate 0.3");
    emu.admin.clear_faults().await.unwrap();
    assert_eq!(
        send(emu.api(Method::GET, "/stores/abc123/v2/time"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn rate_limit_storms_with_and_without_headers() {
    let emu = Emu::demo().await;
    for with_headers in [true, false] {
        emu.admin
            .set_fault(FaultSpec::new("*", FaultMode::RateLimitStorm { with_headers }).count(1))
            .await
            .unwrap();
        let a = send(emu.api(Method::GET, "/stores/abc123/v2/time")).await;
        assert_eq!(a.status, 429);
        for h in RATE_HEADERS.iter().chain(&["x-retry-after"]) {
            assert_eq!(
                a.header(h).is_some(),
                with_headers,
                "{h} with_headers={with_headers}"
            );
        }
    }
}

#[tokio::test]
async fn drop_after_commit_mints_the_token_but_never_answers() {
    let emu = Emu::demo().await;
    let fault = emu
        .admin
        .set_fault(FaultSpec::new("storefront_token_create", FaultMode::DropAfterCommit).count(1))
        .await
        .unwrap();
    assert_eq!(emu.admin.faults().await.unwrap(), vec![fault.clone()]);
    let outcome = emu
        .api(Method::POST, "/stores/abc123/v3/storefront/api-token")
        .json(&json!({"channel_id": 1, "expires_at": in_secs(600)}))
        .send()
        .await;
    assert!(
        outcome.is_err(),
        "the client sees a connection error: {outcome:?}"
    );
    let tokens = emu.admin.storefront_tokens("abc123").await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].state, TokenState::Live);
    let counters = emu.admin.counters().await.unwrap();
    assert_eq!(counters.tokens_minted, 1);
    assert_eq!(counters.connections_dropped, 1);
    assert_eq!(counters.requests_by_status.get("dropped"), Some(&1));
    // The next request is answered.
    emu.mint_storefront().await;
}

#[tokio::test]
async fn gateway_after_commit_mints_the_token_then_answers_the_gateway_status_after_the_delay() {
    let emu = Emu::demo().await;
    // (status, delay): a gateway's 502, and its 504 after a timeout.
    let cases = [(502, 0), (504, 400)];
    for (n, (status, delay_ms)) in cases.into_iter().enumerate() {
        emu.admin
            .set_fault(
                FaultSpec::new(
                    "storefront_token_create",
                    FaultMode::GatewayAfterCommit { status, delay_ms },
                )
                .count(1),
            )
            .await
            .unwrap();
        let started = Instant::now();
        let a = emu
            .api(Method::POST, "/stores/abc123/v3/storefront/api-token")
            .json(&json!({"channel_id": 1, "expires_at": in_secs(600)}))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(a.status().as_u16(), status);
        assert!(
            took >= Duration::from_millis(delay_ms),
            "{status} after {took:?}"
        );
        assert!(a.headers().get("x-rate-limit-requests-left").is_none());
        let text = a.text().await.unwrap();
        assert!(text.starts_with(&status.to_string()), "{text}");
        assert!(
            !text.contains("eyJ"),
            "the token never reaches the client: {text}"
        );
        let tokens = emu.admin.storefront_tokens("abc123").await.unwrap();
        assert_eq!(tokens.len(), n + 1, "{status}: the token was minted");
        assert!(tokens.iter().all(|t| t.state == TokenState::Live));
    }
    assert!(emu.admin.faults().await.unwrap().is_empty());
}

#[tokio::test]
async fn drop_after_commit_on_revoke_still_schedules_it() {
    let emu = Emu::demo().await;
    let token = emu.mint_storefront().await;
    emu.admin
        .set_fault(FaultSpec::new(
            "storefront_token_revoke",
            FaultMode::DropAfterCommit,
        ))
        .await
        .unwrap();
    let outcome = emu
        .api(Method::DELETE, "/stores/abc123/v3/storefront/api-token")
        .header("Sf-Api-Token", &token)
        .send()
        .await;
    assert!(outcome.is_err());
    let tokens = emu.admin.storefront_tokens("abc123").await.unwrap();
    assert_eq!(tokens[0].state, TokenState::RevocationScheduled);
}

#[tokio::test]
async fn invalid_fault_specs_are_refused() {
    let emu = Emu::demo().await;
    let cases = [
        FaultSpec::new("no_such_endpoint", FaultMode::DropAfterCommit),
        FaultSpec::new("*", FaultMode::Error { status: 200 }),
        FaultSpec::new("*", FaultMode::DropAfterCommit).rate(2.0),
        FaultSpec::new(
            "*",
            FaultMode::GatewayAfterCommit {
                status: 404,
                delay_ms: 0,
            },
        ),
    ];
    for spec in cases {
        let got = emu.admin.set_fault(spec.clone()).await;
        assert!(
            matches!(
                got,
                Err(bigcommerce_emulator::AdminClientError::Status { status: 422, .. })
            ),
            "{spec:?}: {got:?}"
        );
    }
    let one = emu
        .admin
        .set_fault(FaultSpec::new("*", FaultMode::Latency { latency_ms: 1 }))
        .await
        .unwrap();
    emu.admin.clear_fault(one.id).await.unwrap();
    assert!(emu.admin.faults().await.unwrap().is_empty());
}
