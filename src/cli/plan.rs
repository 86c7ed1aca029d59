//! `plan`: what is due and what each step would do. Writes nothing.

use chrono::Utc;

use crate::app::{exit, App, Failure};
use crate::providers::{self, Mode};
use crate::rotation::state::Step;
use crate::rotation::Engine;

pub(super) async fn plan(app: &App) -> Result<i32, Failure> {
    let now = Utc::now();
    for note in &app.notes {
        println!("warning: {note}");
    }
    let mut set = None;
    for cred in &app.config.credentials {
        if cred.set_name().is_some() && cred.set_name() != set {
            set = cred.set_name();
            if let Some(s) = app.config.set_of(&cred.name) {
                let members = app
                    .config
                    .credentials
                    .iter()
                    .filter(|c| c.set_name() == set)
                    .count();
                println!(
                    "credential set {} ({}): {members} members",
                    s.name,
                    s.shown()
                );
            }
        }
        let record = app.engine.record(&cred.name).await?;
        let provider = providers::build(cred, app.vault.clone(), app.http.clone());
        let (trigger, at) = crate::standing::due_trigger(app, cred).await?;
        println!(
            "{} ({}, {}):",
            cred.name,
            cred.provider().kind(),
            cred.secret
        );
        if let Some(a) = &record.attempt {
            println!(
                "  in flight: attempt {} in phase {}{}; next: {}",
                a.id,
                a.phase.as_str(),
                if a.needs_attention {
                    " (needs attention: `rotate` resumes it)"
                } else {
                    ""
                },
                match crate::rotation::state::next_step(a, now) {
                    Step::Mint => "mint a new credential".to_string(),
                    Step::VerifyAndCommit => "verify the new credential, then commit it".into(),
                    Step::WaitUntil(t) =>
                        format!("revoke the old credential after {}", crate::human::time(t)),
                    Step::RevokeOld => "revoke the old credential and check it is rejected".into(),
                    Step::RollBack =>
                        "write the previous credential back, then revoke the newer one".into(),
                    Step::RetryAt(t) =>
                        format!("try the failed step again at {}", crate::human::time(t)),
                    Step::AwaitSupply(t) => format!(
                        "wait for `secret-rotator supply {}` (next reminder or deadline at {})",
                        cred.name,
                        crate::human::time(t)
                    ),
                    Step::Remind => "send rotation.due again".into(),
                    Step::SupplyOverdue =>
                        "raise needs_attention: nothing was supplied by the deadline".into(),
                    Step::CheckOld => "check that the old credential is rejected".into(),
                }
            );
            if let Some(e) = &a.last_error {
                println!("  last error: {e}");
            }
            let steps = crate::report::guidance(cred, a);
            if !steps.is_empty() {
                let scopes = if a.phase == crate::rotation::Phase::AwaitingSupply {
                    crate::providers::bigcommerce_assisted::scopes_to_grant(&cred.provider())
                } else {
                    Vec::new()
                };
                println!("  a person takes these steps:");
                print!("{}", crate::report::step_lines(&steps, &scopes));
            }
            continue;
        }
        match trigger {
            None => {
                println!("  not due; next rotation at {}", crate::human::time(at));
                continue;
            }
            Some(reason) => println!("  due now ({reason})"),
        }
        match provider {
            Err(e) => println!("  would not rotate: {e}"),
            Ok(p) if p.info().mode == Mode::Assisted => {
                println!("  assisted: a person takes these steps:");
                for s in p.assisted_steps() {
                    println!("    - {s}");
                }
            }
            Ok(p) => {
                let info = p.info();
                let version = app
                    .vault
                    .read_metadata(&cred.secret)
                    .await
                    .map(|m| m.current_version)
                    .unwrap_or(0);
                println!(
                    "  1. record attempt in {} (check-and-set)",
                    app.engine.state_path(&cred.name)
                );
                if info.credentials_expire {
                    println!(
                        "  2. mint a new credential that expires in {}",
                        crate::human::duration(Engine::lifetime(cred))
                    );
                } else {
                    println!("  2. mint a new credential");
                }
                println!("  3. record it, verify it with the provider (rejected: revoke it, keep the old one)");
                println!(
                    "  4. write it to {} with cas={version}; read it back",
                    cred.secret
                );
                println!(
                    "  5. announce credential.rotated, wait the grace period ({})",
                    crate::human::duration(cred.policy.grace)
                );
                println!(
                    "  6. revoke the old credential, poll until the provider rejects it{}, announce credential.revoked",
                    if info.async_revocation { " (revocation is asynchronous)" } else { "" }
                );
                if cred.policy.destroy_old_version {
                    println!("  7. destroy KV version {version}");
                }
            }
        }
    }
    println!("(dry run: nothing was written)");
    Ok(exit::OK)
}
