//! OAuth scopes of store-level API accounts and permissions of legacy accounts and users.
//!
//! Invariant: pure data, no IO.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A resource of the control panel's scope list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Content,
    Customers,
    InformationAndSettings,
    Marketing,
    Orders,
    OrderTransactions,
    Products,
    Carts,
    Checkouts,
    Themes,
    SitesAndRoutes,
    ChannelSettings,
    ChannelListings,
    StorefrontApiTokens,
    /// "Storefront API Customer Impersonation Tokens" (`store_storefront_api_customer_impersonation`):
    /// a scope of its own, needed to create customer impersonation tokens.
    StorefrontApiCustomerImpersonation,
}

impl Resource {
    pub const ALL: [Resource; 15] = [
        Resource::Content,
        Resource::Customers,
        Resource::InformationAndSettings,
        Resource::Marketing,
        Resource::Orders,
        Resource::OrderTransactions,
        Resource::Products,
        Resource::Carts,
        Resource::Checkouts,
        Resource::Themes,
        Resource::SitesAndRoutes,
        Resource::ChannelSettings,
        Resource::ChannelListings,
        Resource::StorefrontApiTokens,
        Resource::StorefrontApiCustomerImpersonation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Content => "content",
            Resource::Customers => "customers",
            Resource::InformationAndSettings => "information_and_settings",
            Resource::Marketing => "marketing",
            Resource::Orders => "orders",
            Resource::OrderTransactions => "order_transactions",
            Resource::Products => "products",
            Resource::Carts => "carts",
            Resource::Checkouts => "checkouts",
            Resource::Themes => "themes",
            Resource::SitesAndRoutes => "sites_and_routes",
            Resource::ChannelSettings => "channel_settings",
            Resource::ChannelListings => "channel_listings",
            Resource::StorefrontApiTokens => "storefront_api_tokens",
            Resource::StorefrontApiCustomerImpersonation => "storefront_api_customer_impersonation",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown resource `{s}`"))
    }
}

/// The level granted on one resource. Ordered: `None < ReadOnly < Modify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "read-only")]
    ReadOnly,
    #[serde(rename = "modify")]
    Modify,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::None => "none",
            Access::ReadOnly => "read-only",
            Access::Modify => "modify",
        }
    }
}

/// Access per resource; a resource not listed has `Access::None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(BTreeMap<Resource, Access>);

impl Scopes {
    /// No access to anything.
    pub fn none() -> Self {
        Scopes(BTreeMap::new())
    }

    /// The same access on every resource.
    pub fn all(access: Access) -> Self {
        Scopes(Resource::ALL.into_iter().map(|r| (r, access)).collect())
    }

    /// Returns a copy with `resource` set to `access`.
    pub fn with(mut self, resource: Resource, access: Access) -> Self {
        self.set(resource, access);
        self
    }

    pub fn set(&mut self, resource: Resource, access: Access) {
        if access == Access::None {
            self.0.remove(&resource);
        } else {
            self.0.insert(resource, access);
        }
    }

    pub fn get(&self, resource: Resource) -> Access {
        self.0.get(&resource).copied().unwrap_or(Access::None)
    }

    /// True when the granted level on `resource` is at least `needed`.
    pub fn allows(&self, resource: Resource, needed: Access) -> bool {
        self.get(resource) >= needed
    }

    pub fn iter(&self) -> impl Iterator<Item = (Resource, Access)> + '_ {
        self.0.iter().map(|(r, a)| (*r, *a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_levels_are_ordered() {
        let scopes = Scopes::none()
            .with(Resource::Orders, Access::ReadOnly)
            .with(Resource::Products, Access::Modify);
        let cases = [
            (Resource::Orders, Access::ReadOnly, true),
            (Resource::Orders, Access::Modify, false),
            (Resource::Products, Access::ReadOnly, true),
            (Resource::Products, Access::Modify, true),
            (Resource::Content, Access::ReadOnly, false),
            (Resource::Content, Access::None, true),
        ];
        for (resource, needed, expected) in cases {
            assert_eq!(
                scopes.allows(resource, needed),
                expected,
                "{resource} {needed:?}"
            );
        }
    }

    #[test]
    fn scopes_serialise_as_a_map_of_levels() {
        let scopes = Scopes::none().with(Resource::InformationAndSettings, Access::ReadOnly);
        let json = serde_json::to_string(&scopes).unwrap();
        assert_eq!(json, r#"{"information_and_settings":"read-only"}"#);
        let back: Scopes = serde_json::from_str(r#"{"orders":"modify","content":"none"}"#).unwrap();
        assert_eq!(back.get(Resource::Orders), Access::Modify);
        assert_eq!(back.get(Resource::Content), Access::None);
    }

    #[test]
    fn resource_names_round_trip() {
        for r in Resource::ALL {
            assert_eq!(r.as_str().parse::<Resource>().unwrap(), r);
        }
    }
}
