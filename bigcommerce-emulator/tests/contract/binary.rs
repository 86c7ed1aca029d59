//! The `bigcommerce-emulator` binary: help, a bad seed, a real start and stop.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_bigcommerce-emulator");

#[test]
fn help_describes_the_flags() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--seed",
        "--state",
        "--admin-token-file",
        "--demo",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn a_bad_seed_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.toml");
    std::fs::write(&seed, "[[stores]]\nhash = \"NOT VALID\"\n").unwrap();
    let out = Command::new(BIN).arg("--seed").arg(&seed).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stores[0].hash"));
}

#[tokio::test]
async fn it_serves_the_example_seed_with_a_given_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "file-admin-token\n").unwrap();
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/emulator-seed.toml");
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--seed",
            seed,
            "--admin-token-file",
        ])
        .arg(&token_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let base = first
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_string();
    let admin = bigcommerce_emulator::AdminClient::new(&base, "file-admin-token");
    let stores = admin.stores().await;
    child.kill().unwrap();
    child.wait().unwrap();
    let hashes: Vec<String> = stores.unwrap().into_iter().map(|s| s.hash).collect();
    assert_eq!(hashes, ["17hoqh4ddx", "abc123"]);
}
