//! The daemon under systemd's protocol, against the real binary, a real OpenBao and the
//! emulator: a notify socket the test binds, a short watchdog, signals; and the shipped unit file
//! checked by `systemd-analyze`.

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::stack::{storefront_credential, Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::Value;

const START: Duration = Duration::from_secs(60);

#[tokio::test]
async fn ready_watchdog_status_and_stopping_arrive_on_the_notify_socket() {
    let stack = Stack::start().await;
    let mut daemon = Daemon::start(&stack, Some(Duration::from_secs(1)));
    daemon.expect(START, |l| l == "READY=1").await;
    let status = daemon.expect(START, |l| l.starts_with("STATUS=")).await;
    assert!(
        status.starts_with("STATUS=1 credentials, 0 in flight, next due in"),
        "{status}"
    );
    // Half of WATCHDOG_USEC: about two pings a second while the loop is alive.
    daemon.forget();
    let started = std::time::Instant::now();
    for _ in 0..3 {
        daemon
            .expect(Duration::from_secs(3), |l| l == "WATCHDOG=1")
            .await;
        daemon.forget();
    }
    assert!(started.elapsed() < Duration::from_secs(4));

    daemon.signal(Signal::SIGTERM);
    daemon
        .expect(Duration::from_secs(5), |l| l == "STOPPING=1")
        .await;
    assert_eq!(daemon.exit_code(Duration::from_secs(35)).await, Some(0));
}

#[tokio::test]
async fn a_slow_start_says_how_far_it_got_and_asks_for_more_time_before_ready() {
    let stack = Stack::with(StackOptions {
        proxy: true,
        ..Default::default()
    })
    .await;
    // The start-up read of the secret's metadata takes 5 s to reach OpenBao.
    stack.proxy.as_ref().unwrap().stall_request(
        "GET",
        "secret/metadata/bigcommerce/",
        1,
        Duration::from_secs(5),
    );
    let mut daemon = Daemon::start(&stack, None);
    let status = daemon
        .expect(START, |l| l.starts_with("STATUS=starting:"))
        .await;
    assert_eq!(status, "STATUS=starting: 0 of 1 credentials read");
    daemon
        .expect(START, |l| l.starts_with("EXTEND_TIMEOUT_USEC="))
        .await;
    let received = daemon.messages.join("\n");
    assert!(!received.contains("READY=1"), "{received}");
    daemon.expect(START, |l| l == "READY=1").await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code(Duration::from_secs(35)).await, Some(0));
}

#[tokio::test]
async fn no_watchdog_ping_is_sent_when_systemd_asks_for_none() {
    let stack = Stack::start().await;
    let mut daemon = Daemon::start(&stack, None);
    daemon.expect(START, |l| l == "READY=1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.signal(Signal::SIGTERM);
    daemon
        .expect(Duration::from_secs(5), |l| l == "STOPPING=1")
        .await;
    assert!(
        !daemon.messages.iter().any(|m| m.contains("WATCHDOG=1")),
        "{:?}",
        daemon.messages
    );
    assert_eq!(daemon.exit_code(Duration::from_secs(35)).await, Some(0));
}

#[tokio::test]
async fn sighup_with_a_broken_config_keeps_the_running_one_and_says_where() {
    let stack = Stack::start().await;
    let mut daemon = Daemon::start(&stack, Some(Duration::from_secs(2)));
    daemon.expect(START, |l| l == "READY=1").await;
    let good = std::fs::read_to_string(&stack.config).unwrap();
    std::fs::write(
        &stack.config,
        good.replace("max_age = \"1h\"", "max_age = \"soon\""),
    )
    .unwrap();
    daemon.forget();
    daemon.signal(Signal::SIGHUP);
    let log = daemon
        .expect_log(Duration::from_secs(10), "reload refused")
        .await;
    let refused = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        refused.contains("config.toml:") && refused.contains("defaults.max_age"),
        "the refusal names the file, line and key: {refused}"
    );
    // Still running on the old configuration: ready again, status lines and watchdog go on.
    daemon
        .expect(Duration::from_secs(5), |l| l == "READY=1")
        .await;
    daemon
        .expect(Duration::from_secs(5), |l| {
            l.starts_with("STATUS=1 credentials")
        })
        .await;
    daemon
        .expect(Duration::from_secs(5), |l| l == "WATCHDOG=1")
        .await;
    assert!(daemon.is_running());
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code(Duration::from_secs(35)).await, Some(0));
}

