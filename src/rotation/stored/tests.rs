//! What each kind of record refuses, and that every reader (the engine, the delivery worker,
//! the reports and the CLI through them) refuses it alike, through the record store.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::notify::outbox::Deliveries;
use crate::records::memory::MemoryKv;
use crate::records::{Record, RecordError, RecordStore};
use crate::rotation::StateRecord;

fn store() -> (Arc<MemoryKv>, RecordStore) {
    let kv = Arc::new(MemoryKv::default());
    let records = RecordStore::new(kv.clone(), "secret", "secret-rotator");
    (kv, records)
}

/// A stored body of each kind that this binary must refuse: (what, the body, the field named).
fn corrupt_state() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "a newer schema",
            json!({"schema": 99, "credential": "c", "written_by": "secret-rotator 9"}),
            "field schema: 99 is newer",
        ),
        (
            "not a state record",
            json!({"schema": 5, "credential": 7}),
            "invalid type",
        ),
        (
            "another credential's",
            json!({"schema": 5, "credential": "other"}),
            "field credential",
        ),
        (
            "minted without the new credential",
            json!({"schema": 5, "credential": "c", "attempt": {
                "id": "a", "phase": "minted", "owner": "o", "trigger": "manual",
                "started_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                "lease_expires_at": "2026-01-01T00:00:00Z", "version_before": 1}}),
            "field attempt.pending",
        ),
    ]
}

fn corrupt_deliveries() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "a newer schema",
            json!({"schema": 9, "credential": "c"}),
            "field schema: 9 is newer",
        ),
        (
            "not a deliveries record",
            json!({"schema": 1, "credential": "c", "dependents": 3}),
            "invalid type",
        ),
        (
            "another credential's",
            json!({"schema": 1, "credential": "other"}),
            "field credential",
        ),
    ]
}

async fn refused<R: Record>(records: &RecordStore, what: &str, field: &str) {
    let path = records.path::<R>("c").to_string();
    for (how, e) in [
        (
            "read",
            records.read::<R>("c").await.map(|_| ()).unwrap_err(),
        ),
        (
            "load",
            records.load::<R>("c").await.map(|_| ()).unwrap_err(),
        ),
    ] {
        let RecordError::Corrupt {
            path: p, reason, ..
        } = &e
        else {
            panic!("{what}: {how}: {e:?}");
        };
        assert_eq!(p, &path, "{what}: {how}");
        assert!(reason.contains(field), "{what}: {how}: {reason}");
        assert!(e.to_string().contains(&path), "{what}: {how}: {e}");
    }
}

#[tokio::test]
async fn a_corrupt_record_is_refused_with_its_path_and_field_by_read_and_load() {
    for (what, body, field) in corrupt_state() {
        let (m, records) = store();
        m.put(&records.path::<StateRecord>("c"), body);
        refused::<StateRecord>(&records, what, field).await;
    }
    for (what, body, field) in corrupt_deliveries() {
        let (m, records) = store();
        m.put(&records.path::<Deliveries>("c"), body);
        refused::<Deliveries>(&records, what, field).await;
    }
}

/// The engine, the delivery worker and what the reports and the CLI read (`Engine::record`,
/// `Deliverer::log`) see one corrupt record alike: refused, naming the path and field, and left
/// as it is (the engine's `drive` does not write over it).
#[tokio::test]
async fn every_reader_refuses_a_corrupt_state_record_alike_and_none_overwrites_it() {
    for (what, body, field) in corrupt_state() {
        let (m, records) = store();
        let path = records.path::<StateRecord>("c");
        m.put(&path, body.clone());
        let engine = crate::rotation::Engine::new(
            m.clone(),
            records.clone(),
            Arc::new(crate::events::MemorySink::default()),
            "me",
        );
        let deliverer = crate::notify::deliver::Deliverer::new(
            offline_vault().await,
            records.clone(),
            "me",
            Default::default(),
            Default::default(),
        );
        // (who reads, what they said)
        let said: Vec<(&str, String)> = vec![
            (
                "Engine::load",
                engine.load("c").await.map(|_| ()).unwrap_err().to_string(),
            ),
            (
                "Engine::record (status, history)",
                engine
                    .record("c")
                    .await
                    .map(|_| ())
                    .unwrap_err()
                    .to_string(),
            ),
            (
                "Deliverer::record",
                deliverer
                    .record("c")
                    .await
                    .map(|_| ())
                    .unwrap_err()
                    .to_string(),
            ),
            (
                "Deliverer::log (the CLI's events)",
                deliverer
                    .log("c")
                    .await
                    .map(|_| ())
                    .unwrap_err()
                    .to_string(),
            ),
        ];
        for (who, e) in said {
            assert!(
                e.contains(&path.to_string()) && e.contains(field) && e.contains("unusable"),
                "{what}: {who}: {e}"
            );
        }
        assert_eq!(m.get(&path), Some(body), "{what}: left as it is");
    }
}

/// A Vault client that is never called (one address, a token: connecting sends nothing).
async fn offline_vault() -> Arc<crate::vault::Vault> {
    let config = crate::config::parse(
        "vault = { address = \"http://127.0.0.1:9\", auth = { method = \"token\" } }\n",
        "test.toml",
        &crate::config::ProcessEnvironment,
    )
    .expect("a config without credentials");
    Arc::new(
        crate::vault::Vault::connect(
            &config.vault,
            crate::vault::Login::Token(secrecy::SecretString::from("t".to_string())),
        )
        .await
        .unwrap(),
    )
}
