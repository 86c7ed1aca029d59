//! The command line: subcommands, what each prints, and the exit codes.
//!
//! Invariant: this is glue. It parses arguments, builds the parts (config, Vault, engine,
//! providers) and calls them; the logic lives in `config`, `policy`, `rotation` and `report`.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};

pub use crate::app::{exit, Failure};
use crate::app::{instance_id, load_config, App, Options};
use crate::config::Credential;
use crate::notify::deliver::{Target, Workers};
use crate::notify::outbox::{DeliveryPolicy, Logged};
use crate::notify::payload::PayloadType;
use crate::providers::{self, Mode};
use crate::report::{self, StatusRow};
use crate::rotation::state::Step;
use crate::rotation::{Begin, Engine, EngineError, Outcome, RunResult, Wait};

const AFTER_HELP: &str = "\
Exit codes:
  0   success
  1   status --check: a credential is overdue, missing or needs attention (parked)
  2   the configuration is invalid (every error is printed with file:line:column and key)
  3   Vault/OpenBao unreachable, sealed, or refused a request (the path and status are printed);
      also `status` when any credential cannot be read
  4   a rotation did not complete: failed, rolled back, aborted, or needs attention
  5   another instance holds the credential's rotation lease
  64  bad command-line usage

Environment:
  SECRET_ROTATOR_CONFIG   configuration file (default /etc/secret-rotator/config.toml)
  VAULT_TOKEN             the daemon's Vault token when vault.auth.method = \"token\"
  CREDENTIALS_DIRECTORY   where relative credential files are found (systemd LoadCredential=)
  SECRET_ROTATOR_LOG      log filter, e.g. \"info\" or \"debug,reqwest=warn\" (default info)

Examples:
  secret-rotator check-config --config config/example.toml
  secret-rotator status --check            # for monitoring: exit 1 when anything is overdue
  secret-rotator plan                      # what is due and what each step would do; writes nothing
  secret-rotator rotate storefront-main --wait
  secret-rotator history storefront-main --json
  secret-rotator run                       # the daemon (systemd service)";

