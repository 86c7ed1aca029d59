//! The one HTTP stack every Vault call goes through: timeouts, TLS, the namespace header, the
//! token, routing to the active node of a cluster, failover, and request counting.
//!
//! Invariants:
//! - TLS is always verified (against the system roots, plus the configured CA file).
//! - An answer is read up to [`BODY_CAP`]; one over it is a lost answer (the request may have
//!   been processed), never read whole.
//! - With several addresses (the nodes of one cluster), every request goes to the active node,
//!   the one whose `sys/health` answers 200. A standby forwards writes but checks a
//!   check-and-set against its own copy, which lags the leader, and serves reads from that copy:
//!   through a standby a CAS fails spuriously and a read right after a write may miss it
//!   (measured on OpenBao 2.7 Raft clusters; tests/raft.rs).
//! - When a node cannot serve a request (connection refused or lost, timeout, sealed, a standby
//!   that finds no active node, 502/503/504, Raft's transient 400, a redirect), the active node
//!   is looked for again among all addresses with a bounded backoff, and the request is sent
//!   again when its [`Resend`] class allows it, for at most [`FAILOVER_BOUND`] in all.
//! - A request that may have been processed (its reply was lost) is sent again only when that
//!   is safe: reads, writes that leave the same state however often they land, and
//!   check-and-set writes (the version check turns a second landing into a conflict). A
//!   check-and-set conflict after such a try is [`VaultError::OutcomeUnknown`], never a success
//!   and never a plain conflict: the first try may have landed, so the caller reads back. A
//!   request that creates something each time ([`Resend::Once`]) is never sent again once it
//!   may have been processed.
//! - The HTTP client follows no redirect. A 307 (a standby pointing at the active node) is
//!   followed here, only to a configured address, so the token goes nowhere else; the node
//!   that answered 307 did not process the request, so sending it on is a first try there.
//! - With one address there is nowhere to fail over to: one try (and its redirects), and the
//!   error says why.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, Url};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{classify_status, Vault, VaultError};
use crate::config::VaultConfig;
use crate::egress::error_chain;
use crate::outcome::{self, Outcome, Reply, Request as OutcomeRequest};

/// How long one request may spend looking for an active node and trying again.
pub const FAILOVER_BOUND: Duration = Duration::from_secs(60);
/// The first and the longest pause between two rounds of `sys/health` probes.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The most of an answer read: OpenBao refuses a request over 32 MiB, so no secret or record it
/// answers with comes near this; an answer over it is cut off, not read whole.
pub const BODY_CAP: usize = 48 * 1024 * 1024;
/// The least time a folder's listing is given ([`Request::slow`]).
pub const LIST_TIMEOUT: Duration = Duration::from_secs(120);
/// Redirects followed in a row before the node is treated as failing.
const MAX_REDIRECTS: u32 = 3;
/// The longest a `sys/health` probe may take (shorter when the request timeout is).
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Raft failover answers (tests/raft.rs): the node did not process the request.
const WAITING_FOR_PRIMARY: &str = "Waiting for the primary to upgrade";
const NO_ACTIVE_NODE: &str = "local node not active but active cluster node not found";
const NOT_LEADER: &str = "node is not the leader";
/// The leader lost its leadership while committing: the write may or may not be committed.
const LEADERSHIP_LOST: &str = "leadership lost";

/// Whether a request may be sent again after a try that may have been processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resend {
    /// Changes nothing, or leaves the same state however often it lands (a read, custom
    /// metadata, max_versions, destroying versions, revoking a token).
    Always,
    /// A check-and-set write: sent again; a mismatch after a try that may have landed is
    /// reported as an unknown outcome.
    CheckAndSet,
    /// Creates something each time (a secret-id, a login's token, a use of a secret-id): sent
    /// again only when no node may have processed it.
    Once,
}

/// One request to Vault, as the callers of [`Vault::send`] describe it.
pub(super) struct Request<'a> {
    pub method: Method,
    /// The path after `/v1/`, with its query string.
    pub api_path: &'a str,
    /// How errors name the request (a KV path such as `secret/app/db`, or the API path).
    pub shown: &'a str,
    pub body: Option<&'a Value>,
    /// The counter of [`super::VaultStats`] this request adds one to, once, whatever the number
    /// of tries.
    pub count: Option<&'a AtomicU64>,
    pub resend: Resend,
    /// A listing of a folder: the server may take as long to answer as it takes to list the
    /// whole folder (a dev server's storage in memory: over 10 s at a million keys), so it is
    /// given [`LIST_TIMEOUT`] when that is longer than the request timeout.
    pub slow: bool,
}

