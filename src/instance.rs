//! Who holds a rotation lease: this process's identity, and whether a holder on this machine is
//! still alive.
//!
//! Invariant: an owner id is `{instance}/{boot_id}/{pid_namespace}/{pid}/{start_time}/{uid}`.
//! A lease held by a process of the same kernel boot and pid namespace can be checked directly in
//! `/proc`: when that process is gone (crashed, killed), its attempt is taken over at once instead
//! of after the lease expires. Only proof of absence means gone: a `/proc/PID` that cannot be
//! read, or that may be hidden from this process (`hidepid`, systemd's `ProtectProc=invisible`,
//! a holder of another uid), means alive. A holder elsewhere is trusted until its lease expires.
//! Two live processes never share an owner id, so a manual `rotate` and a running daemon on the
//! same host cannot both act on one attempt.
//!
//! The decision is [`judge`], a pure function of what was read; [`holder_is_dead`] reads `/proc`
//! and asks it.

use std::fs;
use std::io::ErrorKind;
use std::sync::OnceLock;

const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Linux's errno for "no such process": a read of `/proc/PID/stat` whose process exited after
/// the open.
const ESRCH: i32 = 3;

/// This process's owner id, for `instance` (a stable name such as the host name). Called once at
/// start-up; warns then if the boot id cannot be read.
pub fn owner_id(instance: &str) -> String {
    let here = here();
    if here.boot_id.is_none() {
        warn_no_boot_id();
    }
    let pid = std::process::id();
    let started = match read_proc_entry(pid) {
        ProcEntry::Started(t) => t,
        ProcEntry::Absent | ProcEntry::Unreadable => String::new(),
    };
    format!(
        "{instance}/{}/{}/{pid}/{started}/{}",
        here.boot_id.as_deref().unwrap_or_default(),
        here.pid_namespace.as_deref().unwrap_or_default(),
        here.uid.map(|u| u.to_string()).unwrap_or_default(),
    )
}

/// The instance name part of an owner id (what operators see).
pub fn instance_of(owner: &str) -> &str {
    owner.split('/').next().unwrap_or(owner)
}

/// Is the process that holds `owner` known to be gone? `false` when it cannot be known here
/// (another machine, another boot, another pid namespace, no boot id, an unreadable or possibly
/// hidden `/proc/PID`, or an id of another shape).
pub fn holder_is_dead(owner: &str) -> bool {
    let Some(holder) = Holder::parse(owner) else {
        return false;
    };
    judge(&holder, here(), read_proc_entry(holder.pid)) == Verdict::Gone
}

/// The parts of an owner id that say which process it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder<'a> {
    pub boot_id: &'a str,
    pub pid_namespace: &'a str,
    pub pid: u32,
    pub start_time: &'a str,
    /// None in ids written before the uid was part of them.
    pub uid: Option<u32>,
}

impl<'a> Holder<'a> {
    /// None for an id of another shape.
    pub fn parse(owner: &'a str) -> Option<Holder<'a>> {
        let parts: Vec<&str> = owner.split('/').collect();
        let (boot_id, pid_namespace, pid, start_time, uid) = match parts.as_slice() {
            [_, boot, ns, pid, started] => (*boot, *ns, *pid, *started, None),
            [_, boot, ns, pid, started, uid] => (*boot, *ns, *pid, *started, uid.parse().ok()),
            _ => return None,
        };
        Some(Holder {
            boot_id,
            pid_namespace,
            pid: pid.parse().ok()?,
            start_time,
            uid,
        })
    }
}

/// What this process knows about the machine it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Here {
    /// None when `/proc/sys` cannot be read (e.g. systemd's `ProcSubset=pid`).
    pub boot_id: Option<String>,
    pub pid_namespace: Option<String>,
    /// This process's effective uid.
    pub uid: Option<u32>,
    /// `/proc` hides the processes of other users (`hidepid=invisible`, as
    /// `ProtectProc=invisible` mounts it): there a missing `/proc/PID` may be a live process.
    pub proc_hides_others: bool,
}

/// What reading `/proc/PID/stat` gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcEntry {
    /// The process's start time (field 22).
    Started(String),
    /// No such entry (ENOENT, ESRCH).
    Absent,
    /// Any other failure: permission (EACCES, EPERM), a parse failure, ...
    Unreadable,
}

