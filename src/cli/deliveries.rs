//! The dependents' commands: `deliveries NAME [--retry DEPENDENT] [--json]` and
//! `test-dependent NAME DEPENDENT`.

use chrono::Utc;

use crate::app::{exit, App, Failure};
use crate::config::Credential;
use crate::events::EventKind;
use crate::notify::deliver::{Target, Workers};
use crate::notify::outbox::Logged;
use crate::report;

use super::DELIVERY_DRAIN;

/// `deliveries NAME [--retry DEPENDENT] [--json]`.
pub(super) async fn deliveries(
    app: &App,
    cred: &Credential,
    retry: Option<&str>,
    json: bool,
) -> Result<i32, Failure> {
    let failure =
        |e: crate::notify::deliver::DeliverError| Failure::new(exit::VAULT, e.to_string());
    if cred.dependents.is_empty() {
        println!("{}: no dependents configured", cred.name);
        return Ok(exit::OK);
    }
    if let Some(dep) = retry {
        dependent(cred, dep)?;
        let (mut d, version) = app.deliverer.load(&cred.name).await.map_err(failure)?;
        d.retry_now(dep);
        app.deliverer.put(d, version).await.map_err(failure)?;
        let workers = Workers::start(&app.deliverer, &app.engine.wakeup, [cred]);
        workers.stop(DELIVERY_DRAIN).await;
    }
    let log = app.deliverer.log(&cred.name).await.map_err(failure)?;
    let (d, _) = app.deliverer.load(&cred.name).await.map_err(failure)?;
    let rows = report::dependent_rows(cred, &d, &log);
    if json {
        let value = serde_json::json!({
            "credential": cred.name,
            "dependents": rows,
            "events": log.entries,
            "notices": d.notices.entries,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("rows serialise")
        );
    } else {
        print!("{}", report::dependent_lines(&cred.name, &rows));
        let events: Vec<&Logged> = log.entries.iter().chain(&d.notices.entries).collect();
        if !events.is_empty() {
            println!("events kept:");
            for e in events {
                println!(
                    "  {} {} {} version {}: {}",
                    crate::human::time(e.at),
                    e.kind.as_str(),
                    e.id,
                    e.version.map(|v| v.to_string()).unwrap_or("-".into()),
                    e.reason
                );
            }
        }
    }
    Ok(if rows.iter().any(|r| r.state == "needs_attention") {
        exit::CHECK_FAILED
    } else {
        exit::OK
    })
}

fn dependent<'a>(
    cred: &'a Credential,
    name: &str,
) -> Result<&'a crate::config::Dependent, Failure> {
    cred.dependents
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| {
            let known: Vec<&str> = cred.dependents.iter().map(|d| d.name.as_str()).collect();
            Failure::new(
                exit::USAGE,
                format!(
                    "credential {} has no dependent named {name:?} (known: {})",
                    cred.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })
}

/// `test-dependent NAME DEPENDENT`: one signed `ping`, outside the outbox (nothing recorded).
pub(super) async fn test_dependent(
    app: &App,
    cred: &Credential,
    name: &str,
) -> Result<i32, Failure> {
    dependent(cred, name)?;
    let target = Target::of(cred)
        .into_iter()
        .find(|t| t.name == name)
        .expect("the dependent exists");
    let ping = Logged::new(
        format!("ping:{}", uuid::Uuid::new_v4()),
        EventKind::Ping,
        Utc::now(),
        None,
        None,
        "a test delivery from `secret-rotator test-dependent`",
    );
    match app.deliverer.deliver(cred, &target, &ping).await {
        crate::notify::delivery::Delivery::Delivered => {
            println!("{}/{name}: delivered ping {}", cred.name, ping.id);
            Ok(exit::OK)
        }
        crate::notify::delivery::Delivery::Failed { retryable, reason } => {
            println!(
                "{}/{name}: not delivered ({}): {reason}",
                cred.name,
                if retryable {
                    "may pass later"
                } else {
                    "will not pass by waiting"
                }
            );
            Ok(exit::CHECK_FAILED)
        }
    }
}
