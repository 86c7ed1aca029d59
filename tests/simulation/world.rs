//! The simulated world: Vault (the in-memory KV v2 store behind a gate per instance), the
//! provider (mints, verifies and revokes tokens, keeping every token it ever minted), and what
//! actually happened (the truth the invariants are checked against).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::time::Instant;

use secret_rotator::config::{Credential, KvPath};
use secret_rotator::providers::{MintRequest, Minted, Mode, Provider, ProviderError, ProviderInfo};
use secret_rotator::records::memory::MemoryKv;
use secret_rotator::records::SecretStore;
use secret_rotator::rotation::state::{json_size, MAX_RECORD_BYTES, MAX_RECORD_STRINGS};
use secret_rotator::rotation::{Attempt, StateRecord};
use secret_rotator::secret::SecretFields;
use secret_rotator::vault::{MountKind, VaultError};

use crate::sched::{Op, Sched, Task, Verdict};

/// A token the provider minted.
#[derive(Debug, Clone)]
pub struct Token {
    pub token: String,
    /// The attempt it was minted for (`None`: the credential the world began with).
    pub attempt: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

/// What happened, as the invariants see it.
#[derive(Debug, Default)]
pub struct Truth {
    pub tokens: Vec<Token>,
    /// The secret's versions written by the engine: version -> token.
    pub secret_versions: BTreeMap<u64, String>,
    /// Attempt ids seen in written state records, in order of first sight.
    pub attempts: Vec<String>,
    /// Versions of the state record written: version, failures in a row, attempt in flight.
    pub records: Vec<(u64, u64, Option<Attempt>)>,
    /// Broken invariants found while the schedule ran (a revocation of the current credential).
    pub violations: Vec<String>,
    /// The secret's version each instance found the credential due at, for the drive it is in
    /// (absent outside a drive begun as due).
    pub due_seen: BTreeMap<Task, Option<u64>>,
}

pub struct World {
    pub sched: Arc<Sched>,
    pub kv: Arc<MemoryKv>,
    pub cred: Credential,
    pub state_path: KvPath,
    pub truth: Mutex<Truth>,
    /// The group's member records and views (schedules with member churn).
    pub group: crate::group::Group,
    /// Once the faults stopped and the credential settled: an operator's `rotate`, asked
    /// (1), begun (2).
    pub last_rotation: std::sync::atomic::AtomicU8,
}

impl World {
    /// `task`'s call `op` waits at its gate for the scheduler's verdict.
    async fn gate(&self, task: Task, op: Op) -> Verdict {
        self.sched.gate(task, op, Instant::now()).await
    }

    /// A slow verdict: `task`'s reply waits at its gate for that long.
    async fn reply(&self, task: Task, verdict: Verdict) {
        if let Verdict::Slow(d) = verdict {
            self.sched.gate(task, Op::Reply, Instant::now() + d).await;
        }
    }

    pub fn truth(&self) -> std::sync::MutexGuard<'_, Truth> {
        self.truth.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token the secret holds now.
    pub fn current_token(&self) -> Option<String> {
        let v = self.kv.get(&self.cred.secret)?;
        v.get("token").and_then(Value::as_str).map(str::to_string)
    }

    /// The state record now (as an operator's `kv get` shows it).
    pub fn record(&self) -> Option<StateRecord> {
        let v = self.kv.get(&self.state_path)?;
        serde_json::from_value(v).ok()
    }

    /// The attempt in flight now (no history parsed).
    pub fn attempt(&self) -> Option<Attempt> {
        let mut v = self.kv.get(&self.state_path)?;
        serde_json::from_value(v.get_mut("attempt")?.take()).ok()
    }

    /// No attempt in flight.
    pub fn idle(&self) -> bool {
        self.kv
            .get(&self.state_path)
            .is_none_or(|v| v.get("attempt").is_none_or(Value::is_null))
    }

