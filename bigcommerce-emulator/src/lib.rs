//! A loopback emulator of BigCommerce's credential surface: store-level API accounts with
//! scopes, legacy Basic-auth accounts and users, storefront JWTs with asynchronous revocation,
//! per-store rate limits, and fault injection, driven by an admin API under `/__admin/`.
//!
//! Start it in-process with [`start`]; drive its control panel with [`AdminClient`].
//! The README describes the seed format, the admin API and the fault ids.
#![forbid(unsafe_code)]

pub mod admin_api;
pub mod api_errors;
pub mod client;
pub mod counters;
pub mod credentials;
pub mod endpoints;
pub mod faults;
pub mod jwt;
pub mod rate_limit;
pub mod routes;
pub mod scopes;
pub mod seed;
pub mod server;
pub mod state;
pub mod store;
pub mod storefront;

pub use client::{AdminClient, AdminClientError};
pub use endpoints::EndpointId;
pub use faults::{FaultMode, FaultSpec};
pub use scopes::{Access, Resource, Scopes};
pub use seed::{demo, Seed, SeedError};
pub use server::{start, EmulatorConfig, Error, RunningEmulator};
pub use store::TokenState;
pub use storefront::TokenKind;
