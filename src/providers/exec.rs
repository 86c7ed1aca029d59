//! `exec`: a configured program per step (mint, verify, revoke, verify_revoked), with JSON on
//! stdin and stdout.
//!
//! Protocol (README "Generic providers"): the program gets one JSON object on stdin, `step`,
//! `credential`, and for mint `attempt_id`, `now`, `expires_at`, `expires_at_unix`, for the other
//! steps `fields` (the credential the step acts on). Exit 0 is done; mint answers
//! `{"fields": {...}, "expires_at": ...}` on stdout, verify_revoked `{"revoked": bool}`. Exit
//! [`EXIT_REJECTED`] means the provider said no, [`EXIT_TEMPFAIL`] that nothing was done and a
//! later try may work; anything else (another status, a signal, the timeout, output that is not
//! the expected JSON) is a failure whose outcome is unknown.
//!
//! Invariants: stdout may hold secrets, so it is never logged or quoted; stderr is quoted clipped
//! to one line, with every secret value the call knows cut out. The program runs through
//! [`crate::process`]: no shell, a cleared environment, its process group killed at the timeout.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::{json, Value};

use super::outcome::{self, Reply, Request};
use super::{MintRequest, Minted, Mode, Provider, ProviderError, ProviderInfo};
use crate::config::ExecProviderConfig;
use crate::process::{Ended, Finished, Program};
use crate::secret::SecretFields;

/// Exit status: the provider rejected the request or the credential.
pub const EXIT_REJECTED: i32 = 2;
/// Exit status (`EX_TEMPFAIL`): nothing was done; try again later.
pub const EXIT_TEMPFAIL: i32 = 75;

/// The most stdout or stderr a program may write.
const OUTPUT_CAP: usize = 64 * 1024;
/// How much of stderr an error quotes.
const STDERR_QUOTE: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Mint,
    Verify,
    Revoke,
    VerifyRevoked,
}

impl Step {
    /// A mint creates a credential each time; the other steps do the same however often.
    fn request(self) -> Request {
        match self {
            Step::Mint => Request::NotIdempotent,
            _ => Request::Idempotent,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Step::Mint => "mint",
            Step::Verify => "verify",
            Step::Revoke => "revoke",
            Step::VerifyRevoked => "verify_revoked",
        }
    }
}

pub struct ExecProvider {
    cfg: ExecProviderConfig,
    credential: String,
    fields: &'static [&'static str],
}

impl ExecProvider {
    pub fn new(cfg: ExecProviderConfig, credential: &str) -> ExecProvider {
        let fields = static_names(&cfg.fields);
        ExecProvider {
            cfg,
            credential: credential.to_string(),
            fields,
        }
    }

    fn argv(&self, step: Step) -> &[String] {
        match step {
            Step::Mint => &self.cfg.mint,
            Step::Verify => &self.cfg.verify,
            Step::Revoke => &self.cfg.revoke,
            Step::VerifyRevoked => self
                .cfg
                .verify_revoked
                .as_deref()
                .unwrap_or(&self.cfg.verify),
        }
    }

    /// "exec provider mint (/usr/local/bin/rotate mint)", for every message about one step.
    /// The command line comes from the config file, which holds no secret.
    fn what(&self, step: Step) -> String {
        let mut command = self.argv(step).join(" ");
        if command.len() > 120 {
            let mut cut = 120;
            while !command.is_char_boundary(cut) {
                cut -= 1;
            }
            command.truncate(cut);
            command.push('…');
        }
        format!("exec provider {} ({command})", step.name())
    }

