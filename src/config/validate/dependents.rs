//! `[[credentials.dependents]]`: webhooks, files, commands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::values::quote;
use super::{Home, Validator};
use crate::config::model::*;
use crate::config::raw::*;

const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
const DEPENDENT_TYPES: [&str; 3] = ["webhook", "file", "exec"];

impl Validator<'_> {
    pub(super) fn dependent(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawDependent>,
        home: Home<'_>,
        names: &mut HashMap<String, usize>,
        index: usize,
    ) -> Option<Dependent> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();

        let name = self.unique_name(
            &key("name"),
            &raw.name,
            table.clone(),
            names,
            index,
            "dependent",
        );

        let kind = self.required(&raw.kind, &key("type"), table.clone())?;
        // Where each type-specific key is, to report keys that the chosen type does not use.
        let url = raw.url.as_ref().map(|v| v.span());
        let signing_key = raw.signing_key.as_ref().map(|v| v.span());
        let timeout = raw.timeout.as_ref().map(|v| v.span());
        let path = raw.path.as_ref().map(|v| v.span());
        let field = raw.field.as_ref().map(|v| v.span());
        let command = raw.command.as_ref().map(|v| v.span());

        let dependent_type = kind.get_ref().as_str();
        let context = format!("dependent type {}", quote(dependent_type));
        match dependent_type {
            "webhook" => {
                self.unused(
                    prefix,
                    &[("path", path), ("field", field), ("command", command)],
                    &context,
                );
                let url = self.require(&raw.url, &key("url"), table.clone(), Self::url);
                let signing_key = self.require(
                    &raw.signing_key,
                    &key("signing_key"),
                    table,
                    |v, key, field| v.vault_field(key, field, home),
                );
                let timeout = self.positive_duration_or(
                    &key("timeout"),
                    &raw.timeout,
                    DEFAULT_WEBHOOK_TIMEOUT,
                );
                Some(Dependent::Webhook {
                    name: name?,
                    url: url?,
                    signing_key: signing_key?,
                    timeout: timeout?,
                })
            }
            "file" => {
                self.unused(
                    prefix,
                    &[
                        ("url", url),
                        ("signing_key", signing_key),
                        ("timeout", timeout),
                        ("command", command),
                    ],
                    &context,
                );
                let path = self.require(&raw.path, &key("path"), table, |v, key, path| {
                    if Path::new(path.get_ref()).is_absolute() {
                        Some(PathBuf::from(path.get_ref()))
                    } else {
                        v.bad(
                            key,
                            path,
                            format!("must be an absolute path, got {}", quote(path.get_ref())),
                        );
                        None
                    }
                });
                let field = match &raw.field {
                    None => Some(None),
                    Some(field) if field.get_ref().trim().is_empty() => {
                        self.bad(
                            &key("field"),
                            field,
                            "must not be empty (leave it out to write all fields)",
                        );
                        None
                    }
                    Some(field) => Some(Some(field.get_ref().trim().to_string())),
                };
                Some(Dependent::File {
                    name: name?,
                    path: path?,
                    field: field?,
                })
            }
            "exec" => {
                self.unused(
                    prefix,
                    &[
                        ("url", url),
                        ("signing_key", signing_key),
                        ("path", path),
                        ("field", field),
                    ],
                    &context,
                );
                let command = self.require(&raw.command, &key("command"), table, |v, key, command| {
                        let argv: Vec<String> = command.get_ref().iter().map(|a| a.get_ref().clone()).collect();
                        if argv.first().is_none_or(|program| program.trim().is_empty()) {
                            v.bad(key, command, "must name a program: [\"/usr/bin/systemctl\", \"reload\", \"app\"]");
                            None
                        } else {
                            Some(argv)
                        }
                    });
                let timeout =
                    self.positive_duration_or(&key("timeout"), &raw.timeout, DEFAULT_EXEC_TIMEOUT);
                Some(Dependent::Exec {
                    name: name?,
                    command: command?,
                    timeout: timeout?,
                })
            }
            other => {
                self.bad(
                    &key("type"),
                    kind,
                    format!(
                        "unknown dependent type {}; known types: {}",
                        quote(other),
                        DEPENDENT_TYPES.join(", ")
                    ),
                );
                None
            }
        }
    }
}
