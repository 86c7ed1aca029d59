//! The binary as an operator uses it: check-config, status (against a real OpenBao), exit codes.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{run_cli, OpenBao};
use serde_json::{json, Value};

fn write_config(dir: &std::path::Path, bao_addr: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[vault]
address = "{bao_addr}"
[vault.auth]
method = "token"

[defaults]
max_age = "1h"
grace = "1m"

[[credentials]]
name = "by-hand"
path = "apps/by-hand"
[credentials.vault_approle_secret_id]
role_name = "app"

[[credentials]]
name = "never-written"
path = "apps/never-written"
max_age = "7d"
[credentials.vault_approle_secret_id]
role_name = "app"
"#
        ),
    )
    .unwrap();
    path
}

fn row<'a>(rows: &'a Value, name: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name} in {rows}"))
}

#[test]
fn check_config_accepts_the_example_and_rejects_bad_files_with_located_errors() {
    let root = env!("CARGO_MANIFEST_DIR");
    let cases: &[(&str, &str, i32, &[&str])] = &[
        ("example", "", 0, &["OK", "6 credential(s)"]),
        ("syntax", "[vault\naddress = 1\n", 2, &["bad.toml:1:", "error(s)"]),
        (
            "many errors",
            "[vault]\naddress = \"ftp://x\"\n[vault.auth]\nmethod = \"token\"\n[[credentials]]\nname = \"a b\"\npath = \"x\"\nmax_age = \"3 parsecs\"\n",
            2,
            &["bad.toml:2:", "vault.address", "bad.toml:6:", "credentials[0].name", "bad.toml:8:", "credentials[0].max_age"],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (label, text, code, needles) in cases {
        let path = if text.is_empty() {
            std::path::PathBuf::from(root).join("config/example.toml")
        } else {
            let p = dir.path().join("bad.toml");
            std::fs::write(&p, text).unwrap();
            p
        };
        let out = std::process::Command::new(common::binary())
            .args(["check-config"])
            .arg(&path)
            .env_remove("VAULT_TOKEN")
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(*code), "{label}: {all}");
        for n in *needles {
            assert!(all.contains(n), "{label}: expected {n:?} in {all}");
        }
    }
}

/// Runs `check-config PATH` without a Vault token; returns the exit code and stdout + stderr.
fn check_config(path: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(common::binary())
        .args(["check-config"])
        .arg(path)
        .env_remove("VAULT_TOKEN")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), all)
}

#[test]
fn check_config_never_prints_a_url_password_or_query_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leaky.toml");
    std::fs::write(
        &path,
        r#"[vault]
address = "https://root:hunter2@vault.internal:8200"
[vault.auth]
method = "token"

[[credentials]]
name = "a"
path = "a"
vault_approle_secret_id = { role_name = "a" }
[[credentials.dependents]]
type = "webhook"
name = "hook"
url = "https://hooks.internal:80x/in?token=s3cr3t"
signing_key = { path = "hooks", key = "k" }
"#,
    )
    .unwrap();
    let (code, all) = check_config(&path);
    assert_eq!(code, Some(2), "{all}");
    for secret in ["hunter2", "s3cr3t"] {
        assert!(!all.contains(secret), "{secret:?} in {all}");
    }
    for needle in ["https://***@vault.internal:8200", "hooks.internal"] {
        assert!(all.contains(needle), "expected {needle:?} in {all}");
    }
}

#[test]
fn check_config_refuses_dev_zero_at_once_and_a_directory_without_a_fake_position() {
    let started = std::time::Instant::now();
    let (code, all) = check_config(std::path::Path::new("/dev/zero"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(code, Some(2), "{all}");
    assert!(all.contains("/dev/zero: is a character device"), "{all}");

    let dir = tempfile::tempdir().unwrap();
    let (code, all) = check_config(dir.path());
    assert_eq!(code, Some(2), "{all}");
    let expected = format!("{}: is a directory", dir.path().display());
    assert!(all.contains(&expected), "expected {expected:?} in {all}");
    assert!(!all.contains(":0:0:"), "{all}");

    let big = dir.path().join("big.toml");
    std::fs::write(&big, "#".repeat(64 * 1024 * 1024 + 1)).unwrap();
    let (code, all) = check_config(&big);
    assert_eq!(code, Some(2), "{all}");
    assert!(all.contains("larger than 64 MiB"), "{all}");
}

#[test]
fn usage_errors_exit_64_and_help_lists_exit_codes() {
    let out = std::process::Command::new(common::binary())
        .arg("no-such-command")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let help = std::process::Command::new(common::binary())
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "Exit codes:",
        "2   the configuration is invalid",
        "status --check",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}");
    }
}

fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(common::binary())
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Every flag and positional argument of every subcommand has a sentence of help.
#[test]
fn every_flag_and_argument_has_a_sentence_of_help() {
    use clap::CommandFactory;
    let cli = secret_rotator::cli::Cli::command();
    let mut commands = vec![&cli];
    commands.extend(cli.get_subcommands());
    for command in commands {
        assert!(
            command.get_about().is_some(),
            "{} has no about",
            command.get_name()
        );
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                help.split_whitespace().count() >= 4,
                "{} {id}: {help:?}",
                command.get_name()
            );
        }
    }
}

/// The delivery tuning appears only on the commands that deliver events themselves; the daemon's
/// tuning only under `run`; `status --help` says what `--json` prints.
#[test]
fn each_flag_appears_only_under_the_commands_it_changes() {
    let cases: [(&str, &[&str], &[&str]); 6] = [
        (
            "run",
            &[
                "--delivery-backoff",
                "--failure-budget",
                "--attempt-backoff",
                "--once",
            ],
            &[],
        ),
        (
            "rotate",
            &["--delivery-backoff", "--delivery-budget", "--wait"],
            &["--failure-budget"],
        ),
        (
            "status",
            &[
                "--json",
                "one object per configured credential",
                "overdue_by_seconds",
                "--check",
            ],
            &["--delivery-backoff", "--failure-budget"],
        ),
        (
            "plan",
            &["--config"],
            &["--delivery-backoff", "--attempt-backoff"],
        ),
        ("history", &["--json"], &["--delivery-backoff"]),
        (
            "supply",
            &["64 KiB", "Exit status", "Ctrl-C"],
            &["--failure-budget"],
        ),
    ];
    for (command, present, absent) in cases {
        let text = help(&[command, "--help"]);
        for needle in present {
            assert!(
                text.contains(needle),
                "{command} --help lacks {needle:?}:\n{text}"
            );
        }
        for needle in absent {
            assert!(
                !text.contains(needle),
                "{command} --help has {needle:?}:\n{text}"
            );
        }
    }
    let top = help(&["--help"]);
    assert!(!top.contains("--delivery-backoff"), "{top}");
}

#[test]
fn version_names_the_version_and_the_commit_it_was_built_from() {
    let text = help(&["--version"]);
    let expected = format!("secret-rotator {} (", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    let commit = text
        .trim_end()
        .strip_prefix(&expected)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text}"));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        // A git checkout: the commit checked out when the binary was built.
        Some(head) => assert_eq!(commit, format!("commit {head}")),
        None => assert!(
            commit.starts_with("commit ") || commit == "unknown commit",
            "{text}"
        ),
    }
}

