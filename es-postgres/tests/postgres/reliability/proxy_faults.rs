//! The load through a chaos proxy that drops and stalls connections, loses the answers of
//! committed appends and unit commits, and refuses new connections for a while.

use std::time::{Duration, Instant};

use es_test_support::load::MARKER;
use es_test_support::{bounded_by, Chaos, ChaosProxy, Rng};

use super::{bound, create_tables, knob, load_time, store_on, Load};
use crate::support::{database, schema};

/// The faults of phase `n`, in turn: a storm of drops, stalls and lost answers; the same while
/// new connections are refused for a while; many drops; many lost answers.
fn phase(n: u64, rng: &mut Rng) -> (Chaos, Option<Duration>) {
    let storm = Chaos::default()
        .dropping(0.002)
        .stalling(0.002, Duration::from_millis(20)..Duration::from_millis(400))
        .losing_answers(0.02, [MARKER, "COMMIT"]);
    match n % 4 {
        0 => (storm, None),
        1 => (storm, Some(Duration::from_millis(rng.range(200..800)))),
        2 => (Chaos::default().dropping(0.01), None),
        _ => (Chaos::default().losing_answers(0.1, [MARKER, "COMMIT"]), None),
    }
}

/// 8 writers and 2 projections through a [`ChaosProxy`] for `ES_RELIABILITY_SECONDS` (4): a
/// phase of faults every second or so (see [`phase`]). Afterwards: nothing
/// acknowledged is lost, nothing is stored twice or in part, lost answers resolve to whole
/// batches or nothing, each projection ran once without stopping and equals a rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reliability_under_a_chaos_proxy_loses_and_duplicates_nothing() {
    let load = load_time();
    bounded_by(bound(load), chaos_load(load)).await;
}

async fn chaos_load(load: Duration) {
    let seed = knob("ES_RELIABILITY_SEED", 0x13);
    let schema = schema().await;
    let direct = schema.store().clone();
    create_tables(&direct).await;
    let proxy = ChaosProxy::in_front_of(database().url(), seed)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let through = store_on(proxy.connect_options(), &direct, Duration::from_secs(5)).await;

    let running = Load::start(&through, &direct, seed);
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut phases = 0;
    while started.elapsed() < load {
        let (chaos, refuse) = phase(phases, &mut rng);
        proxy.set(chaos);
        if let Some(period) = refuse {
            proxy.refuse_for(period);
        }
        phases += 1;
        tokio::time::sleep(Duration::from_millis(rng.range(700..1300))).await;
    }
    proxy.set(Chaos::default());
    // Not through the gate: this test holds it already.
    let rebuild_into = database().schema().await.expect("a schema for the rebuild");
    let figures = running.finish(&direct, rebuild_into.store()).await;
    let counts = proxy.counts();
    eprintln!(
        "reliability (chaos proxy, {} s, {phases} phases, seed {seed}): proxy: {counts}\n  {figures}",
        load.as_secs()
    );
    figures.report.assert_clean();
    assert!(
        counts.dropped + counts.answers_lost > 0,
        "the proxy did nothing: {counts}"
    );
    assert!(figures.tally.acknowledged > 0, "nothing was written: {}", figures.tally);
}
