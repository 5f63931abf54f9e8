//! Blue/green rebuilds: misuse is refused. (The rebuild itself is a conformance check, run on
//! every backend: `es_core::conformance::a_blue_green_rebuild_never_shows_a_partial_model`.)

use es_core::conformance::MarkingEvent;
use es_core::{
    async_trait, DecodedEvent, HandlerError, InMemoryReadModel, InMemoryStore, Projection, ProjectionError,
    ProjectionRunner,
};

struct Counting;

#[async_trait]
impl Projection for Counting {
    const NAME: &'static str = "counting";
    type Event = MarkingEvent;
    type Context = u64;

    async fn handle(&self, count: &mut u64, _: &DecodedEvent<MarkingEvent>) -> Result<(), HandlerError> {
        *count += 1;
        Ok(())
    }

    async fn reset(&self, count: &mut u64) -> Result<(), HandlerError> {
        *count = 0;
        Ok(())
    }
}

#[tokio::test]
async fn a_copy_must_have_a_name_of_its_own() {
    let copy = ProjectionRunner::new(Counting, InMemoryStore::new(), InMemoryReadModel::<u64>::new());
    let refused = copy
        .rebuild_beside("counting", |_| {}, |_| Box::pin(async { Ok(()) }))
        .await;
    assert!(
        matches!(&refused, Err(ProjectionError::Switch { live: "counting", .. })),
        "{refused:?}"
    );
}
