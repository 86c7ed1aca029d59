//! The command line's arguments: the global flags, the subcommands and their help. Nothing
//! else lives here, so that the man-page and completion generator (`examples/gen-docs.rs`) can
//! use these definitions alone.
//!
//! Invariant: every flag and argument has a sentence of help, and a flag appears only on the
//! subcommands it changes: the daemon's tuning on `run`, the delivery tuning on the commands that
//! deliver events to dependents themselves.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `--version`: the crate's version and the git commit it was built from (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SECRET_ROTATOR_GIT_COMMIT"),
    ")"
);

/// The exit codes, as `--help` and the man pages' EXIT STATUS list them (`app::exit`).
pub const EXIT_CODES: [(i32, &str); 7] = [
    (0, "success"),
    (
        1,
        "status --check: a credential is overdue, missing, invalid or needs attention (parked)",
    ),
    (
        2,
        "the configuration is invalid (every error is printed with file:line:column and key)",
    ),
    (
        3,
        "Vault/OpenBao unreachable, sealed, or refused a request (the path and status are printed); \
         also `status` when any credential cannot be read, and `run --once` when one could not be \
         handled",
    ),
    (
        4,
        "a rotation did not complete: failed, rolled back, aborted, refused (a supply that is not \
         new or that the store rejects), or needs attention",
    ),
    (5, "another instance holds the credential's rotation lease"),
    (64, "bad command-line usage"),
];

const AFTER_HELP: &str = "\
Exit codes:
  0   success
  1   status --check: a credential is overdue, missing, invalid or needs attention (parked)
  2   the configuration is invalid (every error is printed with file:line:column and key)
  3   Vault/OpenBao unreachable, sealed, or refused a request (the path and status are printed);
      also `status` when any credential cannot be read
  4   a rotation did not complete: failed, rolled back, aborted, refused, or needs attention
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
  secret-rotator run                       # the daemon (systemd service)

Every subcommand has its own help: secret-rotator help SUBCOMMAND, or man secret-rotator-SUBCOMMAND.";

const STATUS_AFTER_HELP: &str = "\
--json prints a JSON array with one object per configured credential:
  name, provider, path                       as configured
  version, created_time                      the current KV v2 version and when it was written
  age_seconds, max_age_seconds, expires_at   its age, the configured max age, the expiry if known
  state                                      ok, due, overdue, missing, invalid or error
  due_in_seconds / overdue_by_seconds        when the next rotation is due, or how late it is
  rotation                                   the attempt in flight (phase, times), or null
  needs_attention                            why an operator must act (parked, gave up), or null
  next_attempt_at                            after a failed attempt, when the next may start
  error                                      why the credential could not be read, or null
  dependents                                 each dependent: type, name, delivery state
  paused, awaiting_supply, drift, invalid    present only when they apply
  steps, scopes                              assisted kinds: what a person does next
Secrets never appear in it: only paths, versions and times.

Exit status: 0 when every credential could be read (and, with --check, all is well); 1 when
--check finds one overdue, missing, invalid, drifted or needing attention; 3 when one could not
be read from Vault (its `error` says why).";

