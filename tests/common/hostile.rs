//! A hostile network on loopback: a proxy placed between the daemon binary and one remote
//! (Vault, the store API, the storefront GraphQL endpoint, a webhook receiver, the `http`
//! provider's endpoints), which does to one request what a broken or malicious network does.
//!
//! A fault is armed with a matcher (a method and a substring of the request target) and fires
//! once, on the next request that matches; every other request is forwarded byte for byte (one
//! upstream connection per client connection, as `common::proxy` does). The faults:
//! - [`Fault::Redirect`]: answers 307 to a [`Recorder`] on another port (named `localhost`),
//!   without forwarding; the recorder keeps every byte it is sent;
//! - [`Fault::Gateway`]: forwards, lets the origin act, and answers a gateway's 502 or 504 in
//!   place of the origin's answer;
//! - [`Fault::DropReply`]: forwards, then closes the connection without an answer;
//! - [`Fault::Stall`]: forwards, then holds the answer past every timeout (10 minutes);
//! - [`Fault::Oversize`]: forwards, then answers 200 with a body of [`OVERSIZE`] bytes, far more
//!   than any cap (it stops when the client hangs up; [`Hostile::oversize_sent`] says how far it
//!   got);
//! - [`Fault::ResetMidBody`]: forwards, sends the head and half the origin's body, then resets
//!   the connection (`SO_LINGER` 0);
//! - [`Fault::TlsOtherName`], [`Fault::TlsUntrusted`] (a proxy started with [`Certs`]): the next
//!   connection is offered a certificate for another name signed by the trusted test CA, or one
//!   for the right name signed by a CA nobody trusts. A request read over such a connection is
//!   counted in [`Hostile::leaked`].
//!
//! Every request read is counted with the time it was read, for the no-hot-loop bound.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::proxy::{read_reply, read_request};

/// The body [`Fault::Oversize`] offers: far more than any cap the daemon has (the Vault
/// transport's 48 MiB is the largest), so that a client reading it whole shows.
pub const OVERSIZE: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Redirect,
    Gateway(u16),
    DropReply,
    Stall,
    Oversize,
    ResetMidBody,
    TlsOtherName,
    TlsUntrusted,
}

impl Fault {
    pub fn is_tls(self) -> bool {
        matches!(self, Fault::TlsOtherName | Fault::TlsUntrusted)
    }

    /// Whether the origin acted on the request before the fault (so a mint made a credential).
    pub fn after_forwarding(self) -> bool {
        matches!(
            self,
            Fault::Gateway(_)
                | Fault::DropReply
                | Fault::Stall
                | Fault::Oversize
                | Fault::ResetMidBody
        )
    }
}

/// The certificates of the hostile network: a test CA (written to [`Certs::ca_file`], for the
/// daemon to trust), a certificate for `127.0.0.1` signed by it, one for `other.example` signed
/// by it, and one for `127.0.0.1` signed by a CA that is nowhere trusted.
pub struct Certs {
    pub ca_file: PathBuf,
    good: Arc<ServerConfig>,
    other_name: Arc<ServerConfig>,
    untrusted: Arc<ServerConfig>,
}

impl Certs {
    pub fn generate(dir: &Path) -> Certs {
        let (authority, authority_key) = ca("hostile-network test CA");
        let (stranger, stranger_key) = ca("a CA nobody trusts");
        let ca_file = dir.join("hostile-ca.pem");
        std::fs::write(&ca_file, authority.pem()).unwrap();
        Certs {
            ca_file,
            good: server_config(&["127.0.0.1"], &authority, &authority_key),
            other_name: server_config(&["other.example"], &authority, &authority_key),
            untrusted: server_config(&["127.0.0.1"], &stranger, &stranger_key),
        }
    }
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}

fn server_config(
    names: &[&str],
    issuer: &rcgen::Certificate,
    issuer_key: &rcgen::KeyPair,
) -> Arc<ServerConfig> {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, issuer, issuer_key)
        .unwrap();
    let chain = vec![
        cert.der().clone(),
        CertificateDer::from(issuer.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// A listener that records every byte anyone sends it (the "other host" of a redirect), and
/// answers `200 {}`.
pub struct Recorder {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<usize>>,
    accept: JoinHandle<()>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (r, c) = (received.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                *c.lock().unwrap() += 1;
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let until = Instant::now() + Duration::from_secs(2);
                    while let Ok(Ok(n)) =
                        tokio::time::timeout_at(until.into(), conn.read(&mut buf)).await
                    {
                        if n == 0 {
                            break;
                        }
                        r.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                        )
                        .await;
                });
            }
        });
        Recorder {
            addr,
            received,
            connections,
            accept,
        }
    }

    /// Where a redirect sends the client: this listener, by another name than the proxy's.
    pub fn location(&self, target: &str) -> String {
        format!("http://localhost:{}/elsewhere{target}", self.addr.port())
    }

    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// Everything received so far, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The proxy in front of one remote. Stops accepting and closes its connections on drop.
