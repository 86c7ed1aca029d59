//! The record store over the in-memory KV v2 store: KV v2 semantics, and what a corrupt record
//! means (the same to every reader: refused with its path and field, never overwritten).

use std::sync::Arc;

use serde_json::{json, Value};

use super::memory::{MemoryKv, WriteFault};
use super::{Record, RecordError, RecordStore, SecretStore};
use crate::config::KvPath;
use crate::notify::outbox::Deliveries;
use crate::rotation::StateRecord;

fn store() -> (Arc<MemoryKv>, RecordStore) {
    let kv = Arc::new(MemoryKv::default());
    let records = RecordStore::new(kv.clone(), "secret", "secret-rotator");
    (kv, records)
}

fn kv(path: &str) -> KvPath {
    KvPath {
        mount: "secret".into(),
        path: path.into(),
    }
}

#[tokio::test]
async fn the_memory_store_keeps_kv_v2_semantics() {
    let m = MemoryKv::default();
    let p = kv("apps/a");
    // (what, the result) one step after the other on one path.
    assert_eq!(
        m.read_for_cas(&p).await.unwrap(),
        (None, 0),
        "never written: version 0"
    );
    let (v1, created) = m.write_cas(&p, &json!({"k": "1"}), 0).await.unwrap();
    assert_eq!(
        (v1, created.is_some()),
        (1, true),
        "created with a created_time"
    );
    assert!(
        matches!(
            m.write_cas(&p, &json!({"k": "x"}), 0).await,
            Err(crate::vault::VaultError::CasMismatch { .. })
        ),
        "cas 0 on an existing path fails"
    );
    assert_eq!(m.write_cas(&p, &json!({"k": "2"}), 1).await.unwrap().0, 2);
    m.delete_latest(&p);
    assert_eq!(
        m.read(&p).await.unwrap(),
        None,
        "a soft-deleted latest version reads as missing"
    );
    assert_eq!(
        m.read_for_cas(&p).await.unwrap(),
        (None, 2),
        "and check-and-set compares against its number"
    );
    assert_eq!(m.write_cas(&p, &json!({"k": "3"}), 2).await.unwrap().0, 3);
    m.set_max_versions(&p, 2).await.unwrap();
    assert_eq!(m.versions(&p), vec![2, 3], "max_versions drops the oldest");
    m.destroy_versions(&p, &[3]).await.unwrap();
    assert_eq!(
        m.read_for_cas(&p).await.unwrap(),
        (None, 3),
        "destroyed: unreadable, counted"
    );
}

#[tokio::test]
async fn a_write_whose_answer_is_lost_is_settled_by_reading_back() {
    // (what, the fault, landed)
    let cases = [
        (
            "the answer is lost after the write landed",
            WriteFault::LostAfter,
            true,
        ),
        ("the write never landed", WriteFault::LostBefore, false),
    ];
    for (what, fault, landed) in cases {
        let (m, records) = store();
        let (first, v1) = records.write("c", StateRecord::new("c"), 0).await.unwrap();
        let mut second = first.clone();
        second.failures = 3;
        m.fault("credentials/c", 1, fault);
        let w = records.write("c", second, v1).await.unwrap_err();
        let doubt = w.in_doubt.expect("a sent write is in doubt");
        let settled = records.settle::<StateRecord>("c", &doubt).await.unwrap();
        assert_eq!(settled.landed, landed, "{what}");
        assert_eq!(settled.version, v1 + u64::from(landed), "{what}");
        assert_eq!(
            settled.record.failures,
            if landed { 3 } else { 0 },
            "{what}"
        );
        // Someone else writes meanwhile: the write in doubt is not theirs.
        m.put(
            &records.path::<StateRecord>("c"),
            serde_json::to_value(&first).unwrap(),
        );
        assert!(
            matches!(
                records.settle::<StateRecord>("c", &doubt).await,
                Err(RecordError::Conflict { .. })
            ),
            "{what}: another writer's version is a conflict"
        );
    }
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
        let deliverer = super::super::notify::deliver::Deliverer::new(
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
