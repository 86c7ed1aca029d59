//! `check-config [FILE]`.

use std::path::Path;

use crate::app::{connect_vault, exit, load_config, Failure};

/// Validate the configuration: a summary, or every error (exit 2). With credential sets, their
/// members are looked for in Vault: a set matching nothing, or a path whose segment is not valid
/// for its use, is an error naming the set and the path (exit 2); a Vault that cannot be asked
/// is said, and the file is still valid.
pub(super) async fn check_config(path: &Path) -> Result<i32, Failure> {
    let config = load_config(path)?;
    let sets = check_sets(&config).await;
    let automatic = config
        .credentials
        .iter()
        .filter(|c| c.provider().automatic())
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
    Ok(sets)
}

async fn check_sets(config: &crate::config::Config) -> i32 {
    if config.credential_sets.is_empty() {
        return exit::OK;
    }
    let vault = match connect_vault(config, true).await {
        Ok(vault) => vault,
        Err(failure) => {
            println!(
                "credential sets not looked for in Vault: {}",
                failure.message
            );
            return exit::OK;
        }
    };
    let mut code = exit::OK;
    for set in &config.credential_sets {
        match crate::discovery::discover(&vault, set).await {
            Ok(found) => {
                println!(
                    "credential set {} ({}): {} members",
                    set.name,
                    set.shown(),
                    found.members.len()
                );
                for problem in found.problems(set) {
                    eprintln!("{problem}");
                    code = exit::CONFIG;
                }
            }
            Err(e) => println!(
                "credential set {} ({}): not looked for in Vault: {e}",
                set.name,
                set.shown()
            ),
        }
    }
    code
}
