//! The assembled context every command and the daemon work with: the configuration, the Vault
//! client, the engine, the deliverer and the HTTP client, built in one place ([`App::build`]) and
//! rebuilt from a new configuration on reload ([`App::rebuilt`]). Also the exit codes and
//! [`Failure`], the error every command returns.
//!
//! Invariant: `cli` and `daemon` both build on this module and never on each other (only `cli`
//! calls `daemon::run`); `scripts/check-module-cycles.sh` keeps it so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{self, Config, Credential, ProcessEnvironment};
use crate::events::{EventSink, FanOut, JsonLinesSink, LogSink};
use crate::notify::deliver::{Deliverer, Observer, Wakeup};
use crate::notify::outbox::DeliveryPolicy;
use crate::providers::{self, Provider};
use crate::records::RecordStore;
use crate::rotation::{Engine, EngineError, EngineSettings};
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

/// A failure with the exit code it maps to; the message is already fit to print.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Failure {
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

/// The parts a command that talks to Vault needs.
pub(crate) struct App {
    /// Where the configuration was read from (the daemon reads it again on SIGHUP).
    pub(crate) config_path: PathBuf,
    pub(crate) config: Config,
    pub(crate) vault: Arc<Vault>,
    pub(crate) engine: Engine,
    pub(crate) deliverer: Arc<Deliverer>,
    pub(crate) http: crate::egress::Client,
    /// What discovering the credential sets found wrong (a set matching nothing, a path whose
    /// segment is not valid for its use), each naming the set and the path.
    pub(crate) notes: Vec<String>,
}

/// What the command line decides about the [`App`] (its global flags).
pub(crate) struct Options<'a> {
    pub(crate) config_path: &'a Path,
    /// `--events-file`: every event also appended here as a JSON line.
    pub(crate) events_file: Option<&'a Path>,
    /// `--instance-id`; the host name when `None`.
    pub(crate) instance_id: Option<&'a str>,
    pub(crate) delivery: DeliveryPolicy,
    /// A command that ends when Vault does not answer now (every command but `run`, which waits
    /// for Vault): see [`connect_vault`].
    pub(crate) reachable_now: bool,
}

/// What an [`App`] keeps across a reload: who it is, where its events go, how it rotates and
/// delivers, and its HTTP client. Everything else is built from the configuration.
struct Lasting {
    owner: String,
    events: Arc<dyn EventSink>,
    settings: EngineSettings,
    wakeup: Wakeup,
    delivery: DeliveryPolicy,
    observer: Option<Observer>,
    http: crate::egress::Client,
}

impl App {
    /// Read the configuration, log in to Vault and assemble the parts.
    pub(crate) async fn build(options: &Options<'_>) -> Result<App, Failure> {
        let mut config = load_config(options.config_path)?;
        let vault = connect_vault(&config, options.reachable_now).await?;
        // A command sees the sets' members now; the daemon finds them in its loop, and again
        // every `discovery_interval`.
        let notes = if options.reachable_now {
            crate::discovery::expand(&vault, &mut config).await?
        } else {
            Vec::new()
        };
        let mut sinks: Vec<Arc<dyn EventSink>> = vec![Arc::new(LogSink)];
        if let Some(path) = options.events_file {
            sinks.push(Arc::new(JsonLinesSink::new(path.to_path_buf())));
        }
        // The providers' client: the egress policy's defaults (10 s connect, 30 s read and total).
        let http = crate::egress::builder()
            .build()
            .map_err(|e| Failure::new(exit::CONFIG, e.to_string()))?;
        let lasting = Lasting {
            owner: crate::instance::owner_id(&instance_id(options.instance_id)),
            events: Arc::new(FanOut(sinks)),
            settings: EngineSettings::default(),
            wakeup: Wakeup::default(),
            delivery: options.delivery,
            observer: None,
            http,
        };
        let mut app = App::assemble(options.config_path.to_path_buf(), config, vault, lasting);
        app.notes = notes;
        Ok(app)
    }

