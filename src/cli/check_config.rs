//! `check-config [FILE]`.

use std::path::Path;

use crate::app::{exit, load_config, Failure};

/// Validate the configuration: a summary, or every error (exit 2).
pub(super) fn check_config(path: &Path) -> Result<i32, Failure> {
    let config = load_config(path)?;
    let automatic = config
        .credentials
        .iter()
        .filter(|c| c.provider.automatic())
        .count();
    println!(
        "{}: OK: {} credential(s) ({} automatic, {} assisted), Vault at {}, state in {}/{}",
        path.display(),
        config.credentials.len(),
        automatic,
        config.credentials.len() - automatic,
        config.vault.addresses.join(", "),
        config.vault.state_mount,
        config.vault.state_prefix
    );
    Ok(exit::OK)
}