const SUPPLY_AFTER_HELP: &str = "\
Standard input, when it is not a terminal: one JSON object, at most 64 KiB.
  store-level API account:        {\"client_id\", \"access_token\", \"client_secret\"?, \"account_name\"?}
  legacy API account, user token: {\"username\"?, \"token\", \"api_path\"?}
  (username and api_path left out are the configured ones; the output says so)
On a terminal the fields are asked for one by one instead: username, client_id and api_path echo
and offer the configured value (Enter keeps it); token, access_token and client_secret do not
echo. Ctrl-C or Ctrl-D at any prompt ends the command with nothing written.

Before anything is written the credential must be new (its token differs from the current one's;
the one committed just before is a no-op that exits 0), a value may hold no control character,
and the store must accept it (a probe, and every configured required scope or permission).

Exit status: 0 committed (or already committed); 4 refused, nothing written (the reason and the
command that does work are printed); 3 Vault error; 5 another instance holds the lease.";

/// secret-rotator keeps API credentials stored in Vault/OpenBao fresh: it tracks each secret's age
/// from KV v2 metadata, rotates it when due, verifies the new credential with its provider,
/// announces it, revokes the old one after a grace period and checks that it is really dead.
#[derive(Debug, Parser)]
#[command(name = "secret-rotator", version = VERSION, after_help = AFTER_HELP)]
pub struct Cli {
    /// Configuration file (TOML); `config/example.toml` documents every option.
    #[arg(
        long,
        global = true,
        env = "SECRET_ROTATOR_CONFIG",
        default_value = "/etc/secret-rotator/config.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,

    /// Log format on stderr: `human` lines, or one JSON object per line for a log collector.
    #[arg(long, global = true, env = "SECRET_ROTATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Also append every event (rotated, revoked, failed) as a JSON line to this file (0600).
    #[arg(
        long,
        global = true,
        env = "SECRET_ROTATOR_EVENTS_FILE",
        value_name = "FILE"
    )]
    pub events_file: Option<PathBuf>,

    /// This instance's name in rotation leases (default: the host name). A process restarted on
    /// the same machine resumes its attempts at once; another instance takes an attempt over only
    /// after its lease expires.
    #[arg(
        long,
        global = true,
        env = "SECRET_ROTATOR_INSTANCE_ID",
        value_name = "NAME"
    )]
    pub instance_id: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// How the events of one command (or the daemon) are delivered to the credential's dependents.
/// Only the commands that deliver events themselves take these flags.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Delivery to dependents")]
pub struct DeliveryTuning {
    /// The first wait before a failed delivery to a dependent is tried again; it doubles (with
    /// jitter) up to --delivery-backoff-max.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", value_name = "DURATION")]
    pub delivery_backoff: Duration,

    /// The longest wait between two tries of a failing dependent (also the interval at which
    /// a dependent that needs attention is still tried).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m", value_name = "DURATION")]
    pub delivery_backoff_max: Duration,

