//! Instances that share the work: who is in the group, and which member owns which credential.
//! Pure: times are passed in, and the daemon (`daemon::group`) does the Vault IO.
//!
//! Invariants:
//! - Instances sharing a `state_prefix` form a group. Each keeps a member record
//!   `{state_prefix}/members/{member}` renewed every half of its lease TTL; a member is live
//!   while its last renewal (Vault's `created_time` of the record's version) is less than its TTL
//!   old. Times are Vault's, never compared with another host's clock: this process learns the
//!   offset of its own clock from the `created_time` of each of its renewals.
//! - Each credential is owned by exactly one member of a given set: the one with the highest
//!   rendezvous weight, a SHA-256 of (member, credential), the member's name breaking ties. So
//!   every instance that sees the same members computes the same owner, a member that leaves
//!   hands over only its own credentials, and one that joins takes about 1/N from the others.
//! - Ownership only decides who plans a credential. Two instances that see different member sets
//!   for a while (a join or a death not yet noticed) may both drive one credential: the state
//!   record's check-and-set, and the engine's re-check of the version a due time was computed
//!   from, decide that race as they always did.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A member's record in Vault (no secret: names and a duration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member's name (its key under `members/`).
    pub member: String,
    /// The process holding it (`instance::owner_id`), for people reading the record.
    pub owner: String,
    /// How long the record stands without a renewal, in milliseconds.
    pub ttl_ms: u64,
}

/// The member name for an instance id: its key under `members/`. Letters, digits, `-`, `_`
/// and `.` are kept; any other byte is written `%XX`, so two instance ids never share a key
/// and no key holds a `/`.
pub fn member_name(instance: &str) -> String {
    let mut out = String::with_capacity(instance.len());
    for b in instance.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        out = format!("%{}", out.len());
    }
    out
}

/// The rendezvous weight of `member` for `credential`.
pub fn weight(member: &str, credential: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(member.as_bytes());
    h.update([0u8]);
    h.update(credential.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The member that owns `credential` among `members`; `None` when there is none.
pub fn owner_of<'a>(credential: &str, members: &'a [String]) -> Option<&'a str> {
    members
        .iter()
        .map(|m| (weight(m, credential), m.as_str()))
        .max()
        .map(|(_, m)| m)
}

/// Does `me` own `credential` among `members`? A member set without `me` (this instance has
/// not joined yet, or could not renew) counts `me` in: an instance never drops work because
/// the group's view of it lags.
pub fn owns(credential: &str, members: &[String], me: &str) -> bool {
    if members.iter().all(|m| m == me) {
        return true;
    }
    if members.iter().any(|m| m == me) {
        owner_of(credential, members) == Some(me)
    } else {
        let w = weight(me, credential);
        members
            .iter()
            .all(|m| (weight(m, credential), m.as_str()) < (w, me))
    }
}

/// The credentials `me` owns among `members`, in the order given.
pub fn owned<'a, T>(
    credentials: impl IntoIterator<Item = &'a T>,
    name: impl Fn(&T) -> &str,
    members: &[String],
    me: &str,
) -> Vec<&'a T>
where
    T: 'a,
{
    credentials
        .into_iter()
        .filter(|c| owns(name(c), members, me))
        .collect()
}

/// How many of `credentials` each member owns, by member name.
pub fn shares<'a>(
    credentials: impl IntoIterator<Item = &'a str>,
    members: &[String],
) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = members.iter().map(|m| (m.clone(), 0)).collect();
    for c in credentials {
        if let Some(m) = owner_of(c, members) {
            *out.entry(m.to_string()).or_default() += 1;
        }
    }
    out
}

/// What this instance knows of the group, in Vault's time: its own renewals and the other
/// members' records as last read. Decides which records to read when, and who is live.
#[derive(Debug, Clone)]
pub struct View {
    me: String,
    /// Vault's clock less this process's, from the `created_time` of its last renewal.
    offset: TimeDelta,
    /// The other members' leases as last read.
    others: BTreeMap<String, Lease>,
}

/// Another member's lease, in Vault's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    ends: DateTime<Utc>,
    /// When to read the record again: when the lease ends; for a record read after its lease
    /// had ended (a member that died without deleting it), one TTL later.
    read_again: DateTime<Utc>,
}

