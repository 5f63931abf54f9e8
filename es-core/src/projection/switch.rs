//! Blue/green rebuilds: a new copy of a read model is built beside the live one, which keeps
//! serving, then takes its place in one unit of work.

use std::future::Future;
use std::pin::Pin;

use super::checkpoint::CheckpointStore;
use super::error::ProjectionError;
use super::options::Pacing;
use super::runner::{CatchUp, ProjectionRunner, RebuildProgress};
use super::{HandlerError, Projection};
use crate::store::GlobalLog;

/// What the switch of [`ProjectionRunner::rebuild_beside`] runs on the unit's context: makes
/// the new copy the live one (renames tables, moves a pointer), returning a boxed future.
pub type SwitchFuture<'c> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'c>>;

impl<P, E, C> ProjectionRunner<P, E, C>
where
    P: Projection,
    E: GlobalLog,
    C: CheckpointStore<Context = P::Context>,
{
    /// Rebuilds the read model **beside** the live one, which keeps serving readers and keeps
    /// being updated by its own runner, then switches: Marten's blue/green rebuild.
    ///
    /// Run it on a runner of a second copy of the projection, one that writes to tables of its
    /// own (say `lead_search_next`) and keeps its checkpoint under a name of its own
    /// ([`with_name`](Self::with_name)); `live` is the name of the projection it replaces. It
    /// empties and replays the copy from the first event, reporting progress, like
    /// [`rebuild`](Self::rebuild). Then, in **one unit of work**, it waits for the live
    /// runner's current batch to end and keeps its next ones out, handles the events the live
    /// model got ahead by (so the live checkpoint never goes back), calls `switch` on the
    /// unit's context to put the copy in the live one's place (rename its tables to the live
    /// names, the old ones out of the way), and sets the live projection's checkpoint to where
    /// the copy is. Readers see the old model until that unit commits and the new one after;
    /// the live runner, its claim untouched, goes on from the new checkpoint, writing to
    /// whatever its tables are named now.
    ///
    /// The copy's own checkpoint and parked events stay under its name. A failed switch
    /// commits nothing (the live model goes on serving) and is retried by the
    /// [`RunnerOptions`](crate::RunnerOptions) like a batch; `switch` may run again.
    ///
    /// ```no_run
    /// # use es_core::{CheckpointStore, GlobalLog, Projection, ProjectionRunner, ProjectionError};
    /// # async fn demo<P, E, C>(next: ProjectionRunner<P, E, C>) -> Result<(), ProjectionError>
    /// # where P: Projection<Context = sqlx_like::Connection>, E: GlobalLog, C: CheckpointStore<Context = sqlx_like::Connection> {
    /// // `next` feeds a copy of the "lead-search" projection that writes to `lead_search_next`.
    /// let next = next.with_name("lead-search-next");
    /// next.rebuild_beside("lead-search", |progress| println!("{progress:?}"), |db| {
    ///     Box::pin(async move {
    ///         db.execute("ALTER TABLE lead_search RENAME TO lead_search_old").await?;
    ///         db.execute("ALTER TABLE lead_search_next RENAME TO lead_search").await?;
    ///         Ok(())
    ///     })
    /// })
    /// .await?;
    /// # Ok(()) }
    /// # mod sqlx_like { pub struct Connection; impl Connection {
    /// #     pub async fn execute(&mut self, _: &str) -> Result<(), es_core::HandlerError> { Ok(()) } } }
    /// ```
    pub async fn rebuild_beside<F>(
        &self,
        live: &'static str,
        on_progress: impl FnMut(RebuildProgress) + Send,
        mut switch: F,
    ) -> Result<CatchUp, ProjectionError>
    where
        F: for<'c> FnMut(&'c mut C::Context) -> SwitchFuture<'c> + Send,
    {
        if live == self.name {
            return Err(ProjectionError::Switch {
                projection: self.name,
                live,
                source:
                    "the copy must keep its checkpoint under a name of its own: give its runner one with `with_name`"
                        .into(),
            });
        }
        let mut pacing = Pacing::new(self.name, self.options);
        let mut claim = self.claim(&mut pacing).await?;
        let mut done = self.replay_from_scratch(&mut claim, &mut pacing, on_progress).await?;
        loop {
            match self.switch(&mut claim, live, &mut switch).await {
                Ok(position) => {
                    tracing::info!(projection = self.name, live, position, "rebuilt read model switched in");
                    done.position = position;
                    return Ok(done);
                }
                Err(error) => tokio::time::sleep(pacing.failed(error)?).await,
            }
        }
    }

    /// The switch, in one unit of work: returns the position both projections are at.
    async fn switch<F>(&self, claim: &mut C::Claim, live: &'static str, switch: &mut F) -> Result<u64, ProjectionError>
    where
        F: for<'c> FnMut(&'c mut C::Context) -> SwitchFuture<'c> + Send,
    {
        let (mut unit, mut position) = self.begin(claim).await?;
        let live_at = match self.checkpoints.take_over(&mut unit, live).await {
            Ok(live_at) => live_at,
            Err(source) => {
                let _ = self.checkpoints.rollback(unit).await;
                return Err(self.checkpoint_error()(source));
            }
        };
        // The live model may be ahead of the copy: catch the copy up within this unit, so that
        // the live checkpoint never goes back.
        while position < live_at {
            let page = match self
                .events
                .read_filtered(position, self.options.batch_size.max(1), &self.filter)
                .await
            {
                Ok(page) if page.scanned_to > position => page,
                Ok(_) => break,
                Err(source) => {
                    let _ = self.checkpoints.rollback(unit).await;
                    return Err(self.store_error()(source));
                }
            };
            let events = page
                .events
                .into_iter()
                .filter(|event| event.position <= live_at)
                .collect();
            match self.handle_batch(&mut unit, events, None, None).await {
                Ok(handled) => position = handled.cut_at.unwrap_or(page.scanned_to).min(live_at),
                Err(failure) => return Err(self.abandon(unit, failure).await),
            }
        }
        if let Err(source) = switch(self.checkpoints.context(&mut unit)).await {
            let _ = self.checkpoints.rollback(unit).await;
            return Err(ProjectionError::Switch {
                projection: self.name,
                live,
                source,
            });
        }
        if let Err(source) = self.checkpoints.hand_over(&mut unit, live, position).await {
            let _ = self.checkpoints.rollback(unit).await;
            return Err(self.checkpoint_error()(source));
        }
        self.commit(unit, position).await?;
        self.reached(position);
        Ok(position)
    }
}