    /// A write by `task` landed: note what it wrote.
    fn landed(&self, task: Task, kv: &KvPath, data: &Value, version: u64) {
        let mut truth = self.truth();
        if *kv == self.cred.secret {
            let token = data
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            truth.secret_versions.insert(version, token);
        } else if *kv == self.state_path {
            let (strings, bytes) = json_size(data);
            if strings + 3 > MAX_RECORD_STRINGS || bytes + 64 > MAX_RECORD_BYTES {
                truth.violations.push(format!(
                    "state record version {version} has {strings} strings and {bytes} bytes"
                ));
            }
            let failures = data.get("failures").and_then(Value::as_u64).unwrap_or(0);
            let attempt = data.get("attempt").cloned().unwrap_or(Value::Null);
            match serde_json::from_value::<Option<Attempt>>(attempt) {
                Ok(a) => {
                    if let Some(a) = &a {
                        if !truth.attempts.contains(&a.id) {
                            truth.attempts.push(a.id.clone());
                            // Begun as due: from the version found due, never from a later one
                            // (another instance's rotation, a handover's), so no version is
                            // rotated twice.
                            if let Some(seen) = truth.due_seen.get(&task).copied() {
                                if seen != Some(a.version_before) {
                                    truth.violations.push(format!(
                                        "i{task} began attempt {} as due from version {}, found due at version {seen:?}",
                                        short(&a.id),
                                        a.version_before
                                    ));
                                }
                            }
                        }
                    }
                    truth.records.push((version, failures, a));
                }
                Err(e) => truth.violations.push(format!(
                    "state record version {version} does not parse: {e}"
                )),
            }
        }
    }

    fn token_mut<'a>(truth: &'a mut Truth, token: &str) -> Option<&'a mut Token> {
        truth.tokens.iter_mut().find(|t| t.token == token)
    }
}

fn unavailable(kv: &KvPath) -> VaultError {
    VaultError::Unavailable {
        address: format!("sim ({kv})"),
        reason: "503".into(),
    }
}

fn lost(kv: &KvPath, what: &str) -> VaultError {
    VaultError::OutcomeUnknown {
        path: kv.to_string(),
        reason: what.into(),
    }
}

/// One instance's way to Vault: every call waits at its gate.
pub struct SimKv {
    pub world: Arc<World>,
    pub task: Task,
}

impl SimKv {
    async fn gate(&self, op: Op) -> Verdict {
        self.world.gate(self.task, op).await
    }

    async fn reply(&self, verdict: Verdict) {
        self.world.reply(self.task, verdict).await
    }
}

#[async_trait]
impl SecretStore for SimKv {
    async fn read(&self, kv: &KvPath) -> Result<Option<(Value, u64)>, VaultError> {
        if self.gate(Op::Read).await != Verdict::Go {
            return Err(unavailable(kv));
        }
        self.world.kv.read(kv).await
    }

    async fn read_for_cas(&self, kv: &KvPath) -> Result<(Option<Value>, u64), VaultError> {
        if self.gate(Op::Read).await != Verdict::Go {
            return Err(unavailable(kv));
        }
        self.world.kv.read_for_cas(kv).await
    }

    async fn write_cas(
        &self,
        kv: &KvPath,
        data: &Value,
        expected: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), VaultError> {
        let verdict = self.gate(Op::Write).await;
        match verdict {
            Verdict::Refused => return Err(unavailable(kv)),
            Verdict::LostBefore => return Err(lost(kv, "502 from a gateway, not forwarded")),
            _ => {}
        }
        let r = self.world.kv.write_cas(kv, data, expected).await;
        if let Ok((version, _)) = &r {
            self.world.landed(self.task, kv, data, *version);
        }
        self.reply(verdict).await;
        match verdict {
            Verdict::LostAfter => Err(lost(kv, "502 from a gateway after the write")),
            _ => r,
        }
    }

    async fn set_max_versions(&self, kv: &KvPath, n: u32) -> Result<(), VaultError> {
        if self.gate(Op::Meta).await != Verdict::Go {
            return Err(unavailable(kv));
        }
        self.world.kv.set_max_versions(kv, n).await
    }

    async fn destroy_versions(&self, kv: &KvPath, versions: &[u64]) -> Result<(), VaultError> {
        if self.gate(Op::Meta).await != Verdict::Go {
            return Err(unavailable(kv));
        }
        self.world.kv.destroy_versions(kv, versions).await
    }

    async fn mount_kind(&self, mount: &str) -> Result<MountKind, VaultError> {
        if self.gate(Op::Meta).await != Verdict::Go {
            return Err(VaultError::Unavailable {
                address: "sim".into(),
                reason: "503".into(),
            });
        }
        self.world.kv.mount_kind(mount).await
    }

