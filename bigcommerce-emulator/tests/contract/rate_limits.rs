//! The per-store quota shared by every client, its headers, and 429.

use std::time::Duration;

use bigcommerce_emulator::{Access, Scopes};
use reqwest::Method;

use crate::{send, Emu, RATE_HEADERS};

fn left(a: &crate::Answer) -> u32 {
    a.header("x-rate-limit-requests-left")
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn every_answer_carries_the_four_headers() {
    let emu = Emu::demo().await;
    emu.admin
        .set_scopes(
            "abc123",
            bigcommerce_emulator::demo::CLIENT_ID,
            Scopes::none(),
        )
        .await
        .unwrap();
    let cases = [
        (emu.api(Method::GET, "/stores/abc123/v2/store"), 403),
        (emu.req(Method::GET, "/stores/abc123/v2/time"), 401),
        (emu.api(Method::GET, "/stores/abc123/v3/unknown"), 404),
    ];
    for (req, status) in cases {
        let a = send(req).await;
        assert_eq!(a.status, status);
        for h in RATE_HEADERS {
            assert!(a.header(h).is_some(), "{h} missing on a {status}");
        }
        assert_eq!(a.header("x-rate-limit-requests-quota"), Some("150"));
        assert_eq!(a.header("x-rate-limit-time-window-ms"), Some("30000"));
    }
}

#[tokio::test]
async fn the_quota_is_shared_by_every_client_of_the_store_then_429() {
    let emu = Emu::demo().await;
    emu.admin
        .set_rate_limit("abc123", 3, Duration::from_secs(30))
        .await
        .unwrap();
    let other = emu
        .admin
        .create_api_account("abc123", "other", Scopes::all(Access::ReadOnly))
        .await
        .unwrap();
    let first = send(emu.api(Method::GET, "/stores/abc123/v2/time")).await;
    let second = send(
        emu.req(Method::GET, "/stores/abc123/v2/time")
            .header("X-Auth-Token", &other.access_token),
    )
    .await;
    let third = send(emu.api(Method::GET, "/stores/abc123/v2/time")).await;
    assert_eq!([left(&first), left(&second), left(&third)], [2, 1, 0]);
    // Admin requests do not count.
    emu.admin.counters().await.unwrap();
    let limited = send(emu.api(Method::GET, "/stores/abc123/v2/time")).await;
    assert_eq!(limited.status, 429);
    let reset_ms: u64 = limited
        .header("x-rate-limit-time-reset-ms")
        .unwrap()
        .parse()
        .unwrap();
    let retry: u64 = limited.header("x-retry-after").unwrap().parse().unwrap();
    assert!(reset_ms > 0 && reset_ms <= 30_000);
    assert_eq!(retry, reset_ms.div_ceil(1000));
    assert_eq!(left(&limited), 0);
    // The window refreshes.
    emu.admin
        .advance_clock(Duration::from_millis(reset_ms))
        .await
        .unwrap();
    let again = send(emu.api(Method::GET, "/stores/abc123/v2/time")).await;
    assert_eq!(again.status, 200);
    assert_eq!(left(&again), 2);
}

#[tokio::test]
async fn the_seed_sets_each_stores_quota() {
    let seed = bigcommerce_emulator::Seed::from_toml_str(
        r#"
        [[stores]]
        hash = "pro1"
        plan = "pro"
        [[stores.api_accounts]]
        name = "a"
        access_token = "proaccesstoken00000000000000001"
        scopes = { all = "read-only" }
        [[stores]]
        hash = "small"
        rate_limit_quota = 7
        rate_limit_window_ms = 5000
        [[stores.api_accounts]]
        name = "a"
        access_token = "smallaccesstoken000000000000001"
        scopes = { all = "read-only" }
        "#,
    )
    .unwrap();
    let emu = Emu::with(bigcommerce_emulator::EmulatorConfig::new(seed)).await;
    let cases = [
        ("pro1", "proaccesstoken00000000000000001", "450", "30000"),
        ("small", "smallaccesstoken000000000000001", "7", "5000"),
    ];
    for (hash, token, quota, window) in cases {
        let a = send(
            emu.req(Method::GET, &format!("/stores/{hash}/v2/time"))
                .header("X-Auth-Token", token),
        )
        .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-rate-limit-requests-quota"), Some(quota));
        assert_eq!(a.header("x-rate-limit-time-window-ms"), Some(window));
    }
}

#[tokio::test]
async fn storefront_graphql_is_not_under_the_rest_quota() {
    let emu = Emu::demo().await;
    let token = emu.mint_storefront().await;
    emu.admin
        .set_rate_limit("abc123", 1, Duration::from_secs(30))
        .await
        .unwrap();
    for _ in 0..3 {
        let a = emu.graphql(&token).await;
        assert_eq!(a.status, 200);
        assert!(a.header("x-rate-limit-requests-left").is_none());
    }
}
