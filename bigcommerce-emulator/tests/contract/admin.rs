//! The control panel: admin auth, accounts, counters, clock, settings, the state file.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bigcommerce_emulator::credentials::is_access_token;
use bigcommerce_emulator::{
    demo, Access, AdminClientError, EmulatorConfig, Scopes, Seed, TokenState,
};
use reqwest::Method;
use serde_json::json;

use crate::{send, Emu};

#[tokio::test]
async fn the_admin_api_needs_the_admin_token() {
    let emu = Emu::demo().await;
    let cases = [
        (None, 401),
        (Some("wrong"), 401),
        (Some(emu.running.admin_token()), 200),
    ];
    for (token, expected) in cases {
        let mut req = emu.req(Method::GET, "/__admin/counters");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(send(req).await.status, expected, "{token:?}");
    }
    assert_eq!(
        send(emu.req(Method::GET, "/__admin/health")).await.status,
        200
    );
    let given = Emu::with(EmulatorConfig {
        admin_token: Some("given-admin-token".into()),
        ..EmulatorConfig::new(Seed::demo())
    })
    .await;
    assert_eq!(given.running.admin_token(), "given-admin-token");
}

#[tokio::test]
async fn at_most_fifty_store_level_accounts() {
    let emu = Emu::demo().await;
    for i in 1..50 {
        let a = emu
            .admin
            .create_api_account("abc123", &format!("account {i}"), Scopes::none())
            .await
            .unwrap();
        assert!(is_access_token(&a.access_token));
        assert!(is_access_token(&a.client_id));
    }
    let over = emu
        .admin
        .create_api_account("abc123", "one too many", Scopes::none())
        .await;
    assert!(
        matches!(over, Err(AdminClientError::Status { status: 422, .. })),
        "{over:?}"
    );
    assert_eq!(emu.admin.api_accounts("abc123").await.unwrap().len(), 50);
}

#[tokio::test]
async fn rotation_by_two_overlapping_accounts() {
    let emu = Emu::demo().await;
    let new = emu
        .admin
        .create_api_account("abc123", "full-access-2", Scopes::all(Access::Modify))
        .await
        .unwrap();
    let creds = emu.admin.credentials("abc123").await.unwrap();
    assert_eq!(creds.api_accounts.len(), 2);
    assert_eq!(creds.legacy_accounts[0].username, demo::LEGACY_USERNAME);
    assert_eq!(creds.users[0].username, demo::USER_USERNAME);
    emu.admin
        .delete_api_account("abc123", demo::CLIENT_ID)
        .await
        .unwrap();
    let cases = [(demo::ACCESS_TOKEN, 401), (new.access_token.as_str(), 200)];
    for (token, expected) in cases {
        let a = send(
            emu.req(Method::GET, "/stores/abc123/v2/time")
                .header("X-Auth-Token", token),
        )
        .await;
        assert_eq!(a.status, expected);
    }
    let missing = emu
        .admin
        .delete_api_account("abc123", demo::CLIENT_ID)
        .await;
    assert!(matches!(
        missing,
        Err(AdminClientError::Status { status: 404, .. })
    ));
}

#[tokio::test]
async fn counters_by_status_and_endpoint() {
    let emu = Emu::demo().await;
    send(emu.api(Method::GET, "/stores/abc123/v2/time")).await;
    send(emu.req(Method::GET, "/stores/abc123/v2/time")).await;
    send(emu.api(Method::GET, "/stores/abc123/v2/store")).await;
    let c = emu.admin.counters().await.unwrap();
    assert_eq!(c.requests_total, 3);
    assert_eq!(c.by_endpoint("v2_time"), 2);
    assert_eq!(c.by_endpoint("v2_store"), 1);
    assert_eq!((c.by_status(200), c.by_status(401)), (2, 1));
    emu.admin.reset_counters().await.unwrap();
    assert_eq!(emu.admin.counters().await.unwrap().requests_total, 0);
}

