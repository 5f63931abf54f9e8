//! `nats_bench`: es-nats against raw `async-nats` JetStream publishes doing the same work, on
//! one `nats-server` and on a three-node cluster it starts itself (issue 17). Prints a markdown
//! table; `scripts/bench --nats` runs it.
//!
//! ```text
//! nats_bench [--repetitions N] [--smoke]
//! ```
//!
//! Scenarios, on each cluster size (replicas = nodes, 3 partitions):
//!
//! - n1: 1,000 one-event appends to new streams, one after the other (events/s);
//! - n2: 2,000 one-event appends to new streams from 8 tasks (events/s);
//! - n3: one command of 10,000 events, stored atomically (ms).
//!
//! The raw side publishes the same payloads to the same kind of JetStream streams (3 per
//! cluster, file storage, the same replicas) and waits for each acknowledgement: for n1 and n2
//! one message per event with `Nats-Expected-Last-Subject-Sequence: 0` (a new stream, checked by
//! the server, as es-nats's append is); for n3 one message holding the 10,000 events (es-nats
//! also stores a batch as one message). What es-nats adds: reading the stream's head before the
//! publish, the event-id index (one more publish per event), and its encoding.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use es_core::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
use es_nats::{NatsOptions, NatsStore};
use es_test_support::nats::NatsCluster;
use tokio::task::JoinSet;
use uuid::Uuid;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What one scenario measures, and its sizes.
#[derive(Clone, Copy)]
struct Sizes {
    sequential: usize,
    concurrent: usize,
    tasks: usize,
    batch: usize,
}

const FULL: Sizes = Sizes {
    sequential: 1_000,
    concurrent: 2_000,
    tasks: 8,
    batch: 10_000,
};

const SMOKE: Sizes = Sizes {
    sequential: 20,
    concurrent: 40,
    tasks: 8,
    batch: 200,
};

fn payload(n: usize) -> Vec<u8> {
    format!(r#"{{"n":{n},"title":"Printer on fire","customer":"ACME-{n}"}}"#).into_bytes()
}

fn event(n: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: "TicketOpened".into(),
        schema_version: 1,
        payload: payload(n),
        metadata: Metadata::new().with_actor("bench"),
    }
}

/// es-nats on `cluster`, under a prefix of its own.
async fn store(cluster: &NatsCluster, run: &str) -> BenchResult<NatsStore> {
    let options = NatsOptions::new().prefix(run).partitions(3).replicas(cluster.size());
    Ok(NatsStore::connect(&cluster.url(), options).await?)
}

/// The raw side: three streams like es-nats's partitions.
async fn raw(cluster: &NatsCluster, run: &str) -> BenchResult<jetstream::Context> {
    let servers: Vec<String> = cluster.url().split(',').map(str::to_owned).collect();
    let client = async_nats::connect(servers.as_slice()).await?;
    let context = jetstream::new(client);
    for partition in 0..3 {
        context
            .get_or_create_stream(jetstream::stream::Config {
                name: format!("{run}_raw_{partition}"),
                subjects: vec![format!("{run}.raw.{partition}.>")],
                num_replicas: cluster.size(),
                ..Default::default()
            })
            .await?;
    }
    Ok(context)
}

async fn raw_publish(context: &jetstream::Context, run: &str, n: usize, bytes: Vec<u8>) -> BenchResult<()> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
    let subject = format!("{run}.raw.{}.{}", n % 3, Uuid::now_v7().simple());
    context
        .publish_with_headers(subject, headers, bytes.into())
        .await?
        .await?;
    Ok(())
}

