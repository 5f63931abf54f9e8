//! Forgettable personal data as a projection sees it: names while they are known, a purge when
//! a subject is forgotten, and a rebuild afterwards that never sees the forgotten plaintext.
//! (Sealing, loading and snapshots run in the conformance suite, on every backend.)

use std::collections::BTreeMap;

use es_core::conformance::{enter_contacts, sealed_contacts, Contact, ContactEntered, ContactEvent};
use es_core::pii::{Forgettable, InMemoryKeyStore, SubjectForgotten, FORGOTTEN_SUBJECTS};
use es_core::{
    async_trait, event, DecodedEvent, EventDescriptor, EventSet, HandlerError, InMemoryReadModel, InMemoryStore,
    Projection, ProjectionRunner, Repository,
};

/// What the projection reads: contacts entered, and subjects forgotten.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum DirectoryEvent {
    Entered(ContactEntered),
    Forgotten(SubjectForgotten),
}

/// Names by subject: the read model that must forget too.
type Directory = BTreeMap<String, String>;

struct DirectoryProjection;

#[async_trait]
impl Projection for DirectoryProjection {
    const NAME: &'static str = "directory";
    const AGGREGATE_TYPES: &'static [&'static str] = &["conformance-contact", FORGOTTEN_SUBJECTS];
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[ContactEvent::EVENTS];
    type Event = DirectoryEvent;
    type Context = Directory;

    async fn handle(
        &self,
        directory: &mut Directory,
        event: &DecodedEvent<DirectoryEvent>,
    ) -> Result<(), HandlerError> {
        match &event.event {
            DirectoryEvent::Entered(entered) => {
                let subject = format!(
                    "{}/{}",
                    event.envelope.stream.aggregate_type, event.envelope.stream.aggregate_id
                );
                match &entered.name {
                    Forgettable::Known(name) => directory.insert(subject, name.clone()),
                    Forgettable::Forgotten => directory.remove(&subject),
                };
            }
            DirectoryEvent::Forgotten(forgotten) => {
                directory.remove(&forgotten.subject);
            }
        }
        Ok(())
    }

    async fn reset(&self, directory: &mut Directory) -> Result<(), HandlerError> {
        directory.clear();
        Ok(())
    }
}

#[tokio::test]
async fn a_projection_purges_a_forgotten_subject_and_a_rebuild_never_sees_it() {
    let store = sealed_contacts(InMemoryStore::new(), InMemoryKeyStore::new());
    let contacts = Repository::<Contact, _>::new(store.clone());
    enter_contacts(
        &contacts,
        &[("ada", "Ada Lovelace", "555-0100"), ("bob", "Bob Noyce", "555-0100")],
    )
    .await;

    let model = InMemoryReadModel::<Directory>::new();
    let runner = ProjectionRunner::new(DirectoryProjection, store.clone(), model.clone());
    runner.catch_up().await.expect("catches up");
    let names =
        |model: &InMemoryReadModel<Directory>| model.read(|directory| directory.values().cloned().collect::<Vec<_>>());
    assert_eq!(names(&model), ["Ada Lovelace", "Bob Noyce"]);

    assert!(store.forget("conformance-contact/ada").await.expect("forgets"));
    runner.catch_up().await.expect("catches up");
    assert_eq!(names(&model), ["Bob Noyce"], "the forgotten subject's row is purged");

    let rebuilt = InMemoryReadModel::<Directory>::new();
    ProjectionRunner::new(DirectoryProjection, store.clone(), rebuilt.clone())
        .catch_up()
        .await
        .expect("rebuilds");
    assert_eq!(
        names(&rebuilt),
        ["Bob Noyce"],
        "a rebuild reads the forgotten name as forgotten"
    );
}
