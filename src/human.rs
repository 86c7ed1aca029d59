//! Durations and times as people read them, one format for every message and table.
//!
//! Invariant: every duration and time printed for a person (CLI output, error texts, log
//! messages) goes through here; machine output (JSON, events) keeps RFC 3339 and seconds.
//! A duration prints in the units of the config file (`90d`, `1h 30m`, `4m 10s`), its two
//! largest adjacent units, so it can be read back as written.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// "59d 13h", "1h", "4m 10s", "40s", "250ms": the two largest adjacent units, the smaller one
/// left out when it is zero; anything after them is dropped (not rounded).
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return match d.subsec_millis() {
            0 => "0s".to_string(),
            ms => format!("{ms}ms"),
        };
    }
    let units = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let first = units.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    let (n, unit) = units[first];
    match units.get(first + 1) {
        Some((m, next)) if *m > 0 => format!("{n}{unit} {m}{next}"),
        _ => format!("{n}{unit}"),
    }
}

/// [`duration`] of whole seconds.
pub fn seconds(secs: u64) -> String {
    duration(Duration::from_secs(secs))
}

/// "2026-12-07 05:44:30Z": UTC, to the second.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_units_of_the_config_file() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1s"),
            (Duration::from_secs(59), "59s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(61), "1m 1s"),
            (Duration::from_secs(250), "4m 10s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(3660), "1h 1m"),
            (Duration::from_secs(3661), "1h 1m"),
            (Duration::from_secs(86_400), "1d"),
            (Duration::from_secs(90_000), "1d 1h"),
            (Duration::from_secs(86_400 + 60), "1d"),
            // What humantime printed as "1month 29days 13h 26m 44s".
            (Duration::from_secs(5_145_404), "59d 13h"),
            (Duration::from_secs(3650 * 86_400), "3650d"),
        ];
        for (d, text) in cases {
            assert_eq!(duration(d), text, "{d:?}");
        }
    }

    #[test]
    fn times_are_utc_to_the_second() {
        let t = DateTime::parse_from_rfc3339("2026-12-07T06:44:30.123+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time(t), "2026-12-07 05:44:30Z");
    }
}
