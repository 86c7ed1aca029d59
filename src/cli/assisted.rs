//! The assisted kinds' commands: `supply NAME`, `confirm-revoked NAME` and `cancel NAME`, and
//! what an assisted rotation's state means to the person running them.

use crate::app::{exit, App, Failure};
use crate::config::Credential;
use crate::notify::deliver::Workers;
use crate::rotation::{EngineError, RunResult, Supplied};

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
    supplied_result(app, cred, result?).await
}

/// End an assisted rotation in flight where that is safe; `instance` is who did it.
pub(super) async fn cancel(app: &App, name: &str, instance: &str) -> Result<i32, Failure> {
    let cred = app.credential(name)?;
    let provider = app.provider(cred)?;
    let workers = Workers::start(&app.deliverer, &app.engine.wakeup, [cred]);
    let result = app.engine.cancel(cred, provider.as_ref(), instance).await;
    workers.stop(DELIVERY_DRAIN).await;
    println!("{}: {}", cred.name, result?);
    Ok(exit::OK)
}

/// What `supply` did: the fields carried over, or that the credential was committed already.
async fn supplied_result(app: &App, cred: &Credential, supplied: Supplied) -> Result<i32, Failure> {
    let name = &cred.name;
    match supplied {
        Supplied::AlreadyCommitted {
            version,
            attempt,
            waiting,
        } => {
            let then = if waiting {
                format!(
                    "; the rotation waits for the old credential to die (`secret-rotator confirm-revoked {name}` checks it now)"
                )
            } else {
                String::new()
            };
            println!(
                "{name}: this credential was committed already as version {version} (attempt {attempt}); nothing to do{then}"
            );
            Ok(exit::OK)
        }
        Supplied::Taken {
            result,
            kept,
            dropped,
        } => {
            if !kept.is_empty() {
                println!(
                    "{name}: kept from the current secret, as they were: {}",
                    kept.join(", ")
                );
            }
            if !dropped.is_empty() {
                println!(
                    "{name}: left out, they named the old account: {}",
                    dropped.join(", ")
                );
            }
            assisted_result(app, cred, &result).await
        }
    }
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

/// The most `supply` reads from stdin.
const SUPPLY_STDIN_MAX: u64 = 64 * 1024;

/// `supply`'s input: a JSON object of strings on stdin, or each field typed at a prompt when
/// stdin is a terminal ([`prompt_fields`]). Nothing of it is printed or logged.
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
    let (required, optional): (&[&str], &[&str]) = match &*cred.provider() {
        crate::config::ProviderConfig::BigCommerceStoreAccount(_) => {
            (STORE_FIELDS, STORE_OPTIONAL_FIELDS)
        }
        _ => (BASIC_FIELDS, &[]),
    };
    if std::io::stdin().is_terminal() {
        return prompt_fields(cred, required, optional).map_err(|(field, e)| {
            Failure::new(
                exit::USAGE,
                format!(
                    "{}: no {field} read at the terminal: {e}; nothing was written",
                    cred.name
                ),
            )
        });
    }
    let mut text = String::new();
    std::io::stdin()
        .take(SUPPLY_STDIN_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| usage(format!("cannot read stdin: {e}")))?;
    if text.len() as u64 > SUPPLY_STDIN_MAX {
        return Err(usage(format!(
            "stdin is too large: more than {} KiB (a credential's fields are far less)",
            SUPPLY_STDIN_MAX / 1024
        )));
    }
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
    // As at the prompt, a field the config sets (username, API path) defaults to it.
    let mut defaulted = Vec::new();
    for field in VISIBLE_FIELDS {
        if fields.expose(field).is_none() {
            if let Some(value) = configured_value(cred, field) {
                fields.insert(field, value);
                defaulted.push(*field);
            }
        }
    }
    if !defaulted.is_empty() {
        println!(
            "{}: not supplied, taken from the config: {}",
            cred.name,
            defaulted.join(", ")
        );
    }
    Ok(fields)
}

/// The configured value of a supplied field that the config sets (a legacy account's or a
/// user's username and API path): the default at the prompt and for a field stdin leaves out.
fn configured_value(cred: &Credential, field: &str) -> Option<String> {
    match &*cred.provider() {
        crate::config::ProviderConfig::BigCommerceLegacyAccount(c)
        | crate::config::ProviderConfig::BigCommerceUserToken(c) => match field {
            "username" => Some(c.username.clone()),
            "api_path" => Some(c.api_path.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The supplied fields that identify rather than authenticate: they echo at the prompt. Any
/// other field (token, access_token, client_secret, ...) is taken as secret.
const VISIBLE_FIELDS: &[&str] = &["username", "api_path", "client_id"];

/// `supply`'s fields typed at the terminal: secret ones do not echo; the others echo and offer
/// the configured value (username, API path) as their default. An optional field left empty
/// is not set.
fn prompt_fields(
    cred: &Credential,
    required: &[&str],
    optional: &[&str],
) -> Result<crate::secret::SecretFields, (String, crate::prompt::PromptError)> {
    use secrecy::ExposeSecret;
    let mut fields = crate::secret::SecretFields::new();
    let fields_to_ask = required
        .iter()
        .map(|f| (*f, true))
        .chain(optional.iter().map(|f| (*f, false)));
    for (field, needed) in fields_to_ask {
        let label = if needed {
            field.to_string()
        } else {
            format!("{field} (optional, Enter to skip)")
        };
        let failed = |e| (field.to_string(), e);
        let value = if !VISIBLE_FIELDS.contains(&field) {
            crate::prompt::secret(&label)
                .map_err(failed)?
                .expose_secret()
                .to_string()
        } else {
            crate::prompt::line(&label, configured_value(cred, field).as_deref()).map_err(failed)?
        };
        if !value.is_empty() {
            fields.insert(field, value);
        }
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
                "{name}: awaiting supply since {} (deadline {}): {} (`secret-rotator status` lists the steps)",
                crate::human::time(a.started_at),
                a.deadline.map(crate::human::time).unwrap_or("-".into()),
                crate::rotation::what_to_do(cred)
            );
            Ok(exit::OK)
        }
        crate::rotation::Phase::AwaitingOldDeletion => {
            let old = a
                .old
                .as_ref()
                .map(|o| crate::providers::bigcommerce_assisted::describe(&cred.provider(), o))
                .unwrap_or_else(|| "the old account".into());
            println!(
                "{name}: version {} committed and announced; once every reader uses it, delete the old {} in the control panel (checked again at {}; `secret-rotator confirm-revoked {name}` once it is deleted)",
                a.version_after.unwrap_or_default(),
                old.trim_start_matches("the "),
                a.next_check.map(crate::human::time).unwrap_or("-".into())
            );
            Ok(exit::OK)
        }
        _ => Ok(print_result(name, result)),
    }
}
