//! The support-ticket aggregate from the DDD literature.
//!
//! A ticket is opened by a customer, assigned to an agent, escalated on request (with a
//! reason), commented on, resolved, closed, and possibly reopened. Commands check the business
//! rules and answer with events or a [`TicketError`]; the `Apply` impls only record facts.
//!
//! Two events carry a schema history, both upcast on load:
//! - [`TicketEscalated`] v1 had no reason (JSON step adds one);
//! - [`CommentAdded`] v1 was `{ "text": ... }` without an author (typed step from
//!   [`CommentAddedV1`]).
//!
//! The first event was once stored as `TicketInitialized`; the alias keeps those streams loading.

use es_core::{event, Aggregate, Apply, UpcastError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::text::{required, Empty};

/// How urgent a ticket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Can wait.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Someone is blocked.
    High,
}

/// A customer opened a ticket.
#[event(name = "TicketOpened", alias = "TicketInitialized")]
#[derive(Debug, Clone, PartialEq)]
pub struct TicketOpened {
    /// What the ticket is about.
    pub title: String,
    /// Who opened it.
    pub customer: String,
    /// How urgent it is.
    pub priority: Priority,
}

/// The ticket was given to an agent.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct TicketAssigned {
    /// The agent now responsible.
    pub agent: String,
}

/// Someone asked for the ticket to be escalated. Version 1 recorded no reason.
#[event(version = 2)]
#[upcast(from = 1, json = escalated_v1_to_v2)]
#[derive(Debug, Clone, PartialEq)]
pub struct TicketEscalated {
    /// Why escalation was requested.
    pub reason: String,
}

/// The reason given to escalations recorded before reasons were captured.
pub const UNRECORDED_REASON: &str = "not recorded (escalated before v2)";

fn escalated_v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
    let fields = payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("TicketEscalated v1 payload is not an object"))?;
    fields.insert("reason".into(), UNRECORDED_REASON.into());
    Ok(payload)
}

/// A comment on the ticket. Version 1 was `{ "text": ... }`, with no author.
#[event(version = 2)]
#[upcast(from = 1, typed = CommentAddedV1)]
#[derive(Debug, Clone, PartialEq)]
pub struct CommentAdded {
    /// Who wrote the comment.
    pub author: String,
    /// The comment.
    pub body: String,
}

/// The stored shape of [`CommentAdded`] at schema version 1.
#[derive(Debug, Deserialize)]
pub struct CommentAddedV1 {
    text: String,
}

impl From<CommentAddedV1> for CommentAdded {
    fn from(v1: CommentAddedV1) -> Self {
        Self {
            author: "unknown".into(),
            body: v1.text,
        }
    }
}

/// The agent resolved the ticket.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct TicketResolved {
    /// What fixed it.
    pub resolution: String,
}

/// The ticket was closed.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct TicketClosed;

/// A closed or resolved ticket was reopened.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct TicketReopened {
    /// Why it came back.
    pub reason: String,
}

/// Everything that can happen to a ticket.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum TicketEvent {
    /// See [`TicketOpened`].
    Opened(TicketOpened),
    /// See [`TicketAssigned`].
    Assigned(TicketAssigned),
    /// See [`TicketEscalated`].
    Escalated(TicketEscalated),
    /// See [`CommentAdded`].
    Commented(CommentAdded),
    /// See [`TicketResolved`].
    Resolved(TicketResolved),
    /// See [`TicketClosed`].
    Closed(TicketClosed),
    /// See [`TicketReopened`].
    Reopened(TicketReopened),
}

/// Where a ticket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Status {
    /// No ticket with this id was opened.
    #[default]
    NotOpened,
    /// Being worked on.
    Open,
    /// Fixed, awaiting closure.
    Resolved,
    /// Done.
    Closed,
}

/// One comment on a ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    /// Who wrote it.
    pub author: String,
    /// What they wrote.
    pub body: String,
}

/// A support ticket's state, folded from its events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "ticket", id = String, event = TicketEvent, snapshot_revision = 1)]
pub struct Ticket {
    /// Where the ticket is in its life.
    pub status: Status,
    /// What it is about.
    pub title: String,
    /// Who opened it.
    pub customer: String,
    /// How urgent: as opened, and `High` from an escalation on (a reopen keeps it).
    pub priority: Priority,
    /// The responsible agent, if any.
    pub assignee: Option<String>,
    /// Why it was escalated, if it is (cleared when the ticket is reopened).
    pub escalation: Option<String>,
    /// All comments, oldest first.
    pub comments: Vec<Comment>,
    /// How it was resolved, while resolved or closed after resolution.
    pub resolution: Option<String>,
    /// How many times it was reopened.
    pub reopened: u32,
}

/// Why a ticket command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// A ticket with this id already exists.
    #[error("the ticket is already open")]
    AlreadyOpened,
    /// The command needs an open ticket, and there is none with this id.
    #[error("no ticket with this id was opened")]
    NotOpened,
    /// The ticket is closed; reopen it first.
    #[error("the ticket is closed")]
    Closed,
    /// Only an open ticket can be resolved.
    #[error("the ticket is already resolved")]
    AlreadyResolved,
    /// The ticket is already escalated.
    #[error("the ticket is already escalated")]
    AlreadyEscalated,
    /// The ticket already belongs to this agent.
    #[error("the ticket is already assigned to {0}")]
    AlreadyAssignedTo(String),
    /// Nobody is assigned, so nobody can resolve it.
    #[error("an unassigned ticket cannot be resolved")]
    Unassigned,
    /// Only a resolved or closed ticket can be reopened.
    #[error("only a resolved or closed ticket can be reopened")]
    NotFinished,
    /// A required text was empty.
    #[error(transparent)]
    Empty(#[from] Empty),
}