    /// Runs the step's program with `input` on stdin. `Ok`: it exited 0, with its stdout.
    /// `secrets`: values to cut out of any quoted stderr.
    async fn run(
        &self,
        step: Step,
        input: &Value,
        secrets: &[&str],
    ) -> Result<SecretSlice<u8>, ProviderError> {
        let stdin = SecretSlice::from(input.to_string().into_bytes());
        let env = [
            ("SECRET_ROTATOR_STEP", step.name()),
            ("SECRET_ROTATOR_CREDENTIAL", self.credential.as_str()),
        ];
        let program = Program {
            argv: self.argv(step),
            env: &env,
            stdin: stdin.expose_secret(),
            timeout: self.cfg.timeout,
            output_cap: OUTPUT_CAP,
        };
        let finished = crate::process::run(&program).await.map_err(|e| {
            let reason = format!("{}: cannot start the program: {e}", self.what(step));
            if e.permanent() {
                ProviderError::Config { reason }
            } else {
                // Never started: nothing happened.
                outcome::no_answer(step.request(), Reply::NotSent, reason)
            }
        })?;
        let Finished {
            ended,
            stdout,
            stderr,
        } = finished;
        let stderr = quote_stderr(&stderr.to_text(), secrets);
        // Sent, and no answer the program stands by: its work may be done (a lost reply).
        let failed = |said: String| {
            let reason = format!("{}: {said}{stderr}", self.what(step));
            outcome::no_answer(step.request(), Reply::Lost, reason)
        };
        match ended {
            Ended::Exited(0) if stdout.complete() => Ok(SecretSlice::from(stdout.kept)),
            Ended::Exited(0) => Err(failed(format!(
                "wrote more than {} KiB on stdout",
                OUTPUT_CAP / 1024
            ))),
            Ended::Exited(EXIT_REJECTED) => Err(ProviderError::Rejected {
                reason: format!("{}: rejected (exit status 2){stderr}", self.what(step)),
            }),
            Ended::Exited(EXIT_TEMPFAIL) => Err(ProviderError::Transient {
                reason: format!(
                    "{}: temporary failure (exit status 75){stderr}",
                    self.what(step)
                ),
                retry_after: None,
            }),
            Ended::Exited(code) => Err(failed(format!("exited with status {code}"))),
            Ended::Signalled(status) => Err(failed(format!("ended by a signal ({status})"))),
            Ended::WaitFailed(error) => {
                Err(failed(format!("cannot wait for the program: {error}")))
            }
            Ended::TimedOut => Err(failed(format!(
                "no answer within {}; its process group was killed",
                crate::human::duration(self.cfg.timeout)
            ))),
        }
    }

    /// Stdout as the JSON object the step answers.
    fn answer(&self, step: Step, stdout: &SecretSlice<u8>) -> Result<Value, ProviderError> {
        match serde_json::from_slice::<Value>(stdout.expose_secret()) {
            Ok(v @ Value::Object(_)) => Ok(v),
            // Never the text itself: it may be a secret.
            _ => Err(outcome::no_answer(
                step.request(),
                Reply::Unreadable,
                format!(
                    "{}: exited 0 but stdout is not a JSON object ({} bytes)",
                    self.what(step),
                    stdout.expose_secret().len()
                ),
            )),
        }
    }

    fn with_fields(&self, step: Step, secret: &SecretFields) -> Value {
        json!({
            "step": step.name(),
            "credential": self.credential,
            "fields": secret.to_json(),
        })
    }
}

#[async_trait]
impl Provider for ExecProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            mode: Mode::Automatic,
            credentials_expire: self.cfg.credentials_expire,
            // Revocation is confirmed with verify_revoked (or verify) either way.
            async_revocation: true,
        }
    }

    fn required_fields(&self) -> &'static [&'static str] {
        self.fields
    }

    async fn mint(&self, req: &MintRequest) -> Result<Minted, ProviderError> {
        let input = json!({
            "step": "mint",
            "credential": self.credential,
            "attempt_id": req.attempt_id,
            "now": req.now.to_rfc3339_opts(SecondsFormat::Secs, true),
            "expires_at": req.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            "expires_at_unix": req.expires_at.timestamp(),
        });
        let stdout = self.run(Step::Mint, &input, &[]).await?;
        let answer = self.answer(Step::Mint, &stdout)?;
        let bad = |what: String| {
            outcome::no_answer(
                Step::Mint.request(),
                Reply::Unreadable,
                format!("{}: exited 0 but {what}", self.what(Step::Mint)),
            )
        };
        let Some(fields) = answer.get("fields").and_then(Value::as_object) else {
            return Err(bad("its answer has no `fields` object".into()));
        };
        let mut secret = SecretFields::new();
        for (name, value) in fields {
            match value.as_str() {
                Some(v) => secret.insert(name, v),
                None => return Err(bad(format!("field `{name}` is not a string"))),
            }
        }
        let missing: Vec<&str> = self
            .cfg
            .fields
            .iter()
            .map(String::as_str)
            .filter(|f| secret.expose(f).is_none_or(str::is_empty))
            .collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "its answer lacks the field(s) {}",
                missing.join(", ")
            )));
        }
        let expires_at =
            match answer.get("expires_at") {
                None | Some(Value::Null) => self.cfg.credentials_expire.then_some(req.expires_at),
                Some(value) => Some(parse_time(value).ok_or_else(|| {
                    bad("`expires_at` is neither RFC 3339 nor unix seconds".into())
                })?),
            };
        Ok(Minted { secret, expires_at })
    }

    async fn verify(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let values = values_of(secret);
        self.run(
            Step::Verify,
            &self.with_fields(Step::Verify, secret),
            &values,
        )
        .await
        .map(|_| ())
    }

    async fn revoke(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let values = values_of(secret);
        self.run(
            Step::Revoke,
            &self.with_fields(Step::Revoke, secret),
            &values,
        )
        .await
        .map(|_| ())
    }

    async fn verify_revoked(&self, secret: &SecretFields) -> Result<bool, ProviderError> {
        let values = values_of(secret);
        if self.cfg.verify_revoked.is_none() {
            return match self
                .run(
                    Step::Verify,
                    &self.with_fields(Step::Verify, secret),
                    &values,
                )
                .await
            {
                Ok(_) => Ok(false),
                Err(ProviderError::Rejected { .. }) => Ok(true),
                Err(e) => Err(e),
            };
        }
        let input = self.with_fields(Step::VerifyRevoked, secret);
        let stdout = self.run(Step::VerifyRevoked, &input, &values).await?;
        let answer = self.answer(Step::VerifyRevoked, &stdout)?;
        answer
            .get("revoked")
            .and_then(Value::as_bool)
            .ok_or_else(|| ProviderError::Transient {
                reason: format!(
                    "{}: exited 0 but its answer has no boolean `revoked`",
                    self.what(Step::VerifyRevoked)
                ),
                retry_after: None,
            })
    }
}

