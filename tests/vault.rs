//! The `vault` module against a real OpenBao dev server: reads, check-and-set writes, error
//! classification, AppRole login and token renewal.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::proxy::Proxy;
use common::{vault_config, OpenBao, ROOT_TOKEN};
use secrecy::SecretString;
use secret_rotator::config::KvPath;
use secret_rotator::secret::SecretFields;
use secret_rotator::vault::{Login, SecretMetadata, Vault, VaultError};
use serde_json::json;

fn kv(path: &str) -> KvPath {
    KvPath {
        mount: "secret".into(),
        path: path.into(),
    }
}

async fn connect(bao: &OpenBao, token: &str) -> Vault {
    Vault::connect(
        &vault_config(&bao.addr),
        Login::Token(SecretString::from(token.to_string())),
    )
    .await
    .expect("connect")
}

#[tokio::test]
async fn reads_data_version_and_age_in_one_round_trip() {
    let bao = OpenBao::start().await;
    let vault = connect(&bao, ROOT_TOKEN).await;
    let written_at = Utc::now();
    bao.write_secret("secret", "app/one", json!({ "token": "v1-value" }))
        .await;

    let v = vault.read(&kv("app/one")).await.unwrap();
    assert_eq!(v.version, 1);
    assert_eq!(v.data.expose("token"), Some("v1-value"));
    let skew = (v.created_time - written_at).num_milliseconds().abs();
    assert!(skew < 2000, "created_time off by {skew} ms");

    bao.write_secret("secret", "app/one", json!({ "token": "v2-value" }))
        .await;
    let v = vault.read(&kv("app/one")).await.unwrap();
    assert_eq!(v.version, 2);
    let old = vault.read_version(&kv("app/one"), 1).await.unwrap();
    assert_eq!(old.data.expose("token"), Some("v1-value"));
    let meta = vault.read_metadata(&kv("app/one")).await.unwrap();
    assert_eq!(meta.current_version, 2);
    assert_eq!(meta.versions.len(), 2);
}

#[tokio::test]
async fn check_and_set_accepts_only_the_version_read() {
    let bao = OpenBao::start().await;
    let vault = connect(&bao, ROOT_TOKEN).await;
    let path = kv("cas/x");
    let data = SecretFields::new().with("token", "a");

    // cas=0 creates; a second cas=0 is a mismatch.
    assert_eq!(vault.write_cas(&path, &data, 0).await.unwrap(), 1);
    let cases = [(0, false), (2, false), (7, false), (1, true)];
    for (expected, ok) in cases {
        let r = vault.write_cas(&path, &data, expected).await;
        match (ok, r) {
            (true, Ok(v)) => assert_eq!(v, 2),
            (false, Err(VaultError::CasMismatch { path })) => assert_eq!(path, "secret/cas/x"),
            (ok, other) => panic!("cas={expected}: expected ok={ok}, got {other:?}"),
        }
    }
    assert_eq!(vault.stats.writes.load(Ordering::Relaxed), 5);
}

#[tokio::test]
async fn classifies_not_found_permission_denied_and_sealed() {
    let bao = OpenBao::start().await;
    let root = connect(&bao, ROOT_TOKEN).await;

    let missing = root.read(&kv("nothing/here")).await.unwrap_err();
    assert!(
        matches!(missing, VaultError::NotFound { ref path } if path == "secret/nothing/here"),
        "{missing:?}"
    );
    assert!(!missing.is_retryable());
    assert!(root
        .read_optional(&kv("nothing/here"))
        .await
        .unwrap()
        .is_none());

    bao.write_secret("secret", "team-b/db", json!({ "password": "x" }))
        .await;
    let limited = bao
        .token_with_policy(
            "only-team-a",
            r#"path "secret/data/team-a/*" { capabilities = ["read"] }"#,
        )
        .await;
    let vault = connect(&bao, &limited).await;
    let denied = vault.read(&kv("team-b/db")).await.unwrap_err();
    assert!(
        matches!(denied, VaultError::PermissionDenied { ref path } if path == "secret/team-b/db"),
        "{denied:?}"
    );
    assert!(!denied.is_retryable());
    assert!(denied.to_string().contains("403"), "{denied}");

    bao.seal().await;
    let sealed = root.read(&kv("team-b/db")).await.unwrap_err();
    assert!(matches!(sealed, VaultError::Sealed { .. }), "{sealed:?}");
    assert!(sealed.is_retryable());
}