    /// Failed deliveries in a row before a dependent needs attention (an event to the other
    /// dependents, a line in `status`, `status --check` fails).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..), value_name = "COUNT")]
    pub delivery_budget: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: rotate credentials when due, resume what is in flight, until SIGTERM.
    ///
    /// Start-up reads every credential and resumes the rotations in flight, then (under systemd)
    /// sends READY=1. SIGHUP reads the configuration again; an invalid one is refused and the
    /// running one stays. SIGTERM takes no new work and exits within 30 s.
    Run {
        /// One pass: read every credential, drive what is due or in flight once, then exit
        /// (for cron or tests).
        #[arg(long)]
        once: bool,
        /// How often each credential's metadata is read again while nothing is due (the
        /// reconcile interval); default `[daemon] reconcile_interval` (10m).
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        interval: Option<Duration>,
        /// After an attempt that did not rotate (rejected, rolled back), the next waits this
        /// long, doubling with each failure in a row (with jitter, up to 6h).
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        attempt_backoff: Duration,
        /// Attempts in a row that may fail before the credential is parked: then it is not
        /// rotated on its own until an operator runs `rotate NAME` (status shows why).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..), value_name = "COUNT")]
        failure_budget: u32,
        #[command(flatten)]
        delivery: DeliveryTuning,
    },
    /// Show every credential's version, age and due time, read from Vault's KV v2 metadata.
    #[command(after_help = STATUS_AFTER_HELP)]
    Status {
        /// Show only this credential (`[[credentials]] name`); all of them when omitted.
        name: Option<String>,
        /// Print a JSON array, one object per credential, instead of the table (fields below).
        #[arg(long)]
        json: bool,
        /// Exit 1 when any credential is overdue, missing, invalid or needs attention (for
        /// monitoring).
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
    /// Rotate a credential now (or resume its rotation in flight); also unparks it.
    Rotate {
        /// The credential's name (`[[credentials]] name` in the configuration).
        name: String,
        /// Also wait out the grace period, revoke the old credential and check it is rejected.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        delivery: DeliveryTuning,
    },
    /// Past and current rotation attempts of a credential: phases, times, versions, outcome.
    History {
        /// The credential's name (`[[credentials]] name` in the configuration).
        name: String,
        /// Print JSON: `credential`, `in_flight` (the attempt in flight or null), `attempts`
        /// (the latest, newest last) and `dependents`.
        #[arg(long)]
        json: bool,
    },
    /// Re-promote the previous credential while it is still valid (during the grace period).
    Rollback {
        /// The credential's name (`[[credentials]] name` in the configuration).
        name: String,
        #[command(flatten)]
        delivery: DeliveryTuning,
    },
    /// What a credential's dependents have received.
    ///
    /// Per dependent: the last event delivered, the events still waiting with the next try, or
    /// the error it is failing with.
    Deliveries {
        /// The credential's name (`[[credentials]] name` in the configuration).
        name: String,
        /// Try this dependent again now (after it needed attention, or while it backs off).
        #[arg(long, value_name = "DEPENDENT")]
        retry: Option<String>,
        /// Print JSON: `credential`, `dependents` (one row each), `events` and `notices` kept.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        delivery: DeliveryTuning,
    },
    /// Send a signed `ping` event to one dependent of a credential and say how it answered
    /// (a `file` dependent is written with the current secret and runs its `exec`).
    TestDependent {
        /// The credential's name (`[[credentials]] name` in the configuration).
        name: String,
        /// The dependent's name (`[[credentials.dependents]] name`).
        dependent: String,
    },
    /// Hand over an assisted credential regenerated in the control panel.
    ///
    /// Its fields come as a JSON object on stdin, or typed at a prompt that does not echo. It is
    /// verified with the store (scopes included) before anything is written; a rejected one
    /// writes nothing (exit 4).
    #[command(after_help = SUPPLY_AFTER_HELP)]
    Supply {
        /// The credential's name (`[[credentials]] name` in the configuration).
        name: String,
        #[command(flatten)]
        delivery: DeliveryTuning,
    },
    /// Say that the old store-level account is deleted: checked with the store (it must reject
    /// the old token), then `credential.revoked` and the rotation ends.
    ConfirmRevoked {
        /// The credential's name (`[[credentials]] name` in the configuration).
        name: String,
        #[command(flatten)]
        delivery: DeliveryTuning,
    },
    /// End an assisted rotation in flight where that is safe.
    ///
    /// One waiting for a supply (nothing was written), or
    /// one waiting for the old credential to die (the committed version stays). Recorded and
    /// announced (`rotation.cancelled`); an automatic rotation in the middle of its steps is
    /// refused, naming the command that ends it.
    Cancel {
        /// The credential's name (`[[credentials]] name` in the configuration).
        name: String,
        #[command(flatten)]
        delivery: DeliveryTuning,
    },
    /// Stop the daemon (and `rotate`) from starting or moving on a credential's rotation.
    Pause {
        /// The credential's name (`[[credentials]] name` in the configuration).
        name: String,
    },
    /// Undo `pause`: the credential's rotation starts and moves on again.
    Resume {
        /// The credential's name (`[[credentials]] name` in the configuration).
        name: String,
    },
}

impl Command {
    /// The delivery tuning this command was given; the defaults for one that delivers nothing.
    pub fn delivery(&self) -> Option<&DeliveryTuning> {
        match self {
            Command::Run { delivery, .. }
            | Command::Rotate { delivery, .. }
            | Command::Rollback { delivery, .. }
            | Command::Deliveries { delivery, .. }
            | Command::Supply { delivery, .. }
            | Command::ConfirmRevoked { delivery, .. }
            | Command::Cancel { delivery, .. } => Some(delivery),
            Command::Status { .. }
            | Command::CheckConfig { .. }
            | Command::Plan
            | Command::History { .. }
            | Command::TestDependent { .. }
            | Command::Pause { .. }
            | Command::Resume { .. } => None,
        }
    }
}
