//! Personal data through a [`PiiStore`] over the backend: sealed at rest, readable while its
//! subject's key exists, forgotten for good once it does not, and never in the way of loading.

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::pii::{Forgettable, InMemoryKeyStore, KeyStore, KeyStoreError, PiiError, PiiStore, FORGOTTEN_SUBJECTS};
use crate::store::{EventStore, GlobalLog, SnapshotStore, StoreError, StreamId, StreamSlice};
use crate::{event, Aggregate, Apply, CommandError, EventRegistry, Metadata, Repository, RepositoryError};

/// A contact was entered: name and phone are the contact's personal data.
#[event(name = "contact.entered")]
#[derive(Debug, Clone, PartialEq)]
pub struct ContactEntered {
    /// The contact's name.
    #[pii]
    pub name: Forgettable<String>,
    /// The contact's phone number.
    #[pii]
    #[serde(rename = "phoneNumber")]
    pub phone: Forgettable<String>,
    /// Where the contact came from: not personal.
    pub source: String,
}

/// Someone wrote a note about the contact: the author's name is the author's personal data.
#[event(name = "contact.noted", subject = author_id)]
#[derive(Debug, Clone, PartialEq)]
pub struct ContactNoted {
    /// Who wrote it: the data subject of `author_name`.
    pub author_id: String,
    /// The author's name.
    #[pii]
    pub author_name: Forgettable<String>,
    /// The note: not personal.
    pub text: String,
}

/// The events of [`Contact`].
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum ContactEvent {
    /// See [`ContactEntered`].
    Entered(ContactEntered),
    /// See [`ContactNoted`].
    Noted(ContactNoted),
}

/// A contact, as the checks load it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, crate::Aggregate)]
#[aggregate(name = "conformance-contact", event = ContactEvent)]
pub struct Contact {
    /// The name.
    pub name: Forgettable<String>,
    /// The phone number.
    pub phone: Forgettable<String>,
    /// The names of the notes' authors, in order.
    pub authors: Vec<Forgettable<String>>,
}

impl Apply<ContactEntered> for Contact {
    fn apply(&mut self, event: &ContactEntered) {
        self.name = event.name.clone();
        self.phone = event.phone.clone();
    }
}

impl Apply<ContactNoted> for Contact {
    fn apply(&mut self, event: &ContactNoted) {
        self.authors.push(event.author_name.clone());
    }
}

fn entered(name: &str, phone: &str) -> ContactEvent {
    ContactEntered {
        name: name.to_owned().into(),
        phone: phone.to_owned().into(),
        source: "fair".into(),
    }
    .into()
}

fn noted(author_id: &str, author_name: &str) -> ContactEvent {
    ContactNoted {
        author_id: author_id.into(),
        author_name: author_name.to_owned().into(),
        text: "called back".into(),
    }
    .into()
}

/// `inner` sealing the personal data of [`Contact`]s with keys from `keys`: where a backend's
/// own tests of personal data start.
pub fn sealed_contacts<S, K: KeyStore>(inner: S, keys: K) -> PiiStore<S, K> {
    let mut registry = EventRegistry::new();
    if let Err(error) = registry.register::<Contact>() {
        panic!("registering the contact failed: {error}");
    }
    PiiStore::new(inner, keys, registry)
}

/// Enters each contact `(id, name, phone)` through `contacts`, with one `contact.entered`.
pub async fn enter_contacts<S>(contacts: &Repository<Contact, S>, entries: &[(&str, &str, &str)])
where
    S: EventStore + SnapshotStore + Clone + 'static,
{
    for (id, name, phone) in entries {
        let entered = entered(name, phone);
        let executed = contacts
            .execute(*id, Metadata::new(), move |_: &Contact| vec![entered.clone()])
            .await;
        if let Err(error) = executed {
            panic!("entering contact {id} failed: {error}");
        }
    }
}

