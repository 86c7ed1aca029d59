//! A loopback HTTP/1.1 proxy between the daemon and OpenBao, to lose or delay Vault's replies on
//! purpose.
//!
//! Each client connection gets its own upstream connection. Requests are forwarded one at a time,
//! byte for byte (bodies by `Content-Length`); replies are read whole (by `Content-Length`, chunked,
//! or until the upstream closes) and then handled by the first rule that fires:
//! - `drop_reply`: OpenBao processed the request, the client never hears back (connection closed);
//! - `stall_reply`: the reply is held for a while, then sent;
//! - `stall_request`: the request is held for a while before it reaches OpenBao;
//! - `refuse`: the connection is closed and the request never reaches OpenBao;
//! - `answer`: the proxy answers with a status of its own (a gateway's 502) and the request
//!   never reaches OpenBao.
//!
//! A rule matches a method (ASCII case-insensitive) and a substring of the request target (path
//! and query), and fires on the Nth matching request (1-based) counted from when it was set.
//! Every request the proxy reads is counted, whatever happens to it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A running proxy on `127.0.0.1:<free port>`; stops accepting and closes its connections on drop.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    rules: Vec<Rule>,
    /// (method, target) of every request read, in order.
    seen: Vec<(String, String)>,
}

struct Rule {
    method: String,
    path_substr: String,
    nth: usize,
    matched: usize,
    action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Forward,
    DropReply,
    StallReply(Duration),
    StallRequest(Duration),
    Refuse,
    Answer(u16),
}

impl Proxy {
    /// Start forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let accept = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// The address to give the daemon as its Vault address: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forward the Nth matching request, let OpenBao answer, then close the client's connection
    /// without sending the answer.
    pub fn drop_reply(&self, method: &str, path_substr: &str, nth: usize) {
        self.add_rule(method, path_substr, nth, Action::DropReply);
    }

    /// Hold OpenBao's answer to the Nth matching request for `duration` before sending it.
    pub fn stall_reply(&self, method: &str, path_substr: &str, nth: usize, duration: Duration) {
        self.add_rule(method, path_substr, nth, Action::StallReply(duration));
    }

    /// Hold the Nth matching request for `duration` before forwarding it (what OpenBao answers
    /// is what it holds then).
    pub fn stall_request(&self, method: &str, path_substr: &str, nth: usize, duration: Duration) {
        self.add_rule(method, path_substr, nth, Action::StallRequest(duration));
    }

    /// Close the client's connection on the Nth matching request without forwarding it.
    pub fn refuse(&self, method: &str, path_substr: &str, nth: usize) {
        self.add_rule(method, path_substr, nth, Action::Refuse);
    }

    /// Answer the Nth matching request with `status` (and an empty JSON body) without forwarding
    /// it: a gateway's error for a request that never reached OpenBao.
    pub fn answer(&self, method: &str, path_substr: &str, nth: usize, status: u16) {
        self.add_rule(method, path_substr, nth, Action::Answer(status));
    }

    /// Remove every rule (the counts stay).
    pub fn clear_rules(&self) {
        self.shared.lock().unwrap().rules.clear();
    }

    /// How many requests with this method, whose target contains `path_substr`, the proxy has read.
    pub fn count(&self, method: &str, path_substr: &str) -> usize {
        self.shared
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|(m, t)| m.eq_ignore_ascii_case(method) && t.contains(path_substr))
            .count()
    }

    /// Every request read so far, as (method, target).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.lock().unwrap().seen.clone()
    }

    fn add_rule(&self, method: &str, path_substr: &str, nth: usize, action: Action) {
        assert!(nth >= 1, "requests are counted from 1");
        self.shared.lock().unwrap().rules.push(Rule {
            method: method.to_string(),
            path_substr: path_substr.to_string(),
            nth,
            matched: 0,
            action,
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.accept.abort();
    }
}

impl Shared {
    /// Count the request, advance every matching rule, and say what to do with it.
    fn on_request(&mut self, method: &str, target: &str) -> Action {
        self.seen.push((method.to_string(), target.to_string()));
        let mut action = Action::Forward;
        for rule in &mut self.rules {
            if rule.method.eq_ignore_ascii_case(method) && target.contains(&rule.path_substr) {
                rule.matched += 1;
                if rule.matched == rule.nth && action == Action::Forward {
                    action = rule.action;
                }
            }
        }
        action
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Mutex<Shared>>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await; // e.g. out of file descriptors
            continue;
        };
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        connections.spawn(async move {
            // Any IO error ends the connection; the client sees it closed.
            let _ = serve(client, upstream, shared).await;
        });
    }
}

