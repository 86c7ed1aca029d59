//! The planner: one in-memory due-time queue per process. Pure: every method takes `now`, and
//! the loop (`daemon::run`) does the reading, driving and sleeping.
//!
//! Invariants:
//! - A credential is read at start-up (and on reload) once; after that only when it is due,
//!   while its attempt is in flight (at the time the engine names), or at its reconcile slot.
//! - A reconcile reads the secret's metadata only: one Vault request per credential per
//!   interval. Each credential's slot is a fixed offset within the interval, derived from its
//!   name, so the reads of N credentials are spread evenly over the interval (never a burst), and
//!   a restart or another instance keeps the same slots. The credentials of a folder the loop
//!   lists as one (`daemon::folders`: one request per folder) share the folder's slot instead.
//! - A credential is never handed out twice at once (`running`), and never dropped: every
//!   tracked credential either is running or has a place in the queue.
//! - A new attempt starts `stagger` later on each instance, by an offset stable per (instance,
//!   credential, version): of N instances sharing a credential, one usually starts first and
//!   the others find its attempt in flight (the engine's check-and-set decides any race).
//! - Limits: at most `max_rotations` drives in flight, `max_per_provider` per provider
//!   instance, `max_reads` reads (start-up, reconcile) in flight.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::policy::jitter_offset;
use crate::rotation::RunResult;

/// What the loop does for a credential when its time comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Work {
    /// Read the secret's metadata and the state record, and plan (start-up, reload, after an
    /// error). Drives nothing.
    Read,
    /// Read, and drive the engine (due, or an attempt in flight).
    Drive,
    /// Read the secret's metadata only; read everything again if it changed (or when only an
    /// operator moves the credential on).
    Reconcile,
}

/// How the planner is tuned.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Each credential's metadata is read again once per interval.
    pub reconcile: Duration,
    /// The spread of new attempts across instances (see the module docs).
    pub stagger: Duration,
    /// This instance's name in the stagger seed.
    pub instance: String,
    pub max_rotations: usize,
    pub max_per_provider: usize,
    pub max_reads: usize,
}

/// When the engine wants a credential next, as the loop read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing in flight: a new attempt may start at this time (policy, jitter, window and the
    /// record's backoff applied); `None` when no rule will ever make it due.
    Due(Option<DateTime<Utc>>),
    /// An attempt in flight (a grace period, a retry, another instance's lease) wants the engine
    /// again at this time.
    At(DateTime<Utc>),
    /// Only an operator moves it on (parked, needs attention): read it again at each reconcile.
    Operator,
}

/// What the loop learnt from a full read (and a drive, if there was one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observation {
    /// The secret's current version (`None`: missing).
    pub version: Option<u64>,
    pub next: Next,
    pub in_flight: bool,
    pub needs_attention: bool,
}

/// One tracked credential (kept small: there may be 100,000 of them).
#[derive(Debug, Clone)]
struct Entry {
    /// The provider instance whose limit a drive counts against (shared by its credentials).
    provider: Arc<str>,
    /// The reconcile slot within the interval.
    slot: Duration,
    version: Option<u64>,
    read_at: Option<DateTime<Utc>>,
    drive_at: Option<DateTime<Utc>>,
    reconcile_at: Option<DateTime<Utc>>,
    /// Reconcile with a full read (only an operator moves it on: the record may change while
    /// the secret does not).
    full_reconcile: bool,
    running: Option<Work>,
    /// Its place in the queue, if any.
    queued: Option<(DateTime<Utc>, Work)>,
    in_flight: bool,
    needs_attention: bool,
    /// Start-up recovery: not yet read, or read with an attempt in flight not yet driven.
    recovering: bool,
}

/// The figures of the `STATUS=` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub tracked: usize,
    pub in_flight: usize,
    pub needs_attention: usize,
    /// The earliest time the engine is wanted for any credential.
    pub next_drive: Option<DateTime<Utc>>,
}

pub(crate) struct Planner {
    settings: Settings,
    /// The name is shared by the entry's key and its place in the queue.
    entries: HashMap<Arc<str>, Entry>,
    /// Reads and reconciles by time. Apart from the drives: when the read limit is reached, the
    /// loop's look at the queue skips them all at once instead of one by one (at start-up there
    /// are as many as credentials).
    queue: Queue,
    /// Drives by time.
    drives_queue: Queue,
    drives: usize,
    reads: usize,
    /// Drives in flight per provider instance; the keys are the entries' `provider`.
    per_provider: HashMap<Arc<str>, usize>,
    /// Entries still `recovering` (READY waits for none).
    recovering: usize,
    /// Drift checks: when each credential that has one is checked next, and its interval.
    drift: HashMap<Arc<str>, (DateTime<Utc>, Duration)>,
    /// Drift checks by time.
    drift_queue: BTreeSet<(DateTime<Utc>, Arc<str>)>,
    /// Counts the credentials it began or stopped tracking (the loop groups folders again when
    /// it moved).
    changes: u64,
}

