//! `supply`'s input: at a terminal (the real binary under a pseudo-terminal, against a real
//! OpenBao and the emulator's control panel), a field that may be seen echoes and offers the
//! configured value, a secret does not echo, and Ctrl-C and Ctrl-D at a secret prompt leave the
//! terminal as it was; on stdin, more than the cap is said to be too large.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bigcommerce_emulator::demo;
use common::stack::{Stack, StackOptions, STORE};
use nix::sys::termios::{tcgetattr, LocalFlags, Termios};
use serde_json::json;

const CRED: &str = "legacy";
const PATH: &str = "bigcommerce/legacy";
const CTRL_C: &[u8] = b"\x03";
const CTRL_D: &[u8] = b"\x04";

/// A stack with one legacy account whose configured username and API path are the emulator's.
async fn stack() -> (Stack, String) {
    let s = Stack::with(StackOptions {
        root_token: true,
        ..Default::default()
    })
    .await;
    let api = format!("{}/store-{STORE}/api/v2/", s.emu.base_url());
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        r#"
[[credentials]]
name = "{CRED}"
path = "{PATH}"
[credentials.bigcommerce_legacy_account]
store_hash = "{STORE}"
username = "{user}"
api_path = "{api}"
"#,
        user = demo::LEGACY_USERNAME,
    ));
    std::fs::write(&s.config, text).unwrap();
    s.bao
        .write_secret(
            "secret",
            PATH,
            json!({ "username": demo::LEGACY_USERNAME, "token": demo::LEGACY_TOKEN, "api_path": api }),
        )
        .await;
    (s, api)
}

/// The binary running with a pseudo-terminal as its stdin, stdout and stderr.
struct Terminal {
    /// The person's side: what they type goes in here, what the program prints comes out.
    master: std::fs::File,
    /// The program's side, kept open to read its settings.
    slave: OwnedFd,
    /// The settings the terminal had before the program ran.
    initial: Termios,
    screen: Arc<Mutex<Vec<u8>>>,
    child: Child,
}

