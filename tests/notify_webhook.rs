//! The webhook sink against a real loopback receiver. The receiver checks every signature with its
//! own implementation of the Standard Webhooks algorithm (HMAC written out here, not the sender's)
//! and records what it was sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::receiver::{read_request, respond, verify, Received};
use secret_rotator::config::{AppRoleSecretIdConfig, Credential, KvPath, Policy, ProviderConfig};
use secret_rotator::events::{Event, EventKind};
use secret_rotator::notify::payload::{Extra, Payload};
use secret_rotator::notify::webhook::{sign, Outcome, SigningKey, WebhookSink};

const KEY_A: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const KEY_B: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// In the webhook URL's query: a reason must never show it.
const URL_SECRET: &str = "query-token-4711";
/// The sink's timeout in every case.
const TIMEOUT: Duration = Duration::from_secs(1);
/// The size of the huge answer: far more than any socket buffers hold.
const HUGE: usize = 64 << 20;

#[derive(Clone)]
enum Reply {
    /// This status and body.
    Answer(u16, String),
    /// 302 to another path of the same receiver (which would answer 200).
    RedirectTo(&'static str),
    /// 200, after this long.
    After(Duration),
    /// This status and a body of [`HUGE`] bytes.
    Huge(u16),
}

#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<Received>>,
    /// Bytes of a huge answer the receiver managed to write, and whether it stopped writing.
    written: AtomicUsize,
    done: AtomicBool,
}

struct Receiver {
    base: String,
    seen: Arc<Seen>,
}

impl Receiver {
    async fn start(reply: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let (shared, origin) = (seen.clone(), base.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (seen, reply, origin) = (shared.clone(), reply.clone(), origin.clone());
                tokio::spawn(async move { serve(stream, &seen, reply, &origin).await });
            }
        });
        Receiver { base, seen }
    }

    fn requests(&self) -> Vec<Received> {
        self.seen.requests.lock().unwrap().clone()
    }
}

/// One request, one answer, then the connection is closed.
async fn serve(mut stream: TcpStream, seen: &Seen, reply: Reply, origin: &str) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let target = request.target.clone();
    seen.requests.lock().unwrap().push(request);
    if target.starts_with("/elsewhere") {
        return respond(&mut stream, 200, "", b"moved here").await;
    }
    match reply {
        Reply::Answer(status, body) => respond(&mut stream, status, "", body.as_bytes()).await,
        Reply::RedirectTo(path) => {
            let location = format!("location: {origin}{path}\r\n");
            respond(&mut stream, 302, &location, b"").await
        }
        Reply::After(delay) => {
            tokio::time::sleep(delay).await;
            respond(&mut stream, 200, "", b"late").await
        }
        Reply::Huge(status) => {
            let head = format!(
                "HTTP/1.1 {status} Whatever\r\ncontent-length: {HUGE}\r\nconnection: close\r\n\r\n"
            );
            if stream.write_all(head.as_bytes()).await.is_ok() {
                let chunk = vec![b'x'; 64 * 1024];
                while seen.written.load(Ordering::SeqCst) < HUGE {
                    if stream.write_all(&chunk).await.is_err() {
                        break;
                    }
                    seen.written.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            }
            seen.done.store(true, Ordering::SeqCst);
        }
    }
}

fn credential() -> Credential {
    Credential::new(
        "billing-approle".into(),
        KvPath {
            mount: "secret".into(),
            path: "apps/billing".into(),
        },
        ProviderConfig::VaultAppRoleSecretId(AppRoleSecretIdConfig {
            mount: "approle".into(),
            role_name: "billing".into(),
            secret_id_ttl: None,
            secret_id_num_uses: None,
        }),
        Policy::default(),
        vec![],
    )
}

fn rotated_payload() -> Payload {
    let at: DateTime<Utc> = Utc::now();
    let event = Event::new(
        EventKind::Rotated,
        "billing-approle",
        "attempt-1",
        at,
        Some(4),
        "a new version is live",
    );
    let extra = Extra {
        previous_version: Some(3),
        revoke_after: Some(at + chrono::Duration::hours(1)),
    };
    Payload::from_event(&event, &credential(), &extra)
}

