//! The shipped alert rules (`monitoring/secret-rotator.rules.yml`) evaluated by a real Prometheus
//! (Debian's `prometheus` package) on loopback, scraping a real daemon: a parked credential's
//! needs-attention alert goes from inactive to firing through Prometheus's own API, a healthy
//! credential fires nothing, and every metric the rules and the dashboard name is exposed by
//! `/metrics`.
//!
//! Without a `prometheus` binary the test says so and passes, except in CI (`CI=true`), where it
//! fails: CI installs the package (`scripts/test-package.sh`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bigcommerce_emulator::{FaultMode, FaultSpec};
use common::stack::{storefront_credential, Stack, StackOptions, CRED};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Prometheus scrapes the daemon and evaluates the rules this often.
const INTERVAL: &str = "1s";
const ALERT: &str = "SecretRotatorNeedsAttention";

/// The Prometheus server binary, or `None` (with the reason printed) outside CI.
fn prometheus() -> Option<PathBuf> {
    let explicit = std::env::var_os("SECRET_ROTATOR_PROMETHEUS_BIN").map(PathBuf::from);
    let found = explicit.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test: apt-get install prometheus"
        );
        println!("skipped: prometheus is not installed (apt-get install prometheus)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every `secret_rotator_*` name in a text (a rule file, a dashboard).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("secret_rotator_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The sample names and the declared families (`# TYPE name kind`) of an OpenMetrics text.
fn exposed(text: &str) -> (BTreeSet<String>, Vec<(String, String)>) {
    let mut samples = BTreeSet::new();
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            families.push((
                parts.next().unwrap_or_default().to_string(),
                parts.next().unwrap_or_default().to_string(),
            ));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    (samples, families)
}

/// A name a query may use: a sample's, or one its family declares even while it has none yet (a
/// counter `_total`, a histogram's series, a gauge's own name).
fn is_exposed(name: &str, samples: &BTreeSet<String>, families: &[(String, String)]) -> bool {
    samples.contains(name)
        || families.iter().any(|(family, kind)| {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            suffixes.iter().any(|s| format!("{family}{s}") == name)
        })
}

async fn start_prometheus(bin: &Path, dir: &Path, target: &str) -> (tokio::process::Child, String) {
    let rules = Path::new(ROOT).join("monitoring/secret-rotator.rules.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: {INTERVAL}\n  evaluation_interval: {INTERVAL}\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: secret-rotator\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules = rules.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = tokio::process::Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    (child, format!("http://127.0.0.1:{port}"))
}

/// Prometheus's answer to an API GET, once it answers.
async fn api(http: &reqwest::Client, base: &str, path: &str) -> Option<Value> {
    let resp = http.get(format!("{base}{path}")).send().await.ok()?;
    let body: Value = resp.json().await.ok()?;
    (body["status"] == "success").then(|| body["data"].clone())
}

/// The state of the needs-attention rule for `credential`: "inactive" while the rule is loaded
/// and no alert of it names the credential, else the alert's ("pending", "firing").
fn rule_state(rules: &Value, credential: &str) -> Option<String> {
    let rule = rules["groups"]
        .as_array()?
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .find(|r| r["name"] == ALERT)?;
    let alert = rule["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["labels"]["credential"] == credential);
    Some(match alert {
        Some(a) => a["state"].as_str()?.to_string(),
        None => "inactive".to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_credential_fires_needs_attention_in_prometheus_and_a_healthy_one_fires_nothing() {
    let Some(bin) = prometheus() else {
        return;
    };
    // CRED: due at once (2 s max age), its verification rejected by the store, one failure
    // allowed: parked. "healthy": an hour's max age, written just now, never checked for drift.
    let stack = Stack::with(StackOptions {
        max_age: "2s",
        root_token: true,
        revocation_delay_ms: 0,
        ..Default::default()
    })
    .await;
    stack
        .bao
        .write_secret("secret", "bigcommerce/healthy", json!({ "token": "fresh" }))
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    stack
        .admin
        .set_fault(FaultSpec::new(
            "storefront_graphql",
            FaultMode::Error { status: 401 },
        ))
        .await
        .unwrap();
    let admin_port = free_port();
    let mut config = std::fs::read_to_string(&stack.config).unwrap();
    let healthy = storefront_credential("healthy", "bigcommerce/healthy", &stack.emu.base_url());
    config.push_str(&healthy.replace(
        "path = \"bigcommerce/healthy\"\n",
        "path = \"bigcommerce/healthy\"\nmax_age = \"1h\"\ndrift_interval = \"never\"\n",
    ));
    config.push_str(&format!("\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n"));
    std::fs::write(&stack.config, config).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let target = format!("127.0.0.1:{admin_port}");
    let (_prometheus, base) = start_prometheus(&bin, dir.path(), &target).await;
    let http = reqwest::Client::new();

    // The rules are loaded and the alert is inactive before the daemon runs.
    let until = Instant::now() + Duration::from_secs(30);
    let before = loop {
        if let Some(state) = api(&http, &base, "/api/v1/rules")
            .await
            .and_then(|r| rule_state(&r, CRED))
        {
            break state;
        }
        assert!(
            Instant::now() < until,
            "prometheus did not load the rules:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(before, "inactive");

    let started = Instant::now();
    let mut daemon = stack.daemon(&[
        "run",
        "--interval",
        "1s",
        "--attempt-backoff",
        "1s",
        "--failure-budget",
        "1",
    ]);
    let mut seen = vec![before];
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(state) = api(&http, &base, "/api/v1/rules")
            .await
            .and_then(|r| rule_state(&r, CRED))
        {
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            if state == "firing" {
                break;
            }
        }
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon exited:\n{}",
            stack.daemon_log()
        );
        assert!(
            Instant::now() < until,
            "{ALERT} not firing after 90 s: {seen:?}\ndaemon:\n{}",
            stack.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let to_firing = started.elapsed();
    println!(
        "scrape and evaluation interval {INTERVAL}; {ALERT} states {seen:?}; firing {:.1} s after the daemon started",
        to_firing.as_secs_f64()
    );

    // Prometheus's alert list: the parked credential's alert fires with its reason; nothing
    // names the healthy credential, and the daemon is up.
    let alerts = api(&http, &base, "/api/v1/alerts").await.unwrap();
    let alerts = alerts["alerts"].as_array().unwrap();
    let firing = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == ALERT && a["labels"]["credential"] == CRED)
        .unwrap_or_else(|| panic!("{alerts:?}"));
    assert_eq!(firing["state"], "firing");
    assert_eq!(firing["labels"]["reason"], "parked");
    let summary = firing["annotations"]["description"].as_str().unwrap();
    assert!(
        summary.contains(&format!("secret-rotator status {CRED}")),
        "{summary}"
    );
    for alert in alerts {
        assert_ne!(alert["labels"]["credential"], "healthy", "{alert}");
        assert_ne!(alert["labels"]["alertname"], "SecretRotatorDown", "{alert}");
    }

    // Every metric the rules and the dashboard name is exposed by /metrics.
    let text = http
        .get(format!("http://{target}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (samples, families) = exposed(&text);
    for file in [
        "monitoring/secret-rotator.rules.yml",
        "monitoring/grafana-dashboard.json",
    ] {
        let named = metric_names(&std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap());
        assert!(named.len() >= 5, "{file}: {named:?}");
        for name in named {
            assert!(
                is_exposed(&name, &samples, &families),
                "{file} names {name}, which /metrics does not expose:\n{text}"
            );
        }
    }
}
