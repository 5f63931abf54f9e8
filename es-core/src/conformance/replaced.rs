//! Retired events through the repository: `#[replaced]` rules split a stored event into several
//! events, drop one, or merge several retired types into one, while the stream's version still
//! counts stored events.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{append_ok, event};
use crate::store::{EventStore, ExpectedVersion, StreamId, StreamSlice};
use crate::{event, Aggregate, Apply, DecodeError, Repository, RepositoryError, UpcastError};

/// A desk was opened.
#[event(name = "desk.opened")]
#[derive(Debug, Clone, PartialEq)]
pub struct DeskOpened {
    /// What the desk is for.
    pub title: String,
}

/// An agent took the desk.
#[event(name = "desk.staffed")]
#[derive(Debug, Clone, PartialEq)]
pub struct DeskStaffed {
    /// Who.
    pub agent: String,
}

/// The desk's contact details changed: what used to be two events, one per detail.
#[event(name = "desk.contact-changed")]
#[derive(Debug, Clone, PartialEq)]
pub struct ContactChanged {
    /// The new e-mail address, if it changed.
    pub email: Option<String>,
    /// The new phone number, if it changed.
    pub phone: Option<String>,
}

/// The events of [`Desk`], and the rules for the events it used to store:
/// - `desk.opened-with-agent` (v1: title and agent) is now two events;
/// - `desk.noted` meant nothing and is dropped;
/// - `desk.email-changed` and `desk.phone-changed` are merged into one type.
#[event]
#[derive(Debug, Clone, PartialEq)]
#[replaced(name = "desk.opened-with-agent", by = split_opened)]
#[replaced(name = "desk.noted", by = dropped)]
#[replaced(name = "desk.email-changed", by = email_changed)]
#[replaced(name = "desk.phone-changed", by = phone_changed)]
pub enum DeskEvent {
    /// See [`DeskOpened`].
    Opened(DeskOpened),
    /// See [`DeskStaffed`].
    Staffed(DeskStaffed),
    /// See [`ContactChanged`].
    ContactChanged(ContactChanged),
}

/// The shape `desk.opened-with-agent` was stored in.
#[derive(Deserialize)]
struct OpenedWithAgent {
    title: String,
    agent: String,
}

fn split_opened(old: OpenedWithAgent) -> Result<Vec<DeskEvent>, UpcastError> {
    if old.agent.is_empty() {
        return Err(UpcastError::new("an opening with an agent names the agent"));
    }
    Ok(vec![
        DeskOpened { title: old.title }.into(),
        DeskStaffed { agent: old.agent }.into(),
    ])
}

fn dropped(_: Value) -> Result<Vec<DeskEvent>, UpcastError> {
    Ok(Vec::new())
}

#[derive(Deserialize)]
struct EmailChanged {
    email: String,
}

fn email_changed(old: EmailChanged) -> Result<Vec<DeskEvent>, UpcastError> {
    Ok(vec![ContactChanged {
        email: Some(old.email),
        phone: None,
    }
    .into()])
}

#[derive(Deserialize)]
struct PhoneChanged {
    phone: String,
}

fn phone_changed(old: PhoneChanged) -> Result<Vec<DeskEvent>, UpcastError> {
    Ok(vec![ContactChanged {
        email: None,
        phone: Some(old.phone),
    }
    .into()])
}

/// A help desk, as the current code models it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, crate::Aggregate)]
#[aggregate(name = "conformance-desk", event = DeskEvent)]
pub struct Desk {
    /// Its title.
    pub title: String,
    /// Every agent that took it, in order.
    pub agents: Vec<String>,
    /// Its e-mail address.
    pub email: Option<String>,
    /// Its phone number.
    pub phone: Option<String>,
}

impl Apply<DeskOpened> for Desk {
    fn apply(&mut self, event: &DeskOpened) {
        self.title.clone_from(&event.title);
    }
}

impl Apply<DeskStaffed> for Desk {
    fn apply(&mut self, event: &DeskStaffed) {
        self.agents.push(event.agent.clone());
    }
}

impl Apply<ContactChanged> for Desk {
    fn apply(&mut self, event: &ContactChanged) {
        if let Some(email) = &event.email {
            self.email = Some(email.clone());
        }
        if let Some(phone) = &event.phone {
            self.phone = Some(phone.clone());
        }
    }
}

