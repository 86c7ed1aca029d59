//! `http`: one request per step, described with templates, and the parent secrets they use.

use std::collections::BTreeMap;

use toml::Spanned;

use super::values::{check_url, quote};
use super::{Home, Validator};
use crate::config::model::*;
use crate::config::raw::*;
use crate::template::{Placeholder, Template};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const DEFAULT_REJECT: [u16; 2] = [401, 403];
const DEFAULT_RETRY: [u16; 4] = [429, 502, 503, 504];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Mint,
    Verify,
    Revoke,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Mint => "mint",
            Step::Verify => "verify",
            Step::Revoke => "revoke",
        }
    }
}

/// What a step's templates may name.
struct Allowed<'a> {
    step: Step,
    parents: Option<&'a [(String, VaultField)]>,
    /// The credential's fields; `None` when they are unknown (invalid, reported already).
    fields: Option<Vec<&'a str>>,
}

impl Validator<'_> {
    pub(super) fn http_provider(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawHttpProvider>,
        home: Home<'_>,
    ) -> Option<HttpProviderConfig> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();

        let parents = match &raw.parents {
            None => Some(Vec::new()),
            Some(parents) => {
                let mut all = Some(Vec::new());
                for (name, field) in parents.get_ref() {
                    let parent_key = key(&format!("parents.{name}"));
                    let checked_name =
                        self.name(&parent_key, &Spanned::new(field.span(), name.clone()));
                    let checked = self.vault_field(&parent_key, field, home);
                    match (checked_name, checked, all.as_mut()) {
                        (Some(name), Some(field), Some(all)) => all.push((name, field)),
                        _ => all = None,
                    }
                }
                all
            }
        };
        let timeout = self.provider_timeout(&key("timeout"), &raw.timeout);

        // The mint table names the credential's fields, which the other steps may use.
        let fields = raw.mint.as_ref().and_then(|mint| {
            let mint_key = key("mint");
            self.require(
                &mint.get_ref().fields,
                &format!("{mint_key}.fields"),
                mint.span(),
                Self::pointers,
            )
        });
        let expires_at = raw
            .mint
            .as_ref()
            .and_then(|mint| match &mint.get_ref().expires_at {
                None => Some(None),
                Some(pointer) => self
                    .pointer(&format!("{}.expires_at", key("mint")), pointer)
                    .map(Some),
            });
        let allowed = |step| Allowed {
            step,
            parents: parents.as_deref(),
            fields: fields
                .as_ref()
                .map(|f| f.iter().map(|(name, _)| name.as_str()).collect()),
        };
        let mint = self.require(&raw.mint, &key("mint"), table.clone(), |v, k, r| {
            v.http_request(k, r, &allowed(Step::Mint))
        });
        let verify = self.require(&raw.verify, &key("verify"), table.clone(), |v, k, r| {
            v.http_request(k, r, &allowed(Step::Verify))
        });
        let revoke = self.require(&raw.revoke, &key("revoke"), table, |v, k, r| {
            v.http_request(k, r, &allowed(Step::Revoke))
        });

        let mint = mint?;
        let expires_at = expires_at?;
        let credentials_expire = match &raw.credentials_expire {
            Some(value) => *value.get_ref(),
            None => expires_at.is_some() || names_expiry(&mint),
        };
        Some(HttpProviderConfig {
            parents: parents?,
            timeout: timeout?,
            credentials_expire,
            mint,
            verify: verify?,
            revoke: revoke?,
            fields: fields?,
            expires_at,
        })
    }

    fn http_request(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawHttpRequest>,
        allowed: &Allowed<'_>,
    ) -> Option<HttpRequestConfig> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();
        if allowed.step != Step::Mint {
            self.unused(
                prefix,
                &[
                    ("fields", raw.fields.as_ref().map(|v| v.span())),
                    ("expires_at", raw.expires_at.as_ref().map(|v| v.span())),
                ],
                &format!(
                    "the {} request (only mint answers a new credential)",
                    allowed.step.name()
                ),
            );
        }
        let method = self.require(&raw.method, &key("method"), table.clone(), |v, key, m| {
            let method = m.get_ref().trim().to_ascii_uppercase();
            if METHODS.contains(&method.as_str()) {
                Some(method)
            } else {
                v.bad(
                    key,
                    m,
                    format!(
                        "unknown method {}; known methods: {}",
                        quote(m.get_ref()),
                        METHODS.join(", ")
                    ),
                );
                None
            }
        });
        let url = self.require(&raw.url, &key("url"), table, |v, key, url| {
            v.url_template(key, url, allowed)
        });
        let headers = match &raw.headers {
            None => Some(Vec::new()),
            Some(headers) => {
                let mut all = Some(Vec::new());
                for (name, value) in headers.get_ref() {
                    let header_key = key(&format!("headers.{name}"));
                    let name_ok = !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                    if !name_ok {
                        self.bad(
                            &header_key,
                            value,
                            format!("invalid header name {}", quote(name)),
                        );
                    }
                    let checked = self.template(&header_key, value, allowed);
                    if value.get_ref().contains(['\r', '\n', '\0']) {
                        self.bad(&header_key, value, "a header value must be one line");
                        all = None;
                    }
                    match (name_ok, checked, all.as_mut()) {
                        (true, Some(_), Some(all)) => {
                            all.push((name.clone(), value.get_ref().clone()))
                        }
                        _ => all = None,
                    }
                }
                all
            }
        };
        let body = match &raw.body {
            None => Some(None),
            Some(body) => self
                .template(&key("body"), body, allowed)
                .map(|_| Some(body.get_ref().clone())),
        };
        let ok = self.statuses(&key("ok"), &raw.ok, &[]);
        let reject = self.statuses(&key("reject"), &raw.reject, &DEFAULT_REJECT);
        let retry = self.statuses(&key("retry"), &raw.retry, &DEFAULT_RETRY);
        if let (Some(ok), Some(reject), Some(retry)) = (&ok, &reject, &retry) {
            let lists = [
                ("ok", ok, &raw.ok),
                ("reject", reject, &raw.reject),
                ("retry", retry, &raw.retry),
            ];
            for (i, (name, list, written)) in lists.iter().enumerate() {
                for (other, other_list, other_written) in &lists[i + 1..] {
                    let Some(both) = list.iter().find(|s| other_list.contains(s)) else {
                        continue;
                    };
                    // Reported at a list the file wrote (the defaults do not overlap).
                    let (at_key, at) = match (other_written, written) {
                        (Some(w), _) => (*other, Some(w.span())),
                        (None, Some(w)) => (*name, Some(w.span())),
                        (None, None) => (*name, None),
                    };
                    self.error(
                        key(at_key),
                        at,
                        format!("status {both} is listed in both `{name}` and `{other}`"),
                    );
                }
            }
        }
        Some(HttpRequestConfig {
            method: method?,
            url: url?,
            headers: headers?,
            body: body?,
            ok: ok?,
            reject: reject?,
            retry: retry?,
        })
    }

    /// A template whose placeholders the step may use.
    fn template(
        &mut self,
        key: &str,
        value: &Spanned<String>,
        allowed: &Allowed<'_>,
    ) -> Option<Template> {
        let template = match Template::parse(value.get_ref()) {
            Ok(t) => t,
            Err(problem) => {
                self.bad(key, value, problem);
                return None;
            }
        };
        let mut ok = true;
        for p in template.placeholders() {
            let problem = match p {
                Placeholder::Parent(name) => match allowed.parents {
                    Some(parents) if !parents.iter().any(|(n, _)| n == name) => Some(format!(
                        "{p} names no parent; add it to `parents` ({})",
                        if parents.is_empty() {
                            "none is configured".to_string()
                        } else {
                            format!(
                                "configured: {}",
                                parents.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                            )
                        }
                    )),
                    _ => None,
                },
                Placeholder::Current(_) if allowed.step == Step::Mint => Some(format!(
                    "{p} is not known when minting: the mint request cannot use the current credential"
                )),
                Placeholder::Current(field) => match &allowed.fields {
                    Some(fields) if !fields.contains(&field.as_str()) => Some(format!(
                        "{p} is not a field of the credential; mint.fields names: {}",
                        fields.join(", ")
                    )),
                    _ => None,
                },
                Placeholder::ExpiresAt | Placeholder::ExpiresAtUnix | Placeholder::AttemptId
                    if allowed.step != Step::Mint =>
                {
                    Some(format!("{p} is only known when minting"))
                }
                _ => None,
            };
            if let Some(problem) = problem {
                self.bad(key, value, problem);
                ok = false;
            }
        }
        ok.then_some(template)
    }

    /// A URL template: http(s), with its scheme and host written out (placeholders only after
    /// the host, so a secret never picks where a request goes).
    fn url_template(
        &mut self,
        key: &str,
        value: &Spanned<String>,
        allowed: &Allowed<'_>,
    ) -> Option<String> {
        let template = self.template(key, value, allowed)?;
        let has_placeholders = template.placeholders().next().is_some();
        let prefix = template.literal_prefix();
        let host_written = prefix
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains(['/', '?']));
        if has_placeholders && !host_written {
            self.bad(
                key,
                value,
                format!(
                    "invalid URL {}: placeholders may only follow the host (scheme://host/...)",
                    quote(value.get_ref())
                ),
            );
            return None;
        }
        let sample = template
            .render(|_| Some("x".to_string()), str::to_string)
            .expect("every placeholder has a sample value");
        match check_url(&sample) {
            Ok(()) => Some(value.get_ref().clone()),
            Err(problem) => {
                self.bad(
                    key,
                    value,
                    format!("invalid URL {}: {problem}", quote(value.get_ref())),
                );
                None
            }
        }
    }

    /// HTTP statuses, 100 to 599, each once; `default` when absent.
    fn statuses(
        &mut self,
        key: &str,
        value: &Option<Spanned<Vec<Spanned<i64>>>>,
        default: &[u16],
    ) -> Option<Vec<u16>> {
        let Some(value) = value else {
            return Some(default.to_vec());
        };
        let mut all = Some(Vec::new());
        for (i, status) in value.get_ref().iter().enumerate() {
            let checked = match u16::try_from(*status.get_ref()) {
                Ok(s) if (100..=599).contains(&s) => Some(s),
                _ => {
                    self.bad(
                        &format!("{key}[{i}]"),
                        status,
                        format!("an HTTP status is 100 to 599, got {}", status.get_ref()),
                    );
                    None
                }
            };
            match (checked, all.as_mut()) {
                (Some(s), Some(all)) if !all.contains(&s) => all.push(s),
                (Some(_), Some(_)) => {}
                _ => all = None,
            }
        }
        all
    }

    /// `fields` of the mint request: field name -> JSON pointer, at least one.
    fn pointers(
        &mut self,
        key: &str,
        fields: &Spanned<BTreeMap<String, Spanned<String>>>,
    ) -> Option<Vec<(String, String)>> {
        if fields.get_ref().is_empty() {
            self.bad(
                key,
                fields,
                "must name at least one field, e.g. { token = \"/data/token\" }",
            );
            return None;
        }
        let mut all = Some(Vec::new());
        for (name, pointer) in fields.get_ref() {
            let field_key = format!("{key}.{name}");
            let name = self.name(&field_key, &Spanned::new(pointer.span(), name.clone()));
            let pointer = self.pointer(&field_key, pointer);
            match (name, pointer, all.as_mut()) {
                (Some(name), Some(pointer), Some(all)) => all.push((name, pointer)),
                _ => all = None,
            }
        }
        all
    }

    /// A JSON pointer (RFC 6901): empty, or '/'-separated reference tokens.
    fn pointer(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        let pointer = value.get_ref();
        if !pointer.is_empty() && !pointer.starts_with('/') {
            self.bad(
                key,
                value,
                format!(
                    "invalid JSON pointer {}: it starts with '/', e.g. \"/data/token\"",
                    quote(pointer)
                ),
            );
            return None;
        }
        Some(pointer.clone())
    }
}

/// Whether the mint request tells the provider the planned expiry.
fn names_expiry(mint: &HttpRequestConfig) -> bool {
    let texts = std::iter::once(&mint.url)
        .chain(mint.headers.iter().map(|(_, v)| v))
        .chain(mint.body.as_ref());
    texts.filter_map(|t| Template::parse(t).ok()).any(|t| {
        t.placeholders()
            .any(|p| matches!(p, Placeholder::ExpiresAt | Placeholder::ExpiresAtUnix))
    })
}
