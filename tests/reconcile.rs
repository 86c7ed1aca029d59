//! The reconcile by folder, end to end: the real binary against a real OpenBao behind a counting
//! proxy, reconciling every second. The credentials that share a folder are reconciled with one
//! `detailed-metadata` listing per folder, and each out-of-band change is detected exactly when a
//! metadata read of the credential's own detects it (a detected change is read whole, which
//! reads the credential's state record: that read is what the test counts). Where the listing is
//! refused (403 by the token's policy, 404 from a server without it) the daemon reads each
//! credential's metadata by itself, says so once, and detects the same changes.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::OpenBao;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// The policy grants `list` on the folders' `detailed-metadata`.
    Listed,
    /// The policy does not (403).
    Denied,
    /// The server answers 404 to every `detailed-metadata` request (HashiCorp Vault).
    Unsupported,
}

/// Four credentials in one folder, one alone in another, and a credential set of two members in
/// a third.
fn config(addr: &str) -> String {
    let mut text = format!(
        r#"
[vault]
address = "{addr}"
[vault.auth]
method = "token"

[defaults]
max_age = "30d"

[[credential_sets]]
name = "members"
path = "members/{{id}}"
discovery_interval = "1h"
[credential_sets.exec]
mint = ["/bin/true"]
verify = ["/bin/true"]
revoke = ["/bin/true"]
fields = ["key"]
"#
    );
    for (name, path) in [
        ("f-a", "folder/a"),
        ("f-b", "folder/b"),
        ("f-c", "folder/c"),
        ("f-d", "folder/d"),
        ("alone", "alone/x"),
    ] {
        text.push_str(&format!(
            r#"
[[credentials]]
name = "{name}"
path = "{path}"
[credentials.exec]
mint = ["/bin/true"]
verify = ["/bin/true"]
revoke = ["/bin/true"]
fields = ["key"]
"#
        ));
    }
    text
}

