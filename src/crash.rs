//! Crash points: named places between two steps of a rotation where the crash-matrix tests kill
//! the daemon.
//!
//! Invariant: without the `fault-injection` cargo feature, [`point`] compiles to nothing. With it,
//! the process sends itself SIGKILL when `SECRET_ROTATOR_CRASH_AT` names the point reached, so the
//! test sees exactly what a power cut or an OOM kill at that line would leave behind. Inside
//! [`with_hook`] (a simulation's task) the hook is told instead, and the process lives on.

/// Every crash point, in the order a successful rotation passes them.
pub const POINTS: &[&str] = &[
    "minting-recorded",
    "minted",
    "minted-recorded",
    "verified",
    "committed",
    "rotated-emitted",
    // Dependents accepted `rotated` ahead of the write that records it (grace or acks).
    "ahead-of-notified",
    "notified-recorded",
    "revoke-sent",
    "revocation-verified",
    "revoked-emitted",
    // Dependents accepted the events of the write that ends the attempt, ahead of it.
    "ahead-of-end",
    "finished",
    // A step that failed transiently, recorded with its retry time.
    "retry-recorded",
    // The delivery worker: dependents accepted events, not yet recorded; then recorded.
    "delivered",
    "delivery-recorded",
    // `rollback`, in order.
    "rollback-recorded",
    "rollback-written",
    "rollback-emitted",
    "rollback-revoked",
    // The failure budget spent: the credential parked.
    "parked-recorded",
    // Assisted rotation, in order: `rotation.due` emitted (not yet recorded); a supplied
    // credential verified (nothing written yet), then recorded; committed and recorded as
    // waiting for the old one to die; a look that found the old one alive, recorded.
    "due-emitted",
    "supply-verified",
    "supply-recorded",
    "old-deletion-recorded",
    "old-alive-recorded",
    // `cancel`: the attempt ended, recorded with its `rotation.cancelled`.
    "cancel-recorded",
];

/// What a task's crash hook is told at each crash point it reaches.
#[cfg(feature = "fault-injection")]
pub type Hook = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

#[cfg(feature = "fault-injection")]
tokio::task_local! {
    static HOOK: Hook;
}

/// Run `f` with `hook` called at every crash point `f` reaches, in place of the environment
/// variable: a simulation of the engine notes the point and, to crash there, ends the task
/// before its next step reaches a store or a provider, as if the process had died at the point.
#[cfg(feature = "fault-injection")]
pub async fn with_hook<F: std::future::Future>(hook: Hook, f: F) -> F::Output {
    HOOK.scope(hook, f).await
}

#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    debug_assert!(POINTS.contains(&name), "unknown crash point {name}");
    if HOOK.try_with(|hook| hook(name)).is_ok() {
        return;
    }
    if std::env::var("SECRET_ROTATOR_CRASH_AT").as_deref() == Ok(name) {
        eprintln!("fault-injection: SIGKILL at crash point {name}");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
