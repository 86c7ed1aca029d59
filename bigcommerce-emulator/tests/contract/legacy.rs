//! Legacy API accounts and users: Basic auth on `/store-{hash}/api/v2/`, regeneration.

use bigcommerce_emulator::{demo, Access, Resource, Scopes};
use reqwest::Method;

use crate::{send, Answer, Emu};

async fn basic(emu: &Emu, method: Method, path: &str, user: &str, token: &str) -> Answer {
    send(
        emu.req(method, &format!("/store-abc123/api/v2/{path}"))
            .basic_auth(user, Some(token)),
    )
    .await
}

#[tokio::test]
async fn basic_auth_table() {
    let emu = Emu::demo().await;
    emu.admin
        .create_user(
            "abc123",
            "reader",
            Some(Scopes::none().with(Resource::Orders, Access::ReadOnly)),
        )
        .await
        .unwrap();
    let reader = emu
        .admin
        .users("abc123")
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.username == "reader")
        .unwrap();
    let cases: [(Method, &str, &str, &str, u16); 9] = [
        (
            Method::GET,
            "time",
            demo::LEGACY_USERNAME,
            demo::LEGACY_TOKEN,
            200,
        ),
        (
            Method::GET,
            "store",
            demo::LEGACY_USERNAME,
            demo::LEGACY_TOKEN,
            200,
        ),
        (
            Method::GET,
            "time",
            demo::USER_USERNAME,
            demo::USER_TOKEN,
            200,
        ),
        (Method::GET, "time", demo::LEGACY_USERNAME, "wrong", 401),
        (Method::GET, "time", "nobody", demo::LEGACY_TOKEN, 401),
        (Method::GET, "orders", "reader", &reader.token, 200),
        (Method::POST, "orders", "reader", &reader.token, 403),
        (Method::GET, "time", "reader", &reader.token, 403),
        (
            Method::POST,
            "orders",
            demo::LEGACY_USERNAME,
            demo::LEGACY_TOKEN,
            422,
        ),
    ];
    for (method, path, user, token, expected) in cases {
        let a = basic(&emu, method.clone(), path, user, token).await;
        assert_eq!(a.status, expected, "{method} {path} as {user}: {}", a.body);
        assert!(
            a.header("x-bc-apilimit-remaining").is_some(),
            "{method} {path}"
        );
        if expected >= 400 {
            assert_eq!(a.body[0]["status"], expected, "v2 errors are arrays");
        }
    }
    let none = send(emu.req(Method::GET, "/store-abc123/api/v2/time")).await;
    assert_eq!(none.status, 401);
    let time = basic(
        &emu,
        Method::GET,
        "time",
        demo::LEGACY_USERNAME,
        demo::LEGACY_TOKEN,
    )
    .await;
    assert!(time.body["time"].is_i64());
}

#[tokio::test]
async fn the_hourly_remainder_counts_down() {
    let emu = Emu::demo().await;
    let mut seen = vec![];
    for _ in 0..3 {
        let a = basic(
            &emu,
            Method::GET,
            "time",
            demo::LEGACY_USERNAME,
            demo::LEGACY_TOKEN,
        )
        .await;
        seen.push(
            a.header("x-bc-apilimit-remaining")
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
    }
    assert_eq!(seen, [19_999, 19_998, 19_997]);
}

#[tokio::test]
async fn regenerating_a_token_kills_the_old_one_at_once() {
    let emu = Emu::demo().await;
    let legacy = emu
        .admin
        .regenerate_legacy_token("abc123", demo::LEGACY_USERNAME)
        .await
        .unwrap();
    let user = emu
        .admin
        .regenerate_user_token("abc123", demo::USER_USERNAME)
        .await
        .unwrap();
    let cases = [
        (demo::LEGACY_USERNAME, demo::LEGACY_TOKEN, 401),
        (demo::LEGACY_USERNAME, legacy.token.as_str(), 200),
        (demo::USER_USERNAME, demo::USER_TOKEN, 401),
        (demo::USER_USERNAME, user.token.as_str(), 200),
    ];
    for (username, token, expected) in cases {
        assert_eq!(
            basic(&emu, Method::GET, "time", username, token)
                .await
                .status,
            expected,
            "{username}"
        );
    }
    assert_eq!(legacy.token.len(), 40);
    assert!(legacy.api_path.ends_with("/store-abc123/api/v2/"));
}

#[tokio::test]
async fn created_disabled_and_deleted_accounts() {
    let emu = Emu::demo().await;
    let made = emu
        .admin
        .create_legacy_account("abc123", "new-app", None)
        .await
        .unwrap();
    assert_eq!(
        basic(&emu, Method::GET, "time", "new-app", &made.token)
            .await
            .status,
        200
    );
    emu.admin
        .delete_legacy_account("abc123", "new-app")
        .await
        .unwrap();
    assert_eq!(
        basic(&emu, Method::GET, "time", "new-app", &made.token)
            .await
            .status,
        401
    );
    emu.admin
        .set_user_api_enabled("abc123", demo::USER_USERNAME, false)
        .await
        .unwrap();
    assert_eq!(
        basic(
            &emu,
            Method::GET,
            "time",
            demo::USER_USERNAME,
            demo::USER_TOKEN
        )
        .await
        .status,
        401
    );
    let taken = emu
        .admin
        .create_user("abc123", demo::LEGACY_USERNAME, None)
        .await;
    assert!(matches!(
        taken,
        Err(bigcommerce_emulator::AdminClientError::Status { status: 409, .. })
    ));
}

#[tokio::test]
async fn a_spent_hourly_quota_is_429() {
    let mut seed = bigcommerce_emulator::Seed::demo();
    seed.stores[0].legacy_hourly_quota = 2;
    let emu = Emu::with(bigcommerce_emulator::EmulatorConfig::new(seed)).await;
    let mut seen = vec![];
    for _ in 0..3 {
        let a = basic(
            &emu,
            Method::GET,
            "time",
            demo::LEGACY_USERNAME,
            demo::LEGACY_TOKEN,
        )
        .await;
        seen.push((
            a.status,
            a.header("x-bc-apilimit-remaining").map(str::to_string),
        ));
    }
    let expected = [(200, "1"), (200, "0"), (429, "0")];
    for ((status, remaining), (want_status, want_remaining)) in seen.iter().zip(expected) {
        assert_eq!(
            (*status, remaining.as_deref()),
            (want_status, Some(want_remaining))
        );
    }
}
