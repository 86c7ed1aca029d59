//! The admin server of the running daemon: health, readiness, OpenMetrics figures that match
//! `status --json`, and `/v1/status`; and `[admin]` refused on a non-loopback address.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::daemon::Daemon;
use common::stack::{Stack, StackOptions, CRED};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict reader of the OpenMetrics text format (the subset without exemplars and
/// timestamps): every sample belongs to a family declared by `# TYPE` before it, with a suffix
/// its type allows; label values are quoted and escaped; the text ends with `# EOF`.
fn parse_openmetrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut samples = Vec::new();
    let mut ended = false;
    for line in text.lines() {
        if ended {
            return Err(format!("text after # EOF: {line:?}"));
        }
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let arg = parts.next().ok_or(format!("bad metadata line {line:?}"))?;
            if !matches!(kind, "TYPE" | "HELP" | "UNIT") {
                return Err(format!("unknown metadata {line:?}"));
            }
            // Metadata opens a family, or adds to the one just opened (before its samples).
            if current.as_ref().map(|c| c.0.as_str()) != Some(name) {
                if families.contains_key(name) {
                    return Err(format!("family {name} is interleaved with another"));
                }
                families.insert(name.to_string(), "unknown".into());
                current = Some((name.to_string(), "unknown".into()));
            } else if samples
                .last()
                .is_some_and(|s: &Sample| s.name.starts_with(name))
            {
                return Err(format!("metadata of {name} after its samples"));
            }
            match kind {
                "TYPE" => {
                    let allowed = [
                        "counter",
                        "gauge",
                        "histogram",
                        "info",
                        "stateset",
                        "summary",
                        "unknown",
                    ];
                    if !allowed.contains(&arg) {
                        return Err(format!("unknown type in {line:?}"));
                    }
                    families.insert(name.to_string(), arg.to_string());
                    current = Some((name.to_string(), arg.to_string()));
                }
                "UNIT" if !name.ends_with(&format!("_{arg}")) => {
                    return Err(format!("{name} does not end with its unit {arg}"));
                }
                _ => {}
            }
            continue;
        }
        let (family, kind) = current
            .as_ref()
            .ok_or(format!("sample before any # TYPE: {line:?}"))?;
        let (name_labels, value) = line
            .rsplit_once(' ')
            .ok_or(format!("no value in {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| format!("bad value in {line:?}"))?,
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or(format!("unclosed labels in {line:?}"))?;
                (
                    name,
                    parse_labels(body).map_err(|e| format!("{e} in {line:?}"))?,
                )
            }
        };
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            _ => &[""],
        };
        if !suffixes.iter().any(|s| name == format!("{family}{s}")) {
            return Err(format!(
                "sample {name} does not belong to the {kind} {family}"
            ));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    if !ended {
        return Err("no # EOF at the end".into());
    }
    Ok(samples)
}

fn parse_labels(body: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        if chars.next() != Some('"') {
            return Err("label value not quoted".into());
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    _ => return Err("bad escape".into()),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        }
        if labels.insert(key.clone(), value).is_some() {
            return Err(format!("label {key} repeated"));
        }
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(c) => return Err(format!("unexpected {c:?} after a label")),
        }
    }
    Ok(labels)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// The daemon with `[admin]` on a free loopback port, once READY; and that port.