#[tokio::test]
async fn status_adopts_a_secret_written_by_hand_and_tracks_its_versions() {
    let bao = OpenBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &bao.addr);

    let written_at = Utc::now();
    bao.write_secret(
        "secret",
        "apps/by-hand",
        json!({ "secret_id": "typed-in-by-an-operator" }),
    )
    .await;
    let (code, stdout, stderr) = run_cli(&config, &["status", "--json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains("typed-in-by-an-operator") && !stderr.contains("typed-in-by-an-operator")
    );
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    let r = row(&rows, "by-hand");
    assert_eq!(r["version"], 1);
    assert_eq!(r["state"], "ok");
    let created: DateTime<Utc> = r["created_time"].as_str().unwrap().parse().unwrap();
    assert!(
        (created - written_at).num_milliseconds().abs() < 2000,
        "created {created} vs {written_at}"
    );
    assert!(r["age_seconds"].as_u64().unwrap() <= 2);
    assert_eq!(r["max_age_seconds"], 3600);
    assert_eq!(row(&rows, "never-written")["state"], "missing");

    // A missing secret fails the monitoring check.
    let (code, _, _) = run_cli(&config, &["status", "--check"], &[]);
    assert_eq!(code, 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    bao.write_secret("secret", "apps/by-hand", json!({ "secret_id": "second" }))
        .await;
    bao.write_secret(
        "secret",
        "apps/never-written",
        json!({ "secret_id": "now-exists" }),
    )
    .await;
    let (code, stdout, _) = run_cli(&config, &["status", "--json", "--check"], &[]);
    assert_eq!(code, 0, "nothing overdue or missing any more: {stdout}");
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(row(&rows, "by-hand")["version"], 2);
    assert_eq!(row(&rows, "never-written")["version"], 1);

    // The human table names every credential.
    let (code, stdout, _) = run_cli(&config, &["status"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("NAME"), "{stdout}");
    assert!(stdout.contains("by-hand") && stdout.contains("never-written"));
}

#[tokio::test]
async fn status_reports_an_overdue_secret_and_check_fails() {
    let bao = OpenBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[vault]\naddress = \"{}\"\n[vault.auth]\nmethod = \"token\"\n[defaults]\nmax_age = \"2s\"\ngrace = \"1s\"\n[[credentials]]\nname = \"short\"\npath = \"apps/short\"\n[credentials.vault_approle_secret_id]\nrole_name = \"app\"\n",
            bao.addr
        ),
    )
    .unwrap();
    bao.write_secret("secret", "apps/short", json!({ "secret_id": "x" }))
        .await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (code, stdout, _) = run_cli(&path, &["status", "--json", "--check"], &[]);
    assert_eq!(code, 1, "{stdout}");
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(row(&rows, "short")["state"], "overdue");
    assert!(row(&rows, "short")["overdue_by_seconds"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn vault_errors_name_the_path_and_exit_3() {
    let bao = OpenBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &bao.addr);
    let (code, _, stderr) = run_cli(
        &config,
        &["history", "by-hand"],
        &[("VAULT_TOKEN", "not-a-token")],
    );
    assert_eq!(code, 3, "{stderr}");
    // A wrong token is reported as such, not as a missing policy on some path.
    assert!(
        stderr.contains("rejects the daemon's token") && stderr.contains("403"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-a-token"));

    // A valid token without a policy for the state path: the path and the status are named.
    let limited = bao
        .token_with_policy(
            "nothing",
            "path \"sys/health\" { capabilities = [\"read\"] }",
        )
        .await;
    let (code, _, stderr) = run_cli(
        &config,
        &["history", "by-hand"],
        &[("VAULT_TOKEN", &limited)],
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("secret/secret-rotator/credentials/by-hand") && stderr.contains("403"),
        "{stderr}"
    );
}

/// A Vault that accepts connections and never answers: every command gives up after one
/// `request_timeout` (the listener sees one connection: one request, not one per credential or
/// step), says it could not reach Vault, and exits 3. Before, `status` waited one timeout per
/// request (60 s against 10 s).
#[test]
fn every_command_gives_up_on_a_hung_vault_after_one_request_timeout() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("http://{addr}"));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        &format!("address = \"http://{addr}\""),
        &format!("address = \"http://{addr}\"\nrequest_timeout = \"1s\""),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let verbs: &[&[&str]] = &[
        &["status"],
        &["status", "--check"],
        &["plan"],
        &["history", "by-hand"],
        &["rotate", "by-hand"],
        &["rollback", "by-hand"],
        &["deliveries", "by-hand"],
        &["pause", "by-hand"],
        &["resume", "by-hand"],
        &["confirm-revoked", "by-hand"],
        &["supply", "by-hand"],
    ];
    for verb in verbs {
        let before = accepted.load(Ordering::SeqCst);
        let (code, _, stderr) = run_cli(&config, verb, &[]);
        assert_eq!(code, 3, "{verb:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "cannot reach Vault at http://{addr} (request_timeout 1s)"
            )) && stderr.contains("nothing was done"),
            "{verb:?}: {stderr}"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst) - before,
            1,
            "{verb:?}: one request, one timeout"
        );
    }
}
