//! The command line: subcommands, what each prints, and the exit codes.
//!
//! Invariant: this is glue. It parses arguments, builds the parts (config, Vault, engine,
//! providers) and calls them; the logic lives in `config`, `policy`, `rotation` and `report`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, Credential, ProcessEnvironment};
use crate::events::{EventSink, FanOut, JsonLinesSink, LogSink};
use crate::policy::{self, SecretFacts};
use crate::providers::{self, Mode, Provider};
use crate::report::{self, StatusRow};
use crate::rotation::state::Step;
use crate::rotation::{Engine, EngineError, EngineSettings, Outcome, RunResult, Wait};
use crate::vault::{resolve_login, Vault, VaultError};

/// Exit codes, also listed in `--help`.
pub mod exit {
    pub const OK: i32 = 0;
    /// `status --check` found an overdue, missing or unreadable credential.
    pub const CHECK_FAILED: i32 = 1;
    pub const CONFIG: i32 = 2;
    /// Vault could not be reached, refused the daemon, or answered an error.
    pub const VAULT: i32 = 3;
    /// A rotation did not complete (failed, rolled back, aborted, or needs attention).
    pub const ROTATION: i32 = 4;
    /// Another instance holds the credential's rotation lease.
    pub const BUSY: i32 = 5;
    pub const USAGE: i32 = 64;
}

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
        /// One pass over every credential, then exit (for cron or tests).
        #[arg(long)]
        once: bool,
        /// Longest sleep between two passes.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        interval: Duration,
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
}

/// The parts a command that talks to Vault needs.
struct App {
    config: Config,
    vault: Arc<Vault>,
    engine: Engine,
    http: reqwest::Client,
}

/// A failure with the exit code it maps to; the message is already fit to print.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<VaultError> for Failure {
    fn from(e: VaultError) -> Self {
        Failure::new(exit::VAULT, e.to_string())
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        let code = match e {
            EngineError::Vault(_) | EngineError::Corrupt { .. } => exit::VAULT,
            EngineError::Fenced { .. } => exit::BUSY,
            EngineError::Refused { .. } => exit::ROTATION,
        };
        Failure::new(code, e.to_string())
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, Failure> {
    config::load(path, &ProcessEnvironment).map_err(|errors| {
        Failure::new(
            exit::CONFIG,
            format!(
                "invalid configuration: {} error(s) in {}\n{errors}",
                errors.errors.len(),
                path.display()
            ),
        )
    })
}

fn instance_id(cli: &Cli) -> String {
    cli.instance_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "secret-rotator".into())
    })
}