/// n1 or n2 on es-nats: `count` one-event appends to new streams from `tasks` tasks.
async fn ours_appends(store: &NatsStore, count: usize, tasks: usize) -> BenchResult<f64> {
    let started = Instant::now();
    let mut set = JoinSet::new();
    for task in 0..tasks {
        let store = store.clone();
        set.spawn(async move {
            for n in (task..count).step_by(tasks) {
                let stream = StreamId::new("ticket", Uuid::now_v7().to_string());
                store.append(&stream, ExpectedVersion::NoStream, vec![event(n)]).await?;
            }
            Ok::<_, es_core::StoreError>(())
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// n1 or n2 on raw JetStream.
async fn raw_appends(context: &jetstream::Context, run: &str, count: usize, tasks: usize) -> BenchResult<f64> {
    let started = Instant::now();
    let mut set = JoinSet::new();
    let run: Arc<str> = run.into();
    for task in 0..tasks {
        let (context, run) = (context.clone(), Arc::clone(&run));
        set.spawn(async move {
            for n in (task..count).step_by(tasks) {
                raw_publish(&context, &run, n, payload(n)).await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// n3 on es-nats: one append of `batch` events (ms).
async fn ours_batch(store: &NatsStore, batch: usize) -> BenchResult<f64> {
    let events: Vec<NewEvent> = (0..batch).map(event).collect();
    let stream = StreamId::new("ticket", Uuid::now_v7().to_string());
    let started = Instant::now();
    store.append(&stream, ExpectedVersion::NoStream, events).await?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// n3 on raw JetStream: one message holding the same events as JSON (ms).
async fn raw_batch(context: &jetstream::Context, run: &str, batch: usize) -> BenchResult<f64> {
    let events: Vec<serde_json::Value> = (0..batch)
        .map(|n| {
            serde_json::json!({
                "id": Uuid::now_v7(),
                "name": "TicketOpened",
                "payload": serde_json::from_slice::<serde_json::Value>(&payload(n)).unwrap_or_default(),
            })
        })
        .collect();
    let bytes = serde_json::to_vec(&events)?;
    let started = Instant::now();
    raw_publish(context, run, 0, bytes).await?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// The median and the range of `values`.
fn summary(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    let (low, high) = (values[0], values[values.len() - 1]);
    let format = |value: f64| {
        if value >= 100.0 {
            format!("{value:.0}")
        } else {
            format!("{value:.1}")
        }
    };
    format!("{} <sub>{}–{}</sub>", format(median), format(low), format(high))
}

async fn run(sizes: Sizes, repetitions: usize) -> BenchResult<()> {
    println!("| nodes | scenario | unit | es-nats | raw async-nats | es-nats ÷ raw |");
    println!("|---|---|---|---:|---:|---:|");
    for nodes in [1, 3] {
        let cluster = NatsCluster::start_with_max_payload(nodes, Some(8 << 20)).await;
        let rows = [
            (
                format!("n1. {} one-event appends, sequential", sizes.sequential),
                "events/s ↑",
            ),
            (
                format!("n2. {} one-event appends, {} tasks", sizes.concurrent, sizes.tasks),
                "events/s ↑",
            ),
            (format!("n3. one command of {} events", sizes.batch), "ms ↓"),
        ];
        let mut figures: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); 3];
        for repetition in 0..repetitions {
            let run = format!("b{nodes}r{repetition}");
            let ours = store(&cluster, &run).await?;
            let context = raw(&cluster, &run).await?;
            figures[0].0.push(ours_appends(&ours, sizes.sequential, 1).await?);
            figures[0]
                .1
                .push(raw_appends(&context, &run, sizes.sequential, 1).await?);
            figures[1]
                .0
                .push(ours_appends(&ours, sizes.concurrent, sizes.tasks).await?);
            figures[1]
                .1
                .push(raw_appends(&context, &run, sizes.concurrent, sizes.tasks).await?);
            figures[2].0.push(ours_batch(&ours, sizes.batch).await?);
            figures[2].1.push(raw_batch(&context, &run, sizes.batch).await?);
        }
        for ((name, unit), (mut ours, mut raw)) in rows.into_iter().zip(figures) {
            let ratio = {
                let (mut a, mut b) = (ours.clone(), raw.clone());
                a.sort_by(f64::total_cmp);
                b.sort_by(f64::total_cmp);
                a[a.len() / 2] / b[b.len() / 2]
            };
            println!(
                "| {nodes} | {name} | {unit} | {} | {} | {ratio:.2}x |",
                summary(&mut ours),
                summary(&mut raw)
            );
        }
        drop(cluster);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|arg| arg == "--smoke");
    let repetitions = args
        .iter()
        .position(|arg| arg == "--repetitions")
        .and_then(|index| args.get(index + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(if smoke { 1 } else { 3 });
    let sizes = if smoke { SMOKE } else { FULL };
    match run(sizes, repetitions).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nats_bench: {error}");
            ExitCode::FAILURE
        }
    }
}
