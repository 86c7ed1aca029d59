//! The command line: parse the arguments ([`args`]), build the [`App`], call one function per
//! command and print what it found. Exit codes and [`Failure`] live in `app`.
//!
//! Invariant: this is glue. It parses arguments and prints; the parts are built in `app`, the
//! logic lives in `config`, `policy`, `rotation`, `standing` and `report`, and the daemon in
//! `daemon` (the one module of `daemon` used here is its `run`).

mod args;
mod assisted;
mod check_config;
mod deliveries;
mod history;
mod pause;
mod plan;
mod rotate;
mod status;

use std::time::Duration;

pub use crate::app::{exit, Failure};
use crate::app::{instance_id, App, Options};
use crate::notify::outbox::DeliveryPolicy;
pub use args::{Cli, Command, DeliveryTuning, LogFormat, EXIT_CODES, VERSION};

/// How long a command waits for its dependents' last deliveries before it exits (they are
/// recorded: what is cut short is delivered again by the daemon).
pub(crate) const DELIVERY_DRAIN: Duration = Duration::from_secs(60);

/// The delivery policy the command's `--delivery-*` flags describe.
fn delivery_policy(tuning: &DeliveryTuning) -> DeliveryPolicy {
    DeliveryPolicy {
        backoff: crate::rotation::state::Backoff {
            base: tuning.delivery_backoff,
            cap: tuning.delivery_backoff_max.max(tuning.delivery_backoff),
        },
        budget: tuning.delivery_budget,
    }
}

/// The [`App`] the global flags (and the command's delivery tuning) describe.
async fn app(cli: &Cli) -> Result<App, Failure> {
    App::build(&Options {
        config_path: &cli.config,
        events_file: cli.events_file.as_deref(),
        instance_id: cli.instance_id.as_deref(),
        delivery: cli
            .command
            .delivery()
            .map(delivery_policy)
            .unwrap_or_default(),
        reachable_now: !matches!(cli.command, Command::Run { .. }),
    })
    .await
}

/// Run the parsed command; returns the exit code.
pub async fn run(cli: Cli) -> Result<i32, Failure> {
    match &cli.command {
        Command::CheckConfig { file } => {
            check_config::check_config(file.as_deref().unwrap_or(&cli.config)).await
        }
        Command::Status { name, json, check } => {
            status::status(&app(&cli).await?, name.as_deref(), *json, *check).await
        }
        Command::Plan => plan::plan(&app(&cli).await?).await,
        Command::Rotate { name, wait, .. } => rotate::rotate(&app(&cli).await?, name, *wait).await,
        Command::Supply { name, .. } => assisted::supply(&app(&cli).await?, name).await,
        Command::ConfirmRevoked { name, .. } => {
            assisted::confirm_revoked(&app(&cli).await?, name).await
        }
        Command::Cancel { name, .. } => {
            let instance = instance_id(cli.instance_id.as_deref());
            assisted::cancel(&app(&cli).await?, name, &instance).await
        }
        Command::Pause { name } | Command::Resume { name } => {
            let pause = matches!(cli.command, Command::Pause { .. });
            let instance = instance_id(cli.instance_id.as_deref());
            pause::pause(&app(&cli).await?, name, pause, &instance).await
        }
        Command::History { name, json } => history::history(&app(&cli).await?, name, *json).await,
        Command::Rollback { name, .. } => rotate::rollback(&app(&cli).await?, name).await,
        Command::Deliveries {
            name, retry, json, ..
        } => {
            let app = app(&cli).await?;
            let cred = app.credential(name)?;
            deliveries::deliveries(&app, cred, retry.as_deref(), *json).await
        }
        Command::TestDependent { name, dependent } => {
            let app = app(&cli).await?;
            let cred = app.credential(name)?;
            deliveries::test_dependent(&app, cred, dependent).await
        }
        Command::Run {
            once,
            interval,
            attempt_backoff,
            failure_budget,
            ..
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