/// What one try at one node came to (a 2xx aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A definite answer of the cluster (404, 403, a CAS mismatch, another 4xx, a 5xx that is
    /// not about failover): it goes back to the caller.
    Answer,
    /// A redirect to the configured address with this index.
    Redirect(usize),
    /// This node cannot serve the request now. `maybe_processed`: the request reached a node
    /// and its reply was lost, so it may have been processed.
    Failover { maybe_processed: bool },
}

/// GET and LIST change nothing.
pub(super) fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD || method.as_str() == "LIST"
}

/// Classify an answer that is not a 2xx. `location` is the `Location` header of a redirect;
/// `from` the index of the address that answered.
pub(super) fn verdict(
    status: u16,
    errors: &[String],
    location: Option<&str>,
    from: usize,
    addresses: &[String],
) -> Verdict {
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    let not_processed = Verdict::Failover {
        maybe_processed: false,
    };
    match status {
        300..=399 => match location.and_then(|l| redirect_target(l, from, addresses)) {
            Some(i) => Verdict::Redirect(i),
            None => not_processed,
        },
        400 if has(WAITING_FOR_PRIMARY) => not_processed,
        500 if has(NO_ACTIVE_NODE) || has(NOT_LEADER) => not_processed,
        500 if has(LEADERSHIP_LOST) => Verdict::Failover {
            maybe_processed: true,
        },
        // Rate limited; sealed or a standby (Vault's own 503 says why in its errors); a gateway
        // in front of a node (502, 504, a bare 503), whose node may have processed it. Whether
        // it may have been processed is the one table's answer for a request that is not
        // idempotent ([`crate::outcome`]).
        429 | 502..=504 => {
            let reply = Reply::Status {
                status,
                origin_refused: !errors.is_empty(),
            };
            Verdict::Failover {
                maybe_processed: outcome::classify(OutcomeRequest::NotIdempotent, reply)
                    == Outcome::Unknown,
            }
        }
        _ => Verdict::Answer,
    }
}

/// The configured address a redirect points at (same scheme, host and port), or `None`: a
/// redirect elsewhere is never followed, the token must not leave the cluster.
pub(super) fn redirect_target(location: &str, from: usize, addresses: &[String]) -> Option<usize> {
    let target = Url::parse(addresses.get(from)?).ok()?.join(location).ok()?;
    addresses
        .iter()
        .position(|a| Url::parse(a).is_ok_and(|u| u.origin() == target.origin()))
}

/// The error a request ends with. A write that may have been processed (by this try or an
/// earlier one) ends as an unknown outcome unless the cluster gave a definite answer that does
/// not depend on it; a check-and-set conflict does depend on it (the earlier try may be the
/// version that is now in the way).
pub(super) fn final_error(
    error: VaultError,
    method: &Method,
    shown: &str,
    maybe_processed: bool,
) -> VaultError {
    if is_read(method) || !maybe_processed {
        return error;
    }
    let reason = match error {
        VaultError::Unavailable { address, reason } => format!("{address}: {reason}"),
        VaultError::Sealed { address } => format!("{address}: sealed"),
        VaultError::CasMismatch { .. } => "an earlier try's reply was lost, and the check-and-set now finds a newer version: that try may be it".to_string(),
        other => return other,
    };
    VaultError::OutcomeUnknown {
        path: shown.to_string(),
        reason,
    }
}

