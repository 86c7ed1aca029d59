//! `exec`: one program per step.

use std::time::Duration;

use toml::Spanned;

use super::values::quote;
use super::Validator;
use crate::config::model::*;
use crate::config::raw::*;

const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(30);
/// The rotation gives each provider call 60 s: a program allowed longer would be cut off by it.
pub(super) const MAX_PROVIDER_TIMEOUT: Duration = Duration::from_secs(60);

impl Validator<'_> {
    pub(super) fn exec_provider(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawExecProvider>,
    ) -> Option<ExecProviderConfig> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();
        let mint = self.require(&raw.mint, &key("mint"), table.clone(), Self::argv);
        let verify = self.require(&raw.verify, &key("verify"), table.clone(), Self::argv);
        let revoke = self.require(&raw.revoke, &key("revoke"), table.clone(), Self::argv);
        let verify_revoked = match &raw.verify_revoked {
            None => Some(None),
            Some(argv) => self.argv(&key("verify_revoked"), argv).map(Some),
        };
        let timeout = self.provider_timeout(&key("timeout"), &raw.timeout);
        let fields = self.require(&raw.fields, &key("fields"), table, Self::field_names);
        Some(ExecProviderConfig {
            mint: mint?,
            verify: verify?,
            revoke: revoke?,
            verify_revoked: verify_revoked?,
            timeout: timeout?,
            fields: fields?,
            credentials_expire: raw
                .credentials_expire
                .as_ref()
                .is_some_and(|v| *v.get_ref()),
        })
    }

    /// A provider's per-call timeout: positive, at most [`MAX_PROVIDER_TIMEOUT`], 30 s if absent.
    pub(super) fn provider_timeout(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
    ) -> Option<Duration> {
        let timeout = self.positive_duration_or(key, value, DEFAULT_PROVIDER_TIMEOUT)?;
        if timeout > MAX_PROVIDER_TIMEOUT {
            let value = value.as_ref().expect("only a written timeout is this long");
            self.bad(
                key,
                value,
                "must be at most 60s: the rotation gives each provider call 60 s",
            );
            return None;
        }
        Some(timeout)
    }

    /// The names of a credential's fields: at least one, each a name, none twice.
    fn field_names(
        &mut self,
        key: &str,
        fields: &Spanned<Vec<Spanned<String>>>,
    ) -> Option<Vec<String>> {
        if fields.get_ref().is_empty() {
            self.bad(
                key,
                fields,
                "must name at least one field, e.g. [\"token\"]",
            );
            return None;
        }
        let mut all = Some(Vec::new());
        for (i, field) in fields.get_ref().iter().enumerate() {
            let field_key = format!("{key}[{i}]");
            let checked = self.name(&field_key, field);
            let checked = match checked {
                Some(name)
                    if all
                        .as_ref()
                        .is_some_and(|a: &Vec<String>| a.contains(&name)) =>
                {
                    self.bad(
                        &field_key,
                        field,
                        format!("field {} is listed twice", quote(&name)),
                    );
                    None
                }
                other => other,
            };
            match (checked, all.as_mut()) {
                (Some(name), Some(all)) => all.push(name),
                _ => all = None,
            }
        }
        all
    }
}
