//! Many storefront credentials on one [`Stack`], daemon instances to rotate them, and the
//! accounting of the emulator's mints against what Vault holds.
//!
//! Credential 0 is the stack's own (`CRED`, adopted at version 1); credentials 1.. are
//! `shared-N`, with no secret until the daemon mints one, or, as members of the credential set
//! `shared` ([`Creds::set`]), `shared/N` at `bigcommerce/shared/N`, found in Vault.

use std::time::{Duration, Instant};

use super::stack::{
    storefront_credential, Stack, StackOptions, ACCESS_TOKEN_PATH, CRED, SECRET_PATH, STORE,
};
use super::ROOT_TOKEN;

pub fn name(i: usize) -> String {
    Creds::written(i + 1).name(i)
}

/// Credentials 0..`count`: written out in the config, or members of the set `shared` (all but
/// credential 0, the stack's own). A count alone is written-out credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    pub count: usize,
    pub set: bool,
}

impl Creds {
    pub fn written(count: usize) -> Creds {
        Creds { count, set: false }
    }

    pub fn set(count: usize) -> Creds {
        Creds { count, set: true }
    }

    pub fn name(&self, i: usize) -> String {
        match i {
            0 => CRED.to_string(),
            _ if self.set => format!("shared/{i}"),
            _ => format!("shared-{i}"),
        }
    }

    pub fn path(&self, i: usize) -> String {
        match i {
            0 => SECRET_PATH.to_string(),
            _ if self.set => format!("bigcommerce/shared/{i}"),
            _ => format!("bigcommerce/shared-{i}"),
        }
    }

    fn all(&self) -> std::ops::Range<usize> {
        0..self.count
    }
}

impl From<usize> for Creds {
    fn from(count: usize) -> Creds {
        Creds::written(count)
    }
}

/// The `[[credential_sets]]` table of [`Creds::set`]: the store's storefront tokens at
/// `bigcommerce/shared/{n}`, listed again every second.
pub fn shared_set(stack: &Stack) -> String {
    let base = stack.emu.base_url();
    format!(
        r#"
[[credential_sets]]
name = "shared"
path = "bigcommerce/shared/{{n}}"
discovery_interval = "1s"
[credential_sets.bigcommerce_storefront]
store_hash = "{STORE}"
api_url = "{base}"
storefront_url = "{base}/store-{STORE}"
access_token = {{ path = "{ACCESS_TOKEN_PATH}", key = "access_token" }}
channel_ids = [1]
"#
    )
}

/// A stack for many credentials: grace 1 s, no revocation delay, the daemon on the root token
/// (the shared paths are outside the example policy).
pub fn options(max_age: &'static str) -> StackOptions {
    StackOptions {
        max_age,
        grace: "1s",
        revocation_delay_ms: 0,
        root_token: true,
        ..Default::default()
    }
}

/// Lift the store's rate limit: these tests are about instances, not the quota.
pub async fn lift_rate_limit(stack: &Stack) {
    stack
        .admin
        .set_rate_limit(STORE, u32::MAX, Duration::from_secs(30))
        .await
        .unwrap();
}

/// Append to the stack's config `before` (more config lines), then credentials 1..`count`.
pub fn add_credentials(stack: &Stack, count: usize, before: &str) {
    let base = stack.emu.base_url();
    let mut config = std::fs::read_to_string(&stack.config).unwrap();
    config.push_str(before);
    let creds = Creds::written(count);
    for i in 1..count {
        config.push_str(&storefront_credential(
            &creds.name(i),
            &creds.path(i),
            &base,
        ));
    }
    std::fs::write(&stack.config, config).unwrap();
}

/// Gives credentials 1..`count` a version 1 minted by hand (an operator adopting existing
/// tokens); returns the tokens of credentials 0..`count`.
pub async fn adopt_secrets(stack: &Stack, creds: impl Into<Creds>) -> Vec<String> {
    let creds = creds.into();
    let mut tokens = vec![stack.current().await.1];
    for i in 1..creds.count {
        tokens.push(adopt_secret(stack, creds, i).await);
    }
    tokens
}

