//! The ticket domain and its known history, shared by the tests of the command line, the
//! event browser's pages and the browser test.

#![allow(dead_code)] // each test target uses part of it

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use es_cli::Cli;
use es_core::{
    async_trait, event, Aggregate, Apply, DecodedEvent, EventStore, ExpectedVersion, HandlerError, InMemoryReadModel,
    InMemoryStore, Metadata, NewEvent, Projection, ProjectionRunner, Repository, StreamId,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub title: String,
}

#[event(version = 2)]
#[upcast(from = 1, json = add_level)]
#[derive(Debug, Clone, PartialEq)]
pub struct Escalated {
    pub level: u32,
}

fn add_level(mut v1: Value) -> Result<Value, es_core::UpcastError> {
    let fields = v1
        .as_object_mut()
        .ok_or_else(|| es_core::UpcastError::new("expected an object"))?;
    fields.insert("level".into(), 1.into());
    Ok(v1)
}

#[event(alias = "Done")]
#[derive(Debug, Clone, PartialEq)]
pub struct Closed;

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum TicketEvent {
    Opened(Opened),
    Escalated(Escalated),
    Closed(Closed),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "ticket", event = TicketEvent)]
pub struct Ticket {
    title: String,
    level: u32,
    open: bool,
}

impl Apply<Opened> for Ticket {
    fn apply(&mut self, event: &Opened) {
        self.title = event.title.clone();
        self.open = true;
    }
}
impl Apply<Escalated> for Ticket {
    fn apply(&mut self, event: &Escalated) {
        self.level = event.level;
    }
}
impl Apply<Closed> for Ticket {
    fn apply(&mut self, _: &Closed) {
        self.open = false;
    }
}

/// Counts opened tickets.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum OpenedOnly {
    Opened(Opened),
}

pub struct OpenedCount;

#[async_trait]
impl Projection for OpenedCount {
    const NAME: &'static str = "opened_count";
    const SOURCE_EVENTS: &'static [&'static [es_core::EventDescriptor]] = &[<TicketEvent as es_core::EventSet>::EVENTS];
    type Event = OpenedOnly;
    type Context = BTreeMap<String, u32>;

    async fn handle(&self, model: &mut Self::Context, event: &DecodedEvent<OpenedOnly>) -> Result<(), HandlerError> {
        *model.entry(event.envelope.stream.aggregate_id.clone()).or_default() += 1;
        Ok(())
    }

    async fn reset(&self, model: &mut Self::Context) -> Result<(), HandlerError> {
        model.clear();
        Ok(())
    }
}

pub struct Fixture {
    pub store: InMemoryStore,
    pub model: InMemoryReadModel<BTreeMap<String, u32>>,
}

/// T-1: opened by alice, escalated twice, closed (4 events); T-2: opened.
pub async fn fixture() -> Fixture {
    let store = InMemoryStore::new();
    let tickets = Repository::<Ticket, _>::new(store.clone());
    let open = |title: &'static str| move |_: &Ticket| vec![Opened { title: title.into() }.into()];
    tickets
        .execute("T-1", Metadata::new().with_actor("alice"), open("Printer"))
        .await
        .expect("open");
    for level in [2, 3] {
        let escalate = move |_: &Ticket| vec![TicketEvent::from(Escalated { level })];
        tickets
            .execute("T-1", Metadata::new(), escalate)
            .await
            .expect("escalate");
    }
    tickets
        .execute("T-1", Metadata::new(), |_: &Ticket| vec![Closed.into()])
        .await
        .expect("close");
    tickets
        .execute("T-2", Metadata::new(), open("VPN"))
        .await
        .expect("open");
    Fixture {
        store,
        model: InMemoryReadModel::new(),
    }
}

impl Fixture {
    pub fn cli(&self) -> Cli<InMemoryStore> {
        let runner = ProjectionRunner::new(OpenedCount, self.store.clone(), self.model.clone());
        Cli::new(self.store.clone())
            .aggregate::<Ticket>()
            .expect("registered")
            .projection(runner)
    }

    pub async fn append_raw(&self, stream: &StreamId, name: &str, schema_version: u32, payload: &str) {
        let event = NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_name: name.into(),
            schema_version,
            payload: payload.as_bytes().to_vec(),
            metadata: Metadata::new(),
        };
        self.store
            .append(stream, ExpectedVersion::Any, vec![event])
            .await
            .expect("raw append");
    }

    /// Adds untrusted data: T-3 opened with [`SCRIPT_TITLE`] by [`ATTRIBUTE_ACTOR`]; a ticket
    /// with the id [`ODD_ID`]; T-4 with an event stored at schema v1 (upcast on read) and one at
    /// an unknown schema version (does not decode); `order/O-1`, of a type not registered.
    pub async fn with_untrusted(self) -> Self {
        let tickets = Repository::<Ticket, _>::new(self.store.clone());
        let open = |title: &'static str| move |_: &Ticket| vec![Opened { title: title.into() }.into()];
        tickets
            .execute("T-3", Metadata::new().with_actor(ATTRIBUTE_ACTOR), open(SCRIPT_TITLE))
            .await
            .expect("open T-3");
        tickets
            .execute(ODD_ID, Metadata::new(), open("odd"))
            .await
            .expect("open the odd id");
        let t4 = StreamId::new("ticket", "T-4");
        self.append_raw(&t4, "Opened", 1, r#"{"title":"Old"}"#).await;
        self.append_raw(&t4, "Escalated", 1, "{}").await;
        self.append_raw(&t4, "Escalated", 9, r#"{"level":9}"#).await;
        self.append_raw(&StreamId::new("order", "O-1"), "Placed", 1, r#"{"total":3}"#)
            .await;
        self
    }
}

/// A title a browser must show as text, never run.
pub const SCRIPT_TITLE: &str = "<script>alert(1)</script>";
/// An actor that would close an attribute and open an element.
pub const ATTRIBUTE_ACTOR: &str = "\"><img src=x onerror=alert(2)>";
/// A ticket id with a slash and characters that mean something in HTML and URLs.
pub const ODD_ID: &str = "a/b <&>\"?#";

/// Output that sends each complete line to a channel: what `es serve` prints, read while it
/// runs.
pub struct LineSender(pub tokio::sync::mpsc::UnboundedSender<String>, pub Vec<u8>);

impl LineSender {
    pub fn new(sender: tokio::sync::mpsc::UnboundedSender<String>) -> Self {
        Self(sender, Vec::new())
    }
}

impl Write for LineSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(bytes);
        while let Some(end) = self.1.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = self.1.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_owned();
            // The reader may have stopped listening; the server's output is then not needed.
            let _ = self.0.send(line);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// GET `path` from 127.0.0.1:`port` over a plain socket: the whole response, headers and body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut socket = TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    socket.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    socket.read_to_string(&mut response)?;
    Ok(response)
}
