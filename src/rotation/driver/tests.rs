//! The engine over the in-memory KV v2 store and an in-memory provider: what a failed record
//! write leaves behind, and what a corrupt deliveries record means to the ack gate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::notify::outbox::Deliveries;
use crate::providers::MintRequest;
use crate::records::memory::{MemoryKv, WriteFault};
use crate::records::RecordStore;
use crate::rotation::state::{Backoff, RetryPolicy};
use crate::secret::SecretFields;

/// A provider in memory: mints `t1`, `t2`... after the answers queued in `mints` (a queued
/// error is returned instead of minting, `UnknownOutcome` after minting), verifies what it
/// minted and has not revoked.
#[derive(Default)]
struct Fake {
    minted: AtomicUsize,
    mints: Mutex<Vec<ProviderError>>,
    revoked: Mutex<Vec<String>>,
}

impl Fake {
    fn answer_next_mint(&self, e: ProviderError) {
        self.mints.lock().unwrap().push(e);
    }

    fn minted(&self) -> usize {
        self.minted.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Provider for Fake {
    fn info(&self) -> crate::providers::ProviderInfo {
        crate::providers::ProviderInfo {
            mode: Mode::Automatic,
            credentials_expire: true,
            async_revocation: false,
        }
    }

    async fn mint(&self, _req: &MintRequest) -> Result<crate::providers::Minted, ProviderError> {
        let queued = {
            let mut q = self.mints.lock().unwrap();
            (!q.is_empty()).then(|| q.remove(0))
        };
        if let Some(e @ ProviderError::Transient { .. }) = &queued {
            return Err(e.clone());
        }
        let n = self.minted.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(e) = queued {
            return Err(e);
        }
        Ok(crate::providers::Minted {
            secret: SecretFields::new().with("token", format!("t{n}")),
            expires_at: None,
        })
    }

    async fn verify(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let token = secret.expose("token").unwrap_or_default().to_string();
        if self.revoked.lock().unwrap().contains(&token) {
            return Err(ProviderError::Rejected {
                reason: "revoked".into(),
            });
        }
        Ok(())
    }

    async fn revoke(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let token = secret.expose("token").unwrap_or_default().to_string();
        self.revoked.lock().unwrap().push(token);
        Ok(())
    }
}

const CONFIG: &str = r#"
vault = { address = "http://127.0.0.1:9", auth = { method = "token" } }
[defaults]
grace = "0s"
[[credentials]]
name = "c"
path = "apps/c"
[credentials.exec]
mint = ["/bin/true"]
verify = ["/bin/true"]
revoke = ["/bin/true"]
fields = ["token"]
"#;

/// The one helper: a credential (with these dependents' TOML appended), the in-memory store
/// holding its secret at version 1, and an engine over it with quick retries.
fn setup(dependents: &str) -> (Credential, Arc<MemoryKv>, Engine) {
    let text = format!("{CONFIG}{dependents}");
    let config = crate::config::parse(&text, "test.toml", &crate::config::ProcessEnvironment)
        .expect("test config");
    let cred = config.credentials[0].clone();
    let kv = Arc::new(MemoryKv::default());
    kv.put(&cred.secret, json!({"token": "t0"}));
    let records = RecordStore::new(kv.clone(), "secret", "secret-rotator");
    let settings = EngineSettings {
        retry: RetryPolicy {
            step: Backoff {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(20),
            },
            ..RetryPolicy::default()
        },
        poll_interval: Duration::from_millis(1),
        ..EngineSettings::default()
    };
    let engine = Engine::new(
        kv.clone(),
        records,
        Arc::new(crate::events::MemorySink::default()),
        "me",
    )
    .with_settings(settings);
    (cred, kv, engine)
}

fn transient() -> ProviderError {
    ProviderError::Transient {
        reason: "503".into(),
        retry_after: None,
    }
}

/// The sequence of the `note_error` report: a mint settled by a 503 (the attempt waits in
/// `minting`), resumed: `mint_settled = false` is written, T1 minted, and the write after it
/// never lands. Whatever the write carried (the minted token, or the orphan of a mint whose
/// answer was lost), the record must still say a mint may have happened, so the next run notes
/// the orphan before it mints again.
#[tokio::test]
async fn a_failed_write_after_a_mint_leaves_the_mint_accounted_for() {
    // (what, how T1's mint is answered)
    let cases = [
        ("T1 minted, the write of the minted token fails", None),
        (
            "T1 minted, its answer lost, the write of the orphan fails",
            Some(ProviderError::UnknownOutcome {
                reason: "connection closed".into(),
            }),
        ),
    ];
    for (what, second) in cases {
        let (cred, kv, engine) = setup("");
        let provider = Fake::default();
        provider.answer_next_mint(transient());
        let r = engine
            .drive(&cred, &provider, Some(Begin::Manual), Wait::No)
            .await;
        assert!(matches!(r, Ok(RunResult::RetryAt { .. })), "{what}: {r:?}");
        if let Some(e) = second {
            provider.answer_next_mint(e);
        }
        // The 1st write of the resumed step says a mint is under way; the 2nd never lands.
        kv.fault("credentials/c", 2, WriteFault::LostBefore);
        let r = engine.drive(&cred, &provider, None, Wait::Retries).await;
        assert!(matches!(r, Err(EngineError::Vault(_))), "{what}: {r:?}");
        assert_eq!(provider.minted(), 1, "{what}: T1");
        let (record, _) = engine.load("c").await.unwrap();
        let a = record.attempt.expect("in flight");
        assert!(
            !a.mint_settled,
            "{what}: the record says a mint may be under way"
        );
        assert!(a.last_error.is_some(), "{what}: the error is recorded");
        let r = engine.drive(&cred, &provider, None, Wait::All).await;
        assert!(
            matches!(&r, Ok(RunResult::Finished(f)) if f.outcome == Outcome::Rotated),
            "{what}: {r:?}"
        );
        let (record, _) = engine.load("c").await.unwrap();
        let done = record.history.last().expect("finished");
        assert_eq!(provider.minted(), 2, "{what}: T2");
        assert_eq!(done.orphans.len(), 1, "{what}: T1 is a reported orphan");
    }
}

/// A write whose answer is lost but which landed: the error is recorded on top of it, and the
/// next run goes on from what landed (the minted token), minting nothing more.
#[tokio::test]
async fn a_write_that_landed_with_its_answer_lost_is_gone_on_from() {
    let (cred, kv, engine) = setup("");
    let provider = Fake::default();
    // The 1st write begins the attempt; the 2nd records T1 and its answer is lost.
    kv.fault("credentials/c", 2, WriteFault::LostAfter);
    let r = engine
        .drive(&cred, &provider, Some(Begin::Manual), Wait::No)
        .await;
    assert!(matches!(r, Err(EngineError::Vault(_))), "{r:?}");
    let (record, _) = engine.load("c").await.unwrap();
    let a = record.attempt.expect("in flight");
    assert_eq!(a.phase, Phase::Minted);
    assert!(a.last_error.is_some());
    let r = engine.drive(&cred, &provider, None, Wait::All).await;
    assert!(
        matches!(&r, Ok(RunResult::Finished(f)) if f.outcome == Outcome::Rotated),
        "{r:?}"
    );
    assert_eq!(provider.minted(), 1, "T1 is the one committed");
    assert_eq!(kv.get(&cred.secret), Some(json!({"token": "t1"})));
}

/// The ack gate reads the deliveries record through the record store: a corrupt one stops the
/// attempt before the old credential is revoked, naming its path and field, as it stops the
/// delivery worker (it used to count as no acks and let the revocation wait).
#[tokio::test]
async fn a_corrupt_deliveries_record_stops_the_revocation_with_its_path() {
    let dependents = r#"
[[credentials.dependents]]
type = "file"
name = "file"
path = "/nonexistent/token"
field = "token"
"#;
    let (cred, kv, engine) = setup(dependents);
    let path = engine.records().path::<Deliveries>("c");
    kv.put(&path, json!({"schema": 1, "credential": "other"}));
    let provider = Fake::default();
    let r = engine
        .drive(&cred, &provider, Some(Begin::Manual), Wait::Retries)
        .await;
    let Err(e @ EngineError::Corrupt { .. }) = &r else {
        panic!("{r:?}");
    };
    assert!(
        e.to_string().contains(&path.to_string()) && e.to_string().contains("field credential"),
        "{e}"
    );
    assert!(
        provider.revoked.lock().unwrap().is_empty(),
        "nothing revoked"
    );
    assert_eq!(
        kv.get(&path),
        Some(json!({"schema": 1, "credential": "other"})),
        "left as it is"
    );
}
