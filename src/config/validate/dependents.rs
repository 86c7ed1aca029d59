//! `[[credentials.dependents]]`: webhooks, files, commands.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::values::quote;
use super::{Home, Validator};
use crate::config::model::*;
use crate::config::raw::*;

const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_FILE_MODE: u32 = 0o600;
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(3600);
const DEPENDENT_TYPES: [&str; 3] = ["webhook", "file", "exec"];
const ON_ACK_TIMEOUT: [&str; 2] = ["hold", "revoke"];
const FILE_FORMATS: [&str; 3] = ["field", "json", "env"];

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

        let dependent_type = kind.get_ref().as_str();
        let context = format!("dependent type {}", quote(dependent_type));
        let ca_file = raw.ca_file.as_ref().map(|v| v.span());
        if dependent_type != "webhook" {
            self.unused(prefix, &[("ca_file", ca_file)], &context);
        }
        let ack = self.ack(prefix, raw, dependent_type == "file");
        let sink = self.sink(prefix, raw, table, home, kind);
        Some(Dependent {
            name: name?,
            ack: ack?,
            sink: sink?,
        })
    }

    /// `require_ack`, `ack_timeout`, `on_ack_timeout`: the timeout keys mean nothing without
    /// a required ack.
    fn ack(&mut self, prefix: &str, raw: &RawDependent, file: bool) -> Option<Ack> {
        let key = |name: &str| format!("{prefix}.{name}");
        let required = raw.require_ack.as_ref().map_or(file, |v| *v.get_ref());
        if !required {
            self.unused(
                prefix,
                &[
                    ("ack_timeout", raw.ack_timeout.as_ref().map(|v| v.span())),
                    (
                        "on_ack_timeout",
                        raw.on_ack_timeout.as_ref().map(|v| v.span()),
                    ),
                ],
                "a dependent without `require_ack = true`",
            );
        }
        let timeout =
            self.positive_duration_or(&key("ack_timeout"), &raw.ack_timeout, DEFAULT_ACK_TIMEOUT);
        let on_timeout = match &raw.on_ack_timeout {
            None => Some(OnAckTimeout::Hold),
            Some(v) => match v.get_ref().as_str() {
                "hold" => Some(OnAckTimeout::Hold),
                "revoke" => Some(OnAckTimeout::Revoke),
                other => {
                    self.bad(
                        &key("on_ack_timeout"),
                        v,
                        format!(
                            "must be one of {}, got {}",
                            ON_ACK_TIMEOUT.join(", "),
                            quote(other)
                        ),
                    );
                    None
                }
            },
        };
        Some(Ack {
            required,
            timeout: timeout?,
            on_timeout: on_timeout?,
        })
    }

    fn sink(
        &mut self,
        prefix: &str,
        raw: &RawDependent,
        table: Range<usize>,
        home: Home<'_>,
        kind: &Spanned<String>,
    ) -> Option<Sink> {
        let key = |name: &str| format!("{prefix}.{name}");
        let url = raw.url.as_ref().map(|v| v.span());
        let signing_key = raw.signing_key.as_ref().map(|v| v.span());
        let timeout = raw.timeout.as_ref().map(|v| v.span());
        let path = raw.path.as_ref().map(|v| v.span());
        let field = raw.field.as_ref().map(|v| v.span());
        let command = raw.command.as_ref().map(|v| v.span());
        let file_keys = [
            ("format", raw.format.as_ref().map(|v| v.span())),
            ("env_prefix", raw.env_prefix.as_ref().map(|v| v.span())),
            ("mode", raw.mode.as_ref().map(|v| v.span())),
            ("owner", raw.owner.as_ref().map(|v| v.span())),
            ("group", raw.group.as_ref().map(|v| v.span())),
            ("exec", raw.exec.as_ref().map(|v| v.span())),
            ("exec_timeout", raw.exec_timeout.as_ref().map(|v| v.span())),
        ];
        let dependent_type = kind.get_ref().as_str();
        let context = format!("dependent type {}", quote(dependent_type));
        match dependent_type {
            "webhook" => {
                self.unused(
                    prefix,
                    &[("path", path), ("field", field), ("command", command)],
                    &context,
                );
                self.unused(prefix, &file_keys, &context);
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
                let ca_file = match &raw.ca_file {
                    None => Some(None),
                    Some(v) => self.absolute_path(&key("ca_file"), v).map(Some),
                };
                Some(Sink::Webhook {
                    url: url?,
                    signing_key: signing_key?,
                    timeout: timeout?,
                    ca_file: ca_file?,
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
                let path =
                    self.require(&raw.path, &key("path"), table.clone(), Self::absolute_path);
                let format = self.file_format(prefix, raw, table.clone());
                let mode = match &raw.mode {
                    None => Some(DEFAULT_FILE_MODE),
                    Some(mode) => self.file_mode(&key("mode"), mode),
                };
                let owner = match &raw.owner {
                    None => Some(None),
                    Some(v) => self.account(&key("owner"), v, "user").map(Some),
                };
                let group = match &raw.group {
                    None => Some(None),
                    Some(v) => self.account(&key("group"), v, "group").map(Some),
                };
                let exec = match &raw.exec {
                    None => Some(None),
                    Some(v) => self.argv(&key("exec"), v).map(Some),
                };
                if raw.exec.is_none() {
                    self.unused(
                        prefix,
                        &[("exec_timeout", raw.exec_timeout.as_ref().map(|v| v.span()))],
                        "a file dependent without `exec`",
                    );
                }
                let exec_timeout = self.positive_duration_or(
                    &key("exec_timeout"),
                    &raw.exec_timeout,
                    DEFAULT_EXEC_TIMEOUT,
                );
                Some(Sink::File {
                    path: path?,
                    format: format?,
                    mode: mode?,
                    owner: owner?,
                    group: group?,
                    exec: exec?,
                    exec_timeout: exec_timeout?,
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
                self.unused(prefix, &file_keys, &context);
                let command = self.require(&raw.command, &key("command"), table, Self::argv);
                let timeout =
                    self.positive_duration_or(&key("timeout"), &raw.timeout, DEFAULT_EXEC_TIMEOUT);
                Some(Sink::Exec {
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

impl Validator<'_> {
    fn absolute_path(&mut self, key: &str, path: &Spanned<String>) -> Option<PathBuf> {
        if Path::new(path.get_ref()).is_absolute() {
            Some(PathBuf::from(path.get_ref()))
        } else {
            self.bad(
                key,
                path,
                format!("must be an absolute path, got {}", quote(path.get_ref())),
            );
            None
        }
    }

    /// `format`, `field` and `env_prefix` of a file dependent. Without `format`, a `field` means
    /// `field` and no `field` means `json`.
    fn file_format(
        &mut self,
        prefix: &str,
        raw: &RawDependent,
        table: Range<usize>,
    ) -> Option<FileFormat> {
        let key = |name: &str| format!("{prefix}.{name}");
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
        let format = match &raw.format {
            None if raw.field.is_some() => "field",
            None => "json",
            Some(format) => format.get_ref().as_str(),
        };
        let context = format!("format {}", quote(format));
        if format != "env" {
            self.unused(
                prefix,
                &[("env_prefix", raw.env_prefix.as_ref().map(|v| v.span()))],
                &context,
            );
        }
        if format != "field" {
            self.unused(
                prefix,
                &[("field", raw.field.as_ref().map(|v| v.span()))],
                &context,
            );
        }
        match format {
            "field" => match field? {
                Some(field) => Some(FileFormat::Field(field)),
                None => {
                    self.error(
                        key("field"),
                        Some(table),
                        "format \"field\" needs `field`, the name of the field to write",
                    );
                    None
                }
            },
            "json" => Some(FileFormat::Json),
            "env" => {
                let prefix = match &raw.env_prefix {
                    None => Some(String::new()),
                    Some(value) => self.env_prefix(&key("env_prefix"), value),
                };
                Some(FileFormat::Env { prefix: prefix? })
            }
            other => {
                let format = raw
                    .format
                    .as_ref()
                    .expect("only a written format can be unknown");
                self.bad(
                    &key("format"),
                    format,
                    format!(
                        "unknown format {}; known formats: {}",
                        quote(other),
                        FILE_FORMATS.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// Letters, digits and `_`, not starting with a digit: what every env file reader accepts.
    fn env_prefix(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        let prefix = value.get_ref();
        let ok = prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !prefix.starts_with(|c: char| c.is_ascii_digit());
        if ok {
            Some(prefix.clone())
        } else {
            self.bad(
                key,
                value,
                format!(
                    "invalid env_prefix {}: use letters, digits and '_', not starting with a digit",
                    quote(prefix)
                ),
            );
            None
        }
    }

    /// An octal mode such as "0600" or "640", neither group- nor world-writable.
    fn file_mode(&mut self, key: &str, value: &Spanned<String>) -> Option<u32> {
        let text = value.get_ref().trim();
        let mode = (!text.is_empty() && text.len() <= 4)
            .then(|| u32::from_str_radix(text, 8).ok())
            .flatten();
        match mode {
            Some(mode) if mode > 0o777 => {
                self.bad(
                    key,
                    value,
                    format!(
                        "mode {} sets setuid, setgid or sticky bits; use permission bits only, e.g. \"0600\"",
                        quote(text)
                    ),
                );
                None
            }
            Some(mode) if mode & 0o022 != 0 => {
                self.bad(
                    key,
                    value,
                    format!(
                        "mode {} lets others than the owner write the secret; at most \"0644\"",
                        quote(text)
                    ),
                );
                None
            }
            Some(mode) => Some(mode),
            None => {
                self.bad(
                    key,
                    value,
                    format!(
                        "invalid mode {}: an octal string such as \"0600\" or \"0640\"",
                        quote(text)
                    ),
                );
                None
            }
        }
    }

    /// A user or group: a name or a numeric id. Whether it exists is checked when writing.
    fn account(&mut self, key: &str, value: &Spanned<String>, what: &str) -> Option<String> {
        let account = value.get_ref();
        let ok = !account.is_empty()
            && account
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && !account.starts_with('-');
        if ok {
            Some(account.clone())
        } else {
            self.bad(
                key,
                value,
                format!(
                    "invalid {what} {}: a {what} name or a numeric id",
                    quote(account)
                ),
            );
            None
        }
    }

    /// A command as argv: a non-empty list whose first element names the program.
    pub(super) fn argv(
        &mut self,
        key: &str,
        command: &Spanned<Vec<Spanned<String>>>,
    ) -> Option<Vec<String>> {
        let argv: Vec<String> = command
            .get_ref()
            .iter()
            .map(|a| a.get_ref().clone())
            .collect();
        if argv.first().is_none_or(|program| program.trim().is_empty()) {
            self.bad(
                key,
                command,
                "must name a program: [\"/usr/bin/systemctl\", \"reload\", \"app\"]",
            );
            None
        } else {
            Some(argv)
        }
    }
}