/// Relay the requests of one client connection, in order, over one upstream connection (opened
/// at the first request that is forwarded).
async fn serve(
    client: TcpStream,
    upstream_addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
) -> std::io::Result<()> {
    let (client_read, mut client_write) = client.into_split();
    let mut client_read = BufReader::new(client_read);
    let mut upstream: Option<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> = None;
    loop {
        let Some(request) = read_request(&mut client_read).await? else {
            return Ok(()); // the client closed its connection between requests
        };
        let action = shared
            .lock()
            .unwrap()
            .on_request(&request.method, &request.target);
        if action == Action::Refuse {
            return Ok(());
        }
        if let Action::StallRequest(d) = action {
            tokio::time::sleep(d).await;
        }
        if let Action::Answer(status) = action {
            let reply = format!(
                "HTTP/1.1 {status} Proxy\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
            );
            client_write.write_all(reply.as_bytes()).await?;
            continue;
        }
        if upstream.is_none() {
            let (r, w) = TcpStream::connect(upstream_addr).await?.into_split();
            upstream = Some((BufReader::new(r), w));
        }
        let (upstream_read, upstream_write) = upstream.as_mut().unwrap();
        upstream_write.write_all(&request.bytes).await?;
        let reply = read_reply(upstream_read, request.method == "HEAD").await?;
        match action {
            Action::DropReply => return Ok(()),
            Action::StallReply(d) => tokio::time::sleep(d).await,
            Action::Forward | Action::Refuse | Action::StallRequest(_) | Action::Answer(_) => {}
        }
        client_write.write_all(&reply.bytes).await?;
        if reply.close || request.close {
            return Ok(());
        }
    }
}

/// One request as read from the client: its bytes, to forward unchanged.
pub(super) struct Request {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) close: bool,
    pub(super) bytes: Vec<u8>,
}

/// One reply as read from OpenBao.
pub(super) struct Reply {
    /// The connection ends after this reply (`Connection: close`, or a body read to the end).
    pub(super) close: bool,
    /// How many of `bytes` are the status line and headers.
    pub(super) head_len: usize,
    pub(super) bytes: Vec<u8>,
}

/// The start line and headers up to the empty line, as raw bytes and as (name, value) pairs.
struct Head {
    start: String,
    headers: Vec<(String, String)>,
    bytes: Vec<u8>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> std::io::Result<Option<usize>> {
        self.header("content-length")
            .map(|v| v.trim().parse().map_err(|_| invalid("bad Content-Length")))
            .transpose()
    }

    fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// `None` when the stream ends before a request starts.
pub(super) async fn read_request(
    r: &mut (impl AsyncBufRead + Unpin),
) -> std::io::Result<Option<Request>> {
    let Some(mut head) = read_head(r).await? else {
        return Ok(None);
    };
    let mut parts = head.start.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid("bad request line"));
    };
    let (method, target) = (method.to_string(), target.to_string());
    if head.header("transfer-encoding").is_some() {
        return Err(invalid("chunked request bodies are not supported"));
    }
    let length = head.content_length()?.unwrap_or(0);
    read_exact_into(r, length, &mut head.bytes).await?;
    Ok(Some(Request {
        method,
        target,
        close: head.says_close(),
        bytes: head.bytes,
    }))
}

pub(super) async fn read_reply(
    r: &mut (impl AsyncBufRead + Unpin),
    to_head: bool,
) -> std::io::Result<Reply> {
    let mut head = read_head(r)
        .await?
        .ok_or_else(|| invalid("upstream closed before replying"))?;
    let status: u16 = head
        .start
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let mut close = head.says_close();
    let head_len = head.bytes.len();
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if to_head || status == 204 || status == 304 || (100..200).contains(&status) {
        // No body.
    } else if chunked {
        read_chunked_into(r, &mut head.bytes).await?;
    } else if let Some(length) = head.content_length()? {
        read_exact_into(r, length, &mut head.bytes).await?;
    } else {
        r.read_to_end(&mut head.bytes).await?;
        close = true;
    }
    Ok(Reply {
        close,
        head_len,
        bytes: head.bytes,
    })
}

/// `None` when the stream ends before the first byte.
async fn read_head(r: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Option<Head>> {
    let mut bytes = Vec::new();
    let mut start = String::new();
    let mut headers = Vec::new();
    loop {
        let line = read_line_into(r, &mut bytes).await?;
        if line.is_none() && bytes.is_empty() {
            return Ok(None);
        }
        let line = line.ok_or_else(|| invalid("connection closed in the middle of a head"))?;
        if line.is_empty() {
            return Ok(Some(Head {
                start,
                headers,
                bytes,
            }));
        }
        if start.is_empty() {
            start = line;
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
}

/// Append one line (with its CRLF) to `bytes`; return it without the line end, `None` at the end
/// of the stream.
async fn read_line_into(
    r: &mut (impl AsyncBufRead + Unpin),
    bytes: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    let from = bytes.len();
    if r.read_until(b'\n', bytes).await? == 0 {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&bytes[from..]);
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

async fn read_exact_into(
    r: &mut (impl AsyncBufRead + Unpin),
    length: usize,
    bytes: &mut Vec<u8>,
) -> std::io::Result<()> {
    let from = bytes.len();
    bytes.resize(from + length, 0);
    r.read_exact(&mut bytes[from..]).await?;
    Ok(())
}

/// A chunked body: `SIZE[;ext]CRLF DATA CRLF` ... `0 CRLF [trailers] CRLF`.
async fn read_chunked_into(
    r: &mut (impl AsyncBufRead + Unpin),
    bytes: &mut Vec<u8>,
) -> std::io::Result<()> {
    loop {
        let line = read_line_into(r, bytes)
            .await?
            .ok_or_else(|| invalid("connection closed in a chunked body"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size line"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let trailer = read_line_into(r, bytes)
                    .await?
                    .ok_or_else(|| invalid("connection closed in trailers"))?;
                if trailer.is_empty() {
                    return Ok(());
                }
            }
        }
        read_exact_into(r, size + 2, bytes).await?; // the data and its CRLF
    }
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_string())
}
