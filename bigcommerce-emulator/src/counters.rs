//! Request and token counters, read through `GET /__admin/counters`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::endpoints::EndpointId;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub requests_total: u64,
    /// By HTTP status, e.g. `"200"`; dropped connections are counted under `"dropped"`.
    pub requests_by_status: BTreeMap<String, u64>,
    /// By endpoint id, e.g. `"v2_time"`.
    pub requests_by_endpoint: BTreeMap<String, u64>,
    pub tokens_minted: u64,
    /// Revocations asked for (through the API or the admin), once per token.
    pub tokens_revoked: u64,
    pub connections_dropped: u64,
}

impl Counters {
    pub fn request(&mut self, endpoint: EndpointId) {
        self.requests_total += 1;
        *self
            .requests_by_endpoint
            .entry(endpoint.as_str().to_string())
            .or_default() += 1;
    }

    pub fn status(&mut self, status: &str) {
        *self
            .requests_by_status
            .entry(status.to_string())
            .or_default() += 1;
    }

    pub fn by_status(&self, status: u16) -> u64 {
        self.requests_by_status
            .get(&status.to_string())
            .copied()
            .unwrap_or(0)
    }

    pub fn by_endpoint(&self, endpoint: &str) -> u64 {
        self.requests_by_endpoint
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }
}