#[tokio::test]
async fn an_unreachable_address_is_retryable_and_the_next_one_is_used() {
    let bao = OpenBao::start().await;
    bao.write_secret("secret", "ha/x", json!({ "k": "v" }))
        .await;
    let dead = format!("http://127.0.0.1:{}", common::free_port_pair());

    let mut cfg = vault_config(&dead);
    let only_dead = Vault::connect(
        &cfg,
        Login::Token(SecretString::from(ROOT_TOKEN.to_string())),
    )
    .await
    .unwrap();
    let err = only_dead.read(&kv("ha/x")).await.unwrap_err();
    assert!(matches!(err, VaultError::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());

    cfg.addresses = vec![dead, bao.addr.clone()];
    let both = Vault::connect(
        &cfg,
        Login::Token(SecretString::from(ROOT_TOKEN.to_string())),
    )
    .await
    .unwrap();
    assert_eq!(both.read(&kv("ha/x")).await.unwrap().version, 1);
    assert_eq!(both.active_address(), bao.addr);
}

#[tokio::test]
async fn approle_login_renews_and_logs_in_again_at_max_ttl() {
    let bao = OpenBao::start().await;
    bao.root(
        "PUT",
        "sys/policies/acl/kv-read",
        Some(json!({ "policy": r#"path "secret/data/*" { capabilities = ["read"] }"# })),
    )
    .await;
    bao.approle_role(
        "daemon",
        json!({ "token_ttl": "3s", "token_max_ttl": "7s", "token_policies": ["kv-read"] }),
    )
    .await;
    bao.write_secret("secret", "a/b", json!({ "k": "v" })).await;
    let (secret_id, _) = bao.new_secret_id("daemon").await;
    let login = Login::AppRole {
        mount: "approle".into(),
        role_id: bao.role_id("daemon").await,
        secret_id: SecretString::from(secret_id),
    };

    let vault = Arc::new(
        Vault::connect(&vault_config(&bao.addr), login)
            .await
            .unwrap(),
    );
    assert_eq!(vault.stats.logins.load(Ordering::Relaxed), 1);
    let ttl = vault.token_ttl().await.unwrap();
    assert!(ttl.renewable && ttl.ttl <= 3, "{ttl:?}");

    let keeper = {
        let v = vault.clone();
        tokio::spawn(async move { v.maintain_token().await })
    };
    // Without renewal the first token dies at 3 s, and no renewal outlives 7 s.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        vault.read(&kv("a/b")).await.is_ok(),
        "token must still be alive"
    );
    assert!(
        vault.stats.renewals.load(Ordering::Relaxed) >= 1,
        "renewed at least once"
    );
    assert!(
        vault.stats.logins.load(Ordering::Relaxed) >= 2,
        "logged in again near max TTL"
    );
    keeper.abort();
}

#[tokio::test]
async fn a_bad_approle_secret_id_is_a_login_error() {
    let bao = OpenBao::start().await;
    bao.approle_role("daemon", json!({ "token_ttl": "60s" }))
        .await;
    let login = Login::AppRole {
        mount: "approle".into(),
        role_id: bao.role_id("daemon").await,
        secret_id: SecretString::from("not-a-real-secret-id".to_string()),
    };
    let err = Vault::connect(&vault_config(&bao.addr), login)
        .await
        .err()
        .expect("must fail");
    assert!(matches!(err, VaultError::Login { .. }), "{err:?}");
    assert!(!err.to_string().contains("not-a-real-secret-id"));
}

#[tokio::test]
async fn tls_is_verified_against_the_configured_ca_and_never_skipped() {
    let certs = tempfile::tempdir().unwrap();
    let bao = OpenBao::start_tls(certs.path()).await;
    bao.write_secret("secret", "tls/x", json!({ "k": "v" }))
        .await;
    let token = || Login::Token(SecretString::from(ROOT_TOKEN.to_string()));

    let mut cfg = vault_config(&bao.addr);
    cfg.ca_file = Some(certs.path().join("vault-ca.pem"));
    let trusted = Vault::connect(&cfg, token()).await.unwrap();
    assert_eq!(trusted.read(&kv("tls/x")).await.unwrap().version, 1);

    // Without the CA the server's certificate is not trusted: no silent fallback.
    let untrusted = Vault::connect(&vault_config(&bao.addr), token())
        .await
        .unwrap();
    let err = untrusted.read(&kv("tls/x")).await.unwrap_err();
    assert!(matches!(err, VaultError::Unavailable { .. }), "{err:?}");
}

/// A loopback node that says it is the active node (`sys/health` 200), reads every other request
/// in full, counts it, and closes the connection without answering: a reply lost after the
/// request was sent.
async fn hangs_up_after_reading() -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                if head.starts_with("get /v1/sys/health") {
                    let body = r#"{"initialized":true,"sealed":false,"standby":false}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    return;
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                drop(sock);
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn a_write_whose_reply_is_lost_goes_again_only_when_that_is_safe() {
    let bao = OpenBao::start().await;
    bao.write_secret(
        "secret",
        "lost/x",
        json!({ "token": "the-live-credential-value" }),
    )
    .await;
    bao.approle_role("app", json!({ "secret_id_ttl": "1h" }))
        .await;
    let (silent, requests) = hangs_up_after_reading().await;
    let mut cfg = vault_config(&silent);
    cfg.addresses.push(bao.addr.clone());
    let vault = Vault::connect(
        &cfg,
        Login::Token(SecretString::from(ROOT_TOKEN.to_string())),
    )
    .await
    .unwrap();
    assert_eq!(
        vault.active_address(),
        silent,
        "the silent node claims to be active"
    );

    // A secret-id is created by every request that lands: never sent a second time.
    let err = vault
        .approle_generate_secret_id("approle", "app", &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, VaultError::OutcomeUnknown { ref path, .. } if path.ends_with("role/app/secret-id")),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains("may or may not have landed"),
        "{err}"
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "sent once, to the first node only"
    );
    let (status, _) = bao
        .call_as(ROOT_TOKEN, "LIST", "auth/approle/role/app/secret-id", None)
        .await;
    assert_eq!(status, 404, "the second node never created a secret-id");

    // A check-and-set write goes again, to the active node found after: check-and-set makes a
    // second landing a conflict, never a second version.
    let new = SecretFields::new().with("token", "a-new-credential-value-0123456789");
    assert_eq!(vault.write_cas(&kv("lost/x"), &new, 1).await.unwrap(), 2);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    assert_eq!(vault.active_address(), bao.addr);
    assert_eq!(
        vault.stats.writes.load(Ordering::Relaxed),
        1,
        "one write, counted once"
    );
    let read = vault.read(&kv("lost/x")).await.unwrap();
    assert_eq!(read.version, 2);
    assert_eq!(
        read.data.expose("token"),
        Some("a-new-credential-value-0123456789")
    );
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_write_that_landed_with_its_reply_lost_is_an_unknown_outcome_not_a_conflict() {
    let bao = OpenBao::start().await;
    bao.write_secret("secret", "landed/x", json!({ "token": "v1" }))
        .await;
    let proxy = Proxy::start(bao.socket_addr()).await;
    let mut cfg = vault_config(&proxy.url());
    cfg.addresses.push(bao.addr.clone());
    let vault = Vault::connect(
        &cfg,
        Login::Token(SecretString::from(ROOT_TOKEN.to_string())),
    )
    .await
    .unwrap();
    assert_eq!(vault.active_address(), proxy.url());

    // The write lands, its reply is lost; sent again, check-and-set finds the version moved.
    proxy.drop_reply("POST", "secret/data/landed/x", 1);
    let new = SecretFields::new().with("token", "the-new-credential-value-0123456789");
    let err = vault.write_cas(&kv("landed/x"), &new, 1).await.unwrap_err();
    assert!(
        matches!(err, VaultError::OutcomeUnknown { ref path, .. } if path == "secret/landed/x"),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("the-new-credential-value"),
        "{err}"
    );
    let stored = bao.root("GET", "secret/data/landed/x", None).await;
    assert_eq!(stored["data"]["metadata"]["version"], 2, "landed once");
    assert_eq!(
        stored["data"]["data"]["token"],
        "the-new-credential-value-0123456789"
    );
}

#[tokio::test]
async fn a_write_moves_to_the_next_node_when_the_first_did_not_process_it() {
    let (sealed, live) = (OpenBao::start().await, OpenBao::start().await);
    let mut cfg = vault_config(&sealed.addr);
    cfg.addresses.push(live.addr.clone());
    let vault = Vault::connect(
        &cfg,
        Login::Token(SecretString::from(ROOT_TOKEN.to_string())),
    )
    .await
    .unwrap();
    assert_eq!(vault.active_address(), sealed.addr);
    sealed.seal().await;

    let data = SecretFields::new().with("token", "v1");
    assert_eq!(vault.write_cas(&kv("moved/x"), &data, 0).await.unwrap(), 1);
    assert_eq!(vault.active_address(), live.addr);
    assert_eq!(
        vault.stats.writes.load(Ordering::Relaxed),
        1,
        "one write, counted once"
    );
    let stored = live.root("GET", "secret/data/moved/x", None).await;
    assert_eq!(stored["data"]["data"]["token"], "v1");
}

#[tokio::test]
async fn metadata_listing_and_destroying_versions() {
    let bao = OpenBao::start().await;
    let vault = connect(&bao, ROOT_TOKEN).await;
    for (path, n) in [("dir/a", 3), ("dir/sub/b", 1)] {
        for i in 0..n {
            bao.write_secret("secret", path, json!({ "k": format!("v{i}") }))
                .await;
        }
    }

    let mut keys = vault.list("secret", "dir").await.unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "sub/"]);
    assert!(vault.list("secret", "nothing").await.unwrap().is_empty());

    let custom = [("owner".to_string(), "team-a".to_string())].into();
    vault
        .set_custom_metadata(&kv("dir/a"), custom)
        .await
        .unwrap();
    vault.destroy_versions(&kv("dir/a"), &[1, 2]).await.unwrap();
    bao.root("DELETE", "secret/data/dir/a", None).await;

    let meta = vault.read_metadata(&kv("dir/a")).await.unwrap();
    assert_eq!(meta.current_version, 3);
    assert_eq!(meta.custom_metadata["owner"], "team-a");
    let flags = |v: u64| (meta.versions[&v].destroyed, meta.versions[&v].deleted);
    assert_eq!(
        [flags(1), flags(2), flags(3)],
        [(true, false), (true, false), (false, true)]
    );
    assert!(meta.current().unwrap().deleted);

    let (record, version) = vault.read_json(&kv("dir/sub/b")).await.unwrap().unwrap();
    assert_eq!((record["k"].as_str(), version), (Some("v0"), 1));
    assert!(vault.read_json(&kv("dir/none")).await.unwrap().is_none());
}

/// Every key of `folder` with its metadata, by pages of `limit` (OpenBao's detailed listing).
async fn listed(
    vault: &Vault,
    folder: &str,
    limit: usize,
) -> Vec<(String, Option<SecretMetadata>)> {
    let mut all: Vec<(String, Option<SecretMetadata>)> = Vec::new();
    loop {
        let after = all.last().map(|(k, _)| k.clone());
        let page = vault
            .list_metadata_page("secret", folder, after.as_deref(), limit)
            .await
            .unwrap();
        assert!(page.len() <= limit, "a page holds at most the limit");
        let last = page.len() < limit;
        all.extend(page);
        if last {
            return all;
        }
    }
}

#[tokio::test]
async fn a_folder_s_detailed_listing_holds_what_each_key_s_own_metadata_read_says() {
    let bao = OpenBao::start().await;
    let vault = connect(&bao, ROOT_TOKEN).await;
    for key in ["a", "b", "c", "d", "e"] {
        bao.write_secret("secret", &format!("dir/{key}"), json!({ "k": "v1" }))
            .await;
    }
    bao.write_secret("secret", "dir/sub/x", json!({ "k": "v1" }))
        .await;
    // Out-of-band changes, one after the other; after each, every page of the listing (2 keys
    // a page: several pages, a sub-folder among them) holds for each key exactly what a
    // metadata read of that key says.
    let changes: &[(&str, &str, &str, Option<serde_json::Value>)] = &[
        (
            "a new version",
            "POST",
            "secret/data/dir/a",
            Some(json!({ "data": { "k": "v2" } })),
        ),
        (
            "the latest version deleted",
            "DELETE",
            "secret/data/dir/b",
            None,
        ),
        (
            "a version destroyed",
            "PUT",
            "secret/destroy/dir/a",
            Some(json!({ "versions": [1] })),
        ),
        (
            "custom_metadata",
            "POST",
            "secret/metadata/dir/c",
            Some(json!({ "custom_metadata": { "max_age": "2d", "owner": "team-a" } })),
        ),
        (
            "a deleted version undeleted",
            "POST",
            "secret/undelete/dir/b",
            Some(json!({ "versions": [1] })),
        ),
        (
            "a key deleted with its metadata",
            "DELETE",
            "secret/metadata/dir/d",
            None,
        ),
    ];
    for (change, method, path, body) in changes {
        bao.root(method, path, body.clone()).await;
        let listing = listed(&vault, "dir", 2).await;
        let keys: Vec<&str> = listing.iter().map(|(k, _)| k.as_str()).collect();
        let expected: &[&str] = if *change == "a key deleted with its metadata" {
            &["a", "b", "c", "e", "sub/"]
        } else {
            &["a", "b", "c", "d", "e", "sub/"]
        };
        assert_eq!(keys, expected, "{change}");
        for (key, metadata) in listing {
            if key.ends_with('/') {
                assert!(metadata.is_none(), "{change}: a sub-folder has no metadata");
                continue;
            }
            let own = vault
                .read_metadata(&kv(&format!("dir/{key}")))
                .await
                .unwrap();
            assert_eq!(metadata, Some(own), "{change}: {key}");
        }
    }
    // One request for the whole folder when the limit allows it.
    assert_eq!(listed(&vault, "dir", 1000).await.len(), 5);

    // No such folder; a server path that does not exist (HashiCorp Vault has no
    // detailed-metadata): both 404, told apart by the caller.
    let missing = vault
        .list_metadata_page("secret", "nothing", None, 10)
        .await;
    assert!(
        matches!(missing, Err(VaultError::NotFound { .. })),
        "{missing:?}"
    );
    // A token without `list` there.
    let token = bao
        .token_with_policy(
            "no-listing",
            r#"path "secret/metadata/*" { capabilities = ["read", "list"] }"#,
        )
        .await;
    let limited = connect(&bao, &token).await;
    let denied = limited.list_metadata_page("secret", "dir", None, 10).await;
    assert!(
        matches!(denied, Err(VaultError::PermissionDenied { .. })),
        "{denied:?}"
    );
}
