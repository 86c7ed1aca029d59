//! The daemon under systemd's protocol, against the real binary, a real OpenBao and the
//! emulator: a notify socket the test binds, a short watchdog, signals; and the shipped unit file
//! checked by `systemd-analyze`.

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::stack::{Stack, StackOptions, ACCESS_TOKEN_PATH, STORE};
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
    config.push_str(&format!(
        r#"
[[credentials]]
name = "storefront-second"
path = "bigcommerce/storefront-second"
[credentials.bigcommerce_storefront]
store_hash = "{STORE}"
api_url = "{base}"
storefront_url = "{base}/store-{{store_hash}}"
access_token = {{ path = "{ACCESS_TOKEN_PATH}", key = "access_token" }}
kind = "storefront"
channel_ids = [1]
"#
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
