//! The local sinks, `file` and `exec`, against the real file system and real processes.
//! No Vault needed: the secret is given, as the outbox will give it.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use secret_rotator::config::FileFormat;
use secret_rotator::notify::delivery::Delivery;
use secret_rotator::notify::exec_sink::{ExecEvent, ExecSink, OUTPUT_CAP};
use secret_rotator::notify::file_sink::{
    holds_content, render, write_atomically, FileSink, FileSinkError,
};
use secret_rotator::secret::SecretFields;

const BODY: &[u8] = br#"{"type":"credential.rotated","data":{"credential":"shop"}}"#;

fn secret() -> SecretFields {
    SecretFields::new()
        .with("token", "tok-NEW.123")
        .with("client-id", "a b $HOME \"x\"")
}

fn event() -> ExecEvent<'static> {
    ExecEvent {
        kind: "credential.rotated",
        credential: "shop",
        version: Some(7),
        attempt: "att-1",
        body: BODY,
    }
}

fn file_sink(path: &Path, format: FileFormat) -> FileSink {
    FileSink {
        path: path.to_path_buf(),
        format,
        mode: 0o600,
        owner: None,
        group: None,
        exec: None,
    }
}

/// `sh -c SCRIPT sh ARGS...`: the script sees ARGS as "$1", "$2", ...
fn sh(script: &str, args: &[&Path]) -> Vec<String> {
    let mut argv = vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
    argv.push("sh".to_string());
    argv.extend(args.iter().map(|a| a.display().to_string()));
    argv
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// ---------------------------------------------------------------------------------------------
// file sink

#[test]
fn every_format_reads_back_as_its_consumer_expects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");

    // field: the bare value, as `$(cat file)` or a reader of the whole file expects.
    file_sink(&path, FileFormat::Field("token".into()))
        .write(&secret())
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "tok-NEW.123");

    // json: one object of every field.
    file_sink(&path, FileFormat::Json).write(&secret()).unwrap();
    let json: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        json,
        BTreeMap::from([
            ("client-id".to_string(), "a b $HOME \"x\"".to_string()),
            ("token".to_string(), "tok-NEW.123".to_string()),
        ])
    );

    // env: a shell that sources the file gets every value literally, nothing expanded.
    let env = FileFormat::Env {
        prefix: "APP_".into(),
    };
    file_sink(&path, env).write(&secret()).unwrap();
    let shell = Command::new("/bin/sh")
        .args([
            "-c",
            ". \"$1\"; printf '%s|%s' \"$APP_TOKEN\" \"$APP_CLIENT_ID\"",
            "sh",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(shell.status.success(), "{shell:?}");
    assert_eq!(
        String::from_utf8(shell.stdout).unwrap(),
        "tok-NEW.123|a b $HOME \"x\""
    );
}

#[test]
fn the_file_gets_its_mode_even_over_a_looser_one_and_no_temporary_file_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    for mode in [0o600, 0o640, 0o400] {
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_atomically(&path, b"new", mode, None, None).unwrap();
        assert_eq!(mode_of(&path), mode, "mode {mode:o}");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names_in(dir.path()), ["token"]);
    }
}

#[test]
fn a_write_that_fails_leaves_the_old_file_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let path = locked.join("token");
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores directory permissions; the immutable attribute stops root too.
    let immutable = is_root()
        && Command::new("chattr")
            .arg("+i")
            .arg(&locked)
            .status()
            .is_ok_and(|s| s.success());
    if is_root() && !immutable {
        eprintln!("skipped: running as root where chattr +i is not available");
        return;
    }

    let result = write_atomically(&path, b"new", 0o600, None, None);

    if immutable {
        Command::new("chattr")
            .arg("-i")
            .arg(&locked)
            .status()
            .unwrap();
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let error = result.expect_err("a read-only directory refuses the temporary file");
    assert!(error.retryable(), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(names_in(&locked), ["token"]);
}

#[test]
fn an_unknown_owner_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "old").unwrap();
    let error = write_atomically(&path, b"new", 0o600, Some("no-such-user-here"), None)
        .expect_err("unknown user");
    assert!(matches!(error, FileSinkError::UnknownUser(_)), "{error}");
    assert!(!error.retryable());
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(names_in(dir.path()), ["token"]);
}

#[test]
fn owner_and_group_are_set_by_name_or_id() {
    if !is_root() {
        eprintln!("skipped: only root may give a file away");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    write_atomically(&path, b"new", 0o640, Some("65534"), Some("root")).unwrap();
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!((metadata.uid(), metadata.gid()), (65534, 0));
    assert_eq!(mode_of(&path), 0o640);
}

#[test]
fn holds_current_says_whether_the_file_must_be_rewritten_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let sink = file_sink(&path, FileFormat::Field("token".into()));
    assert!(!sink.holds_current(&secret()), "no file yet");

    sink.write(&secret()).unwrap();
    assert!(sink.holds_current(&secret()));
    assert!(!sink.holds_current(&SecretFields::new().with("token", "tok-NEWER")));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(!sink.holds_current(&secret()), "a wider mode is rewritten");

    let json = render(&FileFormat::Json, &secret()).unwrap();
    assert!(!holds_content(&path, &json, 0o600, None, None));
}

