//! Stable endpoint ids, and which id and store a request path belongs to.
//!
//! The ids name endpoints in fault specs and in the request counters.
//! Invariant: pure.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointId {
    /// `GET /stores/{hash}/v2/time`
    V2Time,
    /// `GET /stores/{hash}/v2/store`
    V2Store,
    /// The per-resource probes, including `/v3/catalog/summary`.
    ScopeProbe,
    /// The three `POST /stores/{hash}/v3/storefront/api-token*`.
    StorefrontTokenCreate,
    /// `DELETE /stores/{hash}/v3/storefront/api-token`
    StorefrontTokenRevoke,
    /// `POST /store-{hash}/graphql`
    StorefrontGraphql,
    /// Everything under `/store-{hash}/api/v2/`.
    LegacyApi,
    /// Any other path under a store's prefix.
    NotFound,
}

impl EndpointId {
    pub const ALL: [EndpointId; 8] = [
        EndpointId::V2Time,
        EndpointId::V2Store,
        EndpointId::ScopeProbe,
        EndpointId::StorefrontTokenCreate,
        EndpointId::StorefrontTokenRevoke,
        EndpointId::StorefrontGraphql,
        EndpointId::LegacyApi,
        EndpointId::NotFound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointId::V2Time => "v2_time",
            EndpointId::V2Store => "v2_store",
            EndpointId::ScopeProbe => "scope_probe",
            EndpointId::StorefrontTokenCreate => "storefront_token_create",
            EndpointId::StorefrontTokenRevoke => "storefront_token_revoke",
            EndpointId::StorefrontGraphql => "storefront_graphql",
            EndpointId::LegacyApi => "legacy_api",
            EndpointId::NotFound => "not_found",
        }
    }

    pub fn parse(s: &str) -> Option<EndpointId> {
        EndpointId::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Storefront GraphQL has no REST quota; everything else counts against the store's.
    pub fn rate_limited(self) -> bool {
        self != EndpointId::StorefrontGraphql
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which error body shape a path answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `{"status","title","type","errors"}`
    V3,
    /// `[{"status","message"}]`, also the legacy API
    V2,
    /// `{"errors":[{"message"}]}`
    Graphql,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub endpoint: EndpointId,
    pub store_hash: String,
    pub flavor: Flavor,
}

/// Scope probes: path below `/stores/{hash}/`, resource, and whether it is a v2 path.
pub const PROBES: &[(&str, crate::scopes::Resource, Flavor)] = {
    use crate::scopes::Resource as R;
    &[
        ("v3/content/widgets", R::Content, Flavor::V3),
        ("v3/customers", R::Customers, Flavor::V3),
        (
            "v3/settings/store/profile",
            R::InformationAndSettings,
            Flavor::V3,
        ),
        ("v3/promotions", R::Marketing, Flavor::V3),
        ("v2/orders", R::Orders, Flavor::V2),
        ("v3/orders/transactions", R::OrderTransactions, Flavor::V3),
        ("v3/catalog/summary", R::Products, Flavor::V3),
        ("v3/catalog/products", R::Products, Flavor::V3),
        ("v3/carts", R::Carts, Flavor::V3),
        ("v3/checkouts/settings", R::Checkouts, Flavor::V3),
        ("v3/themes", R::Themes, Flavor::V3),
        ("v3/sites", R::SitesAndRoutes, Flavor::V3),
        ("v3/channels", R::ChannelSettings, Flavor::V3),
        ("v3/channels/1/listings", R::ChannelListings, Flavor::V3),
        (
            "v3/storefront/api-token",
            R::StorefrontApiTokens,
            Flavor::V3,
        ),
        (
            "v3/storefront/api-token-customer-impersonation",
            R::StorefrontApiCustomerImpersonation,
            Flavor::V3,
        ),
    ]
};

/// Classifies a request path; None for admin and unknown prefixes.
pub fn classify(method: &str, path: &str) -> Option<Classified> {
    if let Some(rest) = path.strip_prefix("/stores/") {
        let (hash, below) = rest.split_once('/').unwrap_or((rest, ""));
        let below = below.trim_end_matches('/');
        let flavor = if below.starts_with("v2/") {
            Flavor::V2
        } else {
            Flavor::V3
        };
        let endpoint = match (method, below) {
            ("GET", "v2/time") => EndpointId::V2Time,
            ("GET", "v2/store") => EndpointId::V2Store,
            (
                "POST",
                "v3/storefront/api-token"
                | "v3/storefront/api-token-private"
                | "v3/storefront/api-token-customer-impersonation",
            ) => EndpointId::StorefrontTokenCreate,
            ("DELETE", "v3/storefront/api-token") => EndpointId::StorefrontTokenRevoke,
            (_, p) if PROBES.iter().any(|(probe, _, _)| *probe == p) => EndpointId::ScopeProbe,
            _ => EndpointId::NotFound,
        };
        return Some(Classified {
            endpoint,
            store_hash: hash.to_string(),
            flavor,
        });
    }
    if let Some(rest) = path.strip_prefix("/store-") {
        let (hash, below) = rest.split_once('/').unwrap_or((rest, ""));
        let (endpoint, flavor) = if below == "graphql" {
            (EndpointId::StorefrontGraphql, Flavor::Graphql)
        } else if below.starts_with("api/v2/") {
            (EndpointId::LegacyApi, Flavor::V2)
        } else {
            (EndpointId::NotFound, Flavor::V2)
        };
        return Some(Classified {
            endpoint,
            store_hash: hash.to_string(),
            flavor,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_endpoint_ids() {
        let cases = [
            ("GET", "/stores/abc123/v2/time", Some(("v2_time", "abc123"))),
            (
                "GET",
                "/stores/abc123/v2/store",
                Some(("v2_store", "abc123")),
            ),
            (
                "POST",
                "/stores/abc123/v2/time",
                Some(("not_found", "abc123")),
            ),
            (
                "GET",
                "/stores/abc123/v3/catalog/summary",
                Some(("scope_probe", "abc123")),
            ),
            (
                "PUT",
                "/stores/abc123/v3/customers",
                Some(("scope_probe", "abc123")),
            ),
            (
                "POST",
                "/stores/abc123/v3/storefront/api-token",
                Some(("storefront_token_create", "abc123")),
            ),
            (
                "POST",
                "/stores/abc123/v3/storefront/api-token-private",
                Some(("storefront_token_create", "abc123")),
            ),
            (
                "DELETE",
                "/stores/abc123/v3/storefront/api-token",
                Some(("storefront_token_revoke", "abc123")),
            ),
            (
                "GET",
                "/stores/abc123/v3/storefront/api-token",
                Some(("scope_probe", "abc123")),
            ),
            (
                "POST",
                "/store-abc123/graphql",
                Some(("storefront_graphql", "abc123")),
            ),
            (
                "GET",
                "/store-abc123/api/v2/time",
                Some(("legacy_api", "abc123")),
            ),
            ("GET", "/store-abc123/other", Some(("not_found", "abc123"))),
            ("GET", "/__admin/counters", None),
            ("GET", "/", None),
        ];
        for (method, path, expected) in cases {
            let got = classify(method, path).map(|c| (c.endpoint.as_str(), c.store_hash));
            assert_eq!(
                got,
                expected.map(|(e, h)| (e, h.to_string())),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn ids_round_trip() {
        for e in EndpointId::ALL {
            assert_eq!(EndpointId::parse(e.as_str()), Some(e));
        }
    }
}
