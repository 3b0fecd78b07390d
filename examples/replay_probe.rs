//! Writes large logs straight into an embedded log file (no gRPC) and times their replay
//! in-process, the way the combined server opens its log: a tool for measuring the replay's
//! speed and memory with repeatable instruction counts (`perf stat -e instructions`,
//! `valgrind --tool=callgrind`) instead of the full benchmark.
//!
//! ```sh
//! cargo run --release --example replay_probe -- write-uniform /tmp/uniform 1000000 100000
//! cargo run --release --example replay_probe -- write-items /tmp/items 1000000
//! cargo run --release --example replay_probe -- write-items /tmp/reserved 1000000 --reserve
//! cargo run --release --example replay_probe -- replay /tmp/uniform
//! cargo run --release --example replay_probe -- snapshot /tmp/uniform
//! cargo run --release --example replay_probe -- replay /tmp/uniform --snapshots
//! ```
//!
//! The item names are the benchmark's (`p{index / 10}` in store `s{index % 10}`), so the
//! memory figures compare with its `replay` scenario.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};

use inventory::app::ReadModel;
use inventory::domain::{
    CustomerId, EventId, LogPosition, ProductId, Quantity, QuantityEvent, Reason, RecordedEvent,
    ReservationEvent, ReservationId, StockEvent, StockLevel, StoreId, StreamKey, StreamVersion,
    Timestamp,
};
use inventory::log::{EmbeddedLog, EventLog, MAX_APPEND_EVENTS};

#[derive(Parser, Debug)]
struct Arguments {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// `events` AddStock events spread over `items` items, round robin.
    WriteUniform {
        directory: PathBuf,
        events: u64,
        items: u64,
    },
    /// One AddStock on each of `items` distinct items; with `--reserve`, then one active
    /// reservation (24 h) on each.
    WriteItems {
        directory: PathBuf,
        items: u64,
        #[arg(long)]
        reserve: bool,
    },
    /// Opens the log as the combined server does and prints the time and the RSS it took;
    /// with `--snapshots`, from its newest snapshot and the events after it.
    Replay {
        directory: PathBuf,
        #[arg(long)]
        snapshots: bool,
    },
    /// Takes a snapshot at the log's head, as `inventory snapshot` does, and prints its time.
    Snapshot { directory: PathBuf },
}

const STORES: u64 = 10;
const DAY_MILLIS: u64 = 24 * 60 * 60 * 1000;

fn stream(index: u64) -> StreamKey {
    StreamKey::new(
        ProductId::parse(&format!("p{}", index / STORES)).expect("valid product id"),
        StoreId::parse(&format!("s{}", index % STORES)).expect("valid store id"),
    )
}

fn now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    Timestamp::from_unix_millis(millis)
}

/// Appends events made by `make(position)` in batches of the log's largest append.
async fn write(
    directory: &Path,
    count: u64,
    mut make: impl FnMut(LogPosition) -> RecordedEvent,
) -> LogPosition {
    let (log, report) = EmbeddedLog::open(directory, |_| Ok(())).expect("opening the log");
    let mut head = report.head;
    let mut written = 0;
    while written < count {
        let batch_len = (count - written).min(MAX_APPEND_EVENTS as u64);
        let mut batch = Vec::with_capacity(batch_len as usize);
        for _ in 0..batch_len {
            head = head.next();
            batch.push(make(head));
        }
        log.append(batch).await.expect("appending");
        written += batch_len;
    }
    head
}

fn event(
    position: LogPosition,
    stream: StreamKey,
    version: u64,
    stock_after: StockLevel,
    event: StockEvent,
) -> RecordedEvent {
    RecordedEvent {
        position,
        event_id: EventId(uuid::Uuid::now_v7().as_u128()),
        stream,
        version: StreamVersion(version),
        occurred_at: now(),
        stock_after,
        command_id: None,
        command_fingerprint: 0,
        trace_parent: None,
        command_event_index: 0,
        command_event_count: 1,
        actor: None,
        event,
    }
}

fn added(quantity: u64) -> StockEvent {
    StockEvent::Quantity(QuantityEvent::StockAdded {
        quantity: Quantity::new(quantity).expect("positive"),
        reason: Reason::parse("bench").expect("valid reason"),
    })
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[tokio::main]
async fn main() {
    match Arguments::parse().action {
        Action::WriteUniform {
            directory,
            events,
            items,
        } => {
            let mut versions = vec![0u64; items as usize];
            write(&directory, events, |position| {
                let index = (position.0 - 1) % items;
                versions[index as usize] += 1;
                let version = versions[index as usize];
                let level = StockLevel::new(version, 0).expect("valid level");
                event(position, stream(index), version, level, added(1))
            })
            .await;
        }
        Action::WriteItems {
            directory,
            items,
            reserve,
        } => {
            write(&directory, items, |position| {
                let level = StockLevel::new(1, 0).expect("valid level");
                event(position, stream(position.0 - 1), 1, level, added(1))
            })
            .await;
            if reserve {
                let expires_at = Timestamp::from_unix_millis(now().unix_millis() + DAY_MILLIS);
                write(&directory, items, |position| {
                    let index = position.0 - 1 - items;
                    let reservation_id =
                        ReservationId::parse(&uuid::Uuid::now_v7().to_string()).expect("uuid");
                    let level = StockLevel::new(1, 1).expect("valid level");
                    let reserved = StockEvent::Reservation(ReservationEvent::StockReserved {
                        reservation_id,
                        quantity: Quantity::new(1).expect("positive"),
                        customer_id: CustomerId::parse("bench").expect("valid customer id"),
                        expires_at,
                    });
                    event(position, stream(index), 2, level, reserved)
                })
                .await;
            }
        }
        Action::Snapshot { directory } => {
            let started = Instant::now();
            let taken = inventory::tools::take_snapshot(&directory, 2)
                .await
                .expect("taking a snapshot");
            println!("{taken:?} in {:.3} s", started.elapsed().as_secs_f64());
        }
        Action::Replay {
            directory,
            snapshots,
        } => {
            let policy = if snapshots {
                inventory::app::snapshot::SnapshotPolicy::DEFAULT
            } else {
                inventory::app::snapshot::SnapshotPolicy::OFF
            };
            let rss_before = resident_kib();
            let started = Instant::now();
            let model = Arc::new(ReadModel::new());
            let (_log, state, report) =
                inventory::app::replay::open_embedded(&directory, Some(&model), now(), policy)
                    .expect("replaying the log");
            let took = started.elapsed();
            let rss_after = resident_kib();
            println!(
                "snapshot {:?}; events {} in {:.3} s ({:.0} events/s); items {} / {}; rss {} KiB -> {} KiB (+{} KiB)",
                report.snapshot,
                report.events,
                took.as_secs_f64(),
                report.events as f64 / took.as_secs_f64(),
                state.inventory().item_count(),
                model.item_count(),
                rss_before,
                rss_after,
                rss_after - rss_before,
            );
        }
    }
}