/// secret-rotator keeps API credentials stored in Vault/OpenBao fresh: it tracks each secret's age
/// from KV v2 metadata, rotates it when due, verifies the new credential with its provider,
/// announces it, revokes the old one after a grace period and checks that it is really dead.
#[derive(Debug, Parser)]
#[command(name = "secret-rotator", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(
        long,
        global = true,
        env = "SECRET_ROTATOR_CONFIG",
        default_value = "/etc/secret-rotator/config.toml"
    )]
    pub config: PathBuf,

    /// Log format on stderr.
    #[arg(long, global = true, env = "SECRET_ROTATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Also append every event (rotated, revoked, failed) as a JSON line to this file (0600).
    #[arg(long, global = true, env = "SECRET_ROTATOR_EVENTS_FILE")]
    pub events_file: Option<PathBuf>,

    /// This instance's name in rotation leases (default: the host name). A process restarted on
    /// the same machine resumes its attempts at once; another instance takes an attempt over only
    /// after its lease expires.
    #[arg(long, global = true, env = "SECRET_ROTATOR_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// The first wait before a failed delivery to a dependent is tried again; it doubles (with
    /// jitter) up to --delivery-backoff-max.
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "5s")]
    pub delivery_backoff: Duration,

    /// The longest wait between two tries of a failing dependent (also the interval at which
    /// a dependent that needs attention is still tried).
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "15m")]
    pub delivery_backoff_max: Duration,

    /// Failed deliveries in a row before a dependent needs attention (an event to the other
    /// dependents, a line in `status`, `status --check` fails).
    #[arg(long, global = true, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..))]
    pub delivery_budget: u32,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: rotate credentials when due, resume what is in flight, until SIGTERM.
    Run {
        /// One pass: read every credential, drive what is due or in flight once, then exit
        /// (for cron or tests).
        #[arg(long)]
        once: bool,
        /// How often each credential's metadata is read again while nothing is due (the
        /// reconcile interval); default `[daemon] reconcile_interval` (10m).
        #[arg(long, value_parser = humantime::parse_duration)]
        interval: Option<Duration>,
        /// After an attempt that did not rotate (rejected, rolled back), the next waits this
        /// long, doubling with each failure in a row (with jitter, up to 6h).
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
        attempt_backoff: Duration,
        /// Attempts in a row that may fail before the credential is parked: then it is not
        /// rotated on its own until an operator runs `rotate NAME` (status shows why).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
        failure_budget: u32,
    },
    /// Show every credential's version, age and due time, read from Vault's KV v2 metadata.
    Status {
        #[arg(long)]
        json: bool,
        /// Exit 1 when any credential is overdue, missing, unreadable or needs attention.
        #[arg(long)]
        check: bool,
    },
    /// Validate the configuration: exit 0 with a summary, or exit 2 with every error.
    CheckConfig {
        /// The file to check (default: --config).
        file: Option<PathBuf>,
    },
    /// Dry run: what is due and what each rotation step would do. Writes nothing.
    Plan,
    /// Rotate a credential now (or resume its rotation in flight).
    Rotate {
        name: String,
        /// Also wait out the grace period, revoke the old credential and check it is rejected.
        #[arg(long)]
        wait: bool,
    },
    /// Past and current rotation attempts of a credential: phases, times, versions, outcome.
    History {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-promote the previous credential while it is still valid (during the grace period).
    Rollback { name: String },
    /// What a credential's dependents have received: per dependent, the last event delivered,
    /// the events still waiting with the next try, or the error it is failing with.
    Deliveries {
        name: String,
        /// Try this dependent again now (after it needed attention, or while it backs off).
        #[arg(long, value_name = "DEPENDENT")]
        retry: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send a signed `ping` event to one dependent of a credential and say how it answered
    /// (a `file` dependent is written with the current secret and runs its `exec`).
    TestDependent { name: String, dependent: String },
    /// Hand over an assisted credential regenerated in the control panel: a JSON object of its
    /// fields on stdin, or typed at a prompt that does not echo. It is verified with the store
    /// (scopes included) before anything is written; a rejected one writes nothing (exit 4).
    Supply { name: String },
    /// Say that the old store-level account is deleted: checked with the store (it must reject
    /// the old token), then `credential.revoked` and the rotation ends.
    ConfirmRevoked { name: String },
    /// Stop the daemon (and `rotate`) from starting or moving on a credential's rotation.
    Pause { name: String },
    /// Undo `pause`.
    Resume { name: String },
}

/// How long a command waits for its dependents' last deliveries before it exits (they are
/// recorded: what is cut short is delivered again by the daemon).
pub(crate) const DELIVERY_DRAIN: Duration = Duration::from_secs(60);

/// The [`App`] the global flags describe.
async fn app(cli: &Cli) -> Result<App, Failure> {
    App::build(&Options {
        config_path: &cli.config,
        events_file: cli.events_file.as_deref(),
        instance_id: cli.instance_id.as_deref(),
        delivery: DeliveryPolicy {
            backoff: crate::rotation::state::Backoff {
                base: cli.delivery_backoff,
                cap: cli.delivery_backoff_max.max(cli.delivery_backoff),
            },
            budget: cli.delivery_budget,
        },
    })
    .await
}

/// Run the parsed command; returns the exit code.
pub async fn run(cli: Cli) -> Result<i32, Failure> {
    match &cli.command {
        Command::CheckConfig { file } => {
            let path = file.clone().unwrap_or_else(|| cli.config.clone());
            let config = load_config(&path)?;
            let automatic = config
                .credentials
                .iter()
                .filter(|c| c.provider.automatic())
                .count();
            println!(
                "{}: OK: {} credential(s) ({} automatic, {} assisted), Vault at {}, state in {}/{}",
                path.display(),
                config.credentials.len(),
                automatic,
                config.credentials.len() - automatic,
                config.vault.addresses.join(", "),
                config.vault.state_mount,
                config.vault.state_prefix
            );
            Ok(exit::OK)
        }
        Command::Status { json, check } => {
            let app = app(&cli).await?;
            let rows = crate::standing::status_rows(&app).await;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).expect("rows serialise")
                );
            } else {
                print!("{}", report::status_table(&rows));
            }
            let errors: Vec<&StatusRow> = rows.iter().filter(|r| r.error.is_some()).collect();
            for r in &errors {
                eprintln!(
                    "error: {}: {}",
                    r.name,
                    r.error.as_deref().unwrap_or_default()
                );
            }
            Ok(if !errors.is_empty() {
                exit::VAULT
            } else if *check && rows.iter().any(StatusRow::fails_check) {
                exit::CHECK_FAILED
            } else {
                exit::OK
            })
        }
        Command::Plan => {
            let app = app(&cli).await?;
            plan(&app).await
        }
        Command::Rotate { name, wait } => {
            let app = app(&cli).await?;
            let cred = app.credential(name)?;
            let provider = app.provider(cred)?;
            let record = app.engine.record(&cred.name).await?;
            if let Some(p) = &record.paused {
                println!(
                    "{}: paused by {} since {}; not rotated (`secret-rotator resume {}` first)",
                    cred.name,
                    p.by,
                    p.since.to_rfc3339(),
                    cred.name
                );
                return Ok(exit::ROTATION);
            }
            // The dependents hear of each step as it happens (and their acks gate `--wait`).
            let workers = Workers::start(&app.deliverer, &app.engine.wakeup, [cred]);
            let result = app
                .engine
                .drive(
                    cred,
                    provider.as_ref(),
                    Some(Begin::Manual),
                    if *wait { Wait::All } else { Wait::Retries },
                )
                .await;
            workers.stop(DELIVERY_DRAIN).await;
            let result = result?;
            if provider.info().mode == Mode::Assisted {
                return assisted_result(&app, cred, &result).await;
            }
            Ok(print_result(&cred.name, &result))
        }
        Command::Supply { name } => {
            let app = app(&cli).await?;
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
            assisted_result(&app, cred, &result?).await
        }
        Command::ConfirmRevoked { name } => {
            let app = app(&cli).await?;
            let cred = app.credential(name)?;
            let provider = app.provider(cred)?;
            let workers = Workers::start(&app.deliverer, &app.engine.wakeup, [cred]);
            let result = app.engine.confirm_revoked(cred, provider.as_ref()).await;
            workers.stop(DELIVERY_DRAIN).await;
            assisted_result(&app, cred, &result?).await
        }
        Command::Pause { name } | Command::Resume { name } => {
            let app = app(&cli).await?;
            let cred = app.credential(name)?;
            let pause = matches!(cli.command, Command::Pause { .. });
            let changed = app
                .engine
                .set_paused(&cred.name, pause, &instance_id(cli.instance_id.as_deref()))
                .await?;
            let what = if pause { "paused" } else { "resumed" };
            if changed {
                println!("{}: {what}", cred.name);
            } else {
                println!("{}: already {what}", cred.name);
            }
            Ok(exit::OK)
        }
        Command::History { name, json } => {
            let app = app(&cli).await?;
            let cred = app.credential(name)?;
            let record = app.engine.record(&cred.name).await?;
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
            if *json {
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
                        "held": a.held,
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
                if !dependents.is_empty() {
                    println!("\nDEPENDENTS");
                    print!("{}", report::dependent_lines(&cred.name, &dependents));
                }
            }
            Ok(exit::OK)
        }
        Command::Rollback { name } => {
            let app = app(&cli).await?;
            let cred = app.credential(name)?;
            let provider = app.provider(cred)?;
            let workers = Workers::start(&app.deliverer, &app.engine.wakeup, [cred]);
            let result = app.engine.rollback(cred, provider.as_ref()).await;
            workers.stop(DELIVERY_DRAIN).await;
            match result? {
                RunResult::Finished(s) if s.outcome == Outcome::Reverted => {
                    println!(
                        "{}: rolled back: version {} holds the previous credential again; {}",
                        cred.name,
                        s.version_after.unwrap_or_default(),
                        s.error.unwrap_or_default()
                    );
                    Ok(exit::OK)
                }
                other => Ok(print_result(&cred.name, &other)),
            }
        }
        Command::Deliveries { name, retry, json } => {
            let app = app(&cli).await?;
            let cred = app.credential(name)?;
            deliveries(&app, cred, retry.as_deref(), *json).await
        }
        Command::TestDependent { name, dependent } => {
            let app = app(&cli).await?;
            let cred = app.credential(name)?;
            test_dependent(&app, cred, dependent).await
        }
        Command::Run {
            once,
            interval,
            attempt_backoff,
            failure_budget,
        } => {
            let mut app = app(&cli).await?;
            let retry = &mut app.engine.settings.retry;
            retry.attempts.base = *attempt_backoff;
            retry.attempts.cap = retry.attempts.cap.max(*attempt_backoff);
            retry.failure_budget = *failure_budget;
            crate::daemon::run(app, *once, *interval).await
        }
    }
}