    /// This app with a new configuration and the Vault client logged in for it (a reload):
    /// identity, event sinks, settings, wake-ups, delivery policy and HTTP client are kept.
    pub(crate) fn rebuilt(&self, config: Config, vault: Arc<Vault>) -> App {
        let lasting = Lasting {
            owner: self.engine.owner.clone(),
            events: self.engine.events.clone(),
            settings: self.engine.settings.clone(),
            wakeup: self.engine.wakeup.clone(),
            delivery: self.deliverer.policy,
            observer: self.deliverer.observer.clone(),
            http: self.http.clone(),
        };
        App::assemble(self.config_path.clone(), config, vault, lasting)
    }

    /// The one place the engine and the deliverer are put together.
    fn assemble(config_path: PathBuf, config: Config, vault: Arc<Vault>, l: Lasting) -> App {
        let records = RecordStore::new(
            vault.clone(),
            &config.vault.state_mount,
            &config.vault.state_prefix,
        );
        let mut deliverer = Deliverer::new(
            vault.clone(),
            records.clone(),
            &l.owner,
            l.delivery,
            l.wakeup.clone(),
        );
        if let Some(observer) = l.observer {
            deliverer = deliverer.observed(observer);
        }
        let deliverer = Arc::new(deliverer);
        let engine = Engine::new(vault.clone(), records, l.events, &l.owner)
            .with_settings(l.settings)
            .with_wakeup(l.wakeup)
            .with_deliverer(deliverer.clone());
        App {
            config_path,
            config,
            vault,
            engine,
            deliverer,
            http: l.http,
            notes: Vec::new(),
        }
    }

    /// The named credential, or a usage error that lists the known names.
    pub(crate) fn credential(&self, name: &str) -> Result<&Credential, Failure> {
        self.config.credential(name).ok_or_else(|| {
            // The credentials written out; a set's members are many, and named by its name.
            let mut known: Vec<String> = self
                .config
                .credentials
                .iter()
                .filter(|c| c.set_name().is_none())
                .map(|c| c.name.clone())
                .collect();
            for set in &self.config.credential_sets {
                known.push(format!("{}/... (credential set {})", set.name, set.shown()));
            }
            Failure::new(
                exit::USAGE,
                format!(
                    "no credential named {name:?} in the configuration (known: {})",
                    known.join(", ")
                ),
            )
        })
    }

    pub(crate) fn provider(&self, cred: &Credential) -> Result<Box<dyn Provider>, Failure> {
        providers::build(cred, self.vault.clone(), self.http.clone())
            .map_err(|e| Failure::new(exit::ROTATION, format!("{}: {e}", cred.name)))
    }
}

pub(crate) fn load_config(path: &Path) -> Result<Config, Failure> {
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

/// This instance's name in leases: `--instance-id`, else the host name.
pub(crate) fn instance_id(given: Option<&str>) -> String {
    given.map(str::to_string).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "secret-rotator".into())
    })
}

/// Log in to Vault as the configuration says. Nothing is written. With `reachable_now`, a Vault
/// that does not answer within `request_timeout` ends the command at once, rather than after one
/// timeout per request.
pub(crate) async fn connect_vault(
    config: &Config,
    reachable_now: bool,
) -> Result<Arc<Vault>, Failure> {
    let login = resolve_login(&config.vault.auth, &|k| std::env::var(k).ok())?;
    let token_login = matches!(login, crate::vault::Login::Token(_));
    let vault = Arc::new(
        Vault::connect(&config.vault, login)
            .await
            .map_err(|e| unreachable(config, e))?,
    );
    if token_login {
        // A wrong or expired token is said so, not reported as a missing policy on each path.
        match vault.lookup_self().await {
            Err(e @ VaultError::Login { .. }) => return Err(e.into()),
            Err(e @ (VaultError::Unavailable { .. } | VaultError::Sealed { .. }))
                if reachable_now =>
            {
                return Err(unreachable(config, e))
            }
            _ => {}
        }
    }
    Ok(vault)
}

/// A Vault that cannot serve a command now, said without "retrying later" (a command does not).
fn unreachable(config: &Config, e: VaultError) -> Failure {
    let message = match e {
        VaultError::Unavailable { address, reason } => format!(
            "cannot reach Vault at {address} (request_timeout {}): {reason}; nothing was done",
            crate::human::duration(config.vault.request_timeout)
        ),
        VaultError::Sealed { address } => {
            format!("Vault at {address} is sealed; nothing was done")
        }
        other => other.to_string(),
    };
    Failure::new(exit::VAULT, message)
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