impl View {
    pub fn new(me: &str) -> View {
        View {
            me: me.to_string(),
            offset: TimeDelta::zero(),
            others: BTreeMap::new(),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// This instance renewed its record at `local` (its clock) and Vault created the version at
    /// `created` (Vault's clock).
    pub fn renewed(&mut self, local: DateTime<Utc>, created: DateTime<Utc>) {
        self.offset = created - local;
    }

    fn vault_time(&self, local: DateTime<Utc>) -> DateTime<Utc> {
        local + self.offset
    }

    fn local_time(&self, vault: DateTime<Utc>) -> DateTime<Utc> {
        vault - self.offset
    }

    /// A LIST of `members/` returned `keys`: the records gone from it are forgotten; returns
    /// the new ones, to read.
    pub fn listed(&mut self, keys: &[String]) -> Vec<String> {
        self.others.retain(|m, _| keys.contains(m));
        keys.iter()
            .filter(|k| **k != self.me && !k.ends_with('/') && !self.others.contains_key(*k))
            .cloned()
            .collect()
    }

    /// Member `member`'s record was read at `local`: `Some((record, created))` with its
    /// version's `created_time`, `None` when it is gone.
    pub fn read(
        &mut self,
        member: &str,
        record: Option<(&MemberRecord, DateTime<Utc>)>,
        local: DateTime<Utc>,
    ) {
        if member == self.me {
            return;
        }
        match record {
            Some((r, created)) => {
                let ttl = TimeDelta::milliseconds(r.ttl_ms.min(i64::MAX as u64 / 2) as i64);
                let ends = created + ttl;
                let now = self.vault_time(local);
                let read_again = if ends > now { ends } else { now + ttl };
                self.others
                    .insert(member.to_string(), Lease { ends, read_again });
            }
            None => {
                self.others.remove(member);
            }
        }
    }

    /// A read of `member`'s record failed: try again at `until` (this process's clock), not
    /// at every turn.
    pub fn postpone(&mut self, member: &str, until: DateTime<Utc>) {
        let until = self.vault_time(until);
        if let Some(lease) = self.others.get_mut(member) {
            lease.read_again = lease.read_again.max(until);
        }
    }

    /// The members whose record is due to be read again at `local` (a live one has renewed
    /// since its lease as last read ended).
    pub fn to_read(&self, local: DateTime<Utc>) -> Vec<String> {
        let now = self.vault_time(local);
        self.others
            .iter()
            .filter(|(_, l)| l.read_again <= now)
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// The live members at `local` (this instance always), sorted: the members whose records,
    /// as last read, hold a lease that has not ended.
    pub fn members(&self, local: DateTime<Utc>) -> Vec<String> {
        let now = self.vault_time(local);
        let mut out: Vec<String> = self
            .others
            .iter()
            .filter(|(_, l)| l.ends > now)
            .map(|(m, _)| m.clone())
            .collect();
        out.push(self.me.clone());
        out.sort();
        out
    }

    /// The earliest time (this process's clock) at which a record is due to be read again.
    pub fn next_end(&self) -> Option<DateTime<Utc>> {
        self.others
            .values()
            .map(|l| l.read_again)
            .min()
            .map(|t| self.local_time(t))
    }
}

/// The live members at `now` among member records read as (name, record, `created_time`), by
/// the reader's clock (`status`: no renewal of its own to learn Vault's clock from), sorted.
pub fn live_members(
    records: &[(String, MemberRecord, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut out: Vec<String> = records
        .iter()
        .filter(|(_, r, created)| {
            *created + TimeDelta::milliseconds(r.ttl_ms.min(i64::MAX as u64 / 2) as i64) > now
        })
        .map(|(m, _, _)| m.clone())
        .collect();
    out.sort();
    out
}

/// How often a member renews its record: half its lease TTL (a renewal may come half a TTL
/// late before the others take the member for dead; a third cost one write more per TTL).
pub fn renew_every(ttl: Duration) -> Duration {
    ttl / 2
}

#[cfg(test)]
mod tests;