/// What is known about a lease holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Proven gone: it may be taken over at once.
    Gone,
    /// Seen running.
    Alive,
    /// Cannot be known from here: treated as alive.
    Unknown,
}

/// Decides from what was read whether `holder` is gone. Only a proven absence is [`Verdict::Gone`].
pub fn judge(holder: &Holder, here: &Here, entry: ProcEntry) -> Verdict {
    let (Some(boot_id), Some(pid_namespace)) = (&here.boot_id, &here.pid_namespace) else {
        return Verdict::Unknown;
    };
    if holder.boot_id != boot_id || holder.pid_namespace != pid_namespace {
        return Verdict::Unknown;
    }
    match entry {
        ProcEntry::Started(t) if !holder.start_time.is_empty() && t == holder.start_time => {
            Verdict::Alive
        }
        // The pid now belongs to a process that started at another time.
        ProcEntry::Started(_) if !holder.start_time.is_empty() => Verdict::Gone,
        ProcEntry::Started(_) => Verdict::Unknown,
        ProcEntry::Unreadable => Verdict::Unknown,
        ProcEntry::Absent => {
            let visible =
                !here.proc_hides_others || (holder.uid.is_some() && holder.uid == here.uid);
            if visible {
                Verdict::Gone
            } else {
                Verdict::Unknown
            }
        }
    }
}

/// Read once: none of it changes while the process runs.
fn here() -> &'static Here {
    static HERE: OnceLock<Here> = OnceLock::new();
    HERE.get_or_init(|| Here {
        boot_id: fs::read_to_string(BOOT_ID_PATH)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        pid_namespace: fs::read_link("/proc/self/ns/pid")
            .ok()
            .map(|p| p.display().to_string())
            .filter(|s| !s.is_empty() && !s.contains('/')),
        uid: fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| effective_uid(&s)),
        // Unreadable: assume the worst, so that nothing is taken for gone that may be hidden.
        proc_hides_others: fs::read_to_string("/proc/self/mountinfo")
            .map(|m| proc_hides_other_users(&m))
            .unwrap_or(true),
    })
}

fn warn_no_boot_id() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            path = BOOT_ID_PATH,
            "cannot read the kernel boot id: an attempt left by a crashed process on this machine \
             is resumed only when its lease expires (a systemd unit must not set ProcSubset=pid)"
        );
    });
}

fn read_proc_entry(pid: u32) -> ProcEntry {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => start_time(&stat).map_or(ProcEntry::Unreadable, ProcEntry::Started),
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(ESRCH) => {
            ProcEntry::Absent
        }
        Err(_) => ProcEntry::Unreadable,
    }
}

