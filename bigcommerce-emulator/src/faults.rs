//! Fault injection: what to do to the next requests of an endpoint.
//!
//! Invariant: pure; the dice come from the caller's seedable generator.

use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::endpoints::EndpointId;

/// One fault, as set through `POST /__admin/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// An endpoint id (see [`EndpointId`]) or `*` for all of them.
    pub endpoint: String,
    #[serde(flatten)]
    pub mode: FaultMode,
    /// Probability that a matching request is hit, 0.0 to 1.0.
    #[serde(default = "always")]
    pub rate: f64,
    /// Hit only this many requests, then the fault is removed. None: until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

fn always() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum FaultMode {
    /// Wait this long before handling the request.
    Latency { latency_ms: u64 },
    /// Answer `status` (e.g. 500, 502, 503, 401) without handling the request.
    Error { status: u16 },
    /// Answer 429; with the rate-limit headers (a quota storm) or without (platform overload).
    RateLimitStorm { with_headers: bool },
    /// Handle the request (mint, record, revoke...) then close the connection without answering.
    DropAfterCommit,
    /// Handle the request (mint, record, revoke...), then, after `delay_ms`, answer `status` as a
    /// gateway in front of the store would (a 502, or a 504 after its timeout): the change is
    /// made, the client gets a gateway's plain-text error instead of the store's answer.
    GatewayAfterCommit {
        status: u16,
        #[serde(default)]
        delay_ms: u64,
    },
}

impl FaultSpec {
    pub fn new(endpoint: &str, mode: FaultMode) -> FaultSpec {
        FaultSpec {
            endpoint: endpoint.to_string(),
            mode,
            rate: 1.0,
            count: None,
        }
    }

    pub fn rate(mut self, rate: f64) -> FaultSpec {
        self.rate = rate;
        self
    }

    pub fn count(mut self, count: u64) -> FaultSpec {
        self.count = Some(count);
        self
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum FaultError {
    #[error("unknown endpoint id `{0}`")]
    UnknownEndpoint(String),
    #[error("rate must be between 0.0 and 1.0, got {0}")]
    Rate(f64),
    #[error("an error status must be 400 to 599, got {0}")]
    Status(u16),
    #[error("a gateway status must be 500 to 599, got {0}")]
    GatewayStatus(u16),
    #[error("count must be at least 1")]
    Count,
}

/// A fault as listed by `GET /__admin/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultView {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// How many requests it has hit so far.
    pub hits: u64,
}

/// What the faults decided for one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    pub latency_ms: u64,
    pub early: Option<EarlyAnswer>,
    pub drop_after_commit: bool,
    /// Answer this gateway status after this many milliseconds, once the request is handled.
    pub gateway_after_commit: Option<(u16, u64)>,
}

impl FaultPlan {
    /// The request is handled, but its answer does not reach the client as the store gave it.
    pub fn after_commit(&self) -> Option<AfterCommit> {
        if self.drop_after_commit {
            Some(AfterCommit::Drop)
        } else {
            self.gateway_after_commit
                .map(|(status, delay_ms)| AfterCommit::Gateway { status, delay_ms })
        }
    }
}