/// Every byte the backend holds for the given streams: events (all of the log) and snapshots.
async fn everything_stored<S: EventStore + GlobalLog + SnapshotStore>(store: &S, streams: &[StreamId]) -> String {
    let mut stored = String::new();
    let mut after = 0;
    loop {
        let page = match store.read_all(after, 1000).await {
            Ok(page) => page,
            Err(error) => panic!("reading the log failed: {error}"),
        };
        let Some(last) = page.last() else {
            break;
        };
        after = last.position;
        for event in &page {
            stored.push_str(&String::from_utf8_lossy(&event.payload));
            stored.push_str(&serde_json::to_string(&event.metadata).unwrap_or_default());
        }
    }
    for stream in streams {
        if let Ok(Some(snapshot)) = store.load_snapshot(stream).await {
            stored.push_str(&String::from_utf8_lossy(&snapshot.state));
        }
    }
    stored
}

/// Two contacts (and a note's author) with personal data; one contact and the author are
/// forgotten. No plaintext of anyone is ever stored; afterwards the forgotten fields read as
/// forgotten, their snapshots are not used, the others read as they were, every aggregate
/// loads, a [`SubjectForgotten`](crate::pii::SubjectForgotten) event is in the log, and a
/// forgotten subject's data cannot be written again.
pub async fn forgotten_subjects_read_as_forgotten<S>(store: &S)
where
    S: EventStore + GlobalLog + SnapshotStore + Clone + 'static,
{
    let sealed = sealed_contacts(store.clone(), InMemoryKeyStore::new());
    let contacts = Repository::<Contact, _>::new(sealed.clone()).with_snapshot_every(2);
    let (ada, bob) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    let author = format!("author-{}", uuid::Uuid::now_v7());
    for (id, events) in [
        (
            &ada,
            vec![entered("Ada Lovelace", "555-0101"), noted(&author, "Grace Hopper")],
        ),
        (
            &bob,
            vec![entered("Bob Noyce", "555-0303"), entered("Bob Noyce", "555-0202")],
        ),
    ] {
        let executed = contacts
            .execute(id, Metadata::new(), move |_: &Contact| events.clone())
            .await;
        if let Err(error) = executed {
            panic!("a command failed: {error}");
        }
    }
    let streams = [Contacts::stream(&ada), Contacts::stream(&bob)];
    let plaintext = [
        "Ada Lovelace",
        "555-0101",
        "Grace Hopper",
        "Bob Noyce",
        "555-0202",
        "555-0303",
    ];
    let at_rest = everything_stored(store, &streams).await;
    for text in plaintext {
        assert!(!at_rest.contains(text), "`{text}` is stored in plaintext");
    }
    assert!(at_rest.contains("fair"), "the rest of a payload stays plain JSON");
    for stream in &streams {
        let raw_snapshot = store.load_snapshot(stream).await.ok().flatten();
        assert!(raw_snapshot.is_some(), "a snapshot of {stream} was taken");
    }

    let load = |id: String| {
        let contacts = contacts.clone();
        async move {
            match contacts.load(&id).await {
                Ok(loaded) => loaded.aggregate,
                Err(error) => panic!("loading contact {id} failed: {error}"),
            }
        }
    };
    let before = load(ada.clone()).await;
    assert_eq!(before.name.known().map(String::as_str), Some("Ada Lovelace"));
    assert_eq!(before.authors, [Forgettable::Known("Grace Hopper".to_owned())]);

    for subject in [format!("conformance-contact/{ada}"), author.clone()] {
        match sealed.forget(&subject).await {
            Ok(had_key) => assert!(had_key, "{subject} had a key"),
            Err(error) => panic!("forgetting {subject} failed: {error}"),
        }
    }
    let forgotten = load(ada.clone()).await;
    assert!(
        forgotten.name.is_forgotten() && forgotten.phone.is_forgotten(),
        "{forgotten:?}"
    );
    assert_eq!(forgotten.authors, [Forgettable::Forgotten]);
    let kept = load(bob.clone()).await;
    assert_eq!(
        (
            kept.name.known().map(String::as_str),
            kept.phone.known().map(String::as_str)
        ),
        (Some("Bob Noyce"), Some("555-0202"))
    );
    assert!(
        matches!(sealed.load_snapshot(&streams[0]).await, Ok(None)),
        "a snapshot sealed for a forgotten subject does not open"
    );
    assert!(matches!(sealed.load_snapshot(&streams[1]).await, Ok(Some(_))));

    let told = sealed
        .read_stream(&StreamId::new(FORGOTTEN_SUBJECTS, &author), StreamSlice::all())
        .try_collect::<Vec<_>>()
        .await;
    assert_eq!(told.map(|events| events.len()).ok(), Some(1), "projections are told");

    let again = contacts
        .execute(&ada, Metadata::new(), |_: &Contact| {
            vec![entered("Ada Lovelace", "555-0101")]
        })
        .await;
    match again {
        Err(CommandError::Repository(RepositoryError::Store(StoreError::Pii(error)))) => assert!(
            matches!(*error, PiiError::Keys(KeyStoreError::Forgotten { .. })),
            "{error}"
        ),
        other => panic!("writing a forgotten subject's data: {other:?}"),
    }
}

