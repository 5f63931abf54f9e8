//! A small history of the examples' tickets, as the operator reviews find it in a store.

use std::time::Duration;

use es_core::{EventStore, Metadata, Repository};
use examples::ticket::{Priority, Ticket};

/// Ticket T-1 (opened by a customer, assigned to alice by an agent, escalated: 3 events, `pause`
/// apart), then tickets T-2 to T-`last` (opened).
pub async fn ticket_history<S: EventStore + Clone + 'static>(
    tickets: &Repository<Ticket, S>,
    pause: Duration,
    last: u32,
) {
    tickets
        .execute("T-1", Metadata::new().with_actor("customer:acme"), |t| {
            t.open("Printer on fire", "acme", Priority::Normal)
        })
        .await
        .expect("open");
    tokio::time::sleep(pause).await;
    tickets
        .execute("T-1", Metadata::new().with_actor("agent:carol"), |t| t.assign("alice"))
        .await
        .expect("assign");
    tokio::time::sleep(pause).await;
    tickets
        .execute("T-1", Metadata::new(), |t| t.request_escalation("month end"))
        .await
        .expect("escalate");
    for n in 2..=last {
        tickets
            .execute(&format!("T-{n}"), Metadata::new(), |t| {
                t.open("VPN down", "acme", Priority::High)
            })
            .await
            .expect("open");
    }
}
