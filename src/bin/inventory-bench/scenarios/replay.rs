//! replay: the start-up time of a server over a large log, and the memory each stock item and
//! each active reservation takes once replayed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{LOAD_IN_FLIGHT, add_stock, reserve_stock, uniform_items};
use crate::load::{self, ItemSpace, LoadCommand};
use crate::machine;
use crate::server_process::{DataDir, ServerProcess};
use crate::{BenchConfig, BenchError};

/// Reservations made to measure their memory live this long, so none expires during the run.
const LONG_RESERVATION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Start-up after a restart, and memory per item and per reservation.
#[derive(Clone, Debug)]
pub struct ReplayResult {
    /// The log whose replay is timed.
    pub events: u64,
    pub loaded_in: Duration,
    pub listening_after: Duration,
    pub ready_after: Duration,
    pub events_per_second: f64,
    pub rss_after_replay_bytes: u64,
    /// The memory measurement: an empty server, then `items` distinct items, then one active
    /// reservation on each.
    pub items: u64,
    /// Start-up with an empty log: what a start costs besides the replay.
    pub empty_ready_after: Duration,
    pub empty_rss_bytes: u64,
    pub items_rss_bytes: u64,
    pub items_ready_after: Duration,
    pub reservations_rss_bytes: u64,
    pub reservations_ready_after: Duration,
}

impl ReplayResult {
    /// Events per second of the replay alone: the start-up time less an empty log's.
    pub fn replay_only_events_per_second(&self) -> f64 {
        let replay_only = self.ready_after.saturating_sub(self.empty_ready_after);
        self.events as f64 / replay_only.as_secs_f64().max(1e-6)
    }

    pub fn bytes_per_item(&self) -> f64 {
        self.items_rss_bytes.saturating_sub(self.empty_rss_bytes) as f64 / self.items.max(1) as f64
    }

    pub fn bytes_per_reservation(&self) -> f64 {
        self.reservations_rss_bytes
            .saturating_sub(self.items_rss_bytes) as f64
            / self.items.max(1) as f64
    }

    pub fn to_json(&self) -> Value {
        json!({
            "events": self.events,
            "load_seconds": self.loaded_in.as_secs_f64(),
            "listening_after_seconds": self.listening_after.as_secs_f64(),
            "ready_after_seconds": self.ready_after.as_secs_f64(),
            "events_per_second": self.events_per_second,
            "rss_after_replay_bytes": self.rss_after_replay_bytes,
            "items": self.items,
            "empty_ready_after_seconds": self.empty_ready_after.as_secs_f64(),
            "replay_only_events_per_second": self.replay_only_events_per_second(),
            "empty_rss_bytes": self.empty_rss_bytes,
            "items_rss_bytes": self.items_rss_bytes,
            "items_ready_after_seconds": self.items_ready_after.as_secs_f64(),
            "bytes_per_item": self.bytes_per_item(),
            "active_reservations": self.items,
            "reservations_rss_bytes": self.reservations_rss_bytes,
            "reservations_ready_after_seconds": self.reservations_ready_after.as_secs_f64(),
            "bytes_per_reservation": self.bytes_per_reservation(),
        })
    }
}

/// Stops the server and starts it again on the same data; returns the new one once it
/// answers, with its start-up time.
async fn restart(
    server: ServerProcess,
    binary: &std::path::Path,
    data_dir: &DataDir,
) -> Result<(ServerProcess, Duration), BenchError> {
    server.stop()?;
    let server = ServerProcess::spawn(binary, &data_dir.path).await?;
    let ready_after = server.wait_ready().await?;
    Ok((server, ready_after))
}

pub async fn run(
    config: &BenchConfig,
    binary: &std::path::Path,
) -> Result<ReplayResult, BenchError> {
    // Part one: a log of `replay_events` AddStock events over the uniform data set.
    let events = config.replay_events;
    let data_dir = DataDir::create(&config.data_root, "replay")?;
    let server = ServerProcess::spawn(binary, &data_dir.path).await?;
    server.wait_ready().await?;
    let items = uniform_items(config);
    let space = items.clone();
    let loaded_in = load::bulk_load(
        server.command_addr,
        events,
        LOAD_IN_FLIGHT,
        "writing the replay log",
        Arc::new(move |index| {
            let (product, store) = space.key(index % space.len());
            LoadCommand::Add(add_stock(product, store, 1))
        }),
    )
    .await?
    .took;
    eprintln!(
        "  wrote {events} events in {:.1} s ({:.0} commands/s)",
        loaded_in.as_secs_f64(),
        events as f64 / loaded_in.as_secs_f64()
    );
    let (server, ready_after) = restart(server, binary, &data_dir).await?;
    let listening_after = server.listening_after;
    let rss_after_replay_bytes = machine::resident_bytes(server.pid())?;
    server.stop()?;
    drop(data_dir);
    eprintln!(
        "  replayed {events} events in {:.2} s ({:.0} events/s)",
        ready_after.as_secs_f64(),
        events as f64 / ready_after.as_secs_f64()
    );

    // Part two: memory per item and per active reservation, each measured after a restart
    // so that only what the replay builds is resident.
    let item_count = config.replay_items;
    let distinct = Arc::new(ItemSpace {
        prefix: String::new(),
        products: item_count.div_ceil(10),
        stores: 10,
    });
    let data_dir = DataDir::create(&config.data_root, "memory")?;
    let server = ServerProcess::spawn(binary, &data_dir.path).await?;
    server.wait_ready().await?;
    let (server, empty_ready_after) = restart(server, binary, &data_dir).await?;
    let empty_rss_bytes = machine::resident_bytes(server.pid())?;
    let space = distinct.clone();
    load::bulk_load(
        server.command_addr,
        item_count,
        LOAD_IN_FLIGHT,
        "stocking distinct items",
        Arc::new(move |index| {
            let (product, store) = space.key(index);
            LoadCommand::Add(add_stock(product, store, 1))
        }),
    )
    .await?;
    let (server, items_ready_after) = restart(server, binary, &data_dir).await?;
    let items_rss_bytes = machine::resident_bytes(server.pid())?;
    let space = distinct.clone();
    load::bulk_load(
        server.command_addr,
        item_count,
        LOAD_IN_FLIGHT,
        "reserving",
        Arc::new(move |index| {
            let (product, store) = space.key(index);
            LoadCommand::Reserve(reserve_stock(product, store, Some(LONG_RESERVATION_TTL)))
        }),
    )
    .await?;
    let (server, reservations_ready_after) = restart(server, binary, &data_dir).await?;
    let reservations_rss_bytes = machine::resident_bytes(server.pid())?;
    server.stop()?;
    let result = ReplayResult {
        events,
        loaded_in,
        listening_after,
        ready_after,
        events_per_second: events as f64 / ready_after.as_secs_f64(),
        rss_after_replay_bytes,
        items: item_count,
        empty_ready_after,
        empty_rss_bytes,
        items_rss_bytes,
        items_ready_after,
        reservations_rss_bytes,
        reservations_ready_after,
    };
    eprintln!(
        "  {} items: {:.0} bytes per item, {:.0} bytes per active reservation",
        result.items,
        result.bytes_per_item(),
        result.bytes_per_reservation()
    );
    Ok(result)
}