impl Terminal {
    fn start(s: &Stack, args: &[&str]) -> Terminal {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let initial = tcgetattr(&pty.slave).expect("tcgetattr");
        let side = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let child = Command::new(common::binary())
            .arg("--config")
            .arg(&s.config)
            .arg("--events-file")
            .arg(&s.events)
            .args(args)
            .env("VAULT_TOKEN", &s.token)
            .env("SECRET_ROTATOR_INSTANCE_ID", "test-instance")
            .env("SECRET_ROTATOR_LOG", "warn")
            .env_remove("SECRET_ROTATOR_CRASH_AT")
            .stdin(side(&pty.slave))
            .stdout(side(&pty.slave))
            .stderr(side(&pty.slave))
            .spawn()
            .expect("run secret-rotator");
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            master,
            slave: pty.slave,
            initial,
            screen,
            child,
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until the screen shows `text` (30 s at most).
    fn wait_for(&self, text: &str) {
        let start = Instant::now();
        while !self.screen().contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{text:?} never appeared; the screen: {:?}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_in(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    fn echoes(&self) -> bool {
        let t = tcgetattr(&self.slave).expect("tcgetattr");
        t.local_flags.contains(LocalFlags::ECHO)
    }

    fn signals(&self) -> bool {
        let t = tcgetattr(&self.slave).expect("tcgetattr");
        t.local_flags.contains(LocalFlags::ISIG)
    }

    /// The exit code (120 s at most).
    fn exit_code(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "secret-rotator did not finish; the screen: {:?}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Types the username (which echoes) and stops at the token prompt, with echo off.
fn up_to_the_token_prompt(s: &Stack) -> Terminal {
    let mut t = Terminal::start(s, &["supply", CRED]);
    t.wait_for(&format!("username [{}]: ", demo::LEGACY_USERNAME));
    assert!(t.echoes(), "a username prompt echoes");
    t.type_in(b"typed-user");
    t.wait_for("typed-user");
    t.type_in(b"\n");
    t.wait_for("token: ");
    assert!(!t.echoes(), "a token prompt does not echo");
    t.type_in(b"half-typed-secret");
    t
}

// Multi-threaded: the emulator answers on the runtime while the test waits on the terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_or_ctrl_d_at_a_secret_prompt_leaves_the_terminal_echoing() {
    let (s, _) = stack().await;
    for (key, message) in [
        (CTRL_C, "interrupted (Ctrl-C)"),
        (CTRL_D, "the input ended (Ctrl-D) before an answer"),
    ] {
        let mut t = up_to_the_token_prompt(&s);
        if key == CTRL_D {
            // Ctrl-D ends the input only on an empty line: clear it first (Ctrl-U).
            t.type_in(b"\x15");
        }
        t.type_in(key);
        assert_eq!(t.exit_code(), Some(64), "{:?}", t.screen());
        let screen = t.screen();
        assert!(
            screen.contains(&format!(
                "error: {CRED}: no token read at the terminal: {message}; nothing was written"
            )),
            "{screen:?}"
        );
        assert!(!screen.contains("half-typed-secret"), "{screen:?}");
        assert!(t.echoes() && t.signals(), "terminal restored: {screen:?}");
        let after = tcgetattr(&t.slave).unwrap();
        assert_eq!(
            (after.local_flags, after.control_chars),
            (t.initial.local_flags, t.initial.control_chars),
            "the terminal's settings are the ones it had before the program ran"
        );
    }
    // Nothing was written.
    let data = s
        .bao
        .root("GET", &format!("secret/data/{PATH}"), None)
        .await;
    assert_eq!(data["data"]["metadata"]["version"], 1, "{data}");
}

// Multi-threaded: the emulator answers on the runtime while the test waits on the terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regenerated_token_typed_at_the_prompts_is_committed_with_the_configured_defaults() {
    let (s, _) = stack().await;
    let out = s.cli(&["rotate", CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let view = s
        .admin
        .regenerate_legacy_token(STORE, demo::LEGACY_USERNAME)
        .await
        .unwrap();
    let mut t = Terminal::start(&s, &["supply", CRED]);
    // Enter keeps the configured username and API path.
    t.wait_for(&format!("username [{}]: ", demo::LEGACY_USERNAME));
    t.type_in(b"\n");
    t.wait_for("token: ");
    t.type_in(format!("{}\n", view.token).as_bytes());
    t.wait_for("api_path [http");
    t.type_in(b"\n");
    assert_eq!(t.exit_code(), Some(0), "{:?}", t.screen());
    let screen = t.screen();
    assert!(
        !screen.contains(&view.token),
        "the token echoed: {screen:?}"
    );
    assert!(t.echoes(), "{screen:?}");
    let data = s
        .bao
        .root("GET", &format!("secret/data/{PATH}"), None)
        .await;
    assert_eq!(
        data["data"]["data"],
        json!({
            "username": demo::LEGACY_USERNAME,
            "token": view.token,
            "api_path": format!("{}/store-{STORE}/api/v2/", s.emu.base_url()),
        })
    );
}

// Multi-threaded: the emulator answers on the runtime while the test waits on the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_over_64_kib_is_refused_as_too_large() {
    let (s, api) = stack().await;
    let token = "t".repeat(64 * 1024);
    let input = json!({ "username": demo::LEGACY_USERNAME, "token": token, "api_path": api });
    let mut child = Command::new(common::binary())
        .arg("--config")
        .arg(&s.config)
        .args(["supply", CRED])
        .env("VAULT_TOKEN", &s.token)
        .env("SECRET_ROTATOR_INSTANCE_ID", "test-instance")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // The reader stops at the cap: the rest may find the pipe closed.
        let _ = stdin.write_all(input.to_string().as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: {CRED}: stdin is too large: more than 64 KiB"
        )) && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert!(!stderr.contains("not a JSON object"), "{stderr}");
}