async fn daemon_with_admin(stack: &Stack) -> (Daemon, u16) {
    let port = free_port();
    let mut config = std::fs::read_to_string(&stack.config).unwrap();
    config.push_str(&format!("\n[admin]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&stack.config, config).unwrap();
    let mut daemon = Daemon::start(stack, None);
    daemon
        .expect(Duration::from_secs(60), |l| l == "READY=1")
        .await;
    (daemon, port)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_strict_reader_refuses_what_openmetrics_does_not_allow() {
    let ok = "# TYPE a counter\n# HELP a A.\na_total{x=\"1\"} 2\n# EOF\n";
    assert_eq!(parse_openmetrics(ok).unwrap().len(), 1);
    for bad in [
        "# TYPE a counter\na_total 1\n", // no EOF
        "# TYPE a gauge\na 1\n# TYPE b gauge\n# TYPE a gauge\n# EOF\n", // interleaved
        "# TYPE a counter\na 1\n# EOF\n", // counter without _total
        "# TYPE a gauge\na{x=1} 1\n# EOF\n", // unquoted label
        "# TYPE a gauge\na 1\n# EOF\nb 2\n", // after EOF
        "# TYPE a gauge\n# UNIT a seconds\na 1\n# EOF\n", // unit not in the name
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted: {bad:?}");
    }
}

#[tokio::test]
async fn admin_endpoints_answer_and_metrics_match_status_json() {
    let stack = Stack::with(StackOptions {
        extra_defaults: "jitter = \"0s\"",
        ..StackOptions::default()
    })
    .await;
    let (mut daemon, port) = daemon_with_admin(&stack).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);

    let resp = get("/metrics").await.unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    let samples = parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let now = chrono::Utc::now().timestamp() as f64;

    let out = stack.cli(&["status", "--json"], &[]).await;
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["name"], CRED);

    let cred = [("credential", CRED)];
    assert_eq!(
        value(&samples, "secret_rotator_credentials", &[]),
        Some(1.0)
    );
    let age = value(&samples, "secret_rotator_credential_age_seconds", &cred).unwrap();
    assert!(
        (age - row["age_seconds"].as_f64().unwrap()).abs() <= 2.0,
        "{age} vs {row}"
    );
    let due = value(
        &samples,
        "secret_rotator_credential_next_due_timestamp_seconds",
        &cred,
    )
    .unwrap();
    let due_in = row["due_in_seconds"].as_f64().unwrap();
    assert!(
        (due - (now + due_in)).abs() <= 3.0,
        "{due} vs now {now} + {due_in}"
    );
    let idle = [("credential", CRED), ("phase", "idle")];
    assert!(row["rotation"].is_null());
    assert_eq!(
        value(&samples, "secret_rotator_credential_phase", &idle),
        Some(1.0)
    );
    let attention = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["needs_attention"].is_null())
        .count() as f64;
    assert_eq!(
        value(&samples, "secret_rotator_needs_attention", &[]),
        Some(attention)
    );
    let reads = value(
        &samples,
        "secret_rotator_vault_requests_total",
        &[("kind", "read")],
    )
    .unwrap();
    assert!(reads >= 2.0, "{text}");

    // /v1/status is status --json, read now: the same rows, but for the seconds that passed.
    let status: Value = get("/v1/status").await.unwrap().json().await.unwrap();
    let strip = |v: &Value| {
        let mut v = v.clone();
        for r in v.as_array_mut().unwrap() {
            let r = r.as_object_mut().unwrap();
            r.remove("age_seconds");
            r.remove("due_in_seconds");
        }
        v
    };
    assert_eq!(strip(&status), strip(&rows));

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.exit_code(Duration::from_secs(35)).await, Some(0));
}

#[test]
fn check_config_refuses_a_non_loopback_admin_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    for (admin, code, fragment) in [
        ("listen = \"0.0.0.0:9464\"", 2, "admin.listen"),
        ("listen = \"0.0.0.0:9464\"\nallow_remote = true", 0, "OK"),
        ("listen = \"127.0.0.1:9464\"", 0, "OK"),
    ] {
        std::fs::write(
            &config,
            format!(
                "[vault]\naddress = \"http://127.0.0.1:8200\"\n[vault.auth]\nmethod = \"token\"\n[admin]\n{admin}\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(common::binary())
            .arg("check-config")
            .arg(&config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "{admin}: {text}");
        assert!(text.contains(fragment), "{admin}: {text}");
    }
}

/// A dependent that cannot be reached: its backlog shows in
/// `secret_rotator_dependent_events_waiting`, the events `deliveries` lists as waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_a_dependent_has_yet_to_get_are_a_gauge() {
    use common::stack::{webhook_dependent, WEBHOOK_KEY_PATH};
    // Nothing listens there: every delivery fails.
    let dead = format!("http://127.0.0.1:{}/hook", free_port());
    let stack = Stack::with(StackOptions {
        dependents: webhook_dependent("hook", &dead, ""),
        ..StackOptions::default()
    })
    .await;
    stack
        .bao
        .write_secret(
            "secret",
            WEBHOOK_KEY_PATH,
            serde_json::json!({ "signing_key": common::receiver::TEST_KEY }),
        )
        .await;
    let out = stack.cli(&["rotate", CRED, "--wait"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let (mut daemon, port) = daemon_with_admin(&stack).await;
    let labels = [("credential", CRED), ("dependent", "hook")];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let samples = parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        match value(&samples, "secret_rotator_dependent_events_waiting", &labels) {
            Some(n) if n > 0.0 => break n,
            _ if tokio::time::Instant::now() > deadline => panic!("no backlog gauge:\n{text}"),
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };
    let out = stack.cli(&["deliveries", CRED, "--json"], &[]).await;
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let listed = report["dependents"][0]["waiting"].as_array().unwrap().len();
    // `rotate --wait` recorded credential.rotated and credential.revoked; neither arrived.
    assert_eq!((waiting, listed), (2.0, 2), "{report}");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.exit_code(Duration::from_secs(35)).await, Some(0));
}