/// `deliveries NAME [--retry DEPENDENT] [--json]`.
async fn deliveries(
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
        let path = app.deliverer.path(&cred.name);
        let body = serde_json::to_value(&d).expect("deliveries serialise");
        app.vault.write_json_cas(&path, &body, version).await?;
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
                    e.at.to_rfc3339(),
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
async fn test_dependent(app: &App, cred: &Credential, name: &str) -> Result<i32, Failure> {
    dependent(cred, name)?;
    let target = Target::of(cred)
        .into_iter()
        .find(|t| t.name == name)
        .expect("the dependent exists");
    let ping = Logged::new(
        format!("ping:{}", uuid::Uuid::new_v4()),
        PayloadType::Ping,
        Utc::now(),
        None,
        None,
        "a test delivery from `secret-rotator test-dependent`",
    );
    match app.deliverer.deliver(cred, &target, &ping).await {
        crate::notify::exec_sink::Delivery::Delivered => {
            println!("{}/{name}: delivered ping {}", cred.name, ping.id);
            Ok(exit::OK)
        }
        crate::notify::exec_sink::Delivery::Failed { retryable, reason } => {
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
async fn assisted_result(app: &App, cred: &Credential, result: &RunResult) -> Result<i32, Failure> {
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

fn print_result(name: &str, result: &RunResult) -> i32 {
    match result {
        RunResult::Idle => {
            println!("{name}: nothing to do");
            exit::OK
        }
        RunResult::Finished(s) => {
            let versions = format!(
                "version {} -> {}",
                s.version_before,
                s.version_after.map(|v| v.to_string()).unwrap_or("-".into())
            );
            let orphans = if s.orphans.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} possible orphan credential(s) noted (they expire on their own)",
                    s.orphans.len()
                )
            };
            println!(
                "{name}: {} ({versions}){}{orphans}",
                s.outcome.as_str(),
                s.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            if s.outcome == Outcome::Rotated {
                exit::OK
            } else {
                exit::ROTATION
            }
        }
        RunResult::Waiting { until } => {
            println!(
                "{name}: new credential committed; the old one is revoked after the grace period, at {} (by the daemon, or `rotate {name} --wait`)",
                until.to_rfc3339()
            );
            exit::OK
        }
        RunResult::RetryAt { until, error } => {
            println!(
                "{name}: a step failed and is tried again at {} (by the daemon, or `rotate {name}`): {error}",
                until.to_rfc3339()
            );
            exit::ROTATION
        }
        RunResult::BackingOff { until } => {
            println!(
                "{name}: the last attempt failed; the daemon tries again at {} (`rotate {name}` starts now)",
                until.to_rfc3339()
            );
            exit::ROTATION
        }
        RunResult::Parked(p) => {
            println!(
                "{name}: parked since {}: {}; `rotate {name}` starts a new attempt",
                p.since.to_rfc3339(),
                p.reason
            );
            exit::ROTATION
        }
        RunResult::Busy { owner, until } => {
            println!(
                "{name}: instance {owner} holds the rotation lease until {}",
                until.to_rfc3339()
            );
            exit::BUSY
        }
        RunResult::NeedsAttention { phase, error } => {
            println!(
                "{name}: needs attention in phase {}: {error}",
                phase.as_str()
            );
            exit::ROTATION
        }
    }
}

async fn plan(app: &App) -> Result<i32, Failure> {
    let now = Utc::now();
    for cred in &app.config.credentials {
        let record = app.engine.record(&cred.name).await?;
        let provider = providers::build(cred, app.vault.clone(), app.http.clone());
        let (trigger, at) = crate::standing::due_trigger(app, cred).await?;
        println!("{} ({}, {}):", cred.name, cred.provider.kind(), cred.secret);
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
                        format!("revoke the old credential after {}", t.to_rfc3339()),
                    Step::RevokeOld => "revoke the old credential and check it is rejected".into(),
                    Step::RollBack =>
                        "write the previous credential back, then revoke the newer one".into(),
                    Step::RetryAt(t) => format!("try the failed step again at {}", t.to_rfc3339()),
                    Step::AwaitSupply(t) => format!(
                        "wait for `secret-rotator supply {}` (next reminder or deadline at {})",
                        cred.name,
                        t.to_rfc3339()
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
            continue;
        }
        match trigger {
            None => {
                println!("  not due; next rotation at {}", at.to_rfc3339());
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
                        humantime::format_duration(Engine::lifetime(cred))
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
                    humantime::format_duration(cred.policy.grace)
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
