//! The members of the credential sets, found in Vault: the secrets whose paths match a set's
//! pattern, each made a credential by `config::sets::CredentialSet::member`.
//!
//! How a set is listed: a pattern whose one segment is its last component
//! (`storefronts/{store_hash}`) by a paginated LIST of its folder (OpenBao's `limit`/`after`,
//! 1,000 keys in the first page and four times more each page up to 256,000: [`page_size`]); any other pattern (`stores/{store_hash}/storefront`) by one recursive
//! list of its literal prefix (OpenBao's `scan`, since 2.2), and where that is refused or
//! unsupported by a walk: the paginated LIST of each level, and of each folder holding the last
//! component. Invariant: reads only; a member is only what exists in Vault now.

use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::config::sets::{CredentialSet, Part};
use crate::config::{Config, Credential};
use crate::vault::{Vault, VaultError};

/// Keys in the first LIST page of a folder.
pub const PAGE: usize = 1000;

/// Keys in a LIST page at most (about 4 MB of JSON at 16 bytes a key).
pub const MAX_PAGE: usize = 256_000;

/// The keys asked for in page `index` (from 0) of a folder: [`PAGE`], four times more each page,
/// up to [`MAX_PAGE`]. OpenBao's in-memory storage (a dev server) answers a page in the time it
/// takes to list the whole folder, whatever the page's size or where it starts (100,000 keys:
/// 3 to 4.5 s a page on a loaded machine, the same for 1,000 keys as for all of them): pages of
/// a fixed size made a discovery cost N / 1,000 times the whole folder (223 s at 100,000).
/// Growing pages keep a small folder's answer small and a large one's pages few (8 for a
/// million keys), each answer bounded.
pub fn page_size(index: usize) -> usize {
    let grown = PAGE.saturating_mul(4usize.saturating_pow(index.min(16) as u32));
    grown.min(MAX_PAGE)
}

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

/// What one discovery of a set found, by name only: what the daemon compares with the members
/// it has, to make only the new ones.
#[derive(Debug, Default)]
pub struct Listing {
    /// The members' names, sorted.
    pub names: Vec<String>,
    /// As [`Discovered::refused`].
    pub refused: Vec<String>,
    /// LIST (or scan) requests made.
    pub requests: usize,
}

impl Discovered {
    /// What is wrong with the set as found: nothing matched, and each path refused.
    pub fn problems(&self, set: &CredentialSet) -> Vec<String> {
        problems(set, self.members.is_empty(), &self.refused)
    }
}

impl Listing {
    /// As [`Discovered::problems`].
    pub fn problems(&self, set: &CredentialSet) -> Vec<String> {
        problems(set, self.names.is_empty(), &self.refused)
    }
}

fn problems(set: &CredentialSet, no_member: bool, refused: &[String]) -> Vec<String> {
    let mut problems = refused.to_vec();
    if no_member && refused.is_empty() {
        problems.push(format!(
            "{}: credential set `{}`: no secret in Vault matches `{}`",
            set.location,
            set.name,
            set.shown()
        ));
    }
    problems
}

/// The members of `set` in Vault now.
pub async fn discover(vault: &Vault, set: &CredentialSet) -> Result<Discovered, VaultError> {
    let (matched, requests) = matching_values(vault, set).await?;
    let mut found = Discovered {
        requests,
        ..Discovered::default()
    };
    found.members.reserve(matched.len());
    for values in matched {
        match set.member(&values) {
            Ok(member) => found.members.push(member),
            Err(problem) => found.refused.push(refused(set, &values, &problem)),
        }
    }
    found.members.sort_by(|a, b| a.name.cmp(&b.name));
    found.refused.sort();
    Ok(found)
}

/// The names of the members of `set` in Vault now (each checked as [`discover`] does, none
/// made).
pub async fn list_members(vault: &Vault, set: &CredentialSet) -> Result<Listing, VaultError> {
    let (matched, requests) = matching_values(vault, set).await?;
    let mut found = Listing {
        requests,
        ..Listing::default()
    };
    found.names.reserve(matched.len());
    for values in matched {
        match set.checked(&values) {
            Ok((name, _)) => found.names.push(name),
            Err(problem) => found.refused.push(refused(set, &values, &problem)),
        }
    }
    found.names.sort_unstable();
    found.refused.sort();
    Ok(found)
}

/// The message for a path that matches but makes no member.
fn refused(set: &CredentialSet, values: &[String], problem: &str) -> String {
    format!(
        "{}: credential set `{}`: {}/{}: {problem}",
        set.location,
        set.name,
        set.pattern.mount,
        set.pattern.render(values)
    )
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

/// The segment values of each path that matches; and the requests made.
async fn matching_values(
    vault: &Vault,
    set: &CredentialSet,
) -> Result<(Vec<Vec<String>>, usize), VaultError> {
    let pattern = &set.pattern;
    let one_trailing_segment =
        pattern.segments().count() == 1 && matches!(pattern.parts.last(), Some(Part::Segment(_)));
    if !one_trailing_segment {
        let prefix = pattern.literal_prefix();
        match vault.scan(&pattern.mount, &prefix).await {
            Ok(keys) if !keys.is_empty() => {
                let values = keys
                    .iter()
                    .filter(|k| !k.ends_with('/'))
                    .filter_map(|k| pattern.matches(&join(&prefix, k)))
                    .collect();
                return Ok((values, 1));
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
async fn walk(vault: &Vault, set: &CredentialSet) -> Result<(Vec<Vec<String>>, usize), VaultError> {
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
        // The members' paths are not kept (a member's is its pattern's, rendered): only the
        // folders still to list need theirs.
        let path_of = |path: &str, name: &str| {
            if last {
                String::new()
            } else {
                join(path, name)
            }
        };
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
                        next.push((path_of(&path, &name), values.clone()))
                    }
                    Part::Literal(_) => {}
                    Part::Segment(_) => {
                        let mut values = values.clone();
                        let path = path_of(&path, &name);
                        values.push(name);
                        next.push((path, values));
                    }
                }
            }
        }
        frontier = next;
    }
    Ok((
        frontier.into_iter().map(|(_, values)| values).collect(),
        requests,
    ))
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
        let limit = page_size(requests);
        let page = vault
            .list_page(mount, path, keys.last().map(String::as_str), limit)
            .await?;
        requests += 1;
        let n = page.len();
        keys.extend(page);
        // A short page is the last; a page longer than asked is a server without pagination,
        // which answered everything at once.
        if n != limit {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_grow_fourfold_from_a_thousand_keys_up_to_256_000() {
        // (page index, keys asked)
        let cases = [
            (0, 1_000),
            (1, 4_000),
            (2, 16_000),
            (3, 64_000),
            (4, 256_000),
            (5, 256_000),
            (40, 256_000),
            (usize::MAX, 256_000),
        ];
        for (index, keys) in cases {
            assert_eq!(page_size(index), keys, "page {index}");
        }
        // (keys in the folder, LIST requests): a full last page takes one more, empty.
        let folders = [(0, 1), (999, 1), (1_000, 2), (100_001, 5), (1_000_001, 8)];
        for (keys, requests) in folders {
            let (mut listed, mut made) = (0, 0);
            loop {
                let asked = page_size(made);
                let got = asked.min(keys - listed);
                listed += got;
                made += 1;
                if got != asked {
                    break;
                }
            }
            assert_eq!((listed, made), (keys, requests), "{keys} keys");
        }
    }
}
