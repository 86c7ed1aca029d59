//! `history NAME [--json]`.

use crate::app::{exit, App, Failure};
use crate::report;

/// Past and current rotation attempts of a credential.
pub(super) async fn history(app: &App, name: &str, json: bool) -> Result<i32, Failure> {
    let cred = app.credential(name)?;
    let record = app.engine.record(&cred.name).await?;
    let steps = record
        .attempt
        .as_ref()
        .map(|a| report::guidance(cred, a))
        .unwrap_or_default();
    let dependents = if cred.dependents.is_empty() {
        Vec::new()
    } else {
        let (d, _) = app
            .deliverer
            .load(&cred.name)
            .await
            .map_err(|e| Failure::new(exit::VAULT, e.to_string()))?;
        report::dependent_rows(cred, &d, &record.events)
    };
    if json {
        let value = serde_json::json!({
            "dependents": dependents,
            "credential": cred.name,
            "in_flight": record.attempt.as_ref().map(|a| serde_json::json!({
                "id": a.id, "phase": a.phase.as_str(), "trigger": a.trigger,
                "started_at": a.started_at, "updated_at": a.updated_at,
                "owner": a.owner, "lease_expires_at": a.lease_expires_at,
                "version_before": a.version_before, "version_after": a.version_after,
                "revoke_after": a.revoke_after, "marks": a.marks, "orphans": a.orphans,
                "needs_attention": a.needs_attention, "last_error": a.last_error,
                "held": a.held, "steps": steps,
            })),
            "attempts": record.history,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("history serialises")
        );
    } else {
        print!(
            "{}",
            report::history_table(&record.history, record.attempt.as_ref())
        );
        if !steps.is_empty() {
            println!("\n{}: a person takes these steps:", cred.name);
            print!("{}", report::step_lines(&steps, &[]));
        }
        if !dependents.is_empty() {
            println!("\nDEPENDENTS");
            print!("{}", report::dependent_lines(&cred.name, &dependents));
        }
    }
    Ok(exit::OK)
}