type Decision = Result<Vec<TicketEvent>, TicketError>;

impl Ticket {
    fn must_be_workable(&self) -> Result<(), TicketError> {
        match self.status {
            Status::NotOpened => Err(TicketError::NotOpened),
            Status::Closed => Err(TicketError::Closed),
            Status::Open | Status::Resolved => Ok(()),
        }
    }

    /// Opens a new ticket.
    pub fn open(&self, title: &str, customer: &str, priority: Priority) -> Decision {
        if self.status != Status::NotOpened {
            return Err(TicketError::AlreadyOpened);
        }
        Ok(vec![TicketOpened {
            title: required(title, "the title")?,
            customer: required(customer, "the customer")?,
            priority,
        }
        .into()])
    }

    /// Gives the ticket to `agent`.
    pub fn assign(&self, agent: &str) -> Decision {
        self.must_be_workable()?;
        let agent = required(agent, "the agent")?;
        if self.assignee.as_deref() == Some(agent.as_str()) {
            return Err(TicketError::AlreadyAssignedTo(agent));
        }
        Ok(vec![TicketAssigned { agent }.into()])
    }

    /// Requests escalation, with its reason: the ticket's priority becomes
    /// [`Priority::High`]. A closed ticket cannot be escalated, nor an escalated one again;
    /// reopening a ticket clears its escalation (so it may be escalated again) and keeps the
    /// priority it had.
    pub fn request_escalation(&self, reason: &str) -> Decision {
        self.must_be_workable()?;
        if self.escalation.is_some() {
            return Err(TicketError::AlreadyEscalated);
        }
        Ok(vec![TicketEscalated {
            reason: required(reason, "the reason")?,
        }
        .into()])
    }

    /// Adds a comment.
    pub fn comment(&self, author: &str, body: &str) -> Decision {
        self.must_be_workable()?;
        Ok(vec![CommentAdded {
            author: required(author, "the author")?,
            body: required(body, "the comment")?,
        }
        .into()])
    }

    /// Resolves an open, assigned ticket.
    pub fn resolve(&self, resolution: &str) -> Decision {
        self.must_be_workable()?;
        if self.status == Status::Resolved {
            return Err(TicketError::AlreadyResolved);
        }
        if self.assignee.is_none() {
            return Err(TicketError::Unassigned);
        }
        Ok(vec![TicketResolved {
            resolution: required(resolution, "the resolution")?,
        }
        .into()])
    }

    /// Closes the ticket, resolved or not.
    pub fn close(&self) -> Decision {
        self.must_be_workable()?;
        Ok(vec![TicketClosed.into()])
    }

    /// Reopens a resolved or closed ticket.
    pub fn reopen(&self, reason: &str) -> Decision {
        match self.status {
            Status::NotOpened => return Err(TicketError::NotOpened),
            Status::Open => return Err(TicketError::NotFinished),
            Status::Resolved | Status::Closed => {}
        }
        Ok(vec![TicketReopened {
            reason: required(reason, "the reason")?,
        }
        .into()])
    }
}

impl Apply<TicketOpened> for Ticket {
    fn apply(&mut self, event: &TicketOpened) {
        self.status = Status::Open;
        self.title = event.title.clone();
        self.customer = event.customer.clone();
        self.priority = event.priority;
    }
}

impl Apply<TicketAssigned> for Ticket {
    fn apply(&mut self, event: &TicketAssigned) {
        self.assignee = Some(event.agent.clone());
    }
}

impl Apply<TicketEscalated> for Ticket {
    fn apply(&mut self, event: &TicketEscalated) {
        self.escalation = Some(event.reason.clone());
        self.priority = Priority::High;
    }
}

impl Apply<CommentAdded> for Ticket {
    fn apply(&mut self, event: &CommentAdded) {
        self.comments.push(Comment {
            author: event.author.clone(),
            body: event.body.clone(),
        });
    }
}

impl Apply<TicketResolved> for Ticket {
    fn apply(&mut self, event: &TicketResolved) {
        self.status = Status::Resolved;
        self.resolution = Some(event.resolution.clone());
    }
}

impl Apply<TicketClosed> for Ticket {
    fn apply(&mut self, _: &TicketClosed) {
        self.status = Status::Closed;
    }
}

impl Apply<TicketReopened> for Ticket {
    fn apply(&mut self, _: &TicketReopened) {
        self.status = Status::Open;
        self.resolution = None;
        self.escalation = None;
        self.reopened += 1;
    }
}

/// Events as an older release stored them: schema v1 payloads and the old `TicketInitialized`
/// name, exactly as they sit in the store. Loading them proves the upcasters and aliases work.
pub const STORED_V1_EVENTS: &str = include_str!("../fixtures/ticket_v1_stream.json");

/// One stored record of [`STORED_V1_EVENTS`].
#[derive(Debug, Clone, Deserialize)]
pub struct StoredRecord {
    /// The stored event name.
    pub event_name: String,
    /// The stored schema version.
    pub schema_version: u32,
    /// The stored payload.
    pub payload: Value,
}

/// Parses [`STORED_V1_EVENTS`].
pub fn stored_v1_records() -> Result<Vec<StoredRecord>, serde_json::Error> {
    serde_json::from_str(STORED_V1_EVENTS)
}
