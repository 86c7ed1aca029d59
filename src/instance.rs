//! Who holds a rotation lease: this process's identity, and whether a holder on this machine is
//! still alive.
//!
//! Invariant: an owner id is `{instance}/{boot_id}/{pid_namespace}/{pid}/{start_time}`. A lease
//! held by a process of the same kernel boot and pid namespace can be checked directly in
//! `/proc`: when that process is gone (crashed, killed), its attempt is taken over at once instead
//! of after the lease expires. A holder elsewhere is trusted until its lease expires. Two live
//! processes never share an owner id, so a manual `rotate` and a running daemon on the same host
//! cannot both act on one attempt.

use std::fs;

/// This process's owner id, for `instance` (a stable name such as the host name).
pub fn owner_id(instance: &str) -> String {
    let pid = std::process::id();
    format!(
        "{instance}/{}/{}/{pid}/{}",
        boot_id().unwrap_or_default(),
        pid_namespace().unwrap_or_default(),
        start_time(pid).unwrap_or_default()
    )
}

/// The instance name part of an owner id (what operators see).
pub fn instance_of(owner: &str) -> &str {
    owner.split('/').next().unwrap_or(owner)
}

/// Is the process that holds `owner` known to be gone? `false` when it cannot be known here
/// (another machine, another boot, another pid namespace, or an id of another shape).
pub fn holder_is_dead(owner: &str) -> bool {
    let parts: Vec<&str> = owner.split('/').collect();
    let [_, boot, ns, pid, started] = parts.as_slice() else {
        return false;
    };
    let (Some(my_boot), Some(my_ns)) = (boot_id(), pid_namespace()) else {
        return false;
    };
    if boot.is_empty() || *boot != my_boot || *ns != my_ns {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    // Gone, or the pid was reused by a process that started at another time.
    start_time(pid).is_none_or(|t| t != *started)
}

fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

fn pid_namespace() -> Option<String> {
    fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.display().to_string())
}

/// Field 22 of `/proc/PID/stat`: the process's start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_finished_one_is_dead() {
        let me = owner_id("host-a");
        assert_eq!(instance_of(&me), "host-a");
        assert!(!holder_is_dead(&me));

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let started = start_time(pid);
        child.wait().unwrap();
        let gone = format!(
            "host-a/{}/{}/{pid}/{}",
            boot_id().unwrap(),
            pid_namespace().unwrap(),
            started.unwrap_or_else(|| "1".into())
        );
        assert!(holder_is_dead(&gone));
    }

    #[test]
    fn holders_elsewhere_are_not_judged() {
        let cases = [
            "host-b/another-boot/pid:[1]/1/1",
            "plain-name",
            "",
            "a/b/c/not-a-pid/1",
        ];
        for owner in cases {
            assert!(!holder_is_dead(owner), "{owner}");
        }
    }
}