#[tokio::test]
async fn sighup_with_a_new_credential_starts_tracking_and_rotating_it() {
    let stack = Stack::with(StackOptions {
        root_token: true,
        ..StackOptions::default()
    })
    .await;
    let mut daemon = Daemon::start(&stack, None);
    daemon
        .expect(START, |l| l.starts_with("STATUS=1 credentials"))
        .await;
    // A second storefront credential whose secret does not exist yet: it is due at once.
    let base = stack.emu.base_url();
    let mut config = std::fs::read_to_string(&stack.config).unwrap();
    config.push_str(&storefront_credential(
        "storefront-second",
        "bigcommerce/storefront-second",
        &base,
    ));
    std::fs::write(&stack.config, config).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon
        .expect(Duration::from_secs(30), |l| {
            l.starts_with("STATUS=2 credentials")
        })
        .await;
    // The daemon rotates it on its own: the secret gets its first version.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = stack.cli(&["status", "--json"], &[]).await;
        let rows: Value = serde_json::from_str(&out.stdout).unwrap();
        let second = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "storefront-second")
            .cloned()
            .unwrap();
        if second["version"].as_u64() == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "not rotated: {second}\nlog:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = daemon.log();
    assert!(log.contains("added=storefront-second"), "{log}");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code(Duration::from_secs(35)).await, Some(0));
}

/// `systemd-analyze`, or why the unit tests cannot run here.
fn systemd_analyze() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("systemd-analyze"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        println!("skipped: systemd-analyze is not installed (apt-get install systemd)");
    }
    found
}

/// The shipped unit, with ExecStart= pointing at the binary under test (verify checks that
/// the executables exist).
fn unit_under_test(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/secret-rotator.service"
    ))
    .unwrap();
    let path = dir.join("secret-rotator.service");
    let binary = common::binary();
    std::fs::write(
        &path,
        shipped.replace("/usr/local/bin/secret-rotator", binary.to_str().unwrap()),
    )
    .unwrap();
    (shipped, path)
}

fn setting<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_unit_speaks_notify_reloads_on_hup_and_stops_after_the_daemon_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (unit, _) = unit_under_test(dir.path());
    assert_eq!(setting(&unit, "Type"), ["notify"]);
    assert_eq!(setting(&unit, "ExecReload"), ["kill -HUP $MAINPID"]);
    assert_eq!(setting(&unit, "Restart"), ["on-failure"]);
    assert_eq!(setting(&unit, "WatchdogSec").len(), 1);
    assert_eq!(
        setting(&unit, "LoadCredential"),
        ["secret-id:/etc/secret-rotator/credentials/secret-id"]
    );
    let stop = humantime::parse_duration(setting(&unit, "TimeoutStopSec")[0]).unwrap();
    assert!(stop > secret_rotator::daemon::STOP_BOUND, "{stop:?}");
    // The lease check reads /proc/sys/kernel/random/boot_id: ProcSubset=pid would hide it.
    assert!(setting(&unit, "ProcSubset").is_empty());
    assert_eq!(setting(&unit, "ProtectProc"), ["invisible"]);
}

/// The directories a `file` dependent of `config/example.toml` writes in (its temporary file,
/// then the rename), each under one of the unit's `ReadWritePaths=`.
#[test]
fn the_unit_lets_the_example_configs_file_dependents_be_written() {
    use secret_rotator::config::Sink;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/example.toml")).unwrap();
    let config = secret_rotator::config::parse(
        &text,
        "example.toml",
        &secret_rotator::config::ProcessEnvironment,
    )
    .expect("config/example.toml is valid");
    let dirs: Vec<std::path::PathBuf> = config
        .credentials
        .iter()
        .flat_map(|c| &c.dependents)
        .filter_map(|d| match &d.sink {
            Sink::File { path, .. } => Some(path.parent().unwrap().to_path_buf()),
            _ => None,
        })
        .collect();
    assert!(!dirs.is_empty(), "the example has a file dependent");
    let dir = tempfile::tempdir().unwrap();
    let (unit, _) = unit_under_test(dir.path());
    assert_eq!(setting(&unit, "ProtectSystem"), ["strict"]);
    let writable: Vec<&std::path::Path> = setting(&unit, "ReadWritePaths")
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(|p| std::path::Path::new(p.trim_start_matches(['-', '+'])))
        .collect();
    for d in &dirs {
        assert!(
            writable.iter().any(|w| d.starts_with(w)),
            "{} is not under ReadWritePaths= {writable:?}",
            d.display()
        );
    }
}

#[test]
fn the_unit_verifies_and_its_exposure_is_at_most_1_5() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = unit_under_test(dir.path());
    let verify = std::process::Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = std::process::Command::new(&analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for secret-rotator.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(exposure <= 1.5, "exposure {exposure}:\n{text}");
}
