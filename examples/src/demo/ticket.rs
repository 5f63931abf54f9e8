//! Plays a support ticket's life, prints every stored event with its metadata, then the ticket's
//! state at every version (time travel). On the store [`Backend::choose`] picks.

use crate::ticket::{stored_v1_records, Priority, Ticket, TicketError, TicketEvent};
use es_core::{
    CommandError, EventStore, ExpectedVersion, InMemoryStore, Metadata, NewEvent, Repository, SnapshotStore,
    StreamSlice,
};
use es_postgres::PostgresStore;
use es_sqlite::SqliteStore;
use uuid::Uuid;

use super::{announce_history, Backend, Outcome};

/// One command of the scenario: what happens, who asks, and the decision.
type Step = (
    &'static str,
    Metadata,
    fn(&Ticket) -> Result<Vec<TicketEvent>, TicketError>,
);

/// Runs the demo on `backend`.
pub async fn run(backend: &Backend) -> Outcome {
    match backend {
        Backend::Sqlite(path) => {
            let store = SqliteStore::open(path).await?;
            store.migrate().await?;
            announce_history(&store, &format!("Ticket example on the SQLite file {}", path.display())).await?;
            play(store, backend).await
        }
        Backend::Postgres(url) => {
            let store = PostgresStore::connect(url).await?.with_schema("es_examples")?;
            store.migrate().await?;
            announce_history(&store, "Ticket example on PostgreSQL (schema `es_examples`)").await?;
            play(store, backend).await
        }
        Backend::Memory => {
            println!("Ticket example on the in-memory store");
            play(InMemoryStore::new(), backend).await
        }
    }
}

/// Executes one step and prints what became of it.
async fn execute<S: EventStore>(
    tickets: &Repository<Ticket, S>,
    id: &str,
    what: &str,
    metadata: Metadata,
    decide: fn(&Ticket) -> Result<Vec<TicketEvent>, TicketError>,
) -> Outcome {
    match tickets.execute(id, metadata, decide).await {
        Ok(done) if done.already_stored => println!(
            "  ok       {what:<40} -> version {} (already stored: nothing appended)",
            done.version
        ),
        Ok(done) => println!("  ok       {what:<40} -> version {}", done.version),
        Err(CommandError::Rejected(error)) => println!("  refused  {what:<40} -> {error}"),
        Err(other) => return Err(other.into()),
    }
    Ok(())
}

async fn play<S: EventStore + SnapshotStore + Clone + 'static>(store: S, backend: &Backend) -> Outcome {
    let tickets = Repository::<Ticket, S>::new(store.clone()).with_snapshot_every(5);
    let id = format!("T-{}", &Uuid::now_v7().simple().to_string()[20..]);
    // Each request carries its own command id, as a client would send it: the idempotency key.
    let request = |actor: &str| Metadata::new().with_actor(actor).with_command_id(Uuid::now_v7());
    let conversation = Uuid::now_v7();

    println!("\n== Commands on ticket {id}");
    let steps: Vec<Step> = vec![
        (
            "customer opens it",
            request("customer:acme").with_correlation_id(conversation),
            |t| t.open("Printer prints only blank pages", "acme-corp", Priority::Normal),
        ),
        ("lead assigns alice", request("agent:carol"), |t| t.assign("alice")),
        ("alice comments", request("agent:alice"), |t| {
            t.comment("alice", "Toner replaced, testing")
        }),
        (
            "customer asks to escalate",
            request("customer:acme").with_correlation_id(conversation),
            |t| t.request_escalation("Invoices cannot be printed before month end"),
        ),
        ("customer asks again", request("customer:acme"), |t| {
            t.request_escalation("Still broken")
        }),
        ("alice resolves it", request("agent:alice"), |t| {
            t.resolve("Replaced the fuser unit")
        }),
        ("alice closes it", request("agent:alice"), |t| t.close()),
        ("customer escalates the closed ticket", request("customer:acme"), |t| {
            t.request_escalation("It broke again")
        }),
        ("customer reopens it", request("customer:acme"), |t| {
            t.reopen("Blank pages are back")
        }),
        ("lead assigns bob", request("agent:carol"), |t| t.assign("bob")),
    ];
    let resent = steps[2].clone();
    for (what, metadata, decide) in steps {
        execute(&tickets, &id, what, metadata, decide).await?;
    }
    // The answer to alice's comment was lost and her client sends the same request again: it is
    // recognised by its command id and answered with the original outcome, not appended twice.
    let (_, metadata, decide) = resent;
    execute(&tickets, &id, "alice's comment, sent again", metadata, decide).await?;

    println!("\n== The stream, as stored");
    let history = tickets.events(&id, StreamSlice::all()).await?;
    for decoded in &history {
        let e = &decoded.envelope;
        println!(
            "  v{:<2} pos {:<4} {:<15} schema v{} at {}",
            e.version,
            e.position,
            e.event_name,
            e.schema_version,
            e.recorded_at.format("%H:%M:%S%.6f")
        );
        println!(
            "       actor {:<15} correlation {} causation {}",
            e.metadata.actor.as_deref().unwrap_or("-"),
            e.metadata
                .correlation_id
                .map_or_else(|| "-".into(), |id| id.to_string()),
            e.metadata.causation_id.map_or_else(|| "-".into(), |id| id.to_string()),
        );
        println!("       payload {}", String::from_utf8_lossy(&e.payload));
    }

    println!("\n== Time travel: the ticket at every version");
    for version in 1..=history.len() as u64 {
        let past = tickets.load_at_version(&id, version).await?;
        let t = &past.aggregate;
        println!(
            "  v{:<2} {:<9} priority {:<6} assignee {:<6} escalated {:<5} comments {} reopened {}",
            past.version,
            format!("{:?}", t.status),
            format!("{:?}", t.priority),
            t.assignee.as_deref().unwrap_or("-"),
            t.escalation.is_some(),
            t.comments.len(),
            t.reopened,
        );
    }
    if let Some(fourth) = history.get(3) {
        let instant = fourth.envelope.recorded_at;
        let past = tickets.load_at_instant(&id, instant).await?;
        println!(
            "  as of {} (when v4 was recorded): version {}, escalation {:?}",
            instant.format("%H:%M:%S%.6f"),
            past.version,
            past.aggregate.escalation
        );
    }

    println!("\n== A ticket stored by an older release (schema v1 payloads, old event name)");
    let legacy = format!("{id}-legacy");
    let records = stored_v1_records()?;
    let batch = records
        .into_iter()
        .map(|record| NewEvent {
            event_id: Uuid::now_v7(),
            event_name: record.event_name,
            schema_version: record.schema_version,
            payload: record.payload.to_string().into_bytes(),
            metadata: Metadata::new().with_actor("migration"),
        })
        .collect();
    let stream = Repository::<Ticket, S>::stream_id(&legacy);
    store.append(&stream, ExpectedVersion::NoStream, batch).await?;
    let loaded = tickets.load(&legacy).await?;
    println!("  loaded at version {}: {:?}", loaded.version, loaded.aggregate);

    println!("\n== Look at it with the es command line");
    let Some(store_arguments) = backend.es_arguments() else {
        println!("  (the in-memory store ends with this run: run on the SQLite file to look at it with `es`)");
        return Ok(());
    };
    for command in [
        "streams --type ticket".to_owned(),
        format!("events ticket/{id}"),
        format!("state ticket/{id} --version 2"),
        "serve".to_owned(),
    ] {
        println!("  cargo run -p examples --bin es -- {store_arguments}{command}");
    }
    Ok(())
}