fn policy(listing: bool) -> String {
    let mut hcl = String::from(
        r#"
path "secret/data/*" { capabilities = ["read", "create", "update"] }
path "secret/metadata/*" { capabilities = ["read", "update", "list", "delete"] }
path "sys/health" { capabilities = ["read"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
path "sys/capabilities-self" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
"#,
    );
    if listing {
        hcl.push_str(
            r#"
path "secret/detailed-metadata/folder/" { capabilities = ["list"] }
path "secret/detailed-metadata/members/" { capabilities = ["list"] }
"#,
        );
    }
    hcl
}

/// An out-of-band change, as an operator would make it.
#[derive(Debug, Clone, Copy)]
enum Change {
    NewVersion(&'static str),
    DeleteLatest(&'static str),
    DestroyVersion(&'static str, u64),
    CustomMetadata(&'static str, &'static str, &'static str),
    DeleteWithMetadata(&'static str),
}

impl Change {
    async fn apply(self, bao: &OpenBao) {
        match self {
            Change::NewVersion(path) => {
                bao.write_secret("secret", path, json!({ "key": "by hand" }))
                    .await;
            }
            Change::DeleteLatest(path) => {
                bao.root("DELETE", &format!("secret/data/{path}"), None)
                    .await;
            }
            Change::DestroyVersion(path, version) => {
                bao.root(
                    "PUT",
                    &format!("secret/destroy/{path}"),
                    Some(json!({ "versions": [version] })),
                )
                .await;
            }
            Change::CustomMetadata(path, key, value) => {
                bao.root(
                    "POST",
                    &format!("secret/metadata/{path}"),
                    Some(json!({ "custom_metadata": { key: value } })),
                )
                .await;
            }
            Change::DeleteWithMetadata(path) => {
                bao.root("DELETE", &format!("secret/metadata/{path}"), None)
                    .await;
            }
        }
    }
}

/// Each change, the credential it touches, and whether a reconcile detects it (as a metadata
/// read of the credential's own does: the current version changed, or a set member's
/// custom_metadata overrides its policy).
const CHANGES: &[(Change, &str, bool)] = &[
    (Change::NewVersion("folder/b"), "f-b", true),
    (Change::DeleteLatest("folder/c"), "f-c", false),
    (Change::DestroyVersion("folder/d", 1), "f-d", false),
    (
        Change::CustomMetadata("members/m1", "max_age", "40d"),
        "members/m1",
        true,
    ),
    (
        Change::CustomMetadata("members/m2", "owner", "team-a"),
        "members/m2",
        false,
    ),
    (Change::DeleteWithMetadata("folder/a"), "f-a", true),
    (Change::NewVersion("alone/x"), "alone", true),
];

struct Run {
    bao: OpenBao,
    proxy: Proxy,
    daemon: tokio::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(mode: Mode) -> Run {
    let bao = OpenBao::start().await;
    for path in [
        "folder/a",
        "folder/b",
        "folder/c",
        "folder/d",
        "alone/x",
        "members/m1",
        "members/m2",
    ] {
        bao.write_secret("secret", path, json!({ "key": "v1" }))
            .await;
    }
    let proxy = Proxy::start(bao.socket_addr()).await;
    if mode == Mode::Unsupported {
        for nth in 1..=50 {
            proxy.answer("GET", "/detailed-metadata/", nth, 404);
        }
    }
    let token = bao
        .token_with_exact_policy("rotator", &policy(mode == Mode::Listed))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text_for(&proxy)).unwrap();
    let log = dir.path().join("daemon.log");
    let daemon = tokio::process::Command::new(common::binary())
        .arg("--config")
        .arg(&config)
        .args(["run", "--interval", "1s"])
        .env("VAULT_TOKEN", &token)
        .env("SECRET_ROTATOR_INSTANCE_ID", format!("reconcile-{mode:?}"))
        .env("SECRET_ROTATOR_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let run = Run {
        bao,
        proxy,
        daemon,
        log,
        _dir: dir,
    };
    let start = Instant::now();
    while !run.log_text().contains("\"ready\"") && !run.log_text().contains(" ready") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{mode:?}: not ready: {}",
            run.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The start-up checks run after READY; then a few reconciles.
    tokio::time::sleep(Duration::from_secs(3)).await;
    run
}

fn config_text_for(proxy: &Proxy) -> String {
    config(&proxy.url())
}

impl Run {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Reads of `name`'s state record so far: one per full read.
    fn full_reads(&self, name: &str) -> usize {
        self.proxy.count(
            "GET",
            &format!("/v1/secret/data/secret-rotator/credentials/{name}"),
        )
    }

    fn metadata_reads(&self, path: &str) -> usize {
        self.proxy
            .count("GET", &format!("/v1/secret/metadata/{path}"))
    }

    fn listings(&self) -> usize {
        self.proxy.count("GET", "/v1/secret/detailed-metadata/")
    }
}

/// Apply each change in turn; which ones the daemon read whole afterwards.
async fn detected(run: &Run) -> Vec<(&'static str, bool)> {
    let mut seen = Vec::new();
    for (change, name, _) in CHANGES {
        let before = run.full_reads(name);
        change.apply(&run.bao).await;
        // Over two reconcile intervals.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        seen.push((*name, run.full_reads(name) > before));
    }
    seen
}

async fn check(mode: Mode) {
    let mut run = start(mode).await;
    let listings_at_start = run.listings();
    let unchanged_reads_at_start = run.metadata_reads("folder/c") + run.metadata_reads("folder/d");

    let seen = detected(&run).await;
    let expected: Vec<(&str, bool)> = CHANGES.iter().map(|(_, n, d)| (*n, *d)).collect();
    assert_eq!(seen, expected, "{mode:?}: what the reconcile detected");

    // Two credentials nothing changed for (a deleted or destroyed version keeps the current
    // version): read by themselves only when their folder is not listed.
    let unchanged_reads =
        run.metadata_reads("folder/c") + run.metadata_reads("folder/d") - unchanged_reads_at_start;
    let listings = run.listings() - listings_at_start;
    let log = run.log_text();
    match mode {
        Mode::Listed => {
            assert_eq!(unchanged_reads, 0, "{mode:?}");
            // About one per folder (folder/, members/) per second.
            assert!(listings >= 20, "{mode:?}: {listings} listings");
            assert!(!log.contains("may not list"), "{log}");
        }
        Mode::Denied | Mode::Unsupported => {
            // About one each per second.
            assert!(unchanged_reads >= 20, "{mode:?}: {unchanged_reads}");
            assert_eq!(listings, 0, "{mode:?}: the refusal is remembered");
            let said = if mode == Mode::Denied {
                "may not list this folder's metadata"
            } else {
                "this server has no detailed-metadata listing"
            };
            assert_eq!(log.matches(said).count(), 1, "{mode:?}: {log}");
        }
    }
    run.daemon.kill().await.unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_s_listing_detects_what_each_credential_s_own_metadata_read_detects() {
    // The three side by side: the same changes, the same verdicts.
    tokio::join!(
        check(Mode::Listed),
        check(Mode::Denied),
        check(Mode::Unsupported)
    );
}