pub struct Hostile {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Mutex<Shared>>,
    accept: JoinHandle<()>,
}

struct Armed {
    method: String,
    path_substr: String,
    fault: Fault,
}

#[derive(Default)]
struct Shared {
    armed: Option<Armed>,
    /// When the last fault was armed.
    armed_at: Option<Instant>,
    fired: bool,
    /// (when, method, target) of every request read.
    seen: Vec<(Instant, String, String)>,
    oversize_sent: usize,
    /// Requests read over a connection that was offered a bad certificate.
    leaked: usize,
}

impl Hostile {
    /// A proxy to `upstream` (plain HTTP), speaking TLS to the client when `certs` is given.
    /// `recorder` is where a redirect points.
    pub async fn start(
        upstream: SocketAddr,
        recorder: &Recorder,
        certs: Option<&Certs>,
    ) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let tls = certs.map(|c| (c.good.clone(), c.other_name.clone(), c.untrusted.clone()));
        let ctx = Ctx {
            upstream,
            recorder_port: recorder.addr.port(),
            shared: shared.clone(),
        };
        let accept = tokio::spawn(accept_loop(listener, tls, ctx));
        Hostile {
            addr,
            tls: certs.is_some(),
            shared,
            accept,
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, as errors name it.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// Arm `fault` for the next request matching `method` and `path_substr` (a substring of the
    /// target, or with a trailing `$` its end; a TLS fault: the next connection). Replaces a fault armed before that has not fired.
    pub fn arm(&self, method: &str, path_substr: &str, fault: Fault) {
        assert!(!fault.is_tls() || self.tls, "a TLS fault needs a TLS proxy");
        let mut s = self.shared.lock().unwrap();
        s.armed = Some(Armed {
            method: method.to_string(),
            path_substr: path_substr.to_string(),
            fault,
        });
        s.fired = false;
        s.oversize_sent = 0;
        s.armed_at = Some(Instant::now());
    }

    pub fn disarm(&self) {
        self.shared.lock().unwrap().armed = None;
    }

    /// Whether the fault armed last has fired.
    pub fn fired(&self) -> bool {
        self.shared.lock().unwrap().fired
    }

    /// Requests read since `since` with this method whose target contains `path_substr`.
    pub fn count_since(&self, since: Instant, method: &str, path_substr: &str) -> usize {
        self.shared
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|(t, m, p)| {
                *t >= since && m.eq_ignore_ascii_case(method) && matches(p, path_substr)
            })
            .count()
    }

    /// Requests matching since the last fault was armed (none if none was).
    pub fn count_since_armed(&self, method: &str, path_substr: &str) -> usize {
        let since = self.shared.lock().unwrap().armed_at;
        since.map_or(0, |t| self.count_since(t, method, path_substr))
    }

    /// Every request read since `since`.
    pub fn total_since(&self, since: Instant) -> usize {
        self.shared
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|(t, _, _)| *t >= since)
            .count()
    }

    /// Bytes of the oversize body sent before the client hung up (or all of [`OVERSIZE`]).
    pub fn oversize_sent(&self) -> usize {
        self.shared.lock().unwrap().oversize_sent
    }

    /// Requests read over connections that were offered a bad certificate.
    pub fn leaked(&self) -> usize {
        self.shared.lock().unwrap().leaked
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A target matches a substring of it, or with a trailing `$` its end (the query left out).
fn matches(target: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('$') {
        Some(end) => target.split('?').next().unwrap_or("").ends_with(end),
        None => target.contains(pattern),
    }
}

#[derive(Clone)]
struct Ctx {
    upstream: SocketAddr,
    recorder_port: u16,
    shared: Arc<Mutex<Shared>>,
}

type Configs = (Arc<ServerConfig>, Arc<ServerConfig>, Arc<ServerConfig>);

impl Ctx {
    /// A TLS fault armed for this connection, taken (it fires once).
    fn take_tls_fault(&self) -> Option<Fault> {
        let mut s = self.shared.lock().unwrap();
        if s.armed.as_ref().is_some_and(|a| a.fault.is_tls()) {
            s.fired = true;
            return s.armed.take().map(|a| a.fault);
        }
        None
    }

    /// Count the request, and take the fault armed for it.
    fn on_request(&self, method: &str, target: &str, bad_cert: bool) -> Option<Fault> {
        let mut s = self.shared.lock().unwrap();
        s.seen
            .push((Instant::now(), method.to_string(), target.to_string()));
        if bad_cert {
            s.leaked += 1;
        }
        let hit = s.armed.as_ref().is_some_and(|a| {
            !a.fault.is_tls()
                && a.method.eq_ignore_ascii_case(method)
                && matches(target, &a.path_substr)
        });
        if hit {
            s.fired = true;
            return s.armed.take().map(|a| a.fault);
        }
        None
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<Configs>, ctx: Ctx) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let ctx = ctx.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            // A second handle on the socket, to reset it (`SO_LINGER` 0) whatever wraps it.
            let Ok(std) = client.into_std() else { return };
            let Ok(raw) = std.try_clone() else { return };
            let Ok(client) = TcpStream::from_std(std) else {
                return;
            };
            match tls {
                None => {
                    let _ = serve(client, raw, false, &ctx).await;
                }
                Some((good, other_name, untrusted)) => {
                    let fault = ctx.take_tls_fault();
                    let config = match fault {
                        Some(Fault::TlsOtherName) => other_name,
                        Some(Fault::TlsUntrusted) => untrusted,
                        _ => good,
                    };
                    let Ok(stream) = TlsAcceptor::from(config).accept(client).await else {
                        return; // the client refused the certificate
                    };
                    let _ = serve(stream, raw, fault.is_some(), &ctx).await;
                }
            }
        });
    }
}