async fn app(cli: &Cli) -> Result<App, Failure> {
    let config = load_config(&cli.config)?;
    let login = resolve_login(&config.vault.auth, &|k| std::env::var(k).ok())?;
    let token_login = matches!(login, crate::vault::Login::Token(_));
    let vault = Arc::new(Vault::connect(&config.vault, login).await?);
    if token_login {
        // A wrong or expired token is said so, not reported as a missing policy on each path.
        if let Err(e @ VaultError::Login { .. }) = vault.lookup_self().await {
            return Err(e.into());
        }
    }
    let mut sinks: Vec<Arc<dyn EventSink>> = vec![Arc::new(LogSink)];
    if let Some(path) = &cli.events_file {
        sinks.push(Arc::new(JsonLinesSink::new(path.clone())));
    }
    let engine = Engine {
        vault: vault.clone(),
        events: Arc::new(FanOut(sinks)),
        owner: crate::instance::owner_id(&instance_id(cli)),
        state_mount: config.vault.state_mount.clone(),
        state_prefix: config.vault.state_prefix.clone(),
        settings: EngineSettings::default(),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("secret-rotator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Failure::new(exit::CONFIG, format!("cannot build the HTTP client: {e}")))?;
    Ok(App {
        config,
        vault,
        engine,
        http,
    })
}

impl App {
    fn credential(&self, name: &str) -> Result<&Credential, Failure> {
        self.config.credential(name).ok_or_else(|| {
            let known: Vec<&str> = self
                .config
                .credentials
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            Failure::new(
                exit::USAGE,
                format!(
                    "no credential named {name:?} in the configuration (known: {})",
                    known.join(", ")
                ),
            )
        })
    }

    fn provider(&self, cred: &Credential) -> Result<Box<dyn Provider>, Failure> {
        providers::build(cred, self.vault.clone(), self.http.clone())
            .map_err(|e| Failure::new(exit::ROTATION, format!("{}: {e}", cred.name)))
    }

    /// The current secret's facts for the policy, and its version.
    async fn facts(
        &self,
        cred: &Credential,
    ) -> Result<
        (
            Option<SecretFacts>,
            Option<u64>,
            Option<crate::rotation::StateRecord>,
        ),
        EngineError,
    > {
        let meta = match self.vault.read_metadata(&cred.secret).await {
            Ok(m) => Some(m),
            Err(VaultError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let record = self.engine.record(&cred.name).await?;
        let current = meta.as_ref().and_then(|m| {
            m.current()
                .filter(|v| !v.deleted && !v.destroyed)
                .map(|v| (m.current_version, v.created_time))
        });
        let facts = current.map(|(version, created_time)| SecretFacts {
            created_time,
            // The expiry the provider gave the credential this daemon wrote at this version.
            expires_at: record
                .history
                .iter()
                .rev()
                .find(|h| h.version_after == Some(version))
                .and_then(|h| h.expires_at),
        });
        Ok((facts, current.map(|(v, _)| v), Some(record)))
    }

    async fn status_rows(&self) -> Vec<StatusRow> {
        let now = Utc::now();
        let mut rows = Vec::new();
        // A secret on a KV v1 (or any other) mount would read as missing: say what it is.
        let mut kinds = std::collections::HashMap::new();
        for cred in &self.config.credentials {
            if !kinds.contains_key(&cred.secret.mount) {
                let kind = self.vault.mount_kind(&cred.secret.mount).await;
                kinds.insert(cred.secret.mount.clone(), kind);
            }
            let wrong_mount = match &kinds[&cred.secret.mount] {
                Ok(k) if !k.is_kv2() => Some(format!(
                    "{}: the mount {}/ is {}; secret-rotator needs KV v2",
                    cred.secret,
                    cred.secret.mount,
                    k.describe()
                )),
                Err(VaultError::NotFound { .. }) => Some(format!(
                    "{}: no secrets engine is mounted at {}/",
                    cred.secret, cred.secret.mount
                )),
                _ => None,
            };
            if let Some(e) = wrong_mount {
                rows.push(report::error_row(cred, e));
                continue;
            }
            rows.push(match self.facts(cred).await {
                Ok((facts, version, record)) => {
                    report::status_row(cred, facts, version, record.as_ref(), now)
                }
                Err(e) => report::error_row(cred, e.to_string()),
            });
        }
        rows
    }
}

/// A stable jitter seed for a credential version: FNV-1a of the name and version.
pub fn jitter_seed(name: &str, version: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(version.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
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
            let rows = app.status_rows().await;
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
            let result = app
                .engine
                .drive(
                    cred,
                    provider.as_ref(),
                    Some("manual"),
                    if *wait { Wait::All } else { Wait::Retries },
                )
                .await?;
            Ok(print_result(&cred.name, &result))
        }
        Command::History { name, json } => {
            let app = app(&cli).await?;
            let cred = app.credential(name)?;
            let record = app.engine.record(&cred.name).await?;
            if *json {
                let value = serde_json::json!({
                    "credential": cred.name,
                    "in_flight": record.attempt.as_ref().map(|a| serde_json::json!({
                        "id": a.id, "phase": a.phase.as_str(), "trigger": a.trigger,
                        "started_at": a.started_at, "updated_at": a.updated_at,
                        "owner": a.owner, "lease_expires_at": a.lease_expires_at,
                        "version_before": a.version_before, "version_after": a.version_after,
                        "revoke_after": a.revoke_after, "marks": a.marks, "orphans": a.orphans,
                        "needs_attention": a.needs_attention, "last_error": a.last_error,
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
            }
            Ok(exit::OK)
        }
        Command::Rollback { name } => {
            let app = app(&cli).await?;
            let cred = app.credential(name)?;
            let provider = app.provider(cred)?;
            match app.engine.rollback(cred, provider.as_ref()).await? {
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
            daemon(app, *once, *interval).await
        }
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

/// Is the credential due now, and why? `None` when not due.
async fn due_trigger(
    app: &App,
    cred: &Credential,
) -> Result<(Option<&'static str>, chrono::DateTime<Utc>), EngineError> {
    let now = Utc::now();
    let (facts, version, _) = app.facts(cred).await?;
    match policy::next_due(
        facts.as_ref(),
        &cred.policy,
        now,
        jitter_seed(&cred.name, version.unwrap_or(0)),
    ) {
        Ok(due) if due.at <= now => Ok((
            Some(match due.reason {
                policy::DueReason::MaxAge => "max_age",
                policy::DueReason::Schedule => "schedule",
                policy::DueReason::Expiry => "expiry",
                policy::DueReason::Missing => "missing",
            }),
            due.at,
        )),
        Ok(due) => Ok((None, due.at)),
        Err(e) => {
            tracing::error!(credential = %cred.name, error = %e, "cannot compute when this credential is due");
            Ok((None, now + chrono::Duration::hours(1)))
        }
    }
}

async fn plan(app: &App) -> Result<i32, Failure> {
    let now = Utc::now();
    for cred in &app.config.credentials {
        let record = app.engine.record(&cred.name).await?;
        let provider = providers::build(cred, app.vault.clone(), app.http.clone());
        let (trigger, at) = due_trigger(app, cred).await?;
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

async fn daemon(app: App, once: bool, interval: Duration) -> Result<i32, Failure> {
    let keeper = {
        let vault = app.vault.clone();
        tokio::spawn(async move { vault.maintain_token().await })
    };
    tracing::info!(credentials = app.config.credentials.len(), owner = %app.engine.owner, "secret-rotator running");
    preflight_all(&app).await;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot watch SIGTERM: {e}")))?;
    let mut backoff = ErrorBackoff::default();
    let code = loop {
        let pass = pass(&app, &mut backoff);
        let (next, errors) = tokio::select! {
            n = pass => n,
            _ = term.recv() => break exit::OK,
            _ = tokio::signal::ctrl_c() => break exit::OK,
        };
        if once {
            // For cron and monitoring: a pass that could not handle a credential fails.
            break if errors > 0 { exit::VAULT } else { exit::OK };
        }
        // Never a hot loop: whatever the credentials say, at least a second between passes.
        let sleep = (next - Utc::now())
            .to_std()
            .unwrap_or_default()
            .min(interval)
            .max(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = term.recv() => break exit::OK,
            _ = tokio::signal::ctrl_c() => break exit::OK,
        }
    };
    tracing::info!(
        "shutting down; rotations in flight resume from their recorded phase on the next start"
    );
    keeper.abort();
    Ok(code)
}

/// At start-up, say at once what would stop a rotation later (wrong mount, missing
/// capabilities, a malformed secret); each attempt checks again before it mints.
async fn preflight_all(app: &App) {
    for cred in &app.config.credentials {
        let Ok(provider) = app.provider(cred) else {
            continue;
        };
        if provider.info().mode != Mode::Automatic {
            continue;
        }
        match app.engine.preflight(cred, provider.as_ref()).await {
            Ok(_) => {}
            Err(e @ EngineError::Refused { .. }) => {
                tracing::error!(credential = %cred.name, error = %e, "this credential cannot be rotated until this is fixed")
            }
            Err(e) => {
                tracing::warn!(credential = %cred.name, error = %e, "cannot check this credential at start-up")
            }
        }
    }
}

/// Per credential, in memory: errors the state record cannot hold (Vault unreachable, a record
/// that cannot be read or written) back off with capped exponential delays and jitter.
#[derive(Default)]
struct ErrorBackoff(std::collections::HashMap<String, (u32, chrono::DateTime<Utc>)>);

impl ErrorBackoff {
    const POLICY: crate::rotation::state::Backoff = crate::rotation::state::Backoff {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(300),
    };

    fn waiting_until(
        &self,
        name: &str,
        now: chrono::DateTime<Utc>,
    ) -> Option<chrono::DateTime<Utc>> {
        self.0.get(name).map(|e| e.1).filter(|t| *t > now)
    }

    fn failed(&mut self, name: &str, now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
        let n = self.0.get(name).map_or(1, |e| e.0 + 1);
        let at = now + Self::POLICY.delay(n, rand::random::<f64>());
        self.0.insert(name.to_string(), (n, at));
        at
    }

    fn succeeded(&mut self, name: &str) {
        self.0.remove(name);
    }
}

/// One pass over every credential; returns when the next one wants attention, and how many
/// credentials failed with an error the state record could not hold.
async fn pass(app: &App, backoff: &mut ErrorBackoff) -> (chrono::DateTime<Utc>, usize) {
    let mut next = Utc::now() + chrono::Duration::hours(1);
    let mut errors = 0;
    for cred in &app.config.credentials {
        let provider = match app.provider(cred) {
            Ok(p) if p.info().mode == Mode::Automatic => p,
            _ => continue,
        };
        if let Some(t) = backoff.waiting_until(&cred.name, Utc::now()) {
            next = next.min(t);
            continue;
        }
        let result = match due_trigger(app, cred).await {
            Ok((trigger, at)) => app
                .engine
                .drive(cred, provider.as_ref(), trigger, Wait::No)
                .await
                .map(|r| (r, at)),
            Err(e) => Err(e),
        };
        match result {
            Ok((r, due_at)) => {
                backoff.succeeded(&cred.name);
                match r {
                    RunResult::Waiting { until }
                    | RunResult::Busy { until, .. }
                    | RunResult::RetryAt { until, .. }
                    | RunResult::BackingOff { until } => next = next.min(until),
                    RunResult::Idle | RunResult::Finished(_) => next = next.min(due_at),
                    // Only an operator moves these on: they do not bring the next pass closer.
                    RunResult::Parked(_) | RunResult::NeedsAttention { .. } => {}
                }
            }
            Err(e) => {
                errors += 1;
                let at = backoff.failed(&cred.name, Utc::now());
                next = next.min(at);
                tracing::error!(credential = %cred.name, error = %e, retry_at = %at.to_rfc3339(), "rotation step failed; trying again later");
            }
        }
    }
    (next, errors)
}