/// Gives credential `i` a version 1 minted by hand; returns its token.
pub async fn adopt_secret(stack: &Stack, creds: Creds, i: usize) -> String {
    let token = stack.mint_by_hand().await;
    stack
        .bao
        .write_secret(
            "secret",
            &creds.path(i),
            serde_json::json!({ "token": token }),
        )
        .await;
    token
}

/// `run --interval 2s` as instance `id`, its log in `{id}.log` in the stack's directory.
pub fn start_instance(stack: &Stack, id: &str) -> tokio::process::Child {
    let log = std::fs::File::create(stack.dir.path().join(format!("{id}.log"))).unwrap();
    tokio::process::Command::new(super::binary())
        .arg("--config")
        .arg(&stack.config)
        .args(["run", "--interval", "2s"])
        .env("VAULT_TOKEN", &stack.token)
        .env("SECRET_ROTATOR_INSTANCE_ID", id)
        .env("SECRET_ROTATOR_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start an instance")
}

/// What instance `id` logged.
pub fn instance_log(stack: &Stack, id: &str) -> String {
    std::fs::read_to_string(stack.dir.path().join(format!("{id}.log"))).unwrap_or_default()
}

/// Every credential's current secret version (0: none yet).
pub async fn versions(stack: &Stack, creds: impl Into<Creds>) -> Vec<u64> {
    let creds = creds.into();
    let mut out = Vec::new();
    for i in creds.all() {
        let (_, meta) = stack
            .bao
            .call_as(
                ROOT_TOKEN,
                "GET",
                &format!("secret/metadata/{}", creds.path(i)),
                None,
            )
            .await;
        out.push(meta["data"]["current_version"].as_u64().unwrap_or(0));
    }
    out
}

/// Waits until every credential has reached its version in `at_least`.
pub async fn wait_for_versions(stack: &Stack, at_least: &[u64], limit: Duration) -> Vec<u64> {
    wait_for_versions_of(stack, at_least.len().into(), at_least, limit).await
}