/// Relay one client connection's requests, doing the armed fault to the one it matches.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    client: S,
    raw: std::net::TcpStream,
    bad_cert: bool,
    ctx: &Ctx,
) -> std::io::Result<()> {
    let (client_read, mut client_write) = tokio::io::split(client);
    let mut client_read = BufReader::new(client_read);
    let mut upstream: Option<(
        BufReader<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
    )> = None;
    loop {
        let Some(request) = read_request(&mut client_read).await? else {
            return Ok(());
        };
        let fault = ctx.on_request(&request.method, &request.target, bad_cert);
        if fault == Some(Fault::Redirect) {
            let location = format!(
                "http://localhost:{}/elsewhere{}",
                ctx.recorder_port, request.target
            );
            let reply = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n"
            );
            client_write.write_all(reply.as_bytes()).await?;
            client_write.flush().await?;
            continue;
        }
        if upstream.is_none() {
            let (r, w) = TcpStream::connect(ctx.upstream).await?.into_split();
            upstream = Some((BufReader::new(r), w));
        }
        let (upstream_read, upstream_write) = upstream.as_mut().unwrap();
        upstream_write.write_all(&request.bytes).await?;
        let reply = read_reply(upstream_read, request.method == "HEAD").await?;
        match fault {
            None | Some(Fault::Redirect | Fault::TlsOtherName | Fault::TlsUntrusted) => {
                client_write.write_all(&reply.bytes).await?;
                client_write.flush().await?;
                if reply.close || request.close {
                    return Ok(());
                }
            }
            Some(Fault::Gateway(status)) => {
                let body = format!("<html><body><h1>{status} Gateway</h1></body></html>");
                let answer = format!(
                    "HTTP/1.1 {status} Gateway\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                client_write.write_all(answer.as_bytes()).await?;
                client_write.flush().await?;
            }
            Some(Fault::DropReply) => return Ok(()),
            Some(Fault::Stall) => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                return Ok(());
            }
            Some(Fault::Oversize) => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                client_write.write_all(head.as_bytes()).await?;
                let chunk = vec![b'x'; 64 * 1024];
                let framed = [
                    format!("{:x}\r\n", chunk.len()).into_bytes(),
                    chunk,
                    b"\r\n".to_vec(),
                ]
                .concat();
                let mut sent = 0;
                while sent < OVERSIZE {
                    if client_write.write_all(&framed).await.is_err() {
                        break;
                    }
                    sent += 64 * 1024;
                    ctx.shared.lock().unwrap().oversize_sent = sent;
                }
                let _ = client_write.write_all(b"0\r\n\r\n").await;
                let _ = client_write.flush().await;
                return Ok(());
            }
            Some(Fault::ResetMidBody) => {
                let body = reply.bytes.len() - reply.head_len;
                let upto = if body > 0 {
                    reply.head_len + body / 2
                } else {
                    reply.head_len / 2
                };
                client_write.write_all(&reply.bytes[..upto]).await?;
                client_write.flush().await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // Linger 0: closing the socket sends a reset, not a FIN.
                TcpStream::from_std(raw)?.set_zero_linger()?;
                return Ok(());
            }
        }
    }
}
