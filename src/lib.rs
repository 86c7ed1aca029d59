//! secret-rotator: keeps API credentials stored in Vault/OpenBao fresh.
//!
//! See ARCHITECTURE.md for the code map and each module's invariant.
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod discovery;
pub mod egress;
pub mod events;
pub mod fleet;
pub mod human;
pub mod instance;
pub mod ledger;
pub mod notify;
pub mod outcome;
pub mod policy;
pub mod process;
pub mod prompt;
pub mod providers;
pub mod records;
pub mod report;
pub mod rotation;
pub mod secret;
pub mod standing;
pub mod template;
pub mod vault;