    async fn capabilities_self(
        &self,
        paths: &[String],
    ) -> Result<HashMap<String, Vec<String>>, VaultError> {
        if self.gate(Op::Meta).await != Verdict::Go {
            return Err(VaultError::Unavailable {
                address: "sim".into(),
                reason: "503".into(),
            });
        }
        self.world.kv.capabilities_self(paths).await
    }
}

/// One instance's way to the provider: tokens `t1`, `t2`... that expire when asked; revoked
/// and expired tokens are rejected.
pub struct SimProvider {
    pub world: Arc<World>,
    pub task: Task,
}

impl SimProvider {
    async fn gate(&self, op: Op) -> Verdict {
        self.world.gate(self.task, op).await
    }

    async fn reply(&self, verdict: Verdict) {
        self.world.reply(self.task, verdict).await
    }
}

fn transient(what: &str) -> ProviderError {
    ProviderError::Transient {
        reason: format!("{what}: 429"),
        retry_after: None,
    }
}

fn unknown(what: &str) -> ProviderError {
    ProviderError::UnknownOutcome {
        reason: format!("{what}: 502 from a gateway"),
    }
}

fn token_of(secret: &SecretFields) -> String {
    secret.expose("token").unwrap_or_default().to_string()
}

#[async_trait]
impl Provider for SimProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            mode: Mode::Automatic,
            credentials_expire: true,
            async_revocation: false,
        }
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["token"]
    }

    async fn mint(&self, req: &MintRequest) -> Result<Minted, ProviderError> {
        let verdict = self.gate(Op::Mint).await;
        match verdict {
            Verdict::Refused => return Err(transient("mint")),
            Verdict::LostBefore => return Err(unknown("mint")),
            Verdict::Rejected => {
                return Err(ProviderError::Rejected {
                    reason: "mint: 403".into(),
                })
            }
            _ => {}
        }
        let token = {
            let mut truth = self.world.truth();
            let token = format!("t{}", truth.tokens.len());
            truth.tokens.push(Token {
                token: token.clone(),
                attempt: Some(req.attempt_id.clone()),
                expires_at: Some(req.expires_at),
                revoked: false,
            });
            token
        };
        self.world.sched.trace(format!(
            "i{} minted {token} for {}",
            self.task,
            short(&req.attempt_id)
        ));
        self.reply(verdict).await;
        if verdict == Verdict::LostAfter {
            return Err(unknown("mint"));
        }
        Ok(Minted {
            secret: SecretFields::new().with("token", token),
            expires_at: Some(req.expires_at),
        })
    }

    async fn verify(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let verdict = self.gate(Op::Verify).await;
        match verdict {
            Verdict::Refused => return Err(transient("verify")),
            Verdict::Rejected => {
                return Err(ProviderError::Rejected {
                    reason: "verify: 401 (injected)".into(),
                })
            }
            _ => {}
        }
        let token = token_of(secret);
        let now = self.world.sched.wall();
        let alive = {
            let truth = self.world.truth();
            truth
                .tokens
                .iter()
                .find(|t| t.token == token)
                .is_some_and(|t| !t.revoked && t.expires_at.is_none_or(|e| now < e))
        };
        self.reply(verdict).await;
        if alive {
            Ok(())
        } else {
            Err(ProviderError::Rejected {
                reason: "verify: 401".into(),
            })
        }
    }

    async fn revoke(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let verdict = self.gate(Op::Revoke).await;
        match verdict {
            Verdict::Refused => return Err(transient("revoke")),
            Verdict::LostBefore => return Err(unknown("revoke")),
            Verdict::Rejected => {
                return Err(ProviderError::Rejected {
                    reason: "revoke: 403".into(),
                })
            }
            _ => {}
        }
        let token = token_of(secret);
        let current = self.world.current_token();
        {
            let mut truth = self.world.truth();
            if current.as_deref() == Some(token.as_str()) {
                let at = self.world.sched.wall();
                truth.violations.push(format!(
                    "i{} revoked {token}, the current credential, at {at}",
                    self.task
                ));
            }
            if let Some(t) = World::token_mut(&mut truth, &token) {
                t.revoked = true;
            }
        }
        self.world
            .sched
            .trace(format!("i{} revoked {token}", self.task));
        self.reply(verdict).await;
        if verdict == Verdict::LostAfter {
            return Err(unknown("revoke"));
        }
        Ok(())
    }
}

pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}
