//! Sealing a batch on its way in: which fields, for which subject, with which key, checked
//! against the store's limits before anything reaches the key store.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;
use uuid::Uuid;

use super::super::error::PiiError;
use super::super::keys::{KeyStore, SubjectKey};
use super::super::seal;
use super::super::FORGOTTEN_SUBJECTS;
use super::{stream_subject, PiiStore};
use crate::store::{Limits, NewEvent, StoreError, StoreResult, StreamId};

/// How many noted pairs are remembered before the memory is cleared (and pairs are noted
/// again, harmlessly).
const NOTED_REMEMBERED: usize = 100_000;

impl<S, K: KeyStore> PiiStore<S, K> {
    /// Seals the personal fields of `events` for `stream`, and records which subjects the
    /// stream now holds data of.
    ///
    /// Nothing is written to the key store for a batch the store would refuse: the batch is
    /// sealed first (with a provisional key for a subject that has none yet) and checked
    /// against the store's limits, and only then are keys created (and such fields sealed
    /// again with them) and streams noted.
    pub(super) async fn seal_batch(
        &self,
        stream: &StreamId,
        events: &mut [NewEvent],
        limits: Limits,
    ) -> StoreResult<()> {
        let mut planned = Vec::new();
        for (index, event) in events.iter().enumerate() {
            if let Some(plan) = self.plan_sealing(stream, event, limits)? {
                planned.push((index, plan));
            }
        }
        if planned.is_empty() {
            return Ok(());
        }
        let subjects: BTreeSet<&str> = planned.iter().map(|(_, plan)| plan.subject.as_str()).collect();
        let wanted: Vec<&str> = subjects.iter().copied().collect();
        let mut keys = self.keys.keys(&wanted).await?;
        let provisional: Vec<String> = subjects
            .iter()
            .filter(|subject| !keys.contains_key(**subject))
            .map(|subject| (*subject).to_owned())
            .collect();
        for subject in &provisional {
            keys.insert(subject.clone(), SubjectKey::generate());
        }
        for (index, plan) in &planned {
            events[*index].payload = plan.sealed(stream, &keys)?;
        }
        limits.check_append(stream, events)?;
        if !provisional.is_empty() {
            for subject in &provisional {
                keys.insert(subject.clone(), self.keys.key_for_writing(subject).await?);
            }
            for (index, plan) in planned.iter().filter(|(_, plan)| provisional.contains(&plan.subject)) {
                events[*index].payload = plan.sealed(stream, &keys)?;
            }
        }
        for subject in subjects {
            let pair = (subject.to_owned(), stream.clone());
            if self.noted().contains(&pair) {
                continue;
            }
            self.keys.note_stream(subject, stream).await?;
            let mut noted = self.noted();
            if noted.len() >= NOTED_REMEMBERED {
                noted.clear();
            }
            noted.insert(pair);
        }
        Ok(())
    }

    /// What of `event` must be sealed, for which subject; `None` when nothing: an event
    /// without personal fields, or whose personal fields all read as forgotten already (a
    /// forgotten value carried forward is no personal data, and needs no key).
    fn plan_sealing(&self, stream: &StreamId, event: &NewEvent, limits: Limits) -> StoreResult<Option<Sealing>> {
        let Some((fields, subject_field)) = self.personal_fields(stream, &event.event_name) else {
            return Ok(None);
        };
        let not_an_object = || PiiError::NotAnObject {
            stream: stream.clone(),
            event_name: event.event_name.clone(),
        };
        let payload: Value = serde_json::from_slice(&event.payload).map_err(|_| not_an_object())?;
        let Some(object) = payload.as_object() else {
            return Err(not_an_object().into());
        };
        let sealed: Vec<&'static str> = fields
            .iter()
            .copied()
            .filter(|field| object.get(*field).is_some_and(|value| !seal::is_forgotten(value)))
            .collect();
        if sealed.is_empty() {
            return Ok(None);
        }
        let subject = match subject_field {
            None => stream_subject(stream),
            Some(field) => match object.get(field) {
                Some(Value::String(subject)) => subject.clone(),
                Some(Value::Number(subject)) => subject.to_string(),
                _ => {
                    return Err(PiiError::NoSubject {
                        stream: stream.clone(),
                        event_name: event.event_name.clone(),
                        field,
                    }
                    .into())
                }
            },
        };
        // A subject whose record stream the store would refuse could never be forgotten.
        let record = StreamId::new(FORGOTTEN_SUBJECTS, subject.as_str());
        if let Err(StoreError::LimitExceeded(exceeded)) = limits.check_append(&record, &[]) {
            return Err(PiiError::SubjectTooLong {
                stream: stream.clone(),
                event_name: event.event_name.clone(),
                bytes: subject.len(),
                max: exceeded.max.saturating_add(1),
            }
            .into());
        }
        Ok(Some(Sealing {
            event_id: event.event_id,
            payload,
            fields: sealed,
            subject,
        }))
    }

    fn noted(&self) -> std::sync::MutexGuard<'_, HashSet<(String, StreamId)>> {
        // A set of ids only: a panic elsewhere cannot leave it half-changed.
        self.noted.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The personal fields of one event to seal, and for whom.
struct Sealing {
    event_id: Uuid,
    /// The payload as written, its fields in plain text.
    payload: Value,
    fields: Vec<&'static str>,
    subject: String,
}

impl Sealing {
    /// The payload with its fields sealed under the subject's key in `keys`.
    fn sealed(&self, stream: &StreamId, keys: &HashMap<String, SubjectKey>) -> Result<Vec<u8>, PiiError> {
        let mut payload = self.payload.clone();
        if let (Some(key), Some(object)) = (keys.get(&self.subject), seal::fields(&mut payload)) {
            for field in &self.fields {
                if let Some(value) = object.get_mut(*field) {
                    *value = seal::seal(key, &self.subject, &seal::field_context(self.event_id, field), value)
                        .map_err(|seal::TooLong| PiiError::TooLong { stream: stream.clone() })?;
                }
            }
        }
        Ok(payload.to_string().into_bytes())
    }
}
