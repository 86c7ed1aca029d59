//! REST under `/stores/{hash}/`: `X-Auth-Token`, scopes per resource, error bodies.

use bigcommerce_emulator::endpoints::{Flavor, PROBES};
use bigcommerce_emulator::{demo, Access, Resource, Scopes};
use reqwest::Method;
use serde_json::json;

use crate::{missing_scope_body, now_secs, send, Emu};

#[tokio::test]
async fn time_and_store_answer_with_information_and_settings_read() {
    let emu = Emu::demo().await;
    let time = send(emu.api(Method::GET, "/stores/abc123/v2/time")).await;
    assert_eq!(time.status, 200);
    assert!((time.body["time"].as_i64().unwrap() - now_secs()).abs() <= 2);
    let store = send(emu.api(Method::GET, "/stores/abc123/v2/store")).await;
    assert_eq!(store.status, 200);
    assert_eq!(store.body["name"], demo::STORE_NAME);
    assert_eq!(store.body["id"], "abc123");
}

#[tokio::test]
async fn unknown_missing_or_deleted_tokens_get_401() {
    let emu = Emu::demo().await;
    let gone = emu
        .admin
        .create_api_account("abc123", "short-lived", Scopes::all(Access::Modify))
        .await
        .unwrap();
    emu.admin
        .delete_api_account("abc123", &gone.client_id)
        .await
        .unwrap();
    let cases: [(&str, Option<&str>, bool); 5] = [
        ("/stores/abc123/v2/time", None, true),
        (
            "/stores/abc123/v2/time",
            Some("nottherightaccesstoken000000000"),
            true,
        ),
        (
            "/stores/abc123/v2/store",
            Some(gone.access_token.as_str()),
            true,
        ),
        (
            "/stores/abc123/v3/catalog/summary",
            Some("nottherightaccesstoken000000000"),
            false,
        ),
        (
            "/stores/abc123/v3/customers",
            Some(gone.access_token.as_str()),
            false,
        ),
    ];
    for (path, token, v2) in cases {
        let mut req = emu.req(Method::GET, path);
        if let Some(t) = token {
            req = req.header("X-Auth-Token", t);
        }
        let a = send(req).await;
        assert_eq!(a.status, 401, "{path} {token:?}");
        if v2 {
            assert_eq!(a.body[0]["status"], 401, "v2 errors are arrays: {}", a.body);
        } else {
            assert_eq!(a.body["status"], 401, "{}", a.body);
            assert!(a.body["errors"].is_object());
        }
    }
}

#[tokio::test]
async fn x_auth_client_is_ignored() {
    let emu = Emu::demo().await;
    for client in ["", "someone-else", demo::CLIENT_ID] {
        let a = send(
            emu.api(Method::GET, "/stores/abc123/v2/time")
                .header("X-Auth-Client", client),
        )
        .await;
        assert_eq!(a.status, 200, "X-Auth-Client {client:?}");
    }
}