fn secrets(keys: &[&str]) -> Vec<SecretString> {
    keys.iter().map(|k| SecretString::from(*k)).collect()
}

/// Every form in which a key could leak into text.
fn key_material() -> Vec<String> {
    [KEY_A, KEY_B]
        .iter()
        .flat_map(|k| [k.to_string(), k.trim_start_matches("whsec_").to_string()])
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expected {
    Delivered,
    Retryable,
    NotRetryable,
}

#[tokio::test]
async fn deliveries_are_signed_and_classified_by_the_answer() {
    struct Case {
        name: &'static str,
        reply: Reply,
        keys: &'static [&'static str],
        expected: Expected,
        /// In the reason of a failure (`{base}` stands for the receiver's address).
        reason_has: &'static str,
    }
    let cases = [
        Case {
            name: "200 is delivered and verified",
            reply: Reply::Answer(200, "ok".into()),
            keys: &[KEY_A],
            expected: Expected::Delivered,
            reason_has: "",
        },
        Case {
            name: "500 may succeed later",
            reply: Reply::Answer(500, "database\n down".into()),
            keys: &[KEY_A],
            expected: Expected::Retryable,
            reason_has: "webhook {base}/hook?*** answered 500: database down",
        },
        Case {
            name: "410 will not succeed later, and an echoed key is hidden",
            reply: Reply::Answer(410, format!("gone; we never knew {KEY_A}")),
            keys: &[KEY_A],
            expected: Expected::NotRetryable,
            reason_has: "answered 410: gone; we never knew whsec_***",
        },
        Case {
            name: "a redirect is not followed",
            reply: Reply::RedirectTo("/elsewhere?token=moved"),
            keys: &[KEY_A],
            expected: Expected::NotRetryable,
            reason_has: "answered 302: redirect to {base}/elsewhere?*** not followed",
        },
        Case {
            name: "a receiver slower than the timeout may succeed later",
            reply: Reply::After(Duration::from_secs(5)),
            keys: &[KEY_A],
            expected: Expected::Retryable,
            reason_has: "webhook {base}/hook?*** did not answer within 1s",
        },
        Case {
            name: "a huge answer is read only up to the cap",
            reply: Reply::Huge(503),
            keys: &[KEY_A],
            expected: Expected::Retryable,
            reason_has: "answered 503: xxxxxxxxxx",
        },
        Case {
            name: "two keys give two signatures, both valid",
            reply: Reply::Answer(204, String::new()),
            keys: &[KEY_A, KEY_B],
            expected: Expected::Delivered,
            reason_has: "",
        },
    ];

    let payload = rotated_payload();
    for case in cases {
        let name = case.name;
        let receiver = Receiver::start(case.reply.clone()).await;
        let url = format!("{}/hook?token={URL_SECRET}", receiver.base);
        let sink = WebhookSink::new(&url, TIMEOUT, None).unwrap();

        let started = Instant::now();
        let outcome = sink.deliver(&payload, &secrets(case.keys)).await;
        let took = started.elapsed();

        // The outcome and its reason.
        match (&outcome, case.expected) {
            (Outcome::Delivered, Expected::Delivered) => {}
            (Outcome::Failed { retryable, reason }, expected) => {
                assert_eq!(
                    expected,
                    if *retryable {
                        Expected::Retryable
                    } else {
                        Expected::NotRetryable
                    },
                    "{name}: {reason}"
                );
                let want = case.reason_has.replace("{base}", &receiver.base);
                assert!(reason.contains(&want), "{name}: {reason:?} lacks {want:?}");
                assert!(!reason.contains(URL_SECRET), "{name}: {reason}");
                assert!(!reason.contains("moved"), "{name}: {reason}");
                assert!(reason.len() < 400, "{name}: {} chars", reason.len());
                for key in key_material() {
                    assert!(!reason.contains(&key), "{name}: key in {reason}");
                }
            }
            (outcome, expected) => panic!("{name}: {outcome:?}, expected {expected:?}"),
        }
        assert!(took < Duration::from_secs(3), "{name}: took {took:?}");

        // Exactly one request, to the configured URL (a redirect target is never called), with
        // the payload, its id, and one valid signature per key.
        let requests = receiver.requests();
        assert_eq!(requests.len(), 1, "{name}: {requests:?}");
        let request = &requests[0];
        assert_eq!(
            request.target,
            format!("/hook?token={URL_SECRET}"),
            "{name}"
        );
        assert_eq!(request.body, payload.body(), "{name}");
        assert_eq!(request.headers["webhook-id"], payload.id(), "{name}");
        assert_eq!(request.headers["content-type"], "application/json");
        let signatures = request.headers["webhook-signature"].split(' ').count();
        assert_eq!(signatures, case.keys.len(), "{name}");
        let now = Utc::now().timestamp();
        for key in [KEY_A, KEY_B] {
            let checked = verify(&request.headers, &request.body, key, now);
            assert_eq!(
                checked.is_ok(),
                case.keys.contains(&key),
                "{name}: {key:.10}"
            );
        }

        if let Reply::Huge(_) = case.reply {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !receiver.seen.done.load(Ordering::SeqCst) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let written = receiver.seen.written.load(Ordering::SeqCst);
            assert!(
                receiver.seen.done.load(Ordering::SeqCst),
                "{name}: still writing"
            );
            assert!(
                written < HUGE,
                "{name}: the whole answer was taken ({written})"
            );
        }
    }
}