/// The HTTP client shared by every node: request timeout, TLS roots, no redirects (followed
/// by [`Vault::send`], which knows whether the body may go again).
pub(super) fn client(cfg: &VaultConfig) -> Result<reqwest::Client, VaultError> {
    let mut builder = reqwest::Client::builder()
        .timeout(cfg.request_timeout)
        // A connect that hangs is reported as a connect error: nothing was sent yet.
        .connect_timeout(cfg.request_timeout)
        .redirect(reqwest::redirect::Policy::none());
    if cfg.ca_file.is_none() {
        builder = builder.tls_backend_preconfigured(crate::egress::shared_tls());
    }
    if let Some(ca) = &cfg.ca_file {
        let pem = std::fs::read(ca).map_err(|e| VaultError::Other {
            path: ca.display().to_string(),
            status: None,
            message: format!("cannot read CA file: {e}"),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| VaultError::Other {
            path: ca.display().to_string(),
            status: None,
            message: format!("cannot parse CA file: {e}"),
        })?;
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder.build().map_err(|e| VaultError::Other {
        path: String::new(),
        status: None,
        message: format!("cannot build HTTP client: {}", error_chain(&e)),
    })
}

/// The node a request goes to, and the discovery epoch it was chosen in.
#[derive(Debug, Clone, Copy)]
struct Node {
    index: usize,
    epoch: u64,
}

impl Vault {
    /// Send a request to the active node, following redirects to configured addresses and
    /// failing over as the module's rules say.
    pub(super) async fn send(&self, req: Request<'_>) -> Result<Value, VaultError> {
        if let Some(counter) = req.count {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let cluster = self.addresses.len() > 1;
        let deadline = Instant::now() + FAILOVER_BOUND;
        let mut node = self.node_for_request(deadline).await?;
        let mut target = node.index;
        let mut maybe_processed = false;
        let mut redirects = 0;
        let mut pause = BACKOFF_FIRST;
        loop {
            let (verdict, error) = match self.try_node(target, &req).await {
                Ok(value) => {
                    if target != self.active.load(Ordering::Relaxed) {
                        self.active.store(target, Ordering::Relaxed);
                    }
                    return Ok(value);
                }
                Err(failure) => failure,
            };
            let address = &self.addresses[target];
            let processed = match verdict {
                Verdict::Redirect(to) if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    tracing::debug!(%address, to = %self.addresses[to], path = req.shown, "vault redirect to a configured node");
                    target = to;
                    continue;
                }
                Verdict::Redirect(_) => false,
                Verdict::Answer => {
                    // A CAS mismatch from a node that is no longer active may be its stale copy.
                    let stale = cluster
                        && matches!(error, VaultError::CasMismatch { .. })
                        && !self.answers_active(target).await;
                    if !stale {
                        // A 5xx that does not say the node skipped the request: it may have
                        // been applied.
                        let five_xx = matches!(error, VaultError::Unavailable { .. });
                        return Err(final_error(
                            error,
                            &req.method,
                            req.shown,
                            maybe_processed || five_xx,
                        ));
                    }
                    false
                }
                Verdict::Failover { maybe_processed } => maybe_processed,
            };
            maybe_processed |= processed;
            let give_up = !cluster
                || (maybe_processed && req.resend == Resend::Once)
                || Instant::now() >= deadline;
            if give_up {
                return Err(final_error(error, &req.method, req.shown, maybe_processed));
            }
            tracing::warn!(%address, path = req.shown, error = %error, "vault node cannot serve the request; looking for the active node");
            match self.rediscover(target, node.epoch, deadline).await {
                Some(found) => {
                    if found.index == target {
                        // The same node again (rate limited, a gateway failing, Raft catching
                        // up): do not hammer it.
                        let left = deadline.saturating_duration_since(Instant::now());
                        tokio::time::sleep(pause.min(left)).await;
                        pause = (pause * 2).min(BACKOFF_MAX);
                    }
                    node = found;
                    target = found.index;
                    redirects = 0;
                }
                None => return Err(final_error(error, &req.method, req.shown, maybe_processed)),
            }
        }
    }

    /// A raw JSON call: `api_path` is the path after `/v1/`; errors are classified by
    /// [`classify_status`]. Not counted in [`super::VaultStats`]: callers count.
    pub(super) async fn raw(
        &self,
        method: reqwest::Method,
        api_path: &str,
        body: Option<Value>,
        resend: Resend,
    ) -> Result<Value, VaultError> {
        self.send(Request {
            method,
            api_path,
            shown: api_path,
            body: body.as_ref(),
            count: None,
            resend,
            slow: false,
        })
        .await
    }

    /// The node a new request starts at: the known active node, or (a cluster whose active
    /// node is not known) the one found now.
    async fn node_for_request(&self, deadline: Instant) -> Result<Node, VaultError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if self.addresses.len() < 2 || self.known.load(Ordering::Acquire) {
            return Ok(Node {
                index: self.active.load(Ordering::Relaxed),
                epoch,
            });
        }
        self.rediscover(usize::MAX, epoch, deadline)
            .await
            .ok_or_else(|| VaultError::Unavailable {
                address: self.addresses.join(", "),
                reason: format!(
                    "no node answered sys/health as the active node within {}s",
                    FAILOVER_BOUND.as_secs()
                ),
            })
    }

    /// Find the active node again after `failed` could not serve a request chosen in `epoch`.
    /// One request looks at a time; the others wait and take what it found. `None` when no
    /// node is active by `deadline`.
    async fn rediscover(&self, failed: usize, epoch: u64, deadline: Instant) -> Option<Node> {
        let _one_at_a_time = tokio::time::timeout_at(deadline.into(), self.discovery.lock())
            .await
            .ok()?;
        let now_epoch = self.epoch.load(Ordering::Acquire);
        if now_epoch != epoch && self.known.load(Ordering::Acquire) {
            return Some(Node {
                index: self.active.load(Ordering::Relaxed),
                epoch: now_epoch,
            });
        }
        self.known.store(false, Ordering::Release);
        let mut backoff = BACKOFF_FIRST;
        let started = Instant::now();
        loop {
            if let Some(index) = self.probe_all(failed).await {
                self.active.store(index, Ordering::Relaxed);
                self.known.store(true, Ordering::Release);
                let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
                tracing::info!(address = %self.addresses[index], after_ms = started.elapsed().as_millis() as u64, "vault active node found");
                return Some(Node { index, epoch });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// At start: the active node of a cluster, when one answers now (else the first request
    /// looks for it, within its bound).
    pub(super) async fn pick_active_node(&self) {
        if self.addresses.len() < 2 {
            return;
        }
        if let Some(index) = self.probe_all(usize::MAX).await {
            self.active.store(index, Ordering::Relaxed);
            self.known.store(true, Ordering::Release);
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Probe every node's `sys/health` at once; the index of one that answers 200 (active),
    /// another than `failed` when there is one.
    async fn probe_all(&self, failed: usize) -> Option<usize> {
        let probes = (0..self.addresses.len()).map(|i| self.answers_active(i));
        let active: Vec<usize> = futures_util::future::join_all(probes)
            .await
            .into_iter()
            .enumerate()
            .filter_map(|(i, active)| active.then_some(i))
            .collect();
        active
            .iter()
            .copied()
            .find(|&i| i != failed)
            .or(active.first().copied())
    }

    /// Does this node's `sys/health` answer 200 (initialized, unsealed, active)?
    async fn answers_active(&self, index: usize) -> bool {
        let url = format!("{}/v1/sys/health", self.addresses[index]);
        match self.http.get(&url).timeout(self.probe_timeout).send().await {
            Ok(resp) => resp.status().as_u16() == 200,
            Err(_) => false,
        }
    }

    /// One try at one node. A 2xx is the answer's JSON; anything else is classified.
    async fn try_node(
        &self,
        index: usize,
        req: &Request<'_>,
    ) -> Result<Value, (Verdict, VaultError)> {
        let address = &self.addresses[index];
        let url = format!("{address}/v1/{}", req.api_path);
        let mut builder = self
            .http
            .request(req.method.clone(), &url)
            .header("X-Vault-Request", "true");
        let token = self.current_token();
        if !token.expose_secret().is_empty() {
            let mut value =
                reqwest::header::HeaderValue::from_str(token.expose_secret()).map_err(|_| {
                    (
                        Verdict::Answer,
                        VaultError::Login {
                            reason: "the token holds characters not allowed in a header".into(),
                        },
                    )
                })?;
            // Kept out of the Debug output of requests.
            value.set_sensitive(true);
            builder = builder.header("X-Vault-Token", value);
        }
        if let Some(ns) = &self.namespace {
            builder = builder.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = req.body {
            builder = builder.json(b);
        }
        if req.slow {
            builder = builder.timeout(self.list_timeout);
        }
        let resp = builder
            .send()
            .await
            .map_err(|e| transport_failure(e, address, req.shown))?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let mut resp = resp;
        let capped = crate::egress::read_capped(&mut resp, BODY_CAP).await;
        if let Some(e) = capped.error {
            return Err(transport_failure(e, address, req.shown));
        }
        if capped.over_cap {
            // Like an answer cut off: the node may have done what was asked.
            let error = VaultError::Unavailable {
                address: address.to_string(),
                reason: format!(
                    "status {status} with an answer larger than the {} MiB cap, not read",
                    BODY_CAP >> 20
                ),
            };
            let verdict = Verdict::Failover {
                maybe_processed: true,
            };
            return Err((verdict, error));
        }
        let value: Value = serde_json::from_slice(&capped.body).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let errors = error_list(&value);
        let verdict = verdict(status, &errors, location.as_deref(), index, &self.addresses);
        let error = match verdict {
            Verdict::Failover { .. } if (300..400).contains(&status) => VaultError::Unavailable {
                address: address.to_string(),
                reason: format!("status {status}: a redirect to an address that is not configured"),
            },
            _ => classify_status(status, &errors, req.shown, address),
        };
        Err((verdict, error))
    }
}

/// A request that got no answer. Never connected: not sent. Otherwise it may have been
/// processed.
fn transport_failure(e: reqwest::Error, address: &str, shown: &str) -> (Verdict, VaultError) {
    let (builder, connect) = (e.is_builder(), e.is_connect());
    let reason = error_chain(&e.without_url());
    if builder {
        let error = VaultError::Other {
            path: shown.to_string(),
            status: None,
            message: reason,
        };
        return (Verdict::Answer, error);
    }
    let error = VaultError::Unavailable {
        address: address.to_string(),
        reason,
    };
    (
        Verdict::Failover {
            maybe_processed: !connect,
        },
        error,
    )
}

/// The `errors` list of a Vault error answer.
fn error_list(value: &Value) -> Vec<String> {
    value
        .get("errors")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<String> {
        [
            "http://127.0.0.1:8200",
            "http://127.0.0.1:8210",
            "https://vault-3.internal:8200",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn only_reads_are_reads() {
        let cases = [
            ("GET", true),
            ("LIST", true),
            ("HEAD", true),
            ("POST", false),
            ("PUT", false),
            ("DELETE", false),
            ("PATCH", false),
        ];
        for (method, read) in cases {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(is_read(&m), read, "{method}");
        }
    }

    #[test]
    fn classifies_answers_as_failover_redirect_or_a_definite_answer() {
        let failover = |maybe_processed| Verdict::Failover { maybe_processed };
        let to_second = Some("http://127.0.0.1:8210/v1/secret/data/x");
        let cases: &[(u16, &[&str], Option<&str>, Verdict)] = &[
            (503, &["Vault is sealed"], None, failover(false)),
            // A bare 503 is a gateway's (Vault's own says why): the node may have done it.
            (503, &[], None, failover(true)),
            (429, &[], None, failover(false)),
            (307, &[], to_second, Verdict::Redirect(1)),
            (
                307,
                &[],
                Some("http://10.0.0.9:8200/v1/secret/data/x"),
                failover(false),
            ),
            (307, &[], None, failover(false)),
            (
                400,
                &["Waiting for the primary to upgrade from non-versioned to versioned data"],
                None,
                failover(false),
            ),
            (
                500,
                &["local node not active but active cluster node not found"],
                None,
                failover(false),
            ),
            (500, &["node is not the leader"], None, failover(false)),
            (
                500,
                &["failed to persist: leadership lost while committing log"],
                None,
                failover(true),
            ),
            (502, &[], None, failover(true)),
            (504, &[], None, failover(true)),
            (500, &["internal error"], None, Verdict::Answer),
            (
                400,
                &["check-and-set parameter did not match the current version"],
                None,
                Verdict::Answer,
            ),
            (
                400,
                &["check-and-set parameter required for this call"],
                None,
                Verdict::Answer,
            ),
            (403, &["permission denied"], None, Verdict::Answer),
            (404, &[], None, Verdict::Answer),
        ];
        for (status, errors, location, expected) in cases {
            let errors: Vec<String> = errors.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                verdict(*status, &errors, *location, 0, &nodes()),
                *expected,
                "{status} {errors:?} {location:?}"
            );
        }
    }

    /// The transport and the providers share one table: for a write that creates something
    /// (`Resend::Once`), "its reply may be lost" is exactly the table's unknown outcome, for
    /// every status but a redirect, with Vault's error body or without (Vault's own failover
    /// texts aside: they are its word that the node skipped the request).
    #[test]
    fn a_write_may_have_landed_exactly_when_the_outcome_table_says_unknown() {
        let bodies: [&[&str]; 2] = [&[], &["some error"]];
        for status in (100..300).chain(400..600) {
            for errors in bodies {
                let errors: Vec<String> = errors.iter().map(|s| s.to_string()).collect();
                let may_have_landed = match verdict(status, &errors, None, 0, &nodes()) {
                    Verdict::Failover { maybe_processed } => maybe_processed,
                    Verdict::Redirect(_) => false,
                    Verdict::Answer => {
                        let e = classify_status(status, &errors, "p", "a");
                        let e = final_error(e, &Method::POST, "p", false);
                        // `send`: a 5xx answer that is not about failover may have landed.
                        matches!(e, VaultError::Unavailable { .. })
                    }
                };
                let reply = Reply::Status {
                    status,
                    origin_refused: !errors.is_empty(),
                };
                let table = outcome::classify(OutcomeRequest::NotIdempotent, reply);
                let expected = if (200..300).contains(&status) {
                    false
                } else {
                    table == Outcome::Unknown
                };
                assert_eq!(may_have_landed, expected, "{status} {errors:?}: {table:?}");
            }
        }
    }

    #[test]
    fn a_redirect_is_followed_only_to_a_configured_address() {
        let cases: &[(&str, usize, Option<usize>)] = &[
            ("http://127.0.0.1:8210/v1/secret/data/x", 0, Some(1)),
            (
                "http://127.0.0.1:8200/v1/secret/data/x?version=2",
                1,
                Some(0),
            ),
            ("https://vault-3.internal:8200/v1/sys/health", 0, Some(2)),
            ("https://vault-3.internal/v1/x", 0, None),
            // The scheme counts: the token never goes out in clear to a TLS node's port.
            ("http://vault-3.internal:8200/v1/x", 0, None),
            ("https://127.0.0.1:8210/v1/x", 0, None),
            ("http://127.0.0.1:8211/v1/x", 0, None),
            ("http://evil.example:8200/v1/x", 0, None),
            ("http://127.0.0.1:8200@evil.example/v1/x", 0, None),
            // A relative redirect stays on the node that sent it.
            ("/v1/secret/data/x", 1, Some(1)),
            ("http://[::1", 0, None),
        ];
        for (location, from, expected) in cases {
            assert_eq!(
                redirect_target(location, *from, &nodes()),
                *expected,
                "{location} from {from}"
            );
        }
    }

    #[test]
    fn a_write_that_may_have_landed_ends_as_an_unknown_outcome() {
        let error = |kind: &str| match kind {
            "unavailable" => VaultError::Unavailable {
                address: "http://127.0.0.1:8200".into(),
                reason: "connection reset".into(),
            },
            "cas_mismatch" => VaultError::CasMismatch {
                path: "secret/x".into(),
            },
            _ => VaultError::NotFound {
                path: "secret/x".into(),
            },
        };
        // (method, the last try's error, may an earlier or this try have been processed, the
        // error the caller gets)
        let cases = [
            ("GET", "unavailable", true, "unavailable"),
            ("LIST", "unavailable", true, "unavailable"),
            ("POST", "unavailable", false, "unavailable"),
            ("POST", "unavailable", true, "outcome_unknown"),
            ("PUT", "unavailable", true, "outcome_unknown"),
            ("POST", "cas_mismatch", false, "cas_mismatch"),
            ("POST", "cas_mismatch", true, "outcome_unknown"),
            ("POST", "not_found", true, "not_found"),
            ("GET", "not_found", true, "not_found"),
        ];
        for (method, last, maybe_processed, kind) in cases {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let e = final_error(error(last), &m, "secret/x", maybe_processed);
            assert_eq!(e.kind(), kind, "{method} {last} {maybe_processed}");
            if kind == "outcome_unknown" {
                assert!(e.to_string().contains("secret/x"), "{e}");
            }
        }
    }
}
