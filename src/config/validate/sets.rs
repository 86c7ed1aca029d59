//! `[[credential_sets]]`: each set validated as one credential (its segments stood in by markers,
//! `config::sets`), its own keys, and the paths no two definitions may share.

use std::collections::HashMap;
use std::time::Duration;

use super::values::quote;
use super::{Origins, Validator};
use crate::config::error::Problem;
use crate::config::model::*;
use crate::config::raw::*;
use crate::config::sets::{marker, CredentialSet, Part, Pattern};

/// How often a set's members are looked for unless `discovery_interval` says otherwise.
pub(crate) const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(300);
/// The shortest `discovery_interval`: each discovery lists the set's paths.
const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

impl Validator<'_> {
    pub(super) fn credential_sets(
        &mut self,
        raw: &RawConfig,
        state: &KvPath,
        base: &Policy,
        base_origins: &Origins,
        credentials: &[Credential],
    ) -> Option<Vec<CredentialSet>> {
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut all = Some(Vec::new());
        for (index, set) in raw.credential_sets.iter().enumerate() {
            let prefix = format!("credential_sets[{index}]");
            let segments = raw.set_segments.get(index).cloned().flatten();
            if segments.is_none() {
                // A malformed pattern (reported already): its table cannot be read as a set's.
                all = None;
                continue;
            }
            let template = self.credential(
                "credential_sets",
                index,
                set,
                state,
                base,
                base_origins,
                &mut HashMap::new(),
                &mut HashMap::new(),
            );
            let set = set.get_ref();
            if let (Some(name), Some(value)) = (&template, &set.name) {
                if let Some(first) = names.get(&name.name) {
                    self.bad(
                        &format!("{prefix}.name"),
                        value,
                        format!(
                            "duplicate credential set name {} (also credential_sets[{first}])",
                            quote(&name.name)
                        ),
                    );
                } else {
                    names.insert(name.name.clone(), index);
                }
            }
            let interval = self.positive_duration_or(
                &format!("{prefix}.discovery_interval"),
                &set.discovery_interval,
                DEFAULT_DISCOVERY_INTERVAL,
            );
            if let (Some(d), Some(value)) = (interval, &set.discovery_interval) {
                if d < MIN_DISCOVERY_INTERVAL {
                    self.bad(
                        &format!("{prefix}.discovery_interval"),
                        value,
                        "must be at least 1s (each discovery lists the set's paths in Vault)",
                    );
                }
            }
            let checked = match (template, segments, interval) {
                (Some(template), Some(segments), Some(interval)) => {
                    let pattern = pattern_of(&template.secret, &segments);
                    let metrics = set
                        .per_credential_metrics
                        .as_ref()
                        .is_some_and(|v| *v.get_ref());
                    Some(CredentialSet::new(template, pattern, interval, metrics))
                }
                _ => None,
            };
            match (checked, all.as_mut()) {
                (Some(checked), Some(list)) => list.push(checked),
                _ => all = None,
            }
        }
        let sets = all?;
        self.no_shared_paths(raw, &sets, credentials);
        Some(sets)
    }

    /// No path is matched by two sets, nor is a credential written out also a set's member.
    fn no_shared_paths(&mut self, raw: &RawConfig, sets: &[CredentialSet], creds: &[Credential]) {
        for (j, set) in sets.iter().enumerate() {
            let at = raw.credential_sets[j].get_ref().path.as_ref();
            for (i, earlier) in sets[..j].iter().enumerate() {
                if set.pattern.overlaps(&earlier.pattern) {
                    if let Some(at) = at {
                        self.bad(
                            &format!("credential_sets[{j}].path"),
                            at,
                            format!(
                                "credential set {}: pattern {} matches the same paths as credential set {} ({}, credential_sets[{i}])",
                                quote(&set.name),
                                quote(&set.shown()),
                                quote(&earlier.name),
                                quote(&earlier.shown())
                            ),
                        );
                    }
                }
            }
        }
        for (i, cred) in creds.iter().enumerate() {
            for set in sets {
                if set.pattern.mount == cred.secret.mount
                    && set.pattern.matches(&cred.secret.path).is_some()
                {
                    if let Some(at) = raw.credentials[i].get_ref().path.as_ref() {
                        self.bad(
                            &format!("credentials[{i}].path"),
                            at,
                            format!(
                                "{} is also a member of credential set {} ({}); define it once",
                                quote(&cred.secret.to_string()),
                                quote(&set.name),
                                quote(&set.shown())
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// The pattern of a set's validated secret path, whose segments are markers.
fn pattern_of(secret: &KvPath, segments: &[String]) -> Pattern {
    let parts = secret
        .path
        .split('/')
        .map(
            |component| match (0..segments.len()).find(|i| marker(*i) == component) {
                Some(i) => Part::Segment(segments[i].clone()),
                None => Part::Literal(component.to_string()),
            },
        )
        .collect();
    Pattern {
        mount: secret.mount.clone(),
        parts,
    }
}

/// The problems of the sets' tables say `{name}` where validation saw a marker.
pub(super) fn unmark(problems: &mut [Problem], raw: &RawConfig) {
    for problem in problems {
        let Some(rest) = problem.key.strip_prefix("credential_sets[") else {
            continue;
        };
        let index: Option<usize> = rest.split(']').next().and_then(|i| i.parse().ok());
        let Some(Some(segments)) = index.and_then(|i| raw.set_segments.get(i)) else {
            continue;
        };
        for (i, name) in segments.iter().enumerate() {
            problem.message = problem.message.replace(&marker(i), &format!("{{{name}}}"));
        }
    }
}