#[tokio::test]
async fn the_file_exec_runs_once_the_new_file_is_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let seen = dir.path().join("seen-by-reload");
    std::fs::write(&path, "tok-OLD").unwrap();
    let mut sink = file_sink(&path, FileFormat::Field("token".into()));
    sink.exec = Some(ExecSink::new(
        sh("cat \"$1\" > \"$2\"", &[&path, &seen]),
        Duration::from_secs(10),
    ));

    assert_eq!(
        sink.deliver("reload", &secret(), &event()).await,
        Delivery::Delivered
    );
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "tok-NEW.123");

    sink.exec = Some(ExecSink::new(sh("exit 3", &[]), Duration::from_secs(10)));
    assert!(matches!(
        sink.deliver("reload", &secret(), &event()).await,
        Delivery::Failed {
            retryable: true,
            ..
        }
    ));
}

// ---------------------------------------------------------------------------------------------
// exec sink

#[tokio::test]
async fn the_child_gets_the_event_on_stdin_and_in_variables_and_no_vault_token() {
    // SAFETY of the test: the variable holds no real secret; other tests only spawn processes.
    std::env::set_var("VAULT_TOKEN", "hvs.must-not-leak");
    let dir = tempfile::tempdir().unwrap();
    let stdin = dir.path().join("stdin");
    let env = dir.path().join("env");
    let sink = ExecSink::new(
        sh("cat > \"$1\"; env > \"$2\"", &[&stdin, &env]),
        Duration::from_secs(10),
    );

    let report = sink.run("hook", &event()).await;

    assert_eq!(report.delivery, Delivery::Delivered);
    assert_eq!(std::fs::read(&stdin).unwrap(), BODY);
    let env = std::fs::read_to_string(&env).unwrap();
    let lines: Vec<&str> = env.lines().collect();
    for expected in [
        "SECRET_ROTATOR_TYPE=credential.rotated",
        "SECRET_ROTATOR_CREDENTIAL=shop",
        "SECRET_ROTATOR_VERSION=7",
        "SECRET_ROTATOR_ATTEMPT=att-1",
    ] {
        assert!(lines.contains(&expected), "{expected} missing from:\n{env}");
    }
    assert!(!env.contains("VAULT_TOKEN"), "{env}");
    assert!(!env.contains("must-not-leak"), "{env}");
}

#[tokio::test]
async fn exit_status_and_start_failures_map_to_deliveries() {
    let cases: Vec<(&str, Vec<String>, Option<bool>)> = vec![
        ("exit 0 is delivered", sh("exit 0", &[]), None),
        ("exit 1 is retried", sh("exit 1", &[]), Some(true)),
        ("a signal is retried", sh("kill -9 $$", &[]), Some(true)),
        (
            "a program that is not there is not retried",
            vec!["/nonexistent/reload".to_string()],
            Some(false),
        ),
    ];
    for (what, command, expected) in cases {
        let report = ExecSink::new(command, Duration::from_secs(10))
            .run("hook", &event())
            .await;
        let got = match report.delivery {
            Delivery::Delivered => None,
            Delivery::Failed { retryable, .. } => Some(retryable),
        };
        assert_eq!(got, expected, "case: {what}: {report:?}");
    }
}

/// Whether a process is gone: no entry in /proc, or a zombie that nobody reaped yet (in a
/// container without an init that reaps, orphans stay zombies: dead all the same).
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_timeout_kills_the_child_and_its_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file: PathBuf = dir.path().join("grandchild.pid");
    let sink = ExecSink::new(
        sh("sleep 300 & echo $! > \"$1\"; sleep 300", &[&pid_file]),
        Duration::from_secs(1),
    );

    let started = Instant::now();
    let report = sink.run("slow", &event()).await;

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    match &report.delivery {
        Delivery::Failed { retryable, reason } => {
            assert!(retryable);
            assert!(reason.contains("timed out"), "{reason}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let grandchild: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !is_gone(grandchild) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(is_gone(grandchild), "grandchild {grandchild} still runs");
}

#[tokio::test]
async fn output_is_captured_and_truncated() {
    let report = ExecSink::new(
        sh(
            "head -c 10000 /dev/zero | tr '\\0' a; echo oops >&2; exit 2",
            &[],
        ),
        Duration::from_secs(10),
    )
    .run("noisy", &event())
    .await;

    assert!(matches!(
        report.delivery,
        Delivery::Failed {
            retryable: true,
            ..
        }
    ));
    assert!(report.stdout.starts_with(&"a".repeat(OUTPUT_CAP)));
    assert!(
        report
            .stdout
            .ends_with(&format!("[{} more bytes not shown]", 10000 - OUTPUT_CAP)),
        "{}",
        &report.stdout[OUTPUT_CAP..]
    );
    assert_eq!(report.stderr, "oops\n");
}
