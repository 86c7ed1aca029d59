//! The command line's arguments: the global flags, the subcommands and their help. Nothing
//! else lives here, so that a man-page or completion generator can use these definitions alone.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// End an assisted rotation in flight: one waiting for a supply (nothing was written), or
    /// one waiting for the old credential to die (the committed version stays). Recorded and
    /// announced (`rotation.cancelled`); an automatic rotation in the middle of its steps is
    /// refused, naming the command that ends it.
    Cancel { name: String },
    /// Stop the daemon (and `rotate`) from starting or moving on a credential's rotation.
    Pause { name: String },
    /// Undo `pause`.
    Resume { name: String },
}
