//! The daemon's metrics, encoded as OpenMetrics text for the admin server's `/metrics`.
//!
//! Invariant: one `Metrics` per process, fed by the run loop (and later by the dependents'
//! deliveries) through its methods; labels are credential, provider, dependent and outcome names,
//! never a secret. Figures that change with the clock (a credential's age) or that another part
//! already counts (Vault requests, in `VaultStats`) are computed when scraped.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::providers::rate_budget::WaitStats;
use crate::report::StatusRow;
use crate::rotation::state::AttemptSummary;
use crate::vault::Vault;

/// Buckets of the rotation duration, from start to the old credential's revocation (the grace
/// period included): seconds to a week.
const DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0, 86400.0, 259200.0, 604800.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationLabels {
    provider: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    credential: String,
    dependent: String,
    result: String,
}

/// What the deliveries to one dependent came to since the daemon started.
#[derive(Debug, Default, Clone, Copy)]
struct DependentFigures {
    delivered: u64,
    failed: u64,
    /// Failed in a row, 0 after a delivery.
    streak: u64,
    /// Events it has yet to get, as of the latest delivery round.
    waiting: u64,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credential: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttentionLabels {
    credential: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependentLabels {
    credential: String,
    dependent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    credential: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SetLabels {
    set: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SetPhaseLabels {
    set: String,
    phase: String,
}

/// A credential set's members, summed up for `/metrics`.
#[derive(Default)]
struct SetFigures {
    members: i64,
    needs_attention: i64,
    oldest: Option<DateTime<Utc>>,
    next_due: Option<DateTime<Utc>>,
    phases: BTreeMap<String, i64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// A counter family of the stores' rate-limit budgets: name, help, and its figure.
type BudgetFamily = (&'static str, &'static str, fn(&WaitStats) -> u64);

/// A store's rate-limit budget: the API it is for and the store.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    api: String,
    store: String,
}

impl BudgetLabels {
    /// From a budget key (`{api base URL}|{store hash}`); the URL as host, port and path only.
    fn of(key: &str) -> BudgetLabels {
        let (base, store) = key.rsplit_once('|').unwrap_or((key, ""));
        let api = reqwest::Url::parse(base).map_or_else(
            |_| String::new(),
            |u| {
                format!(
                    "{}{}{}",
                    u.host_str().unwrap_or_default(),
                    u.port().map(|p| format!(":{p}")).unwrap_or_default(),
                    u.path().trim_end_matches('/')
                )
            },
        );
        BudgetLabels {
            api,
            store: store.to_string(),
        }
    }
}

/// What the last pass saw of one credential.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialView {
    /// When its current version was written; `None` when the secret is missing.
    pub created: Option<DateTime<Utc>>,
    /// When the daemon plans to rotate it next (jitter included).
    pub next_due: DateTime<Utc>,
    /// The configured max age, if any.
    pub max_age: Option<Duration>,
    /// The phase of its attempt in flight, `idle` when there is none.
    pub phase: std::borrow::Cow<'static, str>,
    pub needs_attention: bool,
    /// Why it needs attention, one of [`ATTENTION_REASONS`]; `None` when it does not.
    pub attention: Option<&'static str>,
    /// Assisted, awaiting a supply: since when, and the configured first reminder.
    pub awaiting_supply: Option<(DateTime<Utc>, Duration)>,
}

/// The `reason` label of `secret_rotator_credential_needs_attention`: parked (its failure budget
/// is spent), supply_deadline (an assisted credential's supply deadline passed), ack_held (the
/// old credential is kept alive for a dependent's ack), stopped (an attempt gave up retrying, or
/// an old credential outlived its grace). A small fixed set: no message text becomes a label.
pub const ATTENTION_REASONS: [&str; 4] = ["parked", "supply_deadline", "ack_held", "stopped"];

impl CredentialView {
    /// The view of a status row (the same reading `status` prints), the planned due time and
    /// the credential's first supply reminder.
    pub fn of(
        row: &StatusRow,
        next_due: DateTime<Utc>,
        supply_reminder: Duration,
    ) -> CredentialView {
        CredentialView {
            created: row.created_time,
            next_due,
            max_age: row.max_age_seconds.map(Duration::from_secs),
            phase: row
                .rotation
                .as_ref()
                .map_or(std::borrow::Cow::Borrowed("idle"), |r| {
                    std::borrow::Cow::Owned(r.phase.clone())
                }),
            needs_attention: row.needs_attention.is_some(),
            attention: attention_reason(row),
            awaiting_supply: row
                .awaiting_supply
                .as_ref()
                .map(|a| (a.since, supply_reminder)),
        }
    }
}

/// Why a status row needs attention (in the order `report::status_row` decides it).
fn attention_reason(row: &StatusRow) -> Option<&'static str> {
    let text = row.needs_attention.as_deref()?;
    Some(match &row.rotation {
        Some(r) if r.needs_attention && r.phase == "awaiting_supply" => "supply_deadline",
        Some(r) if r.needs_attention => "stopped",
        _ if text.starts_with("parked since") => "parked",
        Some(_) => "ack_held",
        None => "stopped",
    })
}

/// The figures computed at scrape time.
#[derive(Default)]
struct Live {
    credentials: RwLock<BTreeMap<String, CredentialView>>,
    /// The credential sets whose members have series of their own (`per_credential_metrics`);
    /// the members of the others are summed up per set, so the labels stay as many as the sets.
    per_credential: RwLock<std::collections::HashSet<String>>,
    /// Per (credential, dependent).
    dependents: RwLock<BTreeMap<(String, String), DependentFigures>>,
    /// The Vault client in use (its counters), and what clients replaced by a reload had counted.
    vault: RwLock<(Option<Arc<Vault>>, [u64; 4])>,
    /// The group: live members this instance sees, and the credentials it owns among them.
    group: RwLock<(usize, usize)>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

const VAULT_KINDS: [&str; 4] = ["read", "write", "login", "renewal"];

fn vault_counts(vault: &Vault) -> [u64; 4] {
    let s = &vault.stats;
    [
        s.reads.load(Ordering::Relaxed),
        s.writes.load(Ordering::Relaxed),
        s.logins.load(Ordering::Relaxed),
        s.renewals.load(Ordering::Relaxed),
    ]
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Utc::now();
        let credentials = self.credentials.read().expect("metrics lock");

        let gauge = ConstGauge::new(credentials.len() as i64);
        gauge.encode(encoder.encode_descriptor(
            "secret_rotator_credentials",
            "Credentials the daemon tracks (automatic ones).",
            None,
            gauge.metric_type(),
        )?)?;

        let (members, owned) = *self.group.read().expect("metrics lock");
        let gauge = ConstGauge::new(members as i64);
        gauge.encode(encoder.encode_descriptor(
            "secret_rotator_group_members",
            "Live members of the group (instances sharing the state prefix) this instance sees.",
            None,
            gauge.metric_type(),
        )?)?;
        let gauge = ConstGauge::new(owned as i64);
        gauge.encode(encoder.encode_descriptor(
            "secret_rotator_owned_credentials",
            "Credentials this instance owns in its group (all of them when it is alone).",
            None,
            gauge.metric_type(),
        )?)?;

        let per_credential = self.per_credential.read().expect("metrics lock");
        // A set's member shows in the set's figures unless its set asks for series per member.
        let summed = |name: &str| {
            name.split_once('/')
                .is_some_and(|(set, _)| !per_credential.contains(set))
        };
        let mut sets: BTreeMap<&str, SetFigures> = BTreeMap::new();
        for (name, view) in credentials.iter() {
            let Some((set, _)) = name.split_once('/') else {
                continue;
            };
            let f = sets.entry(set).or_default();
            f.members += 1;
            f.needs_attention += i64::from(view.needs_attention);
            if let Some(created) = view.created {
                f.oldest = Some(f.oldest.map_or(created, |o| o.min(created)));
            }
            f.next_due = Some(f.next_due.map_or(view.next_due, |d| d.min(view.next_due)));
            *f.phases.entry(view.phase.to_string()).or_default() += 1;
        }
        encode_sets(&mut encoder, &sets, now)?;

        let attention = credentials.values().filter(|c| c.needs_attention).count();
        let gauge = ConstGauge::new(attention as i64);
        gauge.encode(encoder.encode_descriptor(
            "secret_rotator_needs_attention",
            "Credentials parked or stopped until an operator acts.",
            None,
            gauge.metric_type(),
        )?)?;

        let mut family = encoder.encode_descriptor(
            "secret_rotator_credential_age",
            "Age of the credential's current version.",
            Some(&Unit::Seconds),
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (name, view) in credentials.iter().filter(|(n, _)| !summed(n)) {
            if let Some(created) = view.created {
                let labels = CredentialLabels {
                    credential: name.clone(),
                };
                ConstGauge::new((now - created).num_seconds().max(0))
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "secret_rotator_credential_next_due_timestamp",
            "When the daemon plans to rotate the credential next (Unix time).",
            Some(&Unit::Seconds),
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (name, view) in credentials.iter().filter(|(n, _)| !summed(n)) {
            let labels = CredentialLabels {
                credential: name.clone(),
            };
            ConstGauge::new(view.next_due.timestamp()).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "secret_rotator_credential_phase",
            "1 for the phase of the credential's rotation in flight (idle: none).",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (name, view) in credentials.iter().filter(|(n, _)| !summed(n)) {
            let labels = PhaseLabels {
                credential: name.clone(),
                phase: view.phase.to_string(),
            };
            ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
        }
        let own: Vec<(&String, &CredentialView)> =
            credentials.iter().filter(|(n, _)| !summed(n)).collect();
        encode_attention(&mut encoder, &own)?;
        drop(own);
        drop(per_credential);
        drop(credentials);
        encode_dependents(&mut encoder, &self.dependents.read().expect("metrics lock"))?;
        let (current, retired) = &*self.vault.read().expect("metrics lock");
        let counts = current.as_deref().map(vault_counts).unwrap_or_default();
        let mut family = encoder.encode_descriptor(
            "secret_rotator_vault_requests",
            "Requests the daemon made to Vault, by kind.",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (i, kind) in VAULT_KINDS.iter().enumerate() {
            let labels = KindLabels {
                kind: kind.to_string(),
            };
            ConstCounter::new(retired[i] + counts[i]).encode(family.encode_family(&labels)?)?;
        }

        // The stores' rate-limit budgets (process-wide, shared by every credential of a store).
        let budgets = crate::providers::rate_budget::stats();
        let families: [BudgetFamily; 3] = [
            (
                "secret_rotator_rate_limit_waits",
                "Provider requests that waited for the store's rate-limit budget before starting.",
                |w| w.waits,
            ),
            (
                "secret_rotator_rate_limit_gave_up",
                "Provider calls that ended (tried again later) because the budget would not refresh before their deadline.",
                |w| w.gave_up,
            ),
            (
                "secret_rotator_rate_limited",
                "Provider answers with status 429.",
                |w| w.limited,
            ),
        ];
        for (name, help, figure) in families {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for w in &budgets {
                ConstCounter::new(figure(w))
                    .encode(family.encode_family(&BudgetLabels::of(&w.key))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "secret_rotator_rate_limit_wait",
            "Time provider requests spent waiting for the store's rate-limit budget.",
            Some(&Unit::Seconds),
            ConstCounter::new(0f64).metric_type(),
        )?;
        for w in &budgets {
            ConstCounter::new(w.waited.as_secs_f64())
                .encode(family.encode_family(&BudgetLabels::of(&w.key))?)?;
        }
        Ok(())
    }
}

/// Per credential (those with series of their own): its max age, whether (and why) it needs
/// attention, and since when an assisted one awaits a supply against its first reminder.
fn encode_attention(
    encoder: &mut DescriptorEncoder,
    credentials: &[(&String, &CredentialView)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "secret_rotator_credential_max_age",
        "The credential's configured max age (absent when it has none).",
        Some(&Unit::Seconds),
        ConstGauge::new(0i64).metric_type(),
    )?;
    for &(name, view) in credentials {
        if let Some(max_age) = view.max_age {
            let labels = CredentialLabels {
                credential: name.clone(),
            };
            ConstGauge::new(max_age.as_secs() as i64).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "secret_rotator_credential_needs_attention",
        "1 when the credential needs an operator, with the reason (parked, supply_deadline, ack_held, stopped); 0 with reason none otherwise.",
        None,
        ConstGauge::new(0i64).metric_type(),
    )?;
    for &(name, view) in credentials {
        let labels = AttentionLabels {
            credential: name.clone(),
            reason: view.attention.unwrap_or("none").to_string(),
        };
        ConstGauge::new(i64::from(view.attention.is_some()))
            .encode(family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "secret_rotator_credential_awaiting_supply_since_timestamp",
        "Assisted credentials awaiting a supply: when the wait began (Unix time).",
        Some(&Unit::Seconds),
        ConstGauge::new(0i64).metric_type(),
    )?;
    for &(name, view) in credentials {
        if let Some((since, _)) = view.awaiting_supply {
            let labels = CredentialLabels {
                credential: name.clone(),
            };
            ConstGauge::new(since.timestamp()).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "secret_rotator_credential_supply_reminder",
        "Assisted credentials awaiting a supply: the configured wait before the first reminder.",
        Some(&Unit::Seconds),
        ConstGauge::new(0i64).metric_type(),
    )?;
    for &(name, view) in credentials {
        if let Some((_, reminder)) = view.awaiting_supply {
            let labels = CredentialLabels {
                credential: name.clone(),
            };
            ConstGauge::new(reminder.as_secs() as i64).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Deliveries per dependent and result, and failures in a row. The families are declared even
/// before the first delivery, so that a query naming them finds them.
fn encode_dependents(
    encoder: &mut DescriptorEncoder,
    dependents: &BTreeMap<(String, String), DependentFigures>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "secret_rotator_deliveries",
        "Deliveries of a rotated credential to its dependents, by result.",
        None,
        ConstCounter::new(0u64).metric_type(),
    )?;
    for ((credential, dependent), f) in dependents {
        for (result, count) in [("delivered", f.delivered), ("failed", f.failed)] {
            let labels = DeliveryLabels {
                credential: credential.clone(),
                dependent: dependent.clone(),
                result: result.to_string(),
            };
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
    }
    type Gauge = (&'static str, &'static str, fn(&DependentFigures) -> u64);
    let gauges: [Gauge; 2] = [
        (
            "secret_rotator_dependent_consecutive_failures",
            "Failed deliveries in a row to a dependent (0 after a delivery), since the daemon started.",
            |f| f.streak,
        ),
        (
            "secret_rotator_dependent_events_waiting",
            "Events a dependent has yet to get (its delivery backlog), as of the latest delivery round.",
            |f| f.waiting,
        ),
    ];
    for (name, help, figure) in gauges {
        let mut family =
            encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
        for ((credential, dependent), f) in dependents {
            let labels = DependentLabels {
                credential: credential.clone(),
                dependent: dependent.clone(),
            };
            ConstGauge::new(figure(f) as i64).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The daemon's metrics. Cheap to call from anywhere; shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    live: Arc<Live>,
    rotations: Family<RotationLabels, Counter>,
    durations: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    failures: Family<ReasonLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let live = Arc::new(Live::default());
        let rotations = Family::<RotationLabels, Counter>::default();
        let durations =
            Family::<ProviderLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "secret_rotator_rotations",
            "Rotation attempts that ended, by provider and outcome.",
            rotations.clone(),
        );
        registry.register_with_unit(
            "secret_rotator_rotation_duration",
            "Time from an attempt's start to its end (grace period included).",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "secret_rotator_failures",
            "Failed rotation steps and attempts, by reason.",
            failures.clone(),
        );
        registry.register_collector(Box::new(live.clone()));
        Metrics {
            registry,
            live,
            rotations,
            durations,
            failures,
        }
    }

    /// What the last look at a credential found.
    pub fn credential(&self, name: &str, view: CredentialView) {
        self.live
            .credentials
            .write()
            .expect("metrics lock")
            .insert(name.to_string(), view);
    }

    /// The group as this instance sees it: live members, credentials it owns.
    pub fn group(&self, members: usize, owned: usize) {
        *self.live.group.write().expect("metrics lock") = (members, owned);
    }

    /// After a reload: forget the credentials the configuration no longer has.
    pub fn retain_credentials(&self, keep: &dyn Fn(&str) -> bool) {
        self.live
            .credentials
            .write()
            .expect("metrics lock")
            .retain(|name, _| keep(name));
        self.live
            .dependents
            .write()
            .expect("metrics lock")
            .retain(|(name, _), _| keep(name));
    }

    /// A credential no longer tracked (a set's member whose secret is gone).
    pub fn forget(&self, name: &str) {
        self.live
            .credentials
            .write()
            .expect("metrics lock")
            .remove(name);
    }

    /// The credential sets of the configuration in use: which ones have series per member.
    pub fn sets(&self, sets: &[crate::config::CredentialSet]) {
        *self.live.per_credential.write().expect("metrics lock") = sets
            .iter()
            .filter(|s| s.per_credential_metrics)
            .map(|s| s.name.clone())
            .collect();
    }

    /// An attempt ended.
    pub fn rotation_finished(&self, provider: &str, summary: &AttemptSummary) {
        self.rotations
            .get_or_create(&RotationLabels {
                provider: provider.to_string(),
                outcome: summary.outcome.as_str().to_string(),
            })
            .inc();
        let seconds = (summary.finished_at - summary.started_at).num_milliseconds() as f64 / 1e3;
        self.durations
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
            })
            .observe(seconds.max(0.0));
    }

    /// A step or an attempt failed; `reason` is a short name (`vault`, `retry`, `rolled_back`…).
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A delivery of `credential` to `dependent` ended with `result` (`delivered`, `failed`…).
    pub fn delivery(&self, credential: &str, dependent: &str, result: &str) {
        let mut dependents = self.live.dependents.write().expect("metrics lock");
        let figures = dependents
            .entry((credential.to_string(), dependent.to_string()))
            .or_default();
        if result == "failed" {
            figures.failed += 1;
            figures.streak += 1;
        } else {
            figures.delivered += 1;
            figures.streak = 0;
        }
    }

    /// After a delivery round: `dependent` of `credential` has `n` events yet to get.
    pub fn waiting(&self, credential: &str, dependent: &str, n: usize) {
        let mut dependents = self.live.dependents.write().expect("metrics lock");
        dependents
            .entry((credential.to_string(), dependent.to_string()))
            .or_default()
            .waiting = n as u64;
    }

    /// The Vault client in use from now on (at start and after a reload); the requests of the
    /// one it replaces stay counted.
    pub fn set_vault(&self, vault: Arc<Vault>) {
        let mut guard = self.live.vault.write().expect("metrics lock");
        let (current, retired) = &mut *guard;
        if let Some(old) = current.take() {
            for (total, n) in retired.iter_mut().zip(vault_counts(&old)) {
                *total += n;
            }
        }
        *current = Some(vault);
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// Per credential set: its members, those needing attention, the age of its oldest current
/// version, its next due time, and its members by phase.
fn encode_sets(
    encoder: &mut DescriptorEncoder,
    sets: &BTreeMap<&str, SetFigures>,
    now: DateTime<Utc>,
) -> Result<(), std::fmt::Error> {
    let label = |set: &str| SetLabels {
        set: set.to_string(),
    };
    type Gauge<'a> = (
        &'a str,
        &'a str,
        Option<&'a Unit>,
        fn(&SetFigures, DateTime<Utc>) -> Option<i64>,
    );
    let gauges: [Gauge; 4] = [
        (
            "secret_rotator_set_members",
            "Members of the credential set the daemon tracks.",
            None,
            |f, _| Some(f.members),
        ),
        (
            "secret_rotator_set_needs_attention",
            "Members of the credential set parked or stopped until an operator acts.",
            None,
            |f, _| Some(f.needs_attention),
        ),
        (
            "secret_rotator_set_oldest_credential_age",
            "Age of the oldest current version among the set's members.",
            Some(&Unit::Seconds),
            |f, now| f.oldest.map(|o| (now - o).num_seconds().max(0)),
        ),
        (
            "secret_rotator_set_next_due_timestamp",
            "When the daemon plans to rotate the set's next member (Unix time).",
            Some(&Unit::Seconds),
            |f, _| f.next_due.map(|d| d.timestamp()),
        ),
    ];
    for (name, help, unit, figure) in gauges {
        let mut family =
            encoder.encode_descriptor(name, help, unit, ConstGauge::new(0i64).metric_type())?;
        for (set, f) in sets {
            if let Some(v) = figure(f, now) {
                ConstGauge::new(v).encode(family.encode_family(&label(set))?)?;
            }
        }
    }
    let mut family = encoder.encode_descriptor(
        "secret_rotator_set_phase",
        "Members of the credential set by the phase of their rotation in flight (idle: none).",
        None,
        ConstGauge::new(0i64).metric_type(),
    )?;
    for (set, f) in sets {
        for (phase, n) in &f.phases {
            let labels = SetPhaseLabels {
                set: set.to_string(),
                phase: phase.clone(),
            };
            ConstGauge::new(*n).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `reason` label of the needs-attention gauge, from what `status` says.
    #[test]
    fn the_attention_reason_is_one_of_a_fixed_set() {
        use crate::report::RotationState;
        let in_flight = |phase: &str, stopped: bool| {
            Some(RotationState {
                attempt: "a1".into(),
                phase: phase.into(),
                needs_attention: stopped,
                last_error: None,
            })
        };
        let cases = [
            (None, None, None),
            (None, in_flight("notified", false), None),
            (
                Some("parked since 2026-12-07 05:44:30Z: rejected"),
                None,
                Some("parked"),
            ),
            (
                Some("parked since 2026-12-07 05:44:30Z: rejected"),
                in_flight("awaiting_supply", false),
                Some("parked"),
            ),
            (
                Some("rotation stopped in phase awaiting_supply: deadline"),
                in_flight("awaiting_supply", true),
                Some("supply_deadline"),
            ),
            (
                Some("rotation stopped in phase minting: gave up"),
                in_flight("minting", true),
                Some("stopped"),
            ),
            (
                Some("held for shop's ack"),
                in_flight("notified", false),
                Some("ack_held"),
            ),
        ];
        for (text, rotation, expected) in cases {
            let row = StatusRow {
                name: "c".into(),
                set: None,
                provider: "approle".into(),
                path: "secret/c".into(),
                version: Some(1),
                created_time: None,
                age_seconds: None,
                max_age_seconds: None,
                expires_at: None,
                state: "ok".into(),
                due_in_seconds: None,
                overdue_by_seconds: None,
                rotation,
                needs_attention: text.map(str::to_string),
                next_attempt_at: None,
                error: None,
                dependents: Vec::new(),
                paused: None,
                awaiting_supply: None,
                drift: None,
                invalid: None,
                steps: Vec::new(),
                scopes: Vec::new(),
                possible_orphans: Vec::new(),
            };
            assert_eq!(attention_reason(&row), expected, "{text:?}");
            if let Some(reason) = expected {
                assert!(ATTENTION_REASONS.contains(&reason));
            }
        }
    }

    #[test]
    fn a_budget_is_labelled_by_api_and_store_without_scheme_userinfo_or_query() {
        let cases = [
            (
                "https://api.bigcommerce.com/stores/abc123|abc123",
                "api.bigcommerce.com/stores/abc123",
                "abc123",
            ),
            ("http://127.0.0.1:8080|s1", "127.0.0.1:8080", "s1"),
            (
                "https://u:p@shop.example/api/v2?x=1|s2",
                "shop.example/api/v2",
                "s2",
            ),
            ("not a url|s3", "", "s3"),
        ];
        for (key, api, store) in cases {
            let got = BudgetLabels::of(key);
            assert_eq!(
                (got.api.as_str(), got.store.as_str()),
                (api, store),
                "{key}"
            );
        }
    }

    #[test]
    fn a_sets_members_are_summed_per_set_unless_it_asks_for_series_per_member() {
        let text = |per: bool| {
            format!(
                "vault = {{ address = \"https://v:8200\", auth = {{ method = \"token\" }} }}\n\
                 [[credential_sets]]\nname = \"s\"\npath = \"p/{{x}}\"\nper_credential_metrics = {per}\n\
                 [credential_sets.exec]\nmint = [\"/bin/true\"]\nverify = [\"/bin/true\"]\n\
                 revoke = [\"/bin/true\"]\nfields = [\"k\"]\n"
            )
        };
        let env = crate::config::validate::test_support::NoEnvironment;
        let now = Utc::now();
        let view = |age: i64, phase: &'static str| CredentialView {
            created: Some(now - chrono::Duration::seconds(age)),
            next_due: now + chrono::Duration::seconds(60),
            max_age: None,
            phase: std::borrow::Cow::Borrowed(phase),
            needs_attention: false,
            attention: None,
            awaiting_supply: None,
        };
        // (per_credential_metrics, lines that must show, lines that must not)
        let cases: [(bool, &[&str], &[&str]); 2] = [
            (
                false,
                &[
                    "secret_rotator_set_members{set=\"s\"} 2",
                    "secret_rotator_set_phase{set=\"s\",phase=\"minted\"} 1",
                    "secret_rotator_set_oldest_credential_age_seconds{set=\"s\"} 50",
                    "secret_rotator_credential_next_due_timestamp_seconds{credential=\"written\"}",
                ],
                &["credential=\"s/a\"", "credential=\"s/b\""],
            ),
            (
                true,
                &[
                    "secret_rotator_set_members{set=\"s\"} 2",
                    "secret_rotator_credential_age_seconds{credential=\"s/a\"} 50",
                ],
                &[],
            ),
        ];
        for (per, shown, hidden) in cases {
            let config = crate::config::parse(&text(per), "t.toml", &env).unwrap();
            let metrics = Metrics::new();
            metrics.sets(&config.credential_sets);
            metrics.credential("s/a", view(50, "idle"));
            metrics.credential("s/b", view(10, "minted"));
            metrics.credential("written", view(5, "idle"));
            let out = metrics.encode();
            for line in shown {
                assert!(
                    out.lines().any(|l| l.starts_with(line)),
                    "{per}: {line} in\n{out}"
                );
            }
            for label in hidden {
                assert!(!out.contains(label), "{per}: {label} in\n{out}");
            }
        }
    }

    #[tokio::test]
    async fn every_store_budget_shows_in_the_metrics() {
        let key = "http://127.0.0.1:9/metrics-test|m1";
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        drop(crate::providers::rate_budget::reserve(key, deadline, "a test").await);
        let text = Metrics::new().encode();
        for family in [
            "secret_rotator_rate_limit_waits_total",
            "secret_rotator_rate_limit_gave_up_total",
            "secret_rotator_rate_limited_total",
            "secret_rotator_rate_limit_wait_seconds_total",
        ] {
            let line = format!("{family}{{api=\"127.0.0.1:9/metrics-test\",store=\"m1\"}} 0");
            assert!(
                text.lines().any(|l| l.starts_with(&line)),
                "{line} in:\n{text}"
            );
        }
    }
}
