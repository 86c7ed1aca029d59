//! Preflight: before anything is minted, the mounts are KV v2, the token may use the paths, and
//! the current secret holds what the provider needs.

use std::time::Duration;

use crate::config::{Credential, KvPath};
use crate::providers::Provider;
use crate::secret::SecretFields;
use crate::vault::{MountKind, VaultError};

use super::{Engine, EngineError};

/// How long preflight believes a mount it found KV v2, or capabilities it found sufficient.
pub const PREFLIGHT_TTL: Duration = Duration::from_secs(300);

/// What preflight found good lately (a mount is KV v2, the token may use a path), so that a
/// busy daemon does not ask Vault the same three questions before every rotation. Only good
/// news is kept, for [`PREFLIGHT_TTL`]: a mount or policy that changed for the worse is found
/// by the next check after that, or by the write it makes fail (a 403, a failed
/// check-and-set), which stops the attempt with the error recorded.
#[derive(Debug, Default)]
pub struct Preflighted {
    found: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
}

impl Preflighted {
    pub(super) fn fresh(&self, key: &str) -> bool {
        let found = self.found.lock().expect("preflight cache lock poisoned");
        found
            .get(key)
            .is_some_and(|at| at.elapsed() < PREFLIGHT_TTL)
    }

    pub(super) fn note(&self, key: String) {
        let mut found = self.found.lock().expect("preflight cache lock poisoned");
        found.insert(key, tokio::time::Instant::now());
    }
}

impl Engine {
    /// The secret's version as check-and-set sees it, and its data when it can be read.
    pub(super) async fn read_current(
        &self,
        kv: &KvPath,
    ) -> Result<(u64, Option<SecretFields>), EngineError> {
        let (current, version) = self.secrets.read_for_cas(kv).await?;
        let current = match current {
            None => None,
            Some(value) => {
                Some(
                    SecretFields::from_json(&value).ok_or_else(|| VaultError::Other {
                        path: kv.to_string(),
                        status: None,
                        message: "secret data is not a JSON object".into(),
                    })?,
                )
            }
        };
        Ok((version, current))
    }

    /// Before anything is minted: the secret's mount and the state mount are KV v2, the token
    /// may read and write both paths, and the current secret holds what the provider needs.
    /// `Err(Refused)` names the path and what is missing. Returns the secret as
    /// [`Engine::read_current`] does.
    ///
    /// The same checks in parts ([`Engine::mount_of`], [`Engine::check_mount`],
    /// [`Engine::preflight_capability_paths`], [`Engine::check_capabilities`],
    /// [`Engine::preflight_secret`]) let the daemon's start-up check of many credentials ask
    /// Vault once per mount and once per batch of paths.
    pub async fn preflight(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
    ) -> Result<(u64, Option<SecretFields>), EngineError> {
        let state = self.state_path(&cred.name);
        for kv in [&cred.secret, &state] {
            let key = format!("mount:{}", kv.mount);
            if self.preflighted.fresh(&key) {
                continue;
            }
            let kind = self.mount_of(&kv.mount).await?;
            Self::check_mount(cred, kv, kind.as_ref())?;
            self.preflighted.note(key);
        }
        let paths: Vec<String> = self
            .preflight_capability_paths(cred)
            .into_iter()
            .map(|(_, path, _)| path)
            .collect();
        let key = format!("capabilities:{}", paths.join(" "));
        if !self.preflighted.fresh(&key) {
            let caps = self.secrets.capabilities_self(&paths).await?;
            self.check_capabilities(cred, &caps)?;
            self.preflighted.note(key);
        }
        self.preflight_secret(cred, provider).await
    }