/// The stream of a contact.
struct Contacts;

impl Contacts {
    fn stream(id: &str) -> StreamId {
        StreamId::new(Contact::TYPE, id)
    }
}

/// Whatever subject a store accepts data of can be forgotten, and a forgotten value may be
/// written again: a contact whose stream id is as long as the limits allow is forgotten (its
/// [`SubjectForgotten`](crate::pii::SubjectForgotten) event stored beside it), an author whose
/// id could never be forgotten is refused before anything is written, and a command that
/// carries the forgotten contact's fields forward is carried out.
pub async fn subjects_at_the_id_limit_can_be_forgotten<S>(store: &S)
where
    S: EventStore + GlobalLog + SnapshotStore + Clone + 'static,
{
    let sealed = sealed_contacts(store.clone(), InMemoryKeyStore::new());
    let contacts = Repository::<Contact, _>::new(sealed.clone());
    let max = store.limits().max_stream_id_bytes.min(4096);
    let prefix = uuid::Uuid::now_v7().to_string();
    let id = format!("{prefix}{}", "i".repeat(max - Contact::TYPE.len() - prefix.len()));
    let command = |events: Vec<ContactEvent>| {
        let contacts = contacts.clone();
        let id = id.clone();
        async move {
            contacts
                .execute(&id, Metadata::new(), move |_: &Contact| events.clone())
                .await
        }
    };
    if let Err(error) = command(vec![entered("Ada Lovelace", "555-0101")]).await {
        panic!("entering a contact at the id limit: {error}");
    }
    let subject = format!("{}/{id}", Contact::TYPE);
    match sealed.forget(&subject).await {
        Ok(had_key) => assert!(had_key, "the contact had a key"),
        Err(error) => panic!("forgetting a subject at the id limit failed: {error}"),
    }
    let told = sealed
        .read_stream(&StreamId::new(FORGOTTEN_SUBJECTS, &subject), StreamSlice::all())
        .try_collect::<Vec<_>>()
        .await;
    assert_eq!(told.map(|events| events.len()).ok(), Some(1), "projections are told");

    let carried = ContactEntered {
        name: Forgettable::Forgotten,
        phone: Forgettable::Forgotten,
        source: "moved".into(),
    };
    if let Err(error) = command(vec![carried.into()]).await {
        panic!("carrying forgotten values forward: {error}");
    }
    match contacts.load(&id).await {
        Ok(loaded) => assert!(loaded.aggregate.name.is_forgotten() && loaded.aggregate.phone.is_forgotten()),
        Err(error) => panic!("loading the forgotten contact: {error}"),
    }

    let long_author = "a".repeat(max + 2);
    let refused = command(vec![noted(&long_author, "Grace Hopper")]).await;
    match refused {
        Err(CommandError::Repository(RepositoryError::Store(StoreError::Pii(error)))) => {
            assert!(matches!(*error, PiiError::SubjectTooLong { .. }), "{error}");
        }
        other => panic!("an author who could never be forgotten: {other:?}"),
    }
    let keys = sealed.keys().keys(&[long_author.as_str()]).await;
    assert!(
        keys.is_ok_and(|keys| keys.is_empty()),
        "no key is made for a refused subject"
    );
}
