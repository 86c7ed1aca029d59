//! The policy keys (`[defaults]` and each credential's overrides), and the checks between them.

use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveTime;
use toml::Spanned;

use super::values::quote;
use super::{Origin, Origins, Validator};
use crate::config::model::*;
use crate::config::raw::*;

const DAY: u64 = 24 * 60 * 60;
/// Upper bound for every duration: far beyond any sensible rotation period, and far below the
/// range where adding it to a timestamp could overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * DAY);
/// Written instead of a duration or cron expression to switch a trigger off.
const NEVER: &str = "never";

/// The built-in policy, before `[defaults]` and the credential's own keys are applied.
impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_age: Some(Duration::from_secs(30 * DAY)),
            schedule: None,
            timezone: chrono_tz::UTC,
            expiry_lead: Duration::from_secs(7 * DAY),
            window: None,
            jitter: Duration::ZERO,
            grace: Duration::from_secs(60 * 60),
            destroy_old_version: false,
            credential_lifetime: None,
            expiring_warning: Duration::from_secs(3 * DAY),
            supply_deadline: Duration::from_secs(7 * DAY),
            supply_reminder: Duration::from_secs(60 * 60),
            drift_interval: Some(Duration::from_secs(60 * 60)),
        }
    }
}

impl Validator<'_> {
    /// Applies the policy keys in `raw` on top of `base`.
    pub(super) fn policy(
        &mut self,
        raw: &RawPolicy,
        prefix: &str,
        base: &Policy,
        base_origins: &Origins,
    ) -> Option<(Policy, Origins)> {
        let key = |name: &str| format!("{prefix}.{name}");
        let mut origins = base_origins.clone();

        let max_age = match &raw.max_age {
            None => Some(base.max_age),
            Some(value) => {
                origins.max_age = Origin::of(&key("max_age"), value);
                if value.get_ref().trim() == NEVER {
                    Some(None)
                } else {
                    self.positive_duration(&key("max_age"), value).map(Some)
                }
            }
        };
        let schedule = match &raw.schedule {
            None => Some(base.schedule.clone()),
            Some(value) => {
                origins.schedule = Origin::of(&key("schedule"), value);
                if value.get_ref().trim() == NEVER {
                    Some(None)
                } else {
                    self.cron(&key("schedule"), value).map(Some)
                }
            }
        };
        let timezone = match &raw.timezone {
            None => Some(base.timezone),
            Some(value) => match chrono_tz::Tz::from_str(value.get_ref().trim()) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    self.bad(
                        &key("timezone"),
                        value,
                        format!(
                            "unknown timezone {}; use an IANA name such as `UTC` or `Europe/Berlin`",
                            quote(value.get_ref())
                        ),
                    );
                    None
                }
            },
        };
        let expiry_lead = match &raw.expiry_lead {
            None => Some(base.expiry_lead),
            Some(value) => {
                origins.expiry_lead = Origin::of(&key("expiry_lead"), value);
                self.duration(&key("expiry_lead"), value)
            }
        };
        let window = match &raw.window {
            None => Some(base.window),
            Some(value) => self.window(&key("window"), value).map(Some),
        };
        let jitter = match &raw.jitter {
            None => Some(base.jitter),
            Some(value) => {
                origins.jitter = Origin::of(&key("jitter"), value);
                self.duration(&key("jitter"), value)
            }
        };
        let grace = match &raw.grace {
            None => Some(base.grace),
            Some(value) => {
                origins.grace = Origin::of(&key("grace"), value);
                self.duration(&key("grace"), value)
            }
        };
        let destroy_old_version = match &raw.destroy_old_version {
            None => base.destroy_old_version,
            Some(value) => *value.get_ref(),
        };
        let credential_lifetime = match &raw.credential_lifetime {
            None => Some(base.credential_lifetime),
            Some(value) => {
                origins.credential_lifetime = Origin::of(&key("credential_lifetime"), value);
                self.positive_duration(&key("credential_lifetime"), value)
                    .map(Some)
            }
        };

        let expiring_warning = match &raw.expiring_warning {
            None => Some(base.expiring_warning),
            Some(value) => self.duration(&key("expiring_warning"), value),
        };

        let supply_deadline = match &raw.supply_deadline {
            None => Some(base.supply_deadline),
            Some(value) => self.positive_duration(&key("supply_deadline"), value),
        };
        let supply_reminder = match &raw.supply_reminder {
            None => Some(base.supply_reminder),
            Some(value) => self.positive_duration(&key("supply_reminder"), value),
        };
        let drift_interval = match &raw.drift_interval {
            None => Some(base.drift_interval),
            Some(value) if value.get_ref().trim() == NEVER => Some(None),
            Some(value) => self
                .positive_duration(&key("drift_interval"), value)
                .map(Some),
        };

        let policy = Policy {
            max_age: max_age?,
            schedule: schedule?,
            timezone: timezone?,
            expiry_lead: expiry_lead?,
            window: window?,
            jitter: jitter?,
            grace: grace?,
            destroy_old_version,
            credential_lifetime: credential_lifetime?,
            expiring_warning: expiring_warning?,
            supply_deadline: supply_deadline?,
            supply_reminder: supply_reminder?,
            drift_interval: drift_interval?,
        };
        Some((policy, origins))
    }

    /// Checks between policy values. A conflict is reported only at the level (`defaults` or one
    /// credential) that wrote one of the two values, so a bad `[defaults]` is reported once, not
    /// once per credential.
    pub(super) fn check_policy(&mut self, policy: &Policy, origins: &Origins, prefix: &str) {
        let here = |origin: &Option<Origin>| {
            origin
                .as_ref()
                .is_some_and(|o| o.key.starts_with(&format!("{prefix}.")))
        };
        if let Some(max_age) = policy.max_age {
            if policy.grace >= max_age && (here(&origins.grace) || here(&origins.max_age)) {
                let at = pick_here(&origins.grace, &origins.max_age, prefix);
                self.at(
                    at,
                    prefix,
                    format!(
                        "grace ({}) must be shorter than max_age ({})",
                        show(policy.grace),
                        show(max_age)
                    ),
                );
            }
        }
        // The jitter offset moves a rotation on max age up to `jitter` earlier. At `max_age` or
        // more, a credential could be due the moment it is written: a rotation loop. An error, not
        // a warning: no value in that range spreads load any better than one just below it.
        if let Some(max_age) = policy.max_age {
            if policy.jitter >= max_age && (here(&origins.jitter) || here(&origins.max_age)) {
                let at = pick_here(&origins.jitter, &origins.max_age, prefix);
                self.at(
                    at,
                    prefix,
                    format!(
                        "jitter ({}) must be shorter than max_age ({})",
                        show(policy.jitter),
                        show(max_age)
                    ),
                );
            }
        }
        if let Some(lifetime) = policy.credential_lifetime {
            if policy.expiry_lead >= lifetime
                && (here(&origins.expiry_lead) || here(&origins.credential_lifetime))
            {
                let at = pick_here(&origins.expiry_lead, &origins.credential_lifetime, prefix);
                self.at(
                    at,
                    prefix,
                    format!(
                        "expiry_lead ({}) must be shorter than credential_lifetime ({})",
                        show(policy.expiry_lead),
                        show(lifetime)
                    ),
                );
            }
        }
    }

    pub(super) fn at(&mut self, origin: Option<Origin>, fallback_key: &str, message: String) {
        match origin {
            Some(origin) => self.error(origin.key, Some(origin.span), message),
            None => self.error(fallback_key, None, message),
        }
    }

    pub(super) fn duration(&mut self, key: &str, value: &Spanned<String>) -> Option<Duration> {
        match humantime::parse_duration(value.get_ref().trim()) {
            Ok(duration) if duration > MAX_DURATION => {
                self.bad(
                    key,
                    value,
                    format!(
                        "duration {} is longer than 10 years",
                        quote(value.get_ref())
                    ),
                );
                None
            }
            Ok(duration) => Some(duration),
            // humantime's own message lists every unit spelling; an example says more.
            Err(_) => {
                self.bad(
                    key,
                    value,
                    format!(
                        "invalid duration {}; write e.g. `90s`, `10m`, `1h`, `7d`",
                        quote(value.get_ref())
                    ),
                );
                None
            }
        }
    }

    pub(super) fn positive_duration(
        &mut self,
        key: &str,
        value: &Spanned<String>,
    ) -> Option<Duration> {
        let duration = self.duration(key, value)?;
        if duration.is_zero() {
            self.bad(key, value, "must be longer than zero");
            return None;
        }
        Some(duration)
    }

    pub(super) fn positive_duration_or(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Option<Duration> {
        match value {
            None => Some(default),
            Some(value) => self.positive_duration(key, value),
        }
    }

    pub(super) fn cron(&mut self, key: &str, value: &Spanned<String>) -> Option<CronSchedule> {
        let expression = value.get_ref().trim();
        match croner::Cron::from_str(expression) {
            Ok(cron) => {
                // A valid expression may name a date that does not exist (`0 4 30 2 *`, 30
                // February): it parses, and never fires. An error, not a warning: whoever means
                // "never" writes `never`. Ten years, the longest duration allowed anywhere, still
                // finds 29 February across the skipped leap year of 2100.
                let now = self.env.now();
                let horizon = now + chrono::TimeDelta::days(10 * 365 + 3);
                let fires = cron
                    .find_next_occurrence(&now, false)
                    .is_ok_and(|next| next <= horizon);
                if !fires {
                    self.bad(
                        key,
                        value,
                        format!(
                            "cron expression {} never fires: no occurrence in the next 10 years",
                            quote(expression)
                        ),
                    );
                    return None;
                }
                Some(CronSchedule {
                    expression: expression.to_string(),
                })
            }
            Err(error) => {
                self.bad(
                    key,
                    value,
                    format!("invalid cron expression {}: {error}", quote(expression)),
                );
                None
            }
        }
    }

    pub(super) fn window(&mut self, key: &str, value: &Spanned<String>) -> Option<Window> {
        let text = value.get_ref().trim();
        let parsed = text.split_once('-').and_then(|(start, end)| {
            let start = NaiveTime::parse_from_str(start.trim(), "%H:%M").ok()?;
            let end = NaiveTime::parse_from_str(end.trim(), "%H:%M").ok()?;
            Some(Window { start, end })
        });
        match parsed {
            None => {
                self.bad(
                    key,
                    value,
                    format!(
                        "invalid window {}; write `HH:MM-HH:MM`, e.g. `22:00-04:00`",
                        quote(text)
                    ),
                );
                None
            }
            Some(window) if window.start == window.end => {
                // Ambiguous (empty, or the whole day): leave the key out for "any time".
                self.bad(
                    key,
                    value,
                    "window start and end are equal; leave `window` out to allow any time",
                );
                None
            }
            Some(window) => Some(window),
        }
    }
}

/// Of two origins, the one written at this level (`prefix`), preferring the first.
pub(super) fn pick_here(
    first: &Option<Origin>,
    second: &Option<Origin>,
    prefix: &str,
) -> Option<Origin> {
    let here = |origin: &&Origin| origin.key.starts_with(&format!("{prefix}."));
    first
        .as_ref()
        .filter(here)
        .or(second.as_ref().filter(here))
        .cloned()
}

pub(super) fn show(duration: Duration) -> String {
    crate::human::duration(duration)
}