impl Planner {
    pub(crate) fn new(settings: Settings) -> Planner {
        Planner {
            settings,
            entries: HashMap::new(),
            queue: BTreeSet::new(),
            drives_queue: BTreeSet::new(),
            drives: 0,
            reads: 0,
            per_provider: HashMap::new(),
            recovering: 0,
            drift: HashMap::new(),
            drift_queue: BTreeSet::new(),
            changes: 0,
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Start tracking `name` (or read it again if tracked): a full read at `now`.
    /// `recovering`: it counts towards start-up recovery (READY waits for it).
    pub(crate) fn track(
        &mut self,
        name: &str,
        provider: &str,
        now: DateTime<Utc>,
        recovering: bool,
    ) {
        let slot = reconcile_slot(self.settings.reconcile, name);
        let provider = self.intern_provider(provider);
        let key: Arc<str> = match self.entries.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => Arc::from(name),
        };
        if !self.entries.contains_key(name) {
            self.changes += 1;
            if recovering {
                self.recovering += 1;
            }
        }
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            provider: provider.clone(),
            slot,
            version: None,
            read_at: None,
            drive_at: None,
            reconcile_at: None,
            full_reconcile: false,
            running: None,
            queued: None,
            in_flight: false,
            needs_attention: false,
            recovering,
        });
        entry.provider = provider;
        entry.read_at = Some(now);
        self.requeue(name);
    }

    /// The shared name of a provider instance (one allocation for all its credentials).
    fn intern_provider(&mut self, provider: &str) -> Arc<str> {
        match self.per_provider.get_key_value(provider) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(provider);
                self.per_provider.insert(k.clone(), 0);
                k
            }
        }
    }

    /// `e` is recovered (it no longer holds READY back).
    fn recovered_one(recovering: &mut usize, e: &mut Entry) {
        if e.recovering {
            e.recovering = false;
            *recovering = recovering.saturating_sub(1);
        }
    }

    /// Stop tracking what `keep` refuses (a reload removed it). A task still running for it
    /// reports to nobody.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<Arc<str>> = self.entries.keys().filter(|n| !keep(n)).cloned().collect();
        let drift_gone: Vec<Arc<str>> = self.drift.keys().filter(|n| !keep(n)).cloned().collect();
        for name in drift_gone {
            self.forget_drift(&name);
        }
        for name in gone {
            if let Some(e) = self.entries.remove(&name) {
                self.changes += 1;
                if e.recovering {
                    self.recovering = self.recovering.saturating_sub(1);
                }
                if let Some((t, w)) = e.queued {
                    self.queue_mut(w).remove(&(t, w, name.clone()));
                }
                if let Some(w) = e.running {
                    self.release(w, &e.provider);
                }
            }
        }
    }

    /// Plan the drift checks of `name` every `interval` (`None`: none). A credential new to
    /// drift checks, or whose interval changed, is checked at `now` (the first round at start-up);
    /// one already planned at this interval keeps its time (a reload changes nothing for it).
    pub(crate) fn track_drift(
        &mut self,
        name: &str,
        interval: Option<Duration>,
        now: DateTime<Utc>,
    ) {
        let planned = self.drift.get(name).copied();
        match (planned, interval) {
            (Some((_, was)), Some(every)) if was == every => {}
            (_, None) => self.forget_drift(name),
            (_, Some(every)) => {
                self.forget_drift(name);
                let key: Arc<str> = Arc::from(name);
                self.drift.insert(key.clone(), (now, every));
                self.drift_queue.insert((now, key));
            }
        }
    }

    fn forget_drift(&mut self, name: &str) {
        if let Some((key, (at, _))) = self.drift.remove_entry(name) {
            self.drift_queue.remove(&(at, key));
        }
    }

    /// The credentials whose drift check is due at `now`, each planned again one interval later.
    pub(crate) fn drift_due(&mut self, now: DateTime<Utc>) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, name)) = self.drift_queue.first().cloned() {
            if at > now {
                break;
            }
            self.drift_queue.remove(&(at, name.clone()));
            if let Some(planned) = self.drift.get_mut(&name) {
                let next = TimeDelta::from_std(planned.1)
                    .ok()
                    .and_then(|every| now.checked_add_signed(every))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                planned.0 = next;
                self.drift_queue.insert((next, name.clone()));
            }
            due.push(name.to_string());
        }
        due
    }

    /// When `name`'s next drift check is planned (`None`: it has none).
    #[cfg(test)]
    pub(crate) fn next_drift(&self, name: &str) -> Option<DateTime<Utc>> {
        self.drift.get(name).map(|(at, _)| *at)
    }

    /// Counts the credentials it began or stopped tracking.
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    /// The credentials it tracks.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|k| &**k)
    }

    /// Derive each credential's reconcile slot from `key_of(name)` (its folder's, when that is
    /// listed as one: the folder's credentials are then reconciled together), else from its
    /// name. A reconcile already planned keeps its time; the next follows the new slot.
    pub(crate) fn reslot(&mut self, key_of: impl Fn(&str) -> Option<String>) {
        let interval = self.settings.reconcile;
        for (name, e) in &mut self.entries {
            e.slot = match key_of(name) {
                Some(key) => reconcile_slot(interval, &key),
                None => reconcile_slot(interval, name),
            };
        }
    }

    pub(crate) fn is_tracked(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The next piece of work due at `now` that the limits allow; it is marked running until
    /// the loop reports on it. `skip`: credentials the caller will not start now.
    pub(crate) fn next_work(
        &mut self,
        now: DateTime<Utc>,
        skip: impl Fn(&str, Work) -> bool,
    ) -> Option<(String, Work)> {
        let (t, work, name) = self.candidate(now, &skip)?;
        self.queue_mut(work).remove(&(t, work, name.clone()));
        let entry = self.entries.get_mut(&*name)?;
        entry.queued = None;
        entry.running = Some(work);
        match work {
            Work::Read => entry.read_at = None,
            Work::Drive => entry.drive_at = None,
            Work::Reconcile => entry.reconcile_at = None,
        }
        let provider = entry.provider.clone();
        match work {
            Work::Drive => {
                self.drives += 1;
                *self.per_provider.entry(provider).or_default() += 1;
            }
            Work::Read | Work::Reconcile => self.reads += 1,
        }
        Some((name.to_string(), work))
    }

    /// Whether [`Planner::next_work`] would hand something out at `now` (changes nothing).
    pub(crate) fn next_work_would_start(
        &self,
        now: DateTime<Utc>,
        skip: impl Fn(&str, Work) -> bool,
    ) -> bool {
        self.candidate(now, &skip).is_some()
    }

    /// The earliest work due at `now` that `skip` and the limits allow (a read first, then a
    /// drive, then a reconcile, on a tie).
    fn candidate(
        &self,
        now: DateTime<Utc>,
        skip: &impl Fn(&str, Work) -> bool,
    ) -> Option<(DateTime<Utc>, Work, Arc<str>)> {
        let first = |queue: &Queue| {
            queue
                .iter()
                .take_while(|(t, _, _)| *t <= now)
                .find(|(_, work, name)| !skip(name, *work) && self.allows(name, *work))
                .cloned()
        };
        let read = (self.reads < self.settings.max_reads)
            .then(|| first(&self.queue))
            .flatten();
        let drive = (self.drives < self.settings.max_rotations)
            .then(|| first(&self.drives_queue))
            .flatten();
        match (read, drive) {
            (Some(r), Some(d)) => Some(r.min(d)),
            (r, d) => r.or(d),
        }
    }

    fn queue_mut(&mut self, work: Work) -> &mut Queue {
        queue_for(&mut self.queue, &mut self.drives_queue, work)
    }

    /// Whether the limits let `work` start for `name` now.
    fn allows(&self, name: &str, work: Work) -> bool {
        match work {
            Work::Read | Work::Reconcile => self.reads < self.settings.max_reads,
            Work::Drive => {
                let provider = self.entries.get(name).map(|e| &*e.provider);
                let busy = provider
                    .and_then(|p| self.per_provider.get(p))
                    .copied()
                    .unwrap_or(0);
                self.drives < self.settings.max_rotations && busy < self.settings.max_per_provider
            }
        }
    }

    fn release(&mut self, work: Work, provider: &Arc<str>) {
        match work {
            Work::Drive => {
                self.drives = self.drives.saturating_sub(1);
                if let Some(n) = self.per_provider.get_mut(provider) {
                    *n = n.saturating_sub(1);
                }
            }
            Work::Read | Work::Reconcile => self.reads = self.reads.saturating_sub(1),
        }
    }

    /// The end of a running piece of work, whatever its result.
    fn finished(&mut self, name: &str) -> Option<&mut Entry> {
        let (work, provider) = {
            let e = self.entries.get_mut(name)?;
            (e.running.take()?, e.provider.clone())
        };
        self.release(work, &provider);
        self.entries.get_mut(name)
    }

    /// A full read (and maybe a drive) of `name` finished; plan what comes next.
    pub(crate) fn observed(
        &mut self,
        name: &str,
        work: Work,
        seen: Observation,
        now: DateTime<Utc>,
    ) {
        let stagger = self.settings.stagger;
        let reconcile = self.settings.reconcile;
        let instance = self.settings.instance.clone();
        let mut recovering = self.recovering;
        let Some(e) = self.finished(name) else {
            return;
        };
        e.version = seen.version;
        e.in_flight = seen.in_flight;
        e.needs_attention = seen.needs_attention;
        // A full read is as good as a reconcile due by now; one planned for later stays.
        e.reconcile_at = e.reconcile_at.filter(|t| *t > now);
        e.full_reconcile = seen.next == Next::Operator;
        if work == Work::Drive || !seen.in_flight {
            Self::recovered_one(&mut recovering, e);
        }
        e.drive_at = match seen.next {
            Next::Due(Some(at)) => {
                let offset = stagger_offset(stagger, &instance, name, seen.version);
                Some(later_by(at, offset))
            }
            Next::Due(None) | Next::Operator => None,
            // An attempt in flight is looked at again at least once per reconcile interval:
            // another instance's lease may hide a holder that died (taken over at once when it
            // is proven dead on this machine).
            Next::At(at) => Some(at.min(later_by(now, reconcile))),
        };
        // An attempt found in flight at start-up is driven before anything merely due.
        if work == Work::Read && seen.in_flight {
            e.drive_at = e.drive_at.map(|t| t.min(now));
        }
        self.recovering = recovering;
        self.requeue(name);
    }

    /// A reconcile found the secret as it was.
    pub(crate) fn unchanged(&mut self, name: &str) {
        if self.finished(name).is_some() {
            self.requeue(name);
        }
    }

    /// The work failed with an error the state record cannot hold: read again at `retry_at`.
    pub(crate) fn failed(&mut self, name: &str, retry_at: DateTime<Utc>) {
        let mut recovering = self.recovering;
        let Some(e) = self.finished(name) else {
            return;
        };
        Self::recovered_one(&mut recovering, e);
        e.read_at = Some(e.read_at.map_or(retry_at, |t| t.min(retry_at)));
        self.recovering = recovering;
        self.requeue(name);
    }

    /// The reconcile sweep over `(from, to]`: every credential whose slot falls in it is read
    /// again at its slot's time (metadata only, unless only an operator moves it on), whatever
    /// else is planned or running for it (a sweep during start-up loses no slot).
    pub(crate) fn sweep(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
        let interval = self.settings.reconcile;
        let mut names = Vec::new();
        for (name, e) in &self.entries {
            if e.reconcile_at.is_some() {
                continue;
            }
            if let Some(at) = slot_in(interval, e.slot, from, to) {
                names.push((name.clone(), at));
            }
        }
        let n = names.len();
        for (name, at) in names {
            if let Some(e) = self.entries.get_mut(&*name) {
                e.reconcile_at = Some(at);
            }
            self.requeue(&name);
        }
        n
    }

    /// The version the planner last saw, and whether a reconcile must read everything.
    pub(crate) fn known(&self, name: &str) -> (Option<u64>, bool) {
        self.entries
            .get(name)
            .map_or((None, true), |e| (e.version, e.full_reconcile))
    }

    /// When the loop should look at the queue next (the earliest planned work).
    pub(crate) fn next_wake(&self) -> Option<DateTime<Utc>> {
        let read = self.queue.first().map(|(t, _, _)| *t);
        let drive = self.drives_queue.first().map(|(t, _, _)| *t);
        let drift = self.drift_queue.first().map(|(t, _)| *t);
        [read, drive, drift].into_iter().flatten().min()
    }

    /// Start-up recovery is done: every credential read once, every attempt found in flight
    /// driven once.
    pub(crate) fn recovered(&self) -> bool {
        self.recovering == 0
    }

    /// Credentials still to be read before start-up is done.
    pub(crate) fn recovering(&self) -> usize {
        self.recovering
    }

    /// An attempt of `name` is in flight here, or a drive of it is running (which may begin
    /// one).
    pub(crate) fn busy(&self, name: &str) -> bool {
        self.entries
            .get(name)
            .is_some_and(|e| e.in_flight || e.running == Some(Work::Drive))
    }

    /// How many credentials it tracks.
    pub(crate) fn tracked(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn summary(&self) -> Summary {
        Summary {
            tracked: self.entries.len(),
            in_flight: self.entries.values().filter(|e| e.in_flight).count(),
            needs_attention: self.entries.values().filter(|e| e.needs_attention).count(),
            next_drive: self.entries.values().filter_map(|e| e.drive_at).min(),
        }
    }

    /// Put `name` back in the queue at its earliest planned work (a read first, then a drive,
    /// then a reconcile, on a tie).
    fn requeue(&mut self, name: &str) {
        let Some(key) = self.entries.get_key_value(name).map(|(k, _)| k.clone()) else {
            return;
        };
        let Some(e) = self.entries.get_mut(name) else {
            return;
        };
        if let Some((t, w)) = e.queued.take() {
            queue_for(&mut self.queue, &mut self.drives_queue, w).remove(&(t, w, key.clone()));
        }
        if e.running.is_some() {
            return;
        }
        let wake = [
            e.read_at.map(|t| (t, Work::Read)),
            e.drive_at.map(|t| (t, Work::Drive)),
            e.reconcile_at.map(|t| (t, Work::Reconcile)),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some((t, w)) = wake {
            e.queued = Some((t, w));
            queue_for(&mut self.queue, &mut self.drives_queue, w).insert((t, w, key.clone()));
        }
    }
}

/// Work by time, and the credential's shared name.
type Queue = BTreeSet<(DateTime<Utc>, Work, Arc<str>)>;

/// The queue `work` goes in.
fn queue_for<'a>(reads: &'a mut Queue, drives: &'a mut Queue, work: Work) -> &'a mut Queue {
    match work {
        Work::Drive => drives,
        Work::Read | Work::Reconcile => reads,
    }
}

/// What the state record says, for planning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecordView {
    pub in_flight: bool,
    pub needs_attention: bool,
    pub parked: bool,
    /// After a failed attempt: no new one starts before this time.
    pub retry_at: Option<DateTime<Utc>>,
}

/// What a full read (and the engine's answer, when it was driven) means for the plan.
/// `due_at`: the policy's due time (`None`: no rule applies, or it cannot be computed).
pub(crate) fn observation(
    version: Option<u64>,
    record: RecordView,
    result: Option<&RunResult>,
    due_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Observation {
    let next = match result {
        Some(
            RunResult::Waiting { until }
            | RunResult::Busy { until, .. }
            | RunResult::RetryAt { until, .. }
            | RunResult::BackingOff { until },
        ) => Next::At(*until),
        Some(RunResult::Parked(_) | RunResult::NeedsAttention { .. }) => Next::Operator,
        _ if record.parked || (record.in_flight && record.needs_attention) => Next::Operator,
        _ if record.in_flight => Next::At(now),
        _ => Next::Due(match (due_at, record.retry_at) {
            (Some(due), Some(retry)) => Some(due.max(retry)),
            (due, _) => due,
        }),
    };
    let in_flight = match result {
        Some(RunResult::Finished(_) | RunResult::Idle | RunResult::Parked(_)) => false,
        Some(_) => true,
        None => record.in_flight,
    };
    Observation {
        version,
        next,
        in_flight,
        needs_attention: next == Next::Operator,
    }
}

/// A credential's reconcile slot: a stable offset in `[0, interval)` from its name.
pub(crate) fn reconcile_slot(interval: Duration, name: &str) -> Duration {
    jitter_offset(interval, fnv1a(name.as_bytes()))
}

/// The instance's delay before starting a new attempt on `name` at `version`: stable per
/// (instance, credential, version), in `[0, stagger)`.
pub(crate) fn stagger_offset(
    stagger: Duration,
    instance: &str,
    name: &str,
    version: Option<u64>,
) -> Duration {
    let key = format!("{instance}\0{name}\0{}", version.unwrap_or(0));
    jitter_offset(stagger, fnv1a(key.as_bytes()))
}

/// The time of the slot `slot` (an offset within each `interval` since the epoch) that falls in
/// `(from, to]`, if one does (the latest, when the span is longer than the interval).
pub(crate) fn slot_in(
    interval: Duration,
    slot: Duration,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let interval_ms = i64::try_from(interval.as_millis()).ok()?.max(1);
    let slot_ms = i64::try_from(slot.as_millis()).ok()?;
    let to_ms = to.timestamp_millis();
    // The latest slot time at or before `to`.
    let latest = (to_ms - slot_ms).div_euclid(interval_ms) * interval_ms + slot_ms;
    if latest > from.timestamp_millis() {
        DateTime::from_timestamp_millis(latest)
    } else {
        None
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn later_by(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests;
