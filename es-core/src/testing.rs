//! Given/when/then tests for aggregates, with no store involved.
//!
//! ```
//! # use es_core::{event, Aggregate, Apply};
//! # use serde::{Deserialize, Serialize};
//! use es_core::testing::AggregateTest;
//!
//! # #[event] #[derive(Debug, Clone, PartialEq)] pub struct Deposited { pub cents: u64 }
//! # #[event] #[derive(Debug, Clone, PartialEq)] pub struct Withdrawn { pub cents: u64 }
//! # #[event] #[derive(Debug, Clone, PartialEq)] pub enum AccountEvent { Deposited(Deposited), Withdrawn(Withdrawn) }
//! # #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
//! # #[aggregate(name = "account", event = AccountEvent)]
//! # pub struct Account { balance: u64 }
//! # impl Apply<Deposited> for Account { fn apply(&mut self, e: &Deposited) { self.balance += e.cents } }
//! # impl Apply<Withdrawn> for Account { fn apply(&mut self, e: &Withdrawn) { self.balance -= e.cents } }
//! # #[derive(Debug, PartialEq)] pub struct Insufficient;
//! # impl Account {
//! #     fn withdraw(&self, cents: u64) -> Result<Vec<AccountEvent>, Insufficient> {
//! #         if cents > self.balance { return Err(Insufficient) }
//! #         Ok(vec![Withdrawn { cents }.into()])
//! #     }
//! # }
//! AggregateTest::<Account>::given([Deposited { cents: 100 }.into()])
//!     .when(|account| account.withdraw(30))
//!     .then_events([Withdrawn { cents: 30 }.into()]);
//!
//! AggregateTest::<Account>::given([Deposited { cents: 10 }.into()])
//!     .when(|account| account.withdraw(30))
//!     .then_error(Insufficient);
//!
//! // A command that cannot be refused returns its events alone.
//! AggregateTest::<Account>::given_no_events()
//!     .when(|_| vec![Deposited { cents: 5 }.into()])
//!     .then_events([Deposited { cents: 5 }.into()]);
//! ```

use std::fmt::Debug;

pub use crate::schema::assert_schema_lock;

use crate::aggregate::Aggregate;
use crate::event::EventSet;
use crate::repository::Decision;

/// The "given" part: an aggregate built from past events.
#[derive(Debug)]
pub struct AggregateTest<A> {
    aggregate: A,
}

/// The "then" part: what the command returned, and the state after applying it.
#[derive(Debug)]
#[must_use = "an outcome asserts nothing until a `then_*` method is called"]
pub struct Outcome<A: Aggregate, E> {
    result: Result<Vec<A::Event>, E>,
    aggregate: A,
}

impl<A: Aggregate> AggregateTest<A>
where
    A::Event: Debug,
{
    /// An aggregate that has seen `events`. Each event is first round-tripped through its stored
    /// form, so a payload that would not survive storage fails the test here.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut aggregate = A::default();
        for event in events {
            aggregate.apply_event(&round_trip(&event));
        }
        Self { aggregate }
    }

    /// An aggregate with no events yet.
    pub fn given_no_events() -> Self {
        Self::given([])
    }

    /// The state the given events fold into, to check the "given" itself.
    pub fn state(&self) -> &A {
        &self.aggregate
    }

    /// Runs a command against the aggregate. The command returns what
    /// [`Repository::execute`](crate::Repository::execute)'s decisions return: the events
    /// (`Vec<_>`, a command that cannot be refused), or `Result<Vec<_>, E>`.
    pub fn when<D: Decision<A::Event>>(self, command: impl FnOnce(&A) -> D) -> Outcome<A, D::Error> {
        let mut aggregate = self.aggregate;
        let result = command(&aggregate).into_events();
        if let Ok(events) = &result {
            for event in events {
                aggregate.apply_event(&round_trip(event));
            }
        }
        Outcome { result, aggregate }
    }
}

impl<A: Aggregate, E: Debug> Outcome<A, E> {
    /// Asserts that the command succeeded with exactly `expected`; returns the new state.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = A::Event>) -> A
    where
        A::Event: PartialEq + Debug,
    {
        let expected: Vec<_> = expected.into_iter().collect();
        match self.result {
            Ok(events) => assert_eq!(events, expected, "the command produced other events"),
            Err(error) => panic!("expected events {expected:?}, but the command was rejected: {error:?}"),
        }
        self.aggregate
    }

    /// Asserts that the command was rejected with `expected`.
    #[track_caller]
    pub fn then_error(self, expected: E)
    where
        E: PartialEq,
        A::Event: Debug,
    {
        match self.result {
            Ok(events) => panic!("expected error {expected:?}, but the command produced {events:?}"),
            Err(error) => assert_eq!(error, expected, "the command was rejected with another error"),
        }
    }

    /// The raw result and the state after it, for assertions of your own.
    pub fn into_parts(self) -> (Result<Vec<A::Event>, E>, A) {
        (self.result, self.aggregate)
    }
}

#[track_caller]
fn round_trip<E: EventSet + Debug>(event: &E) -> E {
    let payload = match event.encode_payload() {
        Ok(payload) => payload,
        Err(error) => panic!("event {event:?} does not serialize: {error}"),
    };
    match E::decode(event.event_name(), event.schema_version(), &payload) {
        Ok(decoded) => decoded,
        Err(error) => panic!("event {event:?} does not decode from its own payload: {error}"),
    }
}
