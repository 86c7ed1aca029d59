//! The one outbound HTTP policy: every client that talks to a provider or a dependent is built
//! here (the Vault transport, with its failover, is the only other one: `vault::http`).
//!
//! Invariant: a [`Client`] never follows a redirect (a 3xx comes back as
//! [`SendError::Redirect`], naming the endpoint and where it pointed, and the request goes
//! nowhere else), always verifies TLS (a caller may add roots, never turn checks off), has
//! connect, read and total timeouts, reads at most its body cap of an answer
//! ([`Client::read_capped`]) and says `secret-rotator/<version>`. A header that carries a secret
//! is made with [`sensitive`], so that no `Debug` of a request or a header map shows it.
//! Proved by `tests/egress.rs` and this module's tests.

use std::ops::Deref;
use std::time::Duration;

use reqwest::header::{HeaderValue, InvalidHeaderValue, LOCATION};
use reqwest::{RequestBuilder, Response};

use crate::config::redact_url;

mod tls;
pub(crate) use tls::shared as shared_tls;

/// The user agent every outbound request carries.
pub const USER_AGENT: &str = concat!("secret-rotator/", env!("CARGO_PKG_VERSION"));

/// How much of an answer is read unless the caller says otherwise.
pub const DEFAULT_BODY_CAP: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// A client built under the policy. Derefs to [`reqwest::Client`] to build requests; send them
/// with [`Client::send`] so that a redirect is an error.
#[derive(Clone, Debug)]
pub struct Client {
    inner: reqwest::Client,
    body_cap: usize,
}

impl Deref for Client {
    type Target = reqwest::Client;
    fn deref(&self) -> &reqwest::Client {
        &self.inner
    }
}

/// What a caller may choose: its timeouts, its body cap, extra trusted roots.
#[derive(Debug)]
pub struct Builder {
    connect: Duration,
    read: Duration,
    total: Duration,
    body_cap: usize,
    roots: Vec<reqwest::Certificate>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
            total: Duration::from_secs(30),
            body_cap: DEFAULT_BODY_CAP,
            roots: Vec::new(),
        }
    }
}

impl Builder {
    /// Bounds a whole request, answer included; connect and read are bounded by it too.
    pub fn timeout(mut self, total: Duration) -> Builder {
        self.total = total;
        self.connect = self.connect.min(total);
        self.read = self.read.min(total);
        self
    }

    pub fn connect_timeout(mut self, connect: Duration) -> Builder {
        self.connect = connect;
        self
    }

    /// The longest wait for the next bytes of an answer.
    pub fn read_timeout(mut self, read: Duration) -> Builder {
        self.read = read;
        self
    }

    /// How many bytes of an answer [`Client::read_capped`] keeps.
    pub fn body_cap(mut self, bytes: usize) -> Builder {
        self.body_cap = bytes;
        self
    }

    /// A root trusted besides the system's (a private CA). Verification stays on.
    pub fn add_root_certificate(mut self, cert: reqwest::Certificate) -> Builder {
        self.roots.push(cert);
        self
    }

    pub fn build(self) -> Result<Client, EgressError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tls_danger_accept_invalid_certs(false)
            .tls_danger_accept_invalid_hostnames(false)
            .connect_timeout(self.connect)
            .read_timeout(self.read)
            .timeout(self.total)
            .user_agent(USER_AGENT);
        if self.roots.is_empty() {
            builder = builder.tls_backend_preconfigured(tls::shared());
        }
        for cert in self.roots {
            builder = builder.add_root_certificate(cert);
        }
        let inner = builder.build().map_err(|e| EgressError::Build(chain(&e)))?;
        Ok(Client {
            inner,
            body_cap: self.body_cap,
        })
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A 3xx answer, not followed. Shows the endpoint and the target with user info and query
/// hidden; never a header of the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{endpoint} answered {status}, a redirect to {location}, not followed")]
pub struct Redirect {
    pub status: u16,
    /// The URL asked, user info and query hidden.
    pub endpoint: String,
    /// The `Location` given, likewise hidden (`nowhere` without one).
    pub location: String,
}

impl Redirect {
    fn of(resp: &Response) -> Option<Redirect> {
        let status = resp.status();
        if !status.is_redirection() {
            return None;
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|l| redact_url(&String::from_utf8_lossy(l.as_bytes())))
            .unwrap_or_else(|| "nowhere".to_string());
        Some(Redirect {
            status: status.as_u16(),
            endpoint: redact_url(resp.url().as_str()),
            location,
        })
    }
}

/// Why [`Client::send`] has no answer to give.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Redirect(Redirect),
    /// No (whole) status line: the caller classifies it (connect, timeout...). Shows the
    /// innermost cause, never the URL.
    #[error("no answer: {}", root_cause(.0))]
    Transport(reqwest::Error),
}