fn values_of(secret: &SecretFields) -> Vec<&str> {
    secret.keys().filter_map(|k| secret.expose(k)).collect()
}

/// RFC 3339 text or unix seconds.
pub(crate) fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| s.trim().parse::<i64>().ok().and_then(unix)),
        Value::Number(n) => n.as_i64().and_then(unix),
        _ => None,
    }
}

fn unix(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

/// "; stderr: ..." (one line, clipped, secrets cut out), or nothing when it is empty.
fn quote_stderr(stderr: &str, secrets: &[&str]) -> String {
    let mut text = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s, "[REDACTED]");
    }
    if text.is_empty() {
        return String::new();
    }
    if text.len() > STDERR_QUOTE {
        let mut cut = STDERR_QUOTE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    format!("; stderr: {text}")
}

/// The configured field names as `'static` strs, as the trait asks: each distinct name is
/// allocated once for the life of the process, however often providers are built.
pub(crate) fn static_names(names: &[String]) -> &'static [&'static str] {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    static LISTS: OnceLock<Mutex<HashSet<&'static [&'static str]>>> = OnceLock::new();
    let mut interned = NAMES
        .get_or_init(Default::default)
        .lock()
        .expect("name table lock poisoned");
    let list: Vec<&'static str> = names
        .iter()
        .map(|n| match interned.get(n.as_str()) {
            Some(s) => *s,
            None => {
                let s: &'static str = Box::leak(n.clone().into_boxed_str());
                interned.insert(s);
                s
            }
        })
        .collect();
    drop(interned);
    let mut lists = LISTS
        .get_or_init(Default::default)
        .lock()
        .expect("name table lock poisoned");
    match lists.get(list.as_slice()) {
        Some(l) => l,
        None => {
            let l: &'static [&'static str] = Box::leak(list.into_boxed_slice());
            lists.insert(l);
            l
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_quoted_on_one_line_clipped_and_without_secrets() {
        let cases = [
            ("", &[][..], ""),
            ("  \n", &[][..], ""),
            (
                "bad token\nabcd1234 refused\n",
                &["abcd1234"][..],
                "; stderr: bad token [REDACTED] refused",
            ),
            ("short a", &["a"][..], "; stderr: short a"),
        ];
        for (stderr, secrets, expected) in cases {
            assert_eq!(quote_stderr(stderr, secrets), expected, "{stderr:?}");
        }
        let long = "x".repeat(1000);
        assert_eq!(
            quote_stderr(&long, &[]).chars().count(),
            "; stderr: ".len() + 301
        );
    }

    #[test]
    fn times_are_rfc3339_or_unix_seconds() {
        let t = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
        let cases = [
            (json!("2030-01-02T03:04:05Z"), Some(t)),
            (json!("2030-01-02T04:04:05+01:00"), Some(t)),
            (json!(t.timestamp()), Some(t)),
            (json!(t.timestamp().to_string()), Some(t)),
            (json!("soon"), None),
            (json!(true), None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_time(&value), expected, "{value}");
        }
    }

    #[test]
    fn field_names_are_interned_once() {
        let a = static_names(&["token".into(), "id".into()]);
        let b = static_names(&["token".into(), "id".into()]);
        assert_eq!(a, ["token", "id"]);
        assert!(std::ptr::eq(a, b));
    }
}