/// Every probe, for accounts with none, read-only and modify on every resource:
/// GET needs read-only; a write with an empty body is 403 without modify and 422 with it.
#[tokio::test]
async fn each_scope_can_be_probed_without_side_effects() {
    let emu = Emu::demo().await;
    emu.admin
        .set_rate_limit("abc123", 10_000, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    for level in [Access::None, Access::ReadOnly, Access::Modify] {
        let account = emu
            .admin
            .create_api_account("abc123", "probe", Scopes::all(level))
            .await
            .unwrap();
        for (path, resource, flavor) in PROBES {
            let url = format!("/stores/abc123/{path}");
            let read = send(
                emu.req(Method::GET, &url)
                    .header("X-Auth-Token", &account.access_token),
            )
            .await;
            let expected_read = if level >= Access::ReadOnly { 200 } else { 403 };
            assert_eq!(read.status, expected_read, "GET {path} with {level:?}");
            let write = send(
                emu.req(Method::POST, &url)
                    .header("X-Auth-Token", &account.access_token),
            )
            .await;
            let expected_write = if level == Access::Modify { 422 } else { 403 };
            assert_eq!(
                write.status, expected_write,
                "POST {path} with {level:?} ({resource})"
            );
            if write.status == 403 {
                match flavor {
                    Flavor::V3 => assert_eq!(write.body, missing_scope_body(), "{path}"),
                    _ => assert_eq!(write.body[0]["status"], 403, "{path}: {}", write.body),
                }
            }
        }
    }
}

#[tokio::test]
async fn catalog_summary_needs_products_read() {
    let emu = Emu::demo().await;
    let cases = [
        (
            Scopes::none().with(Resource::Products, Access::ReadOnly),
            200,
        ),
        (
            Scopes::all(Access::Modify).with(Resource::Products, Access::None),
            403,
        ),
    ];
    for (scopes, expected) in cases {
        let a = emu
            .admin
            .create_api_account("abc123", "catalog", scopes)
            .await
            .unwrap();
        let got = send(
            emu.req(Method::GET, "/stores/abc123/v3/catalog/summary")
                .header("X-Auth-Token", &a.access_token),
        )
        .await;
        assert_eq!(got.status, expected);
    }
}

#[tokio::test]
async fn removing_a_scope_forces_a_403() {
    let emu = Emu::demo().await;
    let before = send(emu.api(Method::GET, "/stores/abc123/v2/time")).await;
    assert_eq!(before.status, 200);
    let scopes = Scopes::all(Access::Modify).with(Resource::InformationAndSettings, Access::None);
    emu.admin
        .set_scopes("abc123", demo::CLIENT_ID, scopes)
        .await
        .unwrap();
    let after = send(emu.api(Method::GET, "/stores/abc123/v2/time")).await;
    assert_eq!(after.status, 403);
    assert_eq!(
        after.body[0]["message"],
        "You don't have a required scope to access the endpoint"
    );
}

#[tokio::test]
async fn writes_with_a_json_body_are_echoed_not_stored() {
    let emu = Emu::demo().await;
    let cases = [
        ("/stores/abc123/v3/customers", Method::POST, "", 422),
        ("/stores/abc123/v3/customers", Method::PUT, "   ", 422),
        (
            "/stores/abc123/v3/customers",
            Method::POST,
            "{not json",
            422,
        ),
        (
            "/stores/abc123/v3/customers",
            Method::POST,
            r#"[{"email":"a@b.c"}]"#,
            200,
        ),
        ("/stores/abc123/v2/orders", Method::POST, "", 422),
        (
            "/stores/abc123/v2/orders",
            Method::POST,
            r#"{"status_id":1}"#,
            200,
        ),
    ];
    for (path, method, body, expected) in cases {
        let a = send(emu.api(method.clone(), path).body(body)).await;
        assert_eq!(a.status, expected, "{method} {path} {body:?}: {}", a.body);
    }
    let list = send(emu.api(Method::GET, "/stores/abc123/v3/customers")).await;
    assert_eq!(list.body["data"], json!([]));
}

#[tokio::test]
async fn unknown_paths_and_stores_are_404() {
    let emu = Emu::demo().await;
    let cases = [
        ("/stores/abc123/v3/nothing-here", 404),
        ("/stores/abc123/v2/nothing-here", 404),
        ("/stores/nosuchstore/v2/time", 404),
        ("/store-nosuchstore/api/v2/time", 404),
    ];
    for (path, expected) in cases {
        assert_eq!(
            send(emu.api(Method::GET, path)).await.status,
            expected,
            "{path}"
        );
    }
    let v2 = send(emu.api(Method::GET, "/stores/abc123/v2/nothing-here")).await;
    assert_eq!(
        v2.body,
        json!([{"status": 404, "message": "The requested resource was not found."}])
    );
}