/// The innermost cause of a transport error ("Connection refused (os error 111)"); the URL,
/// which may carry user info or a query, is left out.
pub fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    let mut depth = 0;
    while let Some(next) = cause.source() {
        cause = next;
        depth += 1;
    }
    if depth == 0 {
        return "the request failed".to_string();
    }
    cause.to_string()
}

/// At most the cap of an answer's body.
#[derive(Debug, Default)]
pub struct Capped {
    pub body: Vec<u8>,
    /// The answer had more than the cap; `body` holds the first cap bytes.
    pub over_cap: bool,
    /// The body broke off before its end; `body` holds what came.
    pub error: Option<reqwest::Error>,
}

/// The policy's builder: the one way to make a [`Client`].
pub fn builder() -> Builder {
    Builder::default()
}

impl Client {
    /// The body cap this client was built with.
    pub fn body_cap(&self) -> usize {
        self.body_cap
    }

    /// Sends `request` once. A 3xx is [`SendError::Redirect`]: it is never followed, so no
    /// header reaches another host.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, SendError> {
        let request = request.build().map_err(SendError::Transport)?;
        self.send_request(request).await
    }

    /// [`Client::send`] for a request already built.
    pub async fn send_request(&self, request: reqwest::Request) -> Result<Response, SendError> {
        let resp = self
            .inner
            .execute(request)
            .await
            .map_err(SendError::Transport)?;
        match Redirect::of(&resp) {
            Some(r) => Err(SendError::Redirect(r)),
            None => Ok(resp),
        }
    }

    /// Reads the body up to the client's cap; what lies beyond is not read.
    pub async fn read_capped(&self, resp: &mut Response) -> Capped {
        read_capped(resp, self.body_cap).await
    }
}

/// Reads `resp`'s body up to `cap` bytes; stops at the cap.
pub async fn read_capped(resp: &mut Response, cap: usize) -> Capped {
    let mut out = Capped::default();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - out.body.len();
                if chunk.len() > room {
                    out.body.extend_from_slice(&chunk[..room]);
                    out.over_cap = true;
                    return out;
                }
                out.body.extend_from_slice(&chunk);
            }
            Ok(None) => return out,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
}

/// A header value that carries a secret: `Debug` shows `Sensitive`, and HTTP/2 never indexes
/// it.
pub fn sensitive(value: &str) -> Result<HeaderValue, InvalidHeaderValue> {
    let mut v = HeaderValue::from_str(value)?;
    v.set_sensitive(true);
    Ok(v)
}

/// `a: b: c` from an error and its sources. Callers strip URLs from HTTP client errors first
/// (`without_url`), and none carries a request body, so the text is safe to log. Shared by the
/// Vault transport and the sinks.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_of_a_built_request_never_shows_a_secret_header() {
        let client = builder().build().unwrap();
        let token = "tok-5f0c1d2e3a4b";
        let cases: Vec<(&str, RequestBuilder)> = vec![
            (
                "X-Auth-Token",
                client
                    .get("http://127.0.0.1:9/stores/abc/v3/x")
                    .header("X-Auth-Token", sensitive(token).unwrap()),
            ),
            (
                "Authorization bearer",
                client.get("http://127.0.0.1:9/").bearer_auth(token),
            ),
            (
                "Authorization basic",
                client
                    .get("http://127.0.0.1:9/")
                    .basic_auth("u", Some(token)),
            ),
            (
                "webhook-signature",
                client.post("http://127.0.0.1:9/hook").header(
                    "webhook-signature",
                    sensitive(&format!("v1,{token}")).unwrap(),
                ),
            ),
        ];
        for (name, rb) in cases {
            let request = rb.build().unwrap();
            let shown = format!("{request:?} {:?}", request.headers());
            assert!(!shown.contains(token), "{name}: {shown}");
            assert!(shown.contains("Sensitive"), "{name}: {shown}");
        }
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_the_cap_and_no_further() {
        let cap = 16;
        // (body length, kept, over the cap)
        let cases = [
            (0, 0, false),
            (15, 15, false),
            (16, 16, false),
            (17, 16, true),
        ];
        for (len, kept, over) in cases {
            let answer = axum::http::Response::new(vec![b'x'; len]);
            let mut resp = Response::from(answer);
            let capped = read_capped(&mut resp, cap).await;
            assert_eq!(
                (capped.body.len(), capped.over_cap, capped.error.is_none()),
                (kept, over, true),
                "a body of {len} bytes"
            );
        }
    }

    #[test]
    fn a_redirect_names_the_endpoint_and_target_without_query_or_user_info() {
        let r = Redirect {
            status: 307,
            endpoint: redact_url("https://u:pw@api.example.com/stores/x?token=abc"),
            location: redact_url("http://localhost:1/elsewhere?token=abc"),
        };
        let text = r.to_string();
        assert_eq!(
            text,
            "https://***@api.example.com/stores/x?*** answered 307, a redirect to http://localhost:1/elsewhere?***, not followed"
        );
    }
}
