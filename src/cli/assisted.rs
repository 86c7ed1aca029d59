//! The assisted kinds' commands: `supply NAME` and `confirm-revoked NAME`, and what an assisted
//! rotation's state means to the person running them.

use crate::app::{exit, App, Failure};
use crate::config::Credential;
use crate::notify::deliver::Workers;
use crate::rotation::{EngineError, RunResult};

use super::rotate::print_result;
use super::DELIVERY_DRAIN;

/// Hand over a credential regenerated in the control panel.
pub(super) async fn supply(app: &App, name: &str) -> Result<i32, Failure> {
    let cred = app.credential(name)?;
    let provider = app.provider(cred)?;
    let secret = read_supplied(cred)?;
    let workers = Workers::start(&app.deliverer, &app.engine.wakeup, [cred]);
    let mut result = app
        .engine
        .supply(cred, provider.as_ref(), secret.clone())
        .await;
    if matches!(result, Err(EngineError::Fenced { .. })) {
        // The daemon wrote the record (a reminder) between our read and our write: read
        // it again and try once more (verification has no side effect).
        tracing::info!(credential = %cred.name, "the state record changed meanwhile; supplying again");
        result = app.engine.supply(cred, provider.as_ref(), secret).await;
    }
    workers.stop(DELIVERY_DRAIN).await;
    assisted_result(app, cred, &result?).await
}

/// The old store-level account is deleted: check it with the store and end the rotation.
pub(super) async fn confirm_revoked(app: &App, name: &str) -> Result<i32, Failure> {
    let cred = app.credential(name)?;
    let provider = app.provider(cred)?;
    let workers = Workers::start(&app.deliverer, &app.engine.wakeup, [cred]);
    let result = app.engine.confirm_revoked(cred, provider.as_ref()).await;
    workers.stop(DELIVERY_DRAIN).await;
    assisted_result(app, cred, &result?).await
}

/// `supply`'s input: a JSON object of strings on stdin, or each field typed at a prompt that
/// does not echo when stdin is a terminal. Nothing of it is printed or logged.
fn read_supplied(cred: &Credential) -> Result<crate::secret::SecretFields, Failure> {
    use crate::providers::bigcommerce_assisted::{
        BASIC_FIELDS, STORE_FIELDS, STORE_OPTIONAL_FIELDS,
    };
    use std::io::{IsTerminal, Read};
    let usage = |m: String| {
        Failure::new(
            exit::USAGE,
            format!("{}: {m}; nothing was written", cred.name),
        )
    };
    let (required, optional): (&[&str], &[&str]) = match &cred.provider {
        crate::config::ProviderConfig::BigCommerceStoreAccount(_) => {
            (STORE_FIELDS, STORE_OPTIONAL_FIELDS)
        }
        _ => (BASIC_FIELDS, &[]),
    };
    if std::io::stdin().is_terminal() {
        let mut fields = crate::secret::SecretFields::new();
        for (field, needed) in required
            .iter()
            .map(|f| (f, true))
            .chain(optional.iter().map(|f| (f, false)))
        {
            let prompt = if needed {
                format!("{field}: ")
            } else {
                format!("{field} (optional, Enter to skip): ")
            };
            let value = rpassword::prompt_password(prompt)
                .map_err(|e| usage(format!("cannot read {field} from the terminal: {e}")))?;
            let value = value.trim();
            if !value.is_empty() {
                fields.insert(field, value);
            }
        }
        return Ok(fields);
    }
    let mut text = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| usage(format!("cannot read stdin: {e}")))?;
    // The parser's message may quote the input: say where, not what.
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        usage(format!(
            "stdin is not a JSON object (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| usage("stdin is not a JSON object of strings".into()))?;
    let mut fields = crate::secret::SecretFields::new();
    for (k, v) in object {
        let v = v
            .as_str()
            .ok_or_else(|| usage(format!("field {k} is not a string")))?;
        fields.insert(k, v.trim());
    }
    Ok(fields)
}

/// What an assisted command left: the record says more than the run result.
pub(super) async fn assisted_result(
    app: &App,
    cred: &Credential,
    result: &RunResult,
) -> Result<i32, Failure> {
    let name = &cred.name;
    if let RunResult::Finished(_)
    | RunResult::NeedsAttention { .. }
    | RunResult::Parked(_)
    | RunResult::Busy { .. } = result
    {
        return Ok(print_result(name, result));
    }
    let record = app.engine.record(name).await?;
    let Some(a) = &record.attempt else {
        return Ok(print_result(name, result));
    };
    match a.phase {
        crate::rotation::Phase::AwaitingSupply => {
            println!(
                "{name}: awaiting supply since {} (deadline {}): a person regenerates it in the control panel, then runs `secret-rotator supply {name}`",
                a.started_at.to_rfc3339(),
                a.deadline.map(|d| d.to_rfc3339()).unwrap_or("-".into())
            );
            Ok(exit::OK)
        }
        crate::rotation::Phase::AwaitingOldDeletion => {
            println!(
                "{name}: version {} committed and announced; waiting for the old account to be deleted in the control panel (checked again at {}; `secret-rotator confirm-revoked {name}` once it is)",
                a.version_after.unwrap_or_default(),
                a.next_check.map(|d| d.to_rfc3339()).unwrap_or("-".into())
            );
            Ok(exit::OK)
        }
        _ => Ok(print_result(name, result)),
    }
}