/// [`wait_for_versions`] of `creds`.
pub async fn wait_for_versions_of(
    stack: &Stack,
    creds: Creds,
    at_least: &[u64],
    limit: Duration,
) -> Vec<u64> {
    let until = Instant::now() + limit;
    loop {
        let now = versions(stack, creds).await;
        if now.iter().zip(at_least).all(|(v, want)| v >= want) {
            return now;
        }
        assert!(
            Instant::now() < until,
            "not every credential reached its version in {limit:?}: {now:?}, wanted {at_least:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every version plus `more`.
pub fn plus(versions: &[u64], more: u64) -> Vec<u64> {
    versions.iter().map(|v| v + more).collect()
}

/// Storefront tokens the emulator has minted, in any state.
pub async fn mints(stack: &Stack) -> usize {
    stack.admin.storefront_tokens(STORE).await.unwrap().len()
}

/// Mints the records account for without a committed version: (certain, possible). Certain:
/// a pending credential, a mint its attempt discarded. Possible: noted orphans (a mint whose
/// answer was lost, or an attempt resumed in `minting`: the mint may or may not have happened,
/// e.g. when the reply to the `minting` write itself was lost in a failover), and attempts
/// stopped in `minting` while a mint may have been under way.
pub async fn uncommitted_in_records(stack: &Stack, creds: impl Into<Creds>) -> (usize, usize) {
    let creds = creds.into();
    let (mut n, mut unsettled) = (0, 0);
    for i in creds.all() {
        let (_, record) = stack
            .bao
            .call_as(
                ROOT_TOKEN,
                "GET",
                &format!("secret/data/secret-rotator/credentials/{}", creds.name(i)),
                None,
            )
            .await;
        let record = &record["data"]["data"];
        let attempt = &record["attempt"];
        let committed = attempt["version_after"].as_u64().is_some();
        if attempt["pending"].is_object() && !committed {
            n += 1;
        }
        if attempt["phase"] == "minting" && attempt["mint_settled"] != true {
            unsettled += 1;
        }
        unsettled += attempt["orphans"].as_array().map_or(0, Vec::len);
        for h in &super::history_of(record) {
            unsettled += h["orphans"].as_array().map_or(0, Vec::len);
            // A mint whose attempt ended without committing it (rejected, aborted): revoked.
            let minted = h["marks"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["phase"] == "minted"));
            if minted && h["version_after"].is_null() {
                n += 1;
            }
        }
    }
    (n, unsettled)
}

/// Every mint is a committed version since `initial`, or accounted for in a record: never two
/// rotations of one version. Returns (minted, committed) for the caller to print.
pub async fn assert_mints_accounted_for(
    stack: &Stack,
    initial: &[u64],
    minted_before: usize,
) -> (u64, u64) {
    assert_mints_accounted_for_of(stack, initial.len().into(), initial, minted_before).await
}

/// [`assert_mints_accounted_for`] of `creds`.
pub async fn assert_mints_accounted_for_of(
    stack: &Stack,
    creds: Creds,
    initial: &[u64],
    minted_before: usize,
) -> (u64, u64) {
    let last = versions(stack, creds).await;
    let committed: u64 = last.iter().zip(initial).map(|(v, i)| v - i).sum();
    let minted = (mints(stack).await - minted_before) as u64;
    let (accounted, unsettled) = uncommitted_in_records(stack, creds).await;
    let (accounted, unsettled) = (accounted as u64, unsettled as u64);
    eprintln!(
        "minted {minted}, committed {committed}, accounted {accounted}, unsettled {unsettled}"
    );
    assert!(
        (committed + accounted..=committed + accounted + unsettled).contains(&minted),
        "minted {minted}, committed {committed}, pending or discarded {accounted}, possible orphans and attempts stopped while a mint may have been under way {unsettled}"
    );
    (minted, committed)
}

/// Never two rotations of one version: each rotation begins at least `min_gap` (a max age
/// less its jitter) after Vault created the version it replaces (after that version's attempt
/// began, for an expiry rotation), never right after another instance's commit. Vault's
/// `created_time`, not the record's commit mark: a commit whose reply was lost in a failover is
/// marked only once a node answers again, seconds later.
pub async fn assert_no_rotation_right_after_another(
    stack: &Stack,
    creds: impl Into<Creds>,
    min_gap: chrono::Duration,
) {
    let creds = creds.into();
    let time = |v: &serde_json::Value| -> chrono::DateTime<chrono::Utc> {
        v.as_str().unwrap().parse().unwrap()
    };
    for i in creds.all() {
        let record = stack
            .bao
            .root(
                "GET",
                &format!("secret/data/secret-rotator/credentials/{}", creds.name(i)),
                None,
            )
            .await;
        let meta = stack
            .bao
            .root("GET", &format!("secret/metadata/{}", creds.path(i)), None)
            .await;
        let history = super::history_of(&record["data"]["data"]);
        let rotated: Vec<&serde_json::Value> = history
            .iter()
            .filter(|h| h["outcome"] == "rotated")
            .collect();
        for pair in rotated.windows(2) {
            let version = pair[0]["version_after"].as_u64().unwrap();
            let created = &meta["data"]["versions"][version.to_string()]["created_time"];
            if created.is_null() {
                continue; // an old version Vault no longer keeps
            }
            // An expiry comes from the previous attempt's start (the mint's planned expiry):
            // a commit held up by a failover may be followed by an expiry rotation soon after.
            let since = if pair[1]["trigger"] == "expiry" {
                time(&pair[0]["started_at"])
            } else {
                time(created)
            };
            let gap = time(&pair[1]["started_at"]) - since;
            assert!(
                gap >= min_gap,
                "{}: attempt {} ({}) began {gap} after version {version} (or its attempt) of attempt {}",
                creds.name(i),
                pair[1]["id"],
                pair[1]["trigger"],
                pair[0]["id"]
            );
        }
    }
}

/// No version lost: every credential's current secret is live at the emulator.
pub async fn assert_current_tokens_live(stack: &Stack, creds: impl Into<Creds>) {
    let creds = creds.into();
    for i in creds.all() {
        let secret = stack
            .bao
            .root("GET", &format!("secret/data/{}", creds.path(i)), None)
            .await;
        let token = secret["data"]["data"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            stack.graphql_status(&token).await,
            200,
            "{}: {secret}",
            creds.name(i)
        );
    }
}
