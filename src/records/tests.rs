//! The record store over the in-memory KV v2 store: KV v2 semantics, and a write in doubt
//! settled by reading back. (What each kind of record refuses: `rotation::stored::tests`.)

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::memory::{MemoryKv, WriteFault};
use super::{Record, RecordError, RecordStore, SecretStore};
use crate::config::KvPath;

/// A kind of record for these tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Note {
    schema: u32,
    credential: String,
    failures: u32,
}

impl Record for Note {
    const FOLDER: &'static str = "notes";
    const NAME: &'static str = "note";
    const SCHEMA: u32 = 1;
    const MAX_VERSIONS: Option<u32> = Some(3);

    fn fresh(credential: &str) -> Note {
        Note {
            schema: 1,
            credential: credential.into(),
            failures: 0,
        }
    }

    fn validate(&self, credential: &str) -> Result<(), String> {
        if self.credential != credential {
            return Err("field credential".into());
        }
        Ok(())
    }
}

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
        let (first, v1) = records.write("c", Note::fresh("c"), 0).await.unwrap();
        let mut second = first.clone();
        second.failures = 3;
        m.fault("notes/c", 1, fault);
        let w = records.write("c", second, v1).await.unwrap_err();
        let doubt = w.in_doubt.expect("a sent write is in doubt");
        let settled = records.settle::<Note>("c", &doubt).await.unwrap();
        assert_eq!(settled.landed, landed, "{what}");
        assert_eq!(settled.version, v1 + u64::from(landed), "{what}");
        assert_eq!(
            settled.record.failures,
            if landed { 3 } else { 0 },
            "{what}"
        );
        // Someone else writes meanwhile: the write in doubt is not theirs.
        m.put(
            &records.path::<Note>("c"),
            serde_json::to_value(&first).unwrap(),
        );
        assert!(
            matches!(
                records.settle::<Note>("c", &doubt).await,
                Err(RecordError::Conflict { .. })
            ),
            "{what}: another writer's version is a conflict"
        );
    }
}

#[tokio::test]
async fn a_record_created_gets_its_kinds_max_versions() {
    let (m, records) = store();
    let (mut note, mut version) = records.write("c", Note::fresh("c"), 0).await.unwrap();
    for n in 1..=5 {
        note.failures = n;
        (note, version) = records.write("c", note, version).await.unwrap();
    }
    assert_eq!(m.versions(&records.path::<Note>("c")), vec![4, 5, 6]);
}

/// A record whose creating write never told it was created (its answer lost, the process dead
/// before the metadata write, the metadata write failed) gets its kind's max_versions at the
/// next write of a process that writes it: before, max_versions was set only after the
/// creating write's answer, and such a record kept the mount's default number of versions.
/// (The simulation found it: `simulation` seed 6.)
#[tokio::test]
async fn a_record_whose_creation_went_unseen_gets_its_max_versions_at_the_next_write() {
    // (what, how the record came to exist without its max_versions)
    type Make = fn(&MemoryKv, &RecordStore);
    let cases: [(&str, Make); 2] = [
        ("the answer of the creating write was lost", |m, _| {
            m.fault("notes/c", 1, WriteFault::LostAfter)
        }),
        (
            "created by a process that died before setting it",
            |m, records| {
                m.put(
                    &records.path::<Note>("c"),
                    serde_json::to_value(Note::fresh("c")).unwrap(),
                );
            },
        ),
    ];
    for (what, make) in cases {
        let (m, records) = store();
        make(&m, &records);
        let _ = records.write("c", Note::fresh("c"), 0).await;
        // Another process.
        let records = RecordStore::new(m.clone(), "secret", "secret-rotator");
        let (mut note, mut version) = records.load::<Note>("c").await.unwrap();
        for n in 1..=5 {
            note.failures = n;
            (note, version) = records.write("c", note, version).await.unwrap();
        }
        assert_eq!(
            m.versions(&records.path::<Note>("c")),
            vec![4, 5, 6],
            "{what}"
        );
    }
}