/// Stored retired events load through their rules: split, dropped and merged, with the
/// stream's version counting stored events, time travel stopping between them, and every
/// event of a split listed with the stored event's envelope. A rule that refuses its payload,
/// and a retired name at a version no rule reads, are typed errors.
pub async fn retired_events_are_replaced_by_their_rules<S>(store: &S)
where
    S: EventStore + Clone + 'static,
{
    let desks = Repository::<Desk, S>::new(store.clone());
    let id = uuid::Uuid::now_v7().to_string();
    let stream = StreamId::new(Desk::TYPE, &id);
    let stored = vec![
        event("desk.opened-with-agent", json!({ "title": "Printers", "agent": "ana" })),
        event("desk.noted", json!({ "note": "meaningless now" })),
        event("desk.email-changed", json!({ "email": "printers@example.com" })),
        event("desk.phone-changed", json!({ "phone": "555-0100" })),
        event("desk.staffed", json!({ "agent": "bo" })),
    ];
    append_ok(store, &stream, ExpectedVersion::NoStream, stored).await;

    let loaded = match desks.load(&id).await {
        Ok(loaded) => loaded,
        Err(error) => panic!("loading {stream} failed: {error}"),
    };
    assert_eq!(loaded.version, 5, "the version counts stored events, not decoded ones");
    let expected = Desk {
        title: "Printers".into(),
        agents: vec!["ana".into(), "bo".into()],
        email: Some("printers@example.com".into()),
        phone: Some("555-0100".into()),
    };
    assert_eq!(loaded.aggregate, expected);

    let after_split = desks.load_at_version(&id, 1).await.map(|loaded| loaded.aggregate);
    let split = Desk {
        title: "Printers".into(),
        agents: vec!["ana".into()],
        ..Desk::default()
    };
    assert_eq!(
        after_split.ok(),
        Some(split),
        "both halves of a split apply at its version"
    );

    let listed = match desks.events(&id, StreamSlice::all()).await {
        Ok(listed) => listed,
        Err(error) => panic!("listing {stream} failed: {error}"),
    };
    let listed: Vec<_> = listed
        .iter()
        .map(|decoded| (decoded.envelope.version, &decoded.event))
        .collect();
    assert_eq!(
        listed,
        [
            (
                1,
                &DeskOpened {
                    title: "Printers".into()
                }
                .into()
            ),
            (1, &DeskStaffed { agent: "ana".into() }.into()),
            (
                3,
                &ContactChanged {
                    email: Some("printers@example.com".into()),
                    phone: None
                }
                .into()
            ),
            (
                4,
                &ContactChanged {
                    email: None,
                    phone: Some("555-0100".into())
                }
                .into()
            ),
            (5, &DeskStaffed { agent: "bo".into() }.into()),
        ],
        "a split lists each event with its stored envelope; a dropped event lists none"
    );

    let refused = uuid::Uuid::now_v7().to_string();
    let refused_stream = StreamId::new(Desk::TYPE, &refused);
    let no_agent = event("desk.opened-with-agent", json!({ "title": "Scanners", "agent": "" }));
    append_ok(store, &refused_stream, ExpectedVersion::NoStream, vec![no_agent]).await;
    match desks.load(&refused).await {
        Err(RepositoryError::Decode(error)) => {
            assert!(matches!(*error.source, DecodeError::Upcast { .. }), "{error}");
            assert_eq!(
                (error.version, error.event_name.as_str()),
                (1, "desk.opened-with-agent")
            );
        }
        other => panic!("a refused payload loads as {other:?}"),
    }

    let newer = uuid::Uuid::now_v7().to_string();
    let mut at_v2 = event("desk.noted", json!({}));
    at_v2.schema_version = 2;
    append_ok(
        store,
        &StreamId::new(Desk::TYPE, &newer),
        ExpectedVersion::NoStream,
        vec![at_v2],
    )
    .await;
    match desks.load(&newer).await {
        Err(RepositoryError::Decode(error)) => assert!(
            matches!(*error.source, DecodeError::NoReplacedRule { stored: 2, .. }),
            "{error}"
        ),
        other => panic!("a retired name at a version no rule reads loads as {other:?}"),
    }
}