#[tokio::test]
async fn nobody_listening_may_succeed_later() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let sink = WebhookSink::new(&format!("http://127.0.0.1:{port}/hook"), TIMEOUT, None).unwrap();
    match sink.deliver(&rotated_payload(), &secrets(&[KEY_A])).await {
        Outcome::Failed { retryable, reason } => {
            assert!(retryable, "{reason}");
            assert!(
                reason.starts_with("cannot connect to webhook http://127.0.0.1:"),
                "{reason}"
            );
        }
        Outcome::Delivered => panic!("delivered to nobody"),
    }
}

#[tokio::test]
async fn a_key_that_is_not_whsec_base64_is_a_failure_that_does_not_show_it() {
    let receiver = Receiver::start(Reply::Answer(200, "ok".into())).await;
    let sink = WebhookSink::new(&format!("{}/hook", receiver.base), TIMEOUT, None).unwrap();
    let outcome = sink
        .deliver(&rotated_payload(), &secrets(&[KEY_A, "whsec_not*base64"]))
        .await;
    match outcome {
        Outcome::Failed { retryable, reason } => {
            assert!(!retryable);
            assert!(reason.contains("signing key 2"), "{reason}");
            assert!(!reason.contains("not*base64"), "{reason}");
        }
        Outcome::Delivered => panic!("delivered with a broken key"),
    }
    assert!(receiver.requests().is_empty());
}

/// The receiver's check is not vacuous: it rejects what the Standard Webhooks algorithm rejects.
#[test]
fn the_receivers_check_rejects_a_tampered_body_a_wrong_key_and_an_old_timestamp() {
    let keys = [SigningKey::parse(&SecretString::from(KEY_A)).unwrap()];
    let now = Utc::now().timestamp();
    let body = br#"{"type":"credential.rotated"}"#;
    let headers = |timestamp: i64| {
        HashMap::from([
            ("webhook-id".to_string(), "a:credential.rotated".to_string()),
            ("webhook-timestamp".to_string(), timestamp.to_string()),
            (
                "webhook-signature".to_string(),
                sign("a:credential.rotated", timestamp, body, &keys),
            ),
        ])
    };
    // (case, age of the signature in seconds, body received, receiver's key, accepted)
    let tampered: &[u8] = br#"{"type":"credential.revoked"}"#;
    let cases: [(&str, i64, &[u8], &str, bool); 5] = [
        ("as sent", 0, body, KEY_A, true),
        ("4 minutes old", 240, body, KEY_A, true),
        ("tampered body", 0, tampered, KEY_A, false),
        ("wrong key", 0, body, KEY_B, false),
        ("6 minutes old", 360, body, KEY_A, false),
    ];
    for (name, age, received, key, valid) in cases {
        let checked = verify(&headers(now - age), received, key, now);
        assert_eq!(checked.is_ok(), valid, "{name}");
    }
}
