//! `[daemon]`: the planner's reconcile interval, the stagger between instances, and the limits
//! on rotations in flight.

use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::model::DaemonConfig;
use crate::config::raw::RawDaemon;

impl Validator<'_> {
    pub(super) fn daemon(&mut self, raw: &Spanned<RawDaemon>) -> Option<DaemonConfig> {
        let raw = raw.get_ref();
        let defaults = DaemonConfig::default();
        let reconcile_interval = self.positive_duration_or(
            "daemon.reconcile_interval",
            &raw.reconcile_interval,
            defaults.reconcile_interval,
        );
        let stagger = match &raw.stagger {
            None => Some(defaults.stagger),
            Some(value) => self.duration("daemon.stagger", value),
        };
        let max_rotations = self.limit(
            "daemon.max_rotations",
            &raw.max_rotations,
            defaults.max_rotations,
        );
        let max_rotations_per_provider = self.limit(
            "daemon.max_rotations_per_provider",
            &raw.max_rotations_per_provider,
            defaults.max_rotations_per_provider,
        );
        let group_lease_ttl = self.positive_duration_or(
            "daemon.group_lease_ttl",
            &raw.group_lease_ttl,
            defaults.group_lease_ttl,
        );
        if let (Some(ttl), Some(value)) = (group_lease_ttl, &raw.group_lease_ttl) {
            if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&ttl) {
                self.bad(
                    "daemon.group_lease_ttl",
                    value,
                    "must be from 1s to 1h (a member record renewed every third of it)",
                );
                return None;
            }
        }
        if let (Some(interval), Some(value)) = (reconcile_interval, &raw.reconcile_interval) {
            if interval < Duration::from_secs(1) {
                self.bad(
                    "daemon.reconcile_interval",
                    value,
                    "must be at least 1s (a read of every credential per interval)",
                );
                return None;
            }
        }
        Some(DaemonConfig {
            reconcile_interval: reconcile_interval?,
            stagger: stagger?,
            max_rotations: max_rotations?,
            max_rotations_per_provider: max_rotations_per_provider?,
            group_lease_ttl: group_lease_ttl?,
        })
    }

    fn limit(&mut self, key: &str, value: &Option<Spanned<i64>>, default: usize) -> Option<usize> {
        let Some(value) = value else {
            return Some(default);
        };
        match usize::try_from(*value.get_ref()) {
            Ok(n) if (1..=10_000).contains(&n) => Some(n),
            _ => {
                self.bad(key, value, "must be a whole number from 1 to 10000");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{parse, DaemonConfig};

    use crate::config::validate::test_support::{NoEnvironment, VAULT};

    /// The `[daemon]` table's lines (line 3 on) and what comes of them.
    fn check(daemon: &str, expected: Result<DaemonConfig, (&str, usize, &str)>) {
        let text = format!("{VAULT}[daemon]\n{daemon}");
        let got = parse(&text, "test.toml", &NoEnvironment);
        match (&got, &expected) {
            (Ok(config), Ok(want)) if config.daemon == *want => {}
            (Err(errors), Err((key, line, fragment)))
                if errors.errors.len() == 1
                    && errors.errors[0].key == *key
                    && errors.errors[0].line == *line
                    && errors.errors[0].message.contains(fragment) => {}
            _ => panic!("\n--- [daemon]\n{daemon}\n--- expected {expected:?}\n--- got {got:?}"),
        }
    }

    #[test]
    fn daemon_keys_and_their_defaults() {
        let defaults = DaemonConfig::default();
        assert_eq!(defaults.reconcile_interval, Duration::from_secs(600));
        check("", Ok(defaults.clone()));
        assert_eq!(defaults.group_lease_ttl, Duration::from_secs(60));
        check(
            "reconcile_interval = \"30m\"\nstagger = \"0s\"\nmax_rotations = 64\nmax_rotations_per_provider = 2\ngroup_lease_ttl = \"5s\"\n",
            Ok(DaemonConfig {
                reconcile_interval: Duration::from_secs(1800),
                stagger: Duration::ZERO,
                max_rotations: 64,
                max_rotations_per_provider: 2,
                group_lease_ttl: Duration::from_secs(5),
            }),
        );
        check(
            "group_lease_ttl = \"500ms\"\n",
            Err(("daemon.group_lease_ttl", 3, "from 1s to 1h")),
        );
        check(
            "group_lease_ttl = \"2h\"\n",
            Err(("daemon.group_lease_ttl", 3, "from 1s to 1h")),
        );
        check(
            "group_lease_ttl = \"0s\"\n",
            Err(("daemon.group_lease_ttl", 3, "longer than zero")),
        );
        check(
            "group_lease_ttl = \"soon\"\n",
            Err(("daemon.group_lease_ttl", 3, "invalid duration")),
        );
        check(
            "reconcile_interval = \"0s\"\n",
            Err(("daemon.reconcile_interval", 3, "longer than zero")),
        );
        check(
            "reconcile_interval = \"100ms\"\n",
            Err(("daemon.reconcile_interval", 3, "at least 1s")),
        );
        check(
            "max_rotations = 0\n",
            Err(("daemon.max_rotations", 3, "from 1 to 10000")),
        );
        check(
            "max_rotations_per_provider = -1\n",
            Err(("daemon.max_rotations_per_provider", 3, "from 1 to 10000")),
        );
        check("workers = 3\n", Err(("daemon.workers", 3, "unknown")));
    }

    #[test]
    fn daemon_table_is_optional() {
        let config = parse(VAULT, "test.toml", &NoEnvironment).unwrap();
        assert_eq!(config.daemon, DaemonConfig::default());
    }
}
