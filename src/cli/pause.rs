//! `pause NAME` and `resume NAME`.

use crate::app::{exit, App, Failure};

/// Pause (`pause` true) or resume a credential's rotations; `instance` is who did it.
pub(super) async fn pause(
    app: &App,
    name: &str,
    pause: bool,
    instance: &str,
) -> Result<i32, Failure> {
    let cred = app.credential(name)?;
    let changed = app.engine.set_paused(&cred.name, pause, instance).await?;
    let what = if pause { "paused" } else { "resumed" };
    if changed {
        println!("{}: {what}", cred.name);
    } else {
        println!("{}: already {what}", cred.name);
    }
    Ok(exit::OK)
}
