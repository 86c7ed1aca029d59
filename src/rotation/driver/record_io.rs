//! The engine's record IO: reading and writing the state record through the record store
//! (check-and-set on the version last read or written), and announcing events into its log.

use crate::config::{Credential, KvPath};
use crate::crash;
use crate::events::Event;
use crate::notify::deliver::AHEAD_BUDGET;
use crate::notify::outbox::{self, Deliveries, Logged};
use crate::notify::payload::Payload;
use crate::rotation::state::{Attempt, StateRecord};

use super::{Announce, Engine, EngineError, Loaded};

impl Engine {
    pub fn state_path(&self, credential: &str) -> KvPath {
        self.records.path::<StateRecord>(credential)
    }

    /// Read a credential's state record for the engine (a fresh one when there is none), with
    /// the version to check-and-set against: a record never written, or whose latest version
    /// was deleted, is at the version its metadata says.
    pub async fn load(&self, credential: &str) -> Result<(StateRecord, u64), EngineError> {
        Ok(self.records.load(credential).await?)
    }

    /// Read a credential's state record to show it (`status`, `history`, `plan`): no version,
    /// so no metadata read when there is no record.
    pub async fn record(&self, credential: &str) -> Result<StateRecord, EngineError> {
        Ok(self
            .records
            .read(credential)
            .await?
            .map_or_else(|| StateRecord::new(credential), |(r, _)| r))
    }

    pub(super) async fn save(&self, l: &mut Loaded) -> Result<(), EngineError> {
        let credential = l.record.credential.clone();
        if l.in_doubt.is_some() {
            // Every write goes from the record as stored: never from a copy a failed write
            // left behind (it could restore what another write already replaced).
            return Err(EngineError::Refused {
                reason: format!("{}: the last write of the state record may not have landed; it is read again before any other write", self.state_path(&credential)),
                credential,
            });
        }
        let record = std::mem::replace(&mut l.record, StateRecord::new(&credential));
        let sent = record.clone();
        match self.records.write(&credential, record, l.version).await {
            Ok((record, v)) => {
                l.record = record;
                self.wrote(l, v);
                Ok(())
            }
            Err(w) => {
                l.record = sent;
                l.in_doubt = w.in_doubt;
                Err(w.error.into())
            }
        }
    }

    /// The record is stored at version `v` (written now, or found written by [`Engine::settle`]).
    pub(super) fn wrote(&self, l: &mut Loaded, v: u64) {
        l.version = v;
        l.saved_at = Some(tokio::time::Instant::now());
        l.stored_seq = l.record.events.last_seq;
        if std::mem::take(&mut l.new_events) {
            self.wakeup.wake(&l.record.credential);
        }
    }

    pub(super) async fn save_attempt(
        &self,
        l: &mut Loaded,
        a: &Attempt,
    ) -> Result<(), EngineError> {
        l.record.attempt = Some(a.clone());
        self.save(l).await
    }

    /// Announce an event: to the event sinks now, and to the dependents through the record's
    /// event log, written with the record's next save (which every caller makes).
    pub(super) fn emit(
        &self,
        l: &mut Loaded,
        cred: &Credential,
        attempt: &str,
        announce: Announce<'_>,
    ) {
        let Announce {
            kind,
            version,
            detail,
            extra,
        } = announce;
        let mut event = Event::new(kind, &cred.name, attempt, self.now(), version, detail);
        if extra.reminder > 0 {
            event.id = format!("{}:{}", event.id, extra.reminder + 1);
        }
        let mut logged = Logged::new(
            event.id.clone(),
            kind,
            event.at,
            version,
            Some(attempt),
            detail,
        );
        logged.previous_version = extra.previous_version;
        logged.revoke_after = extra.revoke_after;
        // The sinks get the webhook's body with the reason whole (the event log clips it to
        // keep the record small).
        let mut body = Payload::of(&logged, cred);
        body.data.reason = event.detail.clone();
        self.events.emit_with_body(&event, &body.body());
        if cred.dependents.is_empty() {
            return;
        }
        if l.record.events.append(logged, outbox::LOG_LIMIT) {
            l.new_events = true;
        }
    }

    /// Before a write that stores new events: deliver them to the dependents ahead of it (for
    /// at most [`AHEAD_BUDGET`]) and record in the log how far each got, so that the write
    /// carries the deliveries too and the worker has nothing to write. `point`: the crash point
    /// once the deliveries ahead ended or the wait for them did.
    pub(super) async fn deliver_ahead(&self, cred: &Credential, l: &mut Loaded, point: &str) {
        let Some(deliverer) = &self.deliverer else {
            return;
        };
        if !l.new_events || cred.dependents.is_empty() {
            return;
        }
        let through = deliverer
            .deliver_ahead(cred, &l.record.events, l.stored_seq, AHEAD_BUDGET)
            .await;
        crash::point(point);
        if through.is_empty() {
            return;
        }
        let names: Vec<&str> = cred.dependents.iter().map(|d| d.name.as_str()).collect();
        let log = &mut l.record.events;
        log.delivered
            .retain(|name, _| names.contains(&name.as_str()));
        for (name, seq) in through {
            log.delivered_ahead(&name, seq);
        }
    }

    /// Where the delivery worker keeps a credential's deliveries record.
    pub fn deliveries_path(&self, credential: &str) -> KvPath {
        self.records.path::<Deliveries>(credential)
    }
}
