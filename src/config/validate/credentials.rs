//! One `[[credentials]]` entry: its name, its secret, its policy, which provider table it has.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use super::policy::show;
use super::values::{is_under, quote};
use super::{Home, Origin, Origins, Validator};
use crate::config::model::*;
use crate::config::raw::*;

const DEFAULT_SECRET_MOUNT: &str = "secret";

impl Validator<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn credential(
        &mut self,
        list: &str,
        index: usize,
        raw: &Spanned<RawCredential>,
        state: &KvPath,
        base: &Policy,
        base_origins: &Origins,
        names: &mut HashMap<String, usize>,
        secrets: &mut HashMap<KvPath, usize>,
    ) -> Option<Credential> {
        let prefix = format!("{list}[{index}]");
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();
        let set = list == "credential_sets";
        if !set {
            self.unused(
                &prefix,
                &[
                    (
                        "discovery_interval",
                        raw.discovery_interval.as_ref().map(|v| v.span()),
                    ),
                    (
                        "per_credential_metrics",
                        raw.per_credential_metrics.as_ref().map(|v| v.span()),
                    ),
                ],
                "a credential (only `[[credential_sets]]` take it)",
            );
        } else if let Some(first) = raw.dependents.first() {
            self.bad(
                &key("dependents[0]"),
                first,
                "a credential set takes no dependents; give the credentials that need them a \
                 `[[credentials]]` table of their own",
            );
        }

        let name = self.unique_name(
            &key("name"),
            &raw.name,
            table.clone(),
            names,
            index,
            "credential",
        );

        let mount = self.kv_path_or(&key("mount"), &raw.mount, DEFAULT_SECRET_MOUNT);
        let path = self.require(&raw.path, &key("path"), table.clone(), Self::kv_path);
        let secret = match (&mount, &path) {
            (Some(mount), Some(path)) => Some(KvPath {
                mount: mount.clone(),
                path: path.clone(),
            }),
            _ => None,
        };
        if let (Some(secret), Some(value)) = (&secret, &raw.path) {
            if is_under(secret, state) {
                self.bad(
                    &key("path"),
                    value,
                    format!(
                        "{} is inside the daemon's own state prefix {}",
                        quote(&secret.to_string()),
                        quote(&state.to_string())
                    ),
                );
            } else if let Some(first) = secrets.get(secret) {
                self.bad(
                    &key("path"),
                    value,
                    format!(
                        "secret {} is already used by {list}[{first}]",
                        quote(&secret.to_string())
                    ),
                );
            } else {
                secrets.insert(secret.clone(), index);
            }
        }

        let policy =
            self.policy(&raw.policy(), &prefix, base, base_origins)
                .map(|(policy, origins)| {
                    self.check_policy(&policy, &origins, &prefix);
                    if policy.max_age.is_none() && policy.schedule.is_none() {
                        let at = origins.max_age.clone().or(origins.schedule.clone());
                        let at = at.or(Some(Origin {
                            key: prefix.clone(),
                            span: table.clone(),
                        }));
                        self.at(
                            at,
                            &prefix,
                            "nothing makes this credential due: set `max_age` or `schedule`"
                                .to_string(),
                        );
                    }
                    policy
                });

        let home = Home {
            mount: mount.as_deref(),
            secret: secret.as_ref(),
            state,
        };
        let provider = self.provider(&prefix, table.clone(), raw, home);

        // A secret-id lives `secret_id_ttl`; rotating `expiry_lead` before its expiry must leave
        // it some life, or every new secret-id would be due the moment it is written.
        if let (
            Some(policy),
            Some(ProviderConfig::VaultAppRoleSecretId(AppRoleSecretIdConfig {
                secret_id_ttl: Some(ttl),
                ..
            })),
            Some(approle),
        ) = (&policy, &provider, &raw.vault_approle_secret_id)
        {
            if policy.expiry_lead >= *ttl {
                let at = approle.get_ref().secret_id_ttl.as_ref().map(|v| Origin {
                    key: format!("{prefix}.{}.secret_id_ttl", PROVIDERS[1]),
                    span: v.span(),
                });
                self.at(
                    at,
                    &format!("{prefix}.{}.secret_id_ttl", PROVIDERS[1]),
                    format!(
                        "secret_id_ttl ({}) must be longer than expiry_lead ({}); lower expiry_lead for this credential",
                        show(*ttl),
                        show(policy.expiry_lead)
                    ),
                );
            }
        }

        let mut dependents = Some(Vec::new());
        let mut dependent_names: HashMap<String, usize> = HashMap::new();
        for (j, dependent) in raw.dependents.iter().enumerate() {
            let checked = self.dependent(
                &format!("{prefix}.dependents[{j}]"),
                dependent,
                home,
                &mut dependent_names,
                j,
            );
            match (checked, dependents.as_mut()) {
                (Some(checked), Some(list)) => list.push(checked),
                _ => dependents = None,
            }
        }

        Some(Credential::new(
            name?,
            secret?,
            provider?,
            policy?,
            dependents?,
        ))
    }

    pub(super) fn provider(
        &mut self,
        prefix: &str,
        table: Range<usize>,
        raw: &RawCredential,
        home: Home<'_>,
    ) -> Option<ProviderConfig> {
        let present: Vec<(&str, Range<usize>)> = [
            (
                PROVIDERS[0],
                raw.bigcommerce_storefront.as_ref().map(|p| p.span()),
            ),
            (
                PROVIDERS[1],
                raw.vault_approle_secret_id.as_ref().map(|p| p.span()),
            ),
            (
                PROVIDERS[2],
                raw.bigcommerce_legacy_account.as_ref().map(|p| p.span()),
            ),
            (
                PROVIDERS[3],
                raw.bigcommerce_user_token.as_ref().map(|p| p.span()),
            ),
            (
                PROVIDERS[4],
                raw.bigcommerce_store_account.as_ref().map(|p| p.span()),
            ),
            (PROVIDERS[5], raw.exec.as_ref().map(|p| p.span())),
            (PROVIDERS[6], raw.http.as_ref().map(|p| p.span())),
        ]
        .into_iter()
        .filter_map(|(name, span)| span.map(|span| (name, span)))
        .collect();
        match present.as_slice() {
            [] => {
                self.error(
                    prefix,
                    Some(table),
                    format!(
                        "no provider table; add exactly one of: {}",
                        PROVIDERS.join(", ")
                    ),
                );
                return None;
            }
            [_] => {}
            [(first, _), rest @ ..] => {
                for (name, span) in rest {
                    self.error(
                        format!("{prefix}.{name}"),
                        Some(span.clone()),
                        format!("a credential has exactly one provider table; this one also has `{first}`"),
                    );
                }
            }
        }

        // Every present table is checked, even when there are two, so all problems show at once.
        let mut checked = Vec::new();
        if let Some(p) = &raw.bigcommerce_storefront {
            let key = format!("{prefix}.{}", PROVIDERS[0]);
            checked.push(
                self.storefront(&key, p, home)
                    .map(ProviderConfig::BigCommerceStorefront),
            );
        }
        if let Some(p) = &raw.vault_approle_secret_id {
            let key = format!("{prefix}.{}", PROVIDERS[1]);
            checked.push(
                self.approle_secret_id(&key, p)
                    .map(ProviderConfig::VaultAppRoleSecretId),
            );
        }
        if let Some(p) = &raw.bigcommerce_legacy_account {
            let key = format!("{prefix}.{}", PROVIDERS[2]);
            checked.push(
                self.basic_auth_account(&key, p)
                    .map(ProviderConfig::BigCommerceLegacyAccount),
            );
        }
        if let Some(p) = &raw.bigcommerce_user_token {
            let key = format!("{prefix}.{}", PROVIDERS[3]);
            checked.push(
                self.basic_auth_account(&key, p)
                    .map(ProviderConfig::BigCommerceUserToken),
            );
        }
        if let Some(p) = &raw.bigcommerce_store_account {
            let key = format!("{prefix}.{}", PROVIDERS[4]);
            checked.push(
                self.store_account(&key, p)
                    .map(ProviderConfig::BigCommerceStoreAccount),
            );
        }
        if let Some(p) = &raw.exec {
            let key = format!("{prefix}.{}", PROVIDERS[5]);
            checked.push(self.exec_provider(&key, p).map(ProviderConfig::Exec));
        }
        if let Some(p) = &raw.http {
            let key = format!("{prefix}.{}", PROVIDERS[6]);
            checked.push(
                self.http_provider(&key, p, home)
                    .map(|c| ProviderConfig::Http(Box::new(c))),
            );
        }
        if checked.len() != 1 {
            return None;
        }
        checked.pop().flatten()
    }
    /// A required, well-formed name that no earlier entry of the same list (`{what}s`) has.
    pub(super) fn unique_name(
        &mut self,
        key: &str,
        raw: &Option<Spanned<String>>,
        table: std::ops::Range<usize>,
        names: &mut HashMap<String, usize>,
        index: usize,
        what: &str,
    ) -> Option<String> {
        let name = self.require(raw, key, table, Self::name);
        if let (Some(name), Some(value)) = (&name, raw) {
            if let Some(first) = names.get(name) {
                self.bad(
                    key,
                    value,
                    format!(
                        "duplicate {what} name {} (also {what}s[{first}])",
                        quote(name)
                    ),
                );
            } else {
                names.insert(name.clone(), index);
            }
        }
        name
    }
}