/// What happens to the answer of a handled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCommit {
    /// The connection is closed without an answer.
    Drop,
    /// A gateway's `status` replaces the answer, `delay_ms` later.
    Gateway { status: u16, delay_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyAnswer {
    Status(u16),
    RateLimitStorm { with_headers: bool },
}

#[derive(Debug, Default)]
pub struct Faults {
    next_id: u64,
    active: Vec<FaultView>,
}

impl Faults {
    pub fn add(&mut self, spec: FaultSpec) -> Result<FaultView, FaultError> {
        if spec.endpoint != "*" && EndpointId::parse(&spec.endpoint).is_none() {
            return Err(FaultError::UnknownEndpoint(spec.endpoint));
        }
        if !(0.0..=1.0).contains(&spec.rate) {
            return Err(FaultError::Rate(spec.rate));
        }
        if let FaultMode::Error { status } = spec.mode {
            if !(400..=599).contains(&status) {
                return Err(FaultError::Status(status));
            }
        }
        if let FaultMode::GatewayAfterCommit { status, .. } = spec.mode {
            if !(500..=599).contains(&status) {
                return Err(FaultError::GatewayStatus(status));
            }
        }
        if spec.count == Some(0) {
            return Err(FaultError::Count);
        }
        self.next_id += 1;
        let view = FaultView {
            id: self.next_id,
            spec,
            hits: 0,
        };
        self.active.push(view.clone());
        Ok(view)
    }

    pub fn list(&self) -> Vec<FaultView> {
        self.active.clone()
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.active.len();
        self.active.retain(|f| f.id != id);
        self.active.len() != before
    }

    pub fn clear(&mut self) {
        self.active.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Rolls the dice of every fault matching `endpoint`, in the order they were set. Latencies
    /// add up; the first early answer wins and later early or drop faults are not rolled.
    pub fn decide(&mut self, endpoint: EndpointId, rng: &mut impl Rng) -> FaultPlan {
        let mut plan = FaultPlan::default();
        for fault in self.active.iter_mut() {
            if fault.spec.endpoint != "*" && fault.spec.endpoint != endpoint.as_str() {
                continue;
            }
            let relevant = match fault.spec.mode {
                FaultMode::Latency { .. } => true,
                _ => plan.early.is_none() && plan.after_commit().is_none(),
            };
            if !relevant {
                continue;
            }
            let hit = fault.spec.rate >= 1.0 || rng.random::<f64>() < fault.spec.rate;
            if !hit {
                continue;
            }
            fault.hits += 1;
            if let Some(left) = fault.spec.count.as_mut() {
                *left -= 1;
            }
            match fault.spec.mode {
                FaultMode::Latency { latency_ms } => plan.latency_ms += latency_ms,
                FaultMode::Error { status } => plan.early = Some(EarlyAnswer::Status(status)),
                FaultMode::RateLimitStorm { with_headers } => {
                    plan.early = Some(EarlyAnswer::RateLimitStorm { with_headers })
                }
                FaultMode::DropAfterCommit => plan.drop_after_commit = true,
                FaultMode::GatewayAfterCommit { status, delay_ms } => {
                    plan.gateway_after_commit = Some((status, delay_ms))
                }
            }
        }
        self.active.retain(|f| f.spec.count != Some(0));
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(3)
    }

    #[test]
    fn specs_are_validated() {
        let mut f = Faults::default();
        let cases = [
            (
                FaultSpec::new("nope", FaultMode::DropAfterCommit),
                Err(FaultError::UnknownEndpoint("nope".into())),
            ),
            (
                FaultSpec::new("*", FaultMode::DropAfterCommit).rate(1.5),
                Err(FaultError::Rate(1.5)),
            ),
            (
                FaultSpec::new("v2_time", FaultMode::Error { status: 200 }),
                Err(FaultError::Status(200)),
            ),
            (
                FaultSpec::new("v2_time", FaultMode::DropAfterCommit).count(0),
                Err(FaultError::Count),
            ),
            (
                FaultSpec::new(
                    "v2_time",
                    FaultMode::GatewayAfterCommit {
                        status: 404,
                        delay_ms: 0,
                    },
                ),
                Err(FaultError::GatewayStatus(404)),
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(f.add(spec).map(|_| ()), expected);
        }
        assert!(f
            .add(FaultSpec::new("v2_time", FaultMode::Error { status: 503 }))
            .is_ok());
    }

    #[test]
    fn a_counted_fault_hits_n_requests_then_goes() {
        let mut f = Faults::default();
        f.add(FaultSpec::new("v2_time", FaultMode::Error { status: 502 }).count(2))
            .unwrap();
        let mut r = rng();
        let early: Vec<_> = (0..3)
            .map(|_| f.decide(EndpointId::V2Time, &mut r).early)
            .collect();
        assert_eq!(
            early,
            [
                Some(EarlyAnswer::Status(502)),
                Some(EarlyAnswer::Status(502)),
                None
            ]
        );
        assert!(f.is_empty());
    }

    #[test]
    fn faults_match_their_endpoint_or_all() {
        let mut f = Faults::default();
        f.add(FaultSpec::new(
            "v2_time",
            FaultMode::Latency { latency_ms: 10 },
        ))
        .unwrap();
        f.add(FaultSpec::new("*", FaultMode::Latency { latency_ms: 5 }))
            .unwrap();
        f.add(FaultSpec::new(
            "storefront_token_create",
            FaultMode::DropAfterCommit,
        ))
        .unwrap();
        let mut r = rng();
        let cases = [
            (EndpointId::V2Time, 15, false),
            (EndpointId::V2Store, 5, false),
            (EndpointId::StorefrontTokenCreate, 5, true),
        ];
        for (endpoint, latency, dropped) in cases {
            let plan = f.decide(endpoint, &mut r);
            assert_eq!(
                (plan.latency_ms, plan.drop_after_commit),
                (latency, dropped),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn the_error_rate_is_roughly_honoured() {
        let mut f = Faults::default();
        f.add(FaultSpec::new("*", FaultMode::Error { status: 503 }).rate(0.25))
            .unwrap();
        let mut r = rng();
        let hits = (0..4000)
            .filter(|_| f.decide(EndpointId::V2Time, &mut r).early.is_some())
            .count();
        assert!((800..1200).contains(&hits), "{hits}");
    }

    #[test]
    fn a_gateway_after_commit_fault_plans_its_status_and_delay_and_excludes_a_drop() {
        let mut f = Faults::default();
        let gateway = FaultMode::GatewayAfterCommit {
            status: 504,
            delay_ms: 3000,
        };
        f.add(FaultSpec::new("storefront_token_create", gateway).count(1))
            .unwrap();
        f.add(FaultSpec::new("*", FaultMode::DropAfterCommit))
            .unwrap();
        let mut r = rng();
        let cases = [
            (
                EndpointId::StorefrontTokenCreate,
                Some(AfterCommit::Gateway {
                    status: 504,
                    delay_ms: 3000,
                }),
            ),
            (EndpointId::StorefrontTokenCreate, Some(AfterCommit::Drop)),
        ];
        for (endpoint, expected) in cases {
            assert_eq!(f.decide(endpoint, &mut r).after_commit(), expected);
        }
        let spec: FaultSpec =
            serde_json::from_str(r#"{"endpoint":"*","mode":"gateway_after_commit","status":502}"#)
                .unwrap();
        assert_eq!(
            spec.mode,
            FaultMode::GatewayAfterCommit {
                status: 502,
                delay_ms: 0
            }
        );
    }

    #[test]
    fn specs_have_a_flat_json_shape() {
        let spec: FaultSpec = serde_json::from_str(
            r#"{"endpoint":"*","mode":"rate_limit_storm","with_headers":false,"count":3}"#,
        )
        .unwrap();
        assert_eq!(
            spec.mode,
            FaultMode::RateLimitStorm {
                with_headers: false
            }
        );
        assert_eq!(spec.rate, 1.0);
        assert_eq!(spec.count, Some(3));
    }
}