/// Field 22 of a `/proc/PID/stat` text: the process's start time in clock ticks since boot.
fn start_time(stat: &str) -> Option<String> {
    // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// The effective uid from a `/proc/PID/status` text (`Uid:` real, effective, saved, fs).
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Does the procfs mounted on `/proc` (from a `/proc/self/mountinfo` text) hide the processes of
/// other users? `hidepid=1`/`noaccess` leaves them visible (unreadable); anything stronger hides.
fn proc_hides_other_users(mountinfo: &str) -> bool {
    let Some(line) = mountinfo.lines().rev().find(|l| {
        let mut fields = l.split_whitespace();
        fields.nth(4) == Some("/proc") && l.contains(" - proc ")
    }) else {
        return true;
    };
    let super_options = line
        .split(" - ")
        .nth(1)
        .and_then(|s| s.split_whitespace().nth(2))
        .unwrap_or("");
    super_options
        .split(',')
        .filter_map(|o| o.strip_prefix("hidepid="))
        .any(|v| !matches!(v, "0" | "off" | "1" | "noaccess"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "5d3c1a1e-0000-4000-8000-000000000001";
    const NS: &str = "pid:[4026531836]";

    fn here(boot_id: Option<&str>, proc_hides_others: bool) -> Here {
        Here {
            boot_id: boot_id.map(str::to_string),
            pid_namespace: Some(NS.to_string()),
            uid: Some(1000),
            proc_hides_others,
        }
    }

    fn started(t: &str) -> ProcEntry {
        ProcEntry::Started(t.to_string())
    }

    #[test]
    fn only_a_proven_absence_means_the_holder_is_gone() {
        use ProcEntry::{Absent, Unreadable};
        use Verdict::{Alive, Gone, Unknown};
        let same = format!("host-a/{BOOT}/{NS}/4242/777/1000");
        let other_uid = format!("host-a/{BOOT}/{NS}/4242/777/0");
        let old_shape = format!("host-a/{BOOT}/{NS}/4242/777");
        let other_boot = format!("host-a/another-boot/{NS}/4242/777/1000");
        let other_ns = format!("host-a/{BOOT}/pid:[1]/4242/777/1000");
        let no_boot_written = format!("host-a//{NS}/4242/777/1000");
        let (seen, hidden, no_boot) = (
            here(Some(BOOT), false),
            here(Some(BOOT), true),
            here(None, false),
        );
        let cases: [(&str, &str, &Here, ProcEntry, Verdict); 13] = [
            ("gone", &same, &seen, Absent, Gone),
            (
                "alive, same start time",
                &same,
                &seen,
                started("777"),
                Alive,
            ),
            ("pid reused", &same, &seen, started("900"), Gone),
            (
                "unreadable (EACCES, EPERM)",
                &same,
                &seen,
                Unreadable,
                Unknown,
            ),
            ("other boot", &other_boot, &seen, Absent, Unknown),
            ("other pid namespace", &other_ns, &seen, Absent, Unknown),
            ("no boot id here", &same, &no_boot, Absent, Unknown),
            (
                "no boot id in the owner",
                &no_boot_written,
                &seen,
                Absent,
                Unknown,
            ),
            ("hidden /proc, same uid", &same, &hidden, Absent, Gone),
            (
                "hidden /proc, other uid",
                &other_uid,
                &hidden,
                Absent,
                Unknown,
            ),
            (
                "hidden /proc, uid not recorded",
                &old_shape,
                &hidden,
                Absent,
                Unknown,
            ),
            ("visible /proc, other uid", &other_uid, &seen, Absent, Gone),
            (
                "visible /proc, uid not recorded",
                &old_shape,
                &seen,
                Absent,
                Gone,
            ),
        ];
        for (name, owner, here, entry, expected) in cases {
            let holder = Holder::parse(owner).expect(name);
            assert_eq!(judge(&holder, here, entry), expected, "{name}");
        }
    }

    #[test]
    fn ids_of_another_shape_are_not_judged() {
        for owner in ["plain-name", "", "a/b/c/not-a-pid/1", "a/b/c/1/2/3/4"] {
            assert_eq!(Holder::parse(owner), None, "{owner}");
            assert!(!holder_is_dead(owner), "{owner}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_finished_one_is_dead() {
        let me = owner_id("host-a");
        assert_eq!(instance_of(&me), "host-a");
        assert!(!holder_is_dead(&me));

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let started = read_proc_entry(pid);
        child.wait().unwrap();
        let ProcEntry::Started(started) = started else {
            // The child exited before it could be read: it is gone either way.
            assert_eq!(read_proc_entry(pid), ProcEntry::Absent);
            return;
        };
        let Holder {
            boot_id,
            pid_namespace,
            uid,
            ..
        } = Holder::parse(&me).unwrap();
        let gone = format!(
            "host-a/{boot_id}/{pid_namespace}/{pid}/{started}/{}",
            uid.unwrap()
        );
        assert!(holder_is_dead(&gone));
    }

    #[test]
    fn proc_files_are_parsed() {
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        assert_eq!(start_time(stat).as_deref(), Some("123456"));
        assert_eq!(start_time("garbage"), None);
        let status = "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t1\t1\t1\t1\n";
        assert_eq!(effective_uid(status), Some(1001));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn hidden_processes_are_detected_from_the_proc_mount() {
        let mount = |opts: &str| {
            format!("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n22 1 0:21 / /proc rw,nosuid - proc proc {opts}\n")
        };
        let cases = [
            ("rw", false),
            ("rw,hidepid=0", false),
            ("rw,hidepid=off", false),
            ("rw,hidepid=noaccess", false),
            ("rw,hidepid=1", false),
            ("rw,hidepid=invisible", true),
            ("rw,hidepid=2", true),
            ("rw,hidepid=ptraceable,subset=pid", true),
        ];
        for (opts, hides) in cases {
            assert_eq!(proc_hides_other_users(&mount(opts)), hides, "{opts}");
        }
        assert!(
            proc_hides_other_users(""),
            "no /proc mount found: assume hidden"
        );
    }
}