#[tokio::test]
async fn the_clock_offset_can_be_set_and_advanced() {
    let emu = Emu::demo().await;
    let before = emu.admin.clock().await.unwrap();
    assert_eq!(before.offset_ms, 0);
    let set = emu.admin.set_clock_offset(3_600_000).await.unwrap();
    assert_eq!(set.offset_ms, 3_600_000);
    let moved = emu
        .admin
        .advance_clock(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(moved.offset_ms, 3_660_000);
    assert!(moved.now_ms >= before.now_ms + 3_660_000);
    let time = send(emu.api(Method::GET, "/stores/abc123/v2/time")).await;
    assert!(time.body["time"].as_i64().unwrap() >= crate::now_secs() + 3_659);
}

#[tokio::test]
async fn store_settings_change_at_run_time() {
    let emu = Emu::demo().await;
    let view = emu
        .admin
        .set_rate_limit("abc123", 5, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (view.rate_limit_quota, view.rate_limit_window_ms),
        (5, 10_000)
    );
    let view = emu
        .admin
        .set_revocation_delay("abc123", Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(view.revocation_delay_ms, 50);
    assert_eq!(emu.admin.stores().await.unwrap(), vec![view.clone()]);
    assert_eq!(
        view.api_path,
        format!("{}/stores/abc123/", emu.running.base_url())
    );
    let missing = emu.admin.store("nosuch").await;
    assert!(matches!(
        missing,
        Err(AdminClientError::Status { status: 404, .. })
    ));
}

#[tokio::test]
async fn a_restarted_emulator_keeps_stores_keys_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let cfg = EmulatorConfig {
        state_file: Some(state.clone()),
        ..EmulatorConfig::new(Seed::demo())
    };
    let first = Emu::with(cfg.clone()).await;
    let token = first.mint_storefront().await;
    let revoked = first.mint_storefront().await;
    first.revoke(&revoked).await;
    let account = first
        .admin
        .create_api_account("abc123", "kept", Scopes::all(Access::ReadOnly))
        .await
        .unwrap();
    first
        .admin
        .regenerate_legacy_token("abc123", demo::LEGACY_USERNAME)
        .await
        .unwrap();
    let tokens_before = first.admin.storefront_tokens("abc123").await.unwrap();
    let creds_before = first.admin.credentials("abc123").await.unwrap();
    first.running.shutdown().await;
    assert_eq!(
        files_in(dir.path()),
        vec!["state.json"],
        "no temporary file left"
    );
    assert_eq!(mode(&state), 0o600, "the state file holds keys and tokens");
    // As a umask of 022 would have left it: the next write tightens it again.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();

    // A different seed: the state file wins.
    let second = Emu::with(EmulatorConfig {
        seed: Seed::from_toml_str("").unwrap(),
        ..cfg
    })
    .await;
    assert_eq!(
        second.admin.storefront_tokens("abc123").await.unwrap(),
        tokens_before
    );
    let creds_after = second.admin.credentials("abc123").await.unwrap();
    assert_eq!(
        creds_after.api_accounts.len(),
        creds_before.api_accounts.len()
    );
    assert_eq!(
        creds_after.legacy_accounts[0].token,
        creds_before.legacy_accounts[0].token
    );
    assert_eq!(
        second.graphql(&token).await.status,
        200,
        "the key survived the restart"
    );
    second
        .admin
        .advance_clock(Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(
        second.graphql(&revoked).await.status,
        401,
        "the scheduled revocation survived"
    );
    assert_eq!(
        second.admin.storefront_tokens("abc123").await.unwrap()[1].state,
        TokenState::Revoked
    );
    let a = send(
        second
            .req(Method::GET, "/stores/abc123/v2/time")
            .header("X-Auth-Token", &account.access_token),
    )
    .await;
    assert_eq!(a.status, 200);
    let minted = second.mint_storefront().await;
    assert_ne!(minted, token);
    let jtis: Vec<String> = second
        .admin
        .storefront_tokens("abc123")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.jti)
        .collect();
    let mut unique = jtis.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), jtis.len());
    second.running.shutdown().await;
    assert_eq!(mode(&state), 0o600);
    let _ = json!({});
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