    /// The engine behind `mount`; `None` when nothing (usable by the token) is mounted there.
    pub async fn mount_of(&self, mount: &str) -> Result<Option<MountKind>, EngineError> {
        match self.secrets.mount_kind(mount).await {
            Ok(k) => Ok(Some(k)),
            Err(VaultError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `kv` (the credential's secret or its state record) is on a KV v2 mount, given what
    /// [`Engine::mount_of`] said of its mount.
    pub fn check_mount(
        cred: &Credential,
        kv: &KvPath,
        kind: Option<&MountKind>,
    ) -> Result<(), EngineError> {
        let refuse = |reason: String| EngineError::Refused {
            credential: cred.name.clone(),
            reason,
        };
        let Some(kind) = kind else {
            return Err(refuse(format!(
                "{kv}: no secrets engine is mounted at {}/ (or the daemon's token may not use it); secret-rotator needs a KV v2 mount there; nothing was minted",
                kv.mount
            )));
        };
        if !kind.is_kv2() {
            return Err(refuse(format!(
                "{kv}: the mount {}/ is {}; secret-rotator needs KV v2 (versions and check-and-set); nothing was minted",
                kv.mount,
                kind.describe()
            )));
        }
        Ok(())
    }

    /// The API paths whose capabilities the preflight checks, and what each needs.
    pub fn preflight_capability_paths(
        &self,
        cred: &Credential,
    ) -> [(KvPath, String, &'static [&'static str]); 2] {
        let state = self.state_path(&cred.name);
        let api = |kv: &KvPath| format!("{}/data/{}", kv.mount, kv.path);
        [
            (cred.secret.clone(), api(&cred.secret), &["read", "update"]),
            (state.clone(), api(&state), &["read", "create", "update"]),
        ]
    }

    /// The token may read and write the secret and the state record, given its capabilities
    /// (`sys/capabilities-self` on at least the paths of
    /// [`Engine::preflight_capability_paths`]).
    pub fn check_capabilities(
        &self,
        cred: &Credential,
        caps: &std::collections::HashMap<String, Vec<String>>,
    ) -> Result<(), EngineError> {
        for (kv, path, needed) in &self.preflight_capability_paths(cred) {
            let have = caps.get(path).cloned().unwrap_or_default();
            if have.iter().any(|c| c == "root") {
                continue;
            }
            let missing: Vec<&str> = needed
                .iter()
                .copied()
                .filter(|n| !have.iter().any(|c| c == n))
                .collect();
            if !missing.is_empty() {
                return Err(EngineError::Refused {
                    credential: cred.name.clone(),
                    reason: format!(
                        "{kv}: the daemon's Vault token lacks {} on {path} (it has: {}); nothing was minted",
                        missing.join(", "),
                        if have.is_empty() { "none".to_string() } else { have.join(", ") }
                    ),
                });
            }
        }
        Ok(())
    }

    /// The current secret holds what the provider needs (one read). Returns the secret as
    /// [`Engine::read_current`] does.
    pub async fn preflight_secret(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
    ) -> Result<(u64, Option<SecretFields>), EngineError> {
        let (version, current) = self.read_current(&cred.secret).await?;
        if let Some(current) = &current {
            let missing: Vec<&str> = provider
                .required_fields()
                .iter()
                .copied()
                .filter(|f| current.expose(f).is_none_or(str::is_empty))
                .collect();
            if !missing.is_empty() {
                return Err(EngineError::Refused {
                    credential: cred.name.clone(),
                    reason: format!(
                        "{}: the current secret (version {version}) has no {} field (fields: {}); nothing was minted",
                        cred.secret,
                        missing.join(", "),
                        current.keys().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            let not_strings: Vec<&str> = provider
                .required_fields()
                .iter()
                .copied()
                .filter(|f| !current.is_string(f))
                .collect();
            if !not_strings.is_empty() {
                return Err(EngineError::Refused {
                    credential: cred.name.clone(),
                    reason: format!(
                        "{}: field(s) {} of the current secret (version {version}) are not a string; nothing was minted",
                        cred.secret,
                        not_strings.join(", "),
                    ),
                });
            }
        }
        Ok((version, current))
    }
}
