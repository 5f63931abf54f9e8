//! What the review suites (`*_review.rs`) share: fresh stores and raw events, a projection
//! runner running until stopped, the `es` command line as an operator runs it.
//!
//! Each test file is a crate of its own and uses only some of it, hence `dead_code` (and unused
//! macros) allowed.
#![allow(dead_code, unused_macros)]

pub mod cli;
pub mod running;
pub mod stores;
pub mod tickets;

/// Two tests of `$scenario` (an `FnOnce(store) -> impl Future`, given twice): `$sqlite` on a
/// fresh SQLite file, `$postgres` on a fresh PostgreSQL schema, each within the suites' bound
/// ([`stores::on_sqlite`], [`stores::on_postgres`]), each with the attributes given.
macro_rules! on_sqlite_and_postgres {
    ($(#[$attr:meta])* $sqlite:ident, $postgres:ident: $scenario:expr) => {
        $(#[$attr])*
        async fn $sqlite() {
            $crate::review::stores::on_sqlite($scenario).await
        }

        $(#[$attr])*
        async fn $postgres() {
            $crate::review::stores::on_postgres($scenario).await
        }
    };
}

#[allow(unused_imports)]
pub(crate) use on_sqlite_and_postgres;

/// The aggregate `$aggregate`, stored as `$name`, whose events are the enum `$events` of the
/// variants given and whose state is nothing: all a schema lock looks at.
macro_rules! events_only_aggregate {
    ($aggregate:ident $name:tt, $events:ident { $($variant:ident($event:ident)),* $(,)? }) => {
        #[es_core::event]
        #[derive(Debug)]
        pub enum $events {
            $($variant($event)),*
        }

        #[derive(Debug, Default, serde::Serialize, serde::Deserialize, es_core::Aggregate)]
        #[aggregate(name = $name, event = $events)]
        pub struct $aggregate;

        impl<E> es_core::Apply<E> for $aggregate {
            fn apply(&mut self, _: &E) {}
        }
    };
}

#[allow(unused_imports)]
pub(crate) use events_only_aggregate;
