//! What the delivery tests share: quick retries, and waiting on a sink's cursor.

use std::time::Duration;

use inventory::delivery::{RetryPolicy, SinkConfig};
use inventory::grpc::pb;

use super::{Combined, wait_for};

/// How long a delivery test waits for what it awaits.
pub const WAIT: Duration = Duration::from_secs(30);

/// `sink` with retries quick enough for a test: 20 ms doubling to 200 ms, parked after an hour.
pub fn quick(sink: SinkConfig) -> SinkConfig {
    SinkConfig {
        retry: RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            park_after: Duration::from_secs(3600),
        },
        ..sink
    }
}

/// Every sink's status, from `ListSinks`.
pub async fn sinks(server: &Combined) -> Vec<pb::SinkStatus> {
    server
        .deliveries()
        .await
        .list_sinks(pb::ListSinksRequest {})
        .await
        .unwrap()
        .into_inner()
        .sinks
}

pub async fn sink_status(server: &Combined, name: &str) -> pb::SinkStatus {
    sinks(server)
        .await
        .into_iter()
        .find(|sink| sink.name == name)
        .unwrap()
}

/// Waits until the sink's stored cursor is at `head`; its status then.
pub async fn cursor_at(server: &Combined, name: &str, head: u64) -> pb::SinkStatus {
    wait_for(WAIT, &format!("{name}'s cursor at {head}"), async || {
        let status = sink_status(server, name).await;
        (status.position == head).then_some(status)
    })
    .await
}

/// `RewindSink` to `position`.
pub async fn rewind(server: &Combined, name: &str, position: u64) -> pb::SinkStatus {
    server
        .deliveries()
        .await
        .rewind_sink(pb::RewindSinkRequest {
            name: name.into(),
            position,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Asserts that `positions` (what a receiver got, in order of arrival) hold each position
/// from 1 to `head` once, in order, once repeats of positions already seen are removed: what
/// a receiver deduplicating on the event's position (or id) keeps. Returns how many repeats
/// there were.
pub fn assert_every_event_in_order(positions: &[u64], head: u64) -> usize {
    let mut seen = std::collections::HashSet::new();
    let kept: Vec<u64> = positions
        .iter()
        .copied()
        .filter(|position| seen.insert(*position))
        .collect();
    assert_eq!(
        kept,
        (1..=head).collect::<Vec<_>>(),
        "every event, in order"
    );
    positions.len() - kept.len()
}
