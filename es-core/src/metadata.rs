//! Per-event metadata: who caused an event, and in answer to what.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::store::RecordedEvent;

/// Metadata stored beside every event.
///
/// The well-known fields follow the conventions of EventStoreDB and most message buses:
///
/// - `correlation_id` ties together every event caused, directly or not, by one user request;
/// - `causation_id` names the message (command or event) that directly caused this event;
/// - `command_id` names the command that recorded this event, and is its idempotency key: the
///   events of a command get ids derived from it, so a command sent again with the same id is
///   recognised instead of carried out twice (see [`Repository::execute`](crate::Repository::execute));
/// - `actor` names who acted (a user id, a service name).
///
/// The [`Repository`](crate::Repository) fills in what a command leaves empty: a new command id,
/// and the command id as causation and correlation id.
///
/// Anything else goes into [`Metadata::extra`], a free-form JSON object.
///
/// ```
/// use es_core::Metadata;
/// use uuid::Uuid;
///
/// let request = Uuid::now_v7();
/// let metadata = Metadata::new()
///     .with_correlation_id(request)
///     .with_actor("agent:alice")
///     .with_extra("ip", "203.0.113.7");
/// assert_eq!(metadata.actor.as_deref(), Some("agent:alice"));
/// assert_eq!(metadata.extra["ip"], "203.0.113.7");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metadata {
    /// The request or conversation this event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The message that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The command that recorded this event: its idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// Who acted: a user id, a service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Free-form application metadata.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the correlation id. Correlation and causation ids are UUIDs (stored in columns of
    /// their own); an id from elsewhere that is not one (a request id such as `"order_xyz"`)
    /// is kept beside them with [`with_extra`](Self::with_extra), under a key of your choosing.
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the command id: the idempotency key of the command these events answer. Give the
    /// id the client sent with its request (or one derived from it), so that a request sent
    /// again after a lost answer is recognised and answered with the original outcome.
    pub fn with_command_id(mut self, id: Uuid) -> Self {
        self.command_id = Some(id);
        self
    }

    /// Metadata for events caused by `event`, e.g. a command a projection or process manager
    /// issues in reaction to it: the causation id is the event's id and the correlation id
    /// carries over from it (or is the event's id when it had none).
    ///
    /// It sets no command id, so the repository gives each command a new one: a consumer that
    /// may see `event` again (projections and subscriptions deliver at least once) would carry
    /// the reaction out again. Such a consumer uses [`Metadata::in_reaction_to`].
    ///
    /// ```
    /// # use es_core::{Metadata, RecordedEvent};
    /// # fn react(event: &RecordedEvent) {
    /// let metadata = Metadata::caused_by(event).with_actor("process:billing");
    /// assert_eq!(metadata.causation_id, Some(event.event_id));
    /// # }
    /// ```
    pub fn caused_by(event: &impl AsRef<RecordedEvent>) -> Self {
        let event = event.as_ref();
        Self {
            correlation_id: Some(event.metadata.correlation_id.unwrap_or(event.event_id)),
            causation_id: Some(event.event_id),
            ..Self::default()
        }
    }

    /// [`Metadata::caused_by`], with a command id derived from the event's id and `reaction`:
    /// for a command issued in reaction to `event` by a consumer that may see the event again
    /// (at-least-once delivery, a retried batch, a restarted process manager). The same event
    /// and reaction always give the same command id, so the command sent again is recognised
    /// and answered with its first outcome ([`Executed::already_stored`](crate::Executed::already_stored))
    /// instead of carried out twice. Give each reaction to one event its own name: two
    /// commands to one stream with the same id are taken for one.
    ///
    /// `event` is a stored event or, in a [`Projection::handle`](crate::Projection::handle),
    /// the [`DecodedEvent`](crate::DecodedEvent) it is given.
    ///
    /// ```
    /// # use es_core::{Metadata, RecordedEvent};
    /// # fn react(event: &RecordedEvent) {
    /// let metadata = Metadata::in_reaction_to(event, "award-loyalty-points");
    /// assert_eq!(metadata.causation_id, Some(event.event_id));
    /// // Delivered again, the same command id: the repository recognises the command.
    /// assert_eq!(metadata.command_id, Metadata::in_reaction_to(event, "award-loyalty-points").command_id);
    /// assert_ne!(metadata.command_id, Metadata::in_reaction_to(event, "send-receipt").command_id);
    /// // A handler's decoded event is taken as it is.
    /// # let decoded = es_core::DecodedEvent { envelope: event.clone(), event: () };
    /// assert_eq!(Metadata::in_reaction_to(&decoded, "award-loyalty-points"), metadata);
    /// # }
    /// ```
    pub fn in_reaction_to(event: &impl AsRef<RecordedEvent>, reaction: &str) -> Self {
        let event = event.as_ref();
        Self::caused_by(event).with_command_id(Uuid::new_v5(&event.event_id, reaction.as_bytes()))
    }

    /// Sets the actor.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Adds one free-form entry.
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}
