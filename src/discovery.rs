//! The members of the credential sets, found in Vault: the secrets whose paths match a set's
//! pattern, each made a credential by `config::sets::CredentialSet::member`.
//!
//! How a set is listed: a pattern whose one segment is its last component
//! (`storefronts/{store_hash}`) by a paginated LIST of its folder (OpenBao's `limit`/`after`,
//! 1,000 keys a page); any other pattern (`stores/{store_hash}/storefront`) by one recursive
//! list of its literal prefix (OpenBao's `scan`, since 2.2), and where that is refused or
//! unsupported by a walk: the paginated LIST of each level, and of each folder holding the last
//! component. Invariant: reads only; a member is only what exists in Vault now.

use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::config::sets::{CredentialSet, Part};
use crate::config::{Config, Credential};
use crate::vault::{Vault, VaultError};

/// Keys per LIST page.
pub const PAGE: usize = 1000;

/// LIST requests in flight at once during a walk.
const CONCURRENCY: usize = 32;

/// What one discovery of a set found.
#[derive(Debug, Default)]
pub struct Discovered {
    /// The members, sorted by name.
    pub members: Vec<Credential>,
    /// Paths that match the pattern but make no member (a segment not valid for its use), each
    /// a message naming the set, where it is written and the path.
    pub refused: Vec<String>,
    /// LIST (or scan) requests made.
    pub requests: usize,
}

impl Discovered {
    /// What is wrong with the set as found: nothing matched, and each path refused.
    pub fn problems(&self, set: &CredentialSet) -> Vec<String> {
        let mut problems = self.refused.clone();
        if self.members.is_empty() && self.refused.is_empty() {
            problems.push(format!(
                "{}: credential set `{}`: no secret in Vault matches `{}`",
                set.location,
                set.name,
                set.shown()
            ));
        }
        problems
    }
}

/// The members of `set` in Vault now.
pub async fn discover(vault: &Vault, set: &CredentialSet) -> Result<Discovered, VaultError> {
    let (paths, requests) = matching_paths(vault, set).await?;
    let mut found = Discovered {
        requests,
        ..Discovered::default()
    };
    for (path, values) in paths {
        match set.member(&values) {
            Ok(member) => found.members.push(member),
            Err(problem) => found.refused.push(format!(
                "{}: credential set `{}`: {}/{path}: {problem}",
                set.location, set.name, set.pattern.mount
            )),
        }
    }
    found.members.sort_by(|a, b| a.name.cmp(&b.name));
    found.refused.sort();
    Ok(found)
}

/// Every set discovered and its members added to the configuration's credentials (a command's
/// view); returns the problems found (a set matching nothing, paths refused).
pub async fn expand(vault: &Vault, config: &mut Config) -> Result<Vec<String>, VaultError> {
    let mut problems = Vec::new();
    for set in &config.credential_sets {
        let found = discover(vault, set).await?;
        problems.extend(found.problems(set));
        config.credentials.extend(found.members);
    }
    Ok(problems)
}

/// The paths (relative to the mount) that match, with their segment values; and the requests
/// made.
async fn matching_paths(
    vault: &Vault,
    set: &CredentialSet,
) -> Result<(Vec<(String, Vec<String>)>, usize), VaultError> {
    let pattern = &set.pattern;
    let one_trailing_segment =
        pattern.segments().count() == 1 && matches!(pattern.parts.last(), Some(Part::Segment(_)));
    if !one_trailing_segment {
        let prefix = pattern.literal_prefix();
        match vault.scan(&pattern.mount, &prefix).await {
            Ok(keys) if !keys.is_empty() => {
                let paths = keys
                    .iter()
                    .filter(|k| !k.ends_with('/'))
                    .map(|k| join(&prefix, k))
                    .filter_map(|path| pattern.matches(&path).map(|values| (path, values)))
                    .collect();
                return Ok((paths, 1));
            }
            // Nothing, or a server without `scan` (Vault answers it as a metadata read), or a
            // token without the `scan` capability: the walk says.
            Ok(_)
            | Err(
                VaultError::NotFound { .. }
                | VaultError::PermissionDenied { .. }
                | VaultError::Other { .. },
            ) => {}
            Err(e) => return Err(e),
        }
    }
    walk(vault, set).await
}

/// The pattern walked level by level with paginated LISTs.
async fn walk(
    vault: &Vault,
    set: &CredentialSet,
) -> Result<(Vec<(String, Vec<String>)>, usize), VaultError> {
    let pattern = &set.pattern;
    let mount = pattern.mount.as_str();
    let mut requests = 0;
    let mut frontier: Vec<(String, Vec<String>)> = vec![(String::new(), Vec::new())];
    for (i, part) in pattern.parts.iter().enumerate() {
        let last = i + 1 == pattern.parts.len();
        if let (Part::Literal(literal), false) = (part, last) {
            for (path, _) in &mut frontier {
                *path = join(path, literal);
            }
            continue;
        }
        let listed: Vec<(Vec<String>, usize, String, Vec<String>)> = stream::iter(frontier)
            .map(|(path, values)| async move {
                let (keys, n) = list_all(vault, mount, &path).await?;
                Ok::<_, VaultError>((keys, n, path, values))
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut next = Vec::new();
        for (keys, n, path, values) in listed {
            requests += n;
            for key in keys {
                let (name, folder) = match key.strip_suffix('/') {
                    Some(name) => (name.to_string(), true),
                    None => (key, false),
                };
                if folder == last || name.is_empty() {
                    continue;
                }
                match part {
                    Part::Literal(literal) if *literal == name => {
                        next.push((join(&path, &name), values.clone()))
                    }
                    Part::Literal(_) => {}
                    Part::Segment(_) => {
                        let mut values = values.clone();
                        values.push(name.clone());
                        next.push((join(&path, &name), values));
                    }
                }
            }
        }
        frontier = next;
    }
    Ok((frontier, requests))
}

/// Every key of a folder, page by page; and the requests made.
async fn list_all(
    vault: &Vault,
    mount: &str,
    path: &str,
) -> Result<(Vec<String>, usize), VaultError> {
    let mut keys: Vec<String> = Vec::new();
    let mut requests = 0;
    loop {
        let page = vault
            .list_page(mount, path, keys.last().map(String::as_str), PAGE)
            .await?;
        requests += 1;
        let n = page.len();
        keys.extend(page);
        // A short page is the last; a page longer than asked is a server without pagination,
        // which answered everything at once.
        if n != PAGE {
            return Ok((keys, requests));
        }
    }
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}/{rest}")
    }
}
