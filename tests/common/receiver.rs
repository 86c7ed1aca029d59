//! A Standard Webhooks receiver on loopback for the tests. It checks every signature with its own
//! implementation of the algorithm (HMAC written out here, sharing no code with the sender),
//! records what it was sent, and answers from a script (statuses in turn, or hanging).

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The signing key the tests' webhook dependents use (the Standard Webhooks reference vector's).
pub const TEST_KEY: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// HMAC-SHA256 (RFC 2104), written out so that the receiver shares no code with the sender.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// The receiver's check: a timestamp within 5 minutes of `now` and one `v1` signature of
/// `{id}.{timestamp}.{body}` made with `key` (`whsec_<base64>`).
pub fn verify(
    headers: &HashMap<String, String>,
    body: &[u8],
    key: &str,
    now: i64,
) -> Result<(), &'static str> {
    let id = headers.get("webhook-id").ok_or("no webhook-id")?;
    let timestamp: i64 = headers
        .get("webhook-timestamp")
        .ok_or("no webhook-timestamp")?
        .parse()
        .map_err(|_| "timestamp not a number")?;
    if (now - timestamp).abs() > 5 * 60 {
        return Err("timestamp too old or too new");
    }
    let secret = BASE64.decode(key.strip_prefix("whsec_").unwrap()).unwrap();
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = format!("v1,{}", BASE64.encode(hmac_sha256(&secret, &signed)));
    let signatures = headers
        .get("webhook-signature")
        .ok_or("no webhook-signature")?;
    if signatures.split(' ').any(|s| s == expected) {
        Ok(())
    } else {
        Err("no valid signature")
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub target: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

pub async fn respond(stream: &mut TcpStream, status: u16, extra_headers: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} Whatever\r\ncontent-length: {}\r\n{extra_headers}connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

pub async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        target,
        headers,
        body,
    })
}

/// How the receiver answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    /// Never answer (until the sender gives up).
    Hang,
    /// Answer `status` after `ms` milliseconds.
    After {
        ms: u64,
        status: u16,
    },
}

impl Answer {
    /// The answer accepts the event (a 2xx, at once or late).
    pub fn accepts(self) -> bool {
        matches!(
            self,
            Answer::Status(200..=299)
                | Answer::After {
                    status: 200..=299,
                    ..
                }
        )
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub id: String,
    /// `type` of the body.
    pub kind: String,
    pub body: Value,
    /// The signature checked out with the receiver's key.
    pub verified: bool,
    pub answered: Answer,
}

#[derive(Default)]
struct Script {
    /// Answers in turn; then `then`.
    queue: VecDeque<Answer>,
    then: Option<Answer>,
    hits: Vec<Hit>,
}

/// A webhook endpoint that checks signatures with `key`.
pub struct HookReceiver {
    pub url: String,
    key: String,
    script: Arc<Mutex<Script>>,
}

impl HookReceiver {
    pub async fn start(key: &str) -> HookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(Script::default()));
        let (shared, key2) = (script.clone(), key.to_string());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (script, key) = (shared.clone(), key2.clone());
                tokio::spawn(async move { serve(stream, &script, &key).await });
            }
        });
        HookReceiver {
            url,
            key: key.to_string(),
            script,
        }
    }

    /// Answer these in turn, then `then` (200 unless set).
    pub fn script(&self, answers: &[Answer], then: Answer) {
        let mut s = self.script.lock().unwrap();
        s.queue = answers.iter().copied().collect();
        s.then = Some(then);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.script.lock().unwrap().hits.clone()
    }

    /// The ids of the events accepted (answered 2xx), in order.
    pub fn accepted(&self) -> Vec<String> {
        self.hits()
            .into_iter()
            .filter(|h| h.answered.accepts())
            .map(|h| h.id)
            .collect()
    }

    /// Wait until `pred` holds for the hits, up to `limit`.
    pub async fn wait_for(&self, limit: Duration, pred: impl Fn(&[Hit]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if pred(&self.hits()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(mut stream: TcpStream, script: &Mutex<Script>, key: &str) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let now = chrono::Utc::now().timestamp();
    let verified = verify(&request.headers, &request.body, key, now).is_ok();
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let answer = {
        let mut s = script.lock().unwrap();
        // A request that does not verify is refused, whatever the script says.
        let answer = if !verified {
            Answer::Status(401)
        } else {
            s.queue
                .pop_front()
                .or(s.then)
                .unwrap_or(Answer::Status(200))
        };
        s.hits.push(Hit {
            id: request
                .headers
                .get("webhook-id")
                .cloned()
                .unwrap_or_default(),
            kind: body["type"].as_str().unwrap_or_default().to_string(),
            body,
            verified,
            answered: answer,
        });
        answer
    };
    match answer {
        Answer::Status(status) => respond(&mut stream, status, "", b"{}").await,
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Answer::After { ms, status } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            respond(&mut stream, status, "", b"{}").await
        }
    }
}
