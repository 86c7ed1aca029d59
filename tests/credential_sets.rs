//! Credential sets end to end: the real binary, a real OpenBao, the BigCommerce emulator with
//! three stores. One `[[credential_sets]]` table over `bigcommerce/stores/{store_hash}/storefront`:
//! its members found in Vault (a path whose segment is no store hash refused, naming the set and
//! the path), shown under their set; a member whose `custom_metadata` says `max_age = "2s"`
//! rotated while the others (1 h) are not; a store added in Vault rotated without a reload; a
//! store removed dropped, its secret not made again and its state record left alone.

mod common;

use std::time::{Duration, Instant};

use bigcommerce_emulator::{demo, EmulatorConfig, Seed};
use common::{OpenBao, ROOT_TOKEN};
use serde_json::{json, Value};

const STORES: [&str; 3] = ["abc123", "def456", "ghi789"];

/// The emulator with three stores, each a copy of the demo store under its own hash.
async fn emulator() -> bigcommerce_emulator::RunningEmulator {
    let mut seed = Seed::demo();
    let store = seed.stores[0].clone();
    seed.stores = STORES
        .iter()
        .map(|hash| {
            let mut s = store.clone();
            s.hash = hash.to_string();
            s
        })
        .collect();
    bigcommerce_emulator::start(EmulatorConfig::new(seed))
        .await
        .expect("start the emulator")
}

fn config(bao: &str, base: &str) -> String {
    let head = common::token_config_head(bao, "1h", "1s");
    format!(
        r#"
{head}
[[credential_sets]]
name = "storefronts"
path = "bigcommerce/stores/{{store_hash}}/storefront"
discovery_interval = "1s"
[credential_sets.bigcommerce_storefront]
store_hash = "{{store_hash}}"
api_url = "{base}"
storefront_url = "{base}/store-{{store_hash}}"
access_token = {{ path = "bigcommerce/stores/{{store_hash}}/api", key = "access_token" }}
channel_ids = [1]

[[credential_sets]]
name = "legacy"
path = "bigcommerce/legacy/{{store_hash}}"
[credential_sets.bigcommerce_storefront]
store_hash = "{{store_hash}}"
api_url = "{base}"
access_token = {{ path = "bigcommerce/legacy-api/{{store_hash}}", key = "access_token" }}
channel_ids = [1]
"#
    )
}

/// A store's parent token and a storefront token minted by hand (version 1), as an operator
/// adopting a store writes them; with `max_age` in the storefront secret's `custom_metadata`.
async fn add_store(bao: &OpenBao, http: &reqwest::Client, base: &str, hash: &str, max_age: &str) {
    bao.write_secret(
        "secret",
        &format!("bigcommerce/stores/{hash}/api"),
        json!({ "access_token": demo::ACCESS_TOKEN }),
    )
    .await;
    let answer: Value = http
        .post(format!("{base}/stores/{hash}/v3/storefront/api-token"))
        .header("X-Auth-Token", demo::ACCESS_TOKEN)
        .json(&json!({ "channel_id": 1, "expires_at": chrono::Utc::now().timestamp() + 86_400 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["data"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let path = format!("bigcommerce/stores/{hash}/storefront");
    bao.write_secret("secret", &path, json!({ "token": token }))
        .await;
    bao.root(
        "POST",
        &format!("secret/metadata/{path}"),
        Some(json!({ "custom_metadata": { "max_age": max_age } })),
    )
    .await;
}

/// The store's storefront secret version (0: none).
async fn version(bao: &OpenBao, hash: &str) -> u64 {
    let (status, v) = bao
        .call_as(
            ROOT_TOKEN,
            "GET",
            &format!("secret/metadata/bigcommerce/stores/{hash}/storefront"),
            None,
        )
        .await;
    if status == 404 {
        return 0;
    }
    v["data"]["current_version"].as_u64().unwrap_or(0)
}

async fn wait_for(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn cli(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(common::binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_is_discovered_its_members_rotated_added_and_dropped_without_a_reload() {
    let bao = OpenBao::start().await;
    let emu = emulator().await;
    let base = emu.base_url();
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config(&bao.addr, &base)).unwrap();

    add_store(&bao, &http, &base, "abc123", "1h").await;
    add_store(&bao, &http, &base, "def456", "2s").await;
    // A path the pattern matches whose segment is no store hash.
    bao.write_secret(
        "secret",
        "bigcommerce/stores/Bad-Shop/storefront",
        json!({ "token": "x" }),
    )
    .await;

    // check-config: the members counted; the refused path and the set matching nothing named
    // with the set, where it is written and the path.
    let (code, out, err) = cli(&config_path, &["check-config"]).await;
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        out.contains("credential set storefronts (secret/bigcommerce/stores/{store_hash}/storefront): 2 members"),
        "{out}"
    );
    let located = format!("{}:13:8: credential_sets[0].path", config_path.display());
    assert!(
        err.contains(&format!("{located}: credential set `storefronts`: secret/bigcommerce/stores/Bad-Shop/storefront: segment `store_hash` = `Bad-Shop`: not a valid store hash")),
        "{err}"
    );
    assert!(
        err.contains("credential_sets[1].path: credential set `legacy`: no secret in Vault matches `secret/bigcommerce/legacy/{store_hash}`"),
        "{err}"
    );

    // status: the members under their set.
    let (code, out, err) = cli(&config_path, &["status"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[1].starts_with("storefronts/ (2 members)"), "{out}");
    assert!(lines[2].trim_start().starts_with("abc123 "), "{out}");
    assert!(lines[3].trim_start().starts_with("def456 "), "{out}");
    assert!(
        lines[3].contains(" 2s "),
        "the override shows as the max age: {out}"
    );
    assert!(err.contains("credential set `legacy`: no secret"), "{err}");

    // The daemon: def456 is rotated on its own max age (2 s), abc123 (1 h) is not.
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut daemon = tokio::process::Command::new(common::binary())
        .arg("--config")
        .arg(&config_path)
        .args(["run", "--interval", "2s"])
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .env("SECRET_ROTATOR_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "def456 rotated", async || {
        version(&bao, "def456").await >= 2
    })
    .await;
    assert_eq!(version(&bao, "abc123").await, 1, "abc123 is not due");

    // A store added in Vault is found and rotated, without a reload.
    add_store(&bao, &http, &base, "ghi789", "2s").await;
    wait_for(Duration::from_secs(30), "ghi789 rotated", async || {
        version(&bao, "ghi789").await >= 2
    })
    .await;

    // A store removed is dropped: its secret is not made again, its state record stays.
    bao.root(
        "DELETE",
        "secret/metadata/bigcommerce/stores/def456/storefront",
        None,
    )
    .await;
    let log_path = dir.path().join("daemon.log");
    wait_for(Duration::from_secs(15), "def456 dropped", async || {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .lines()
            .any(|l| l.contains("credential set discovered") && l.contains("removed=1"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        version(&bao, "def456").await,
        0,
        "no secret made for a removed store"
    );
    let (status, record) = bao
        .call_as(
            ROOT_TOKEN,
            "GET",
            "secret/data/secret-rotator/credentials/storefronts/def456",
            None,
        )
        .await;
    assert_eq!(status, 200, "the state record is left alone: {record}");
    assert!(version(&bao, "ghi789").await >= 2);

    // history of a member works by its name.
    let (code, out, err) = cli(&config_path, &["history", "storefronts/ghi789", "--json"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("rotated"), "{out}");

    daemon.kill().await.unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}
