//! replay: the start-up time of a server over a large log, and the memory each stock item and
//! each active reservation takes once replayed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{add_stock, load_items, reserve_stock, uniform_items};
use crate::load::{ItemSpace, LoadCommand};
use crate::machine;
use crate::server_process::{DataDir, ServerProcess};
use crate::{BenchConfig, BenchError};

/// Reservations made to measure their memory live this long, so none expires during the run.
const LONG_RESERVATION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Start-up after a restart, and memory per item and per reservation.
#[derive(Clone, Debug)]
pub struct ReplayResult {
    pub log: LogReplay,
    pub memory: MemoryFigures,
}

/// Part one: the start-up of a server over a large log.
#[derive(Clone, Debug)]
pub struct LogReplay {
    /// The log whose replay is timed.
    pub events: u64,
    pub loaded_in: Duration,
    pub listening_after: Duration,
    pub ready_after: Duration,
    pub rss_after_replay_bytes: u64,
    /// `inventory snapshot` on that log: open it, fold it, write the snapshot.
    pub snapshot_taken_in: Duration,
    /// A start from that snapshot at the head (the issue's `replay` figure).
    pub from_snapshot_ready_after: Duration,
    pub rss_after_snapshot_start_bytes: u64,
}

/// Part two: an empty server, then `items` distinct items, then one active reservation on
/// each, each measured after a restart.
#[derive(Clone, Debug)]
pub struct MemoryFigures {
    pub items: u64,
    /// Start-up with an empty log: what a start costs besides the replay.
    pub empty_ready_after: Duration,
    pub empty_rss_bytes: u64,
    pub items_rss_bytes: u64,
    pub items_ready_after: Duration,
    pub reservations_rss_bytes: u64,
    pub reservations_ready_after: Duration,
}

impl MemoryFigures {
    /// What the resident memory grew by from `rss_before_bytes` to `rss_after_bytes`, per item.
    fn per_item(&self, rss_after_bytes: u64, rss_before_bytes: u64) -> f64 {
        rss_after_bytes.saturating_sub(rss_before_bytes) as f64 / self.items.max(1) as f64
    }
}

impl ReplayResult {
    /// Events per second of the whole start-up.
    pub fn events_per_second(&self) -> f64 {
        self.log.events as f64 / self.log.ready_after.as_secs_f64()
    }

    /// Events per second of the replay alone: the start-up time less an empty log's.
    pub fn replay_only_events_per_second(&self) -> f64 {
        let replay_only = self
            .log
            .ready_after
            .saturating_sub(self.memory.empty_ready_after);
        self.log.events as f64 / replay_only.as_secs_f64().max(1e-6)
    }

    pub fn bytes_per_item(&self) -> f64 {
        let memory = &self.memory;
        memory.per_item(memory.items_rss_bytes, memory.empty_rss_bytes)
    }

    pub fn bytes_per_reservation(&self) -> f64 {
        let memory = &self.memory;
        memory.per_item(memory.reservations_rss_bytes, memory.items_rss_bytes)
    }

    pub fn to_json(&self) -> Value {
        let (log, memory) = (&self.log, &self.memory);
        json!({
            "events": log.events,
            "load_seconds": log.loaded_in.as_secs_f64(),
            "listening_after_seconds": log.listening_after.as_secs_f64(),
            "ready_after_seconds": log.ready_after.as_secs_f64(),
            "events_per_second": self.events_per_second(),
            "rss_after_replay_bytes": log.rss_after_replay_bytes,
            "snapshot_taken_seconds": log.snapshot_taken_in.as_secs_f64(),
            "from_snapshot_ready_after_seconds": log.from_snapshot_ready_after.as_secs_f64(),
            "rss_after_snapshot_start_bytes": log.rss_after_snapshot_start_bytes,
            "items": memory.items,
            "empty_ready_after_seconds": memory.empty_ready_after.as_secs_f64(),
            "replay_only_events_per_second": self.replay_only_events_per_second(),
            "empty_rss_bytes": memory.empty_rss_bytes,
            "items_rss_bytes": memory.items_rss_bytes,
            "items_ready_after_seconds": memory.items_ready_after.as_secs_f64(),
            "bytes_per_item": self.bytes_per_item(),
            "active_reservations": memory.items,
            "reservations_rss_bytes": memory.reservations_rss_bytes,
            "reservations_ready_after_seconds": memory.reservations_ready_after.as_secs_f64(),
            "bytes_per_reservation": self.bytes_per_reservation(),
        })
    }
}

/// Starts a server on `data_dir`, loading no snapshot and writing none (a replay of the whole
/// log, whatever the server wrote before); returns it once it answers, with its start-up time.
async fn start(binary: &Path, data_dir: &DataDir) -> Result<(ServerProcess, Duration), BenchError> {
    start_with(binary, data_dir, &["--snapshot-keep", "0"]).await
}

async fn start_with(
    binary: &Path,
    data_dir: &DataDir,
    arguments: &[&str],
) -> Result<(ServerProcess, Duration), BenchError> {
    let arguments: Vec<&std::ffi::OsStr> =
        arguments.iter().map(|argument| argument.as_ref()).collect();
    let server = ServerProcess::spawn_with(binary, &data_dir.path, &arguments).await?;
    let ready_after = server.wait_ready().await?;
    Ok((server, ready_after))
}

/// Stops the server and starts it again on the same data.
async fn restart(
    server: ServerProcess,
    binary: &Path,
    data_dir: &DataDir,
) -> Result<(ServerProcess, Duration), BenchError> {
    server.stop()?;
    start(binary, data_dir).await
}

/// Takes a snapshot of the log in `data_dir` at its head with `inventory snapshot`.
fn take_snapshot(binary: &Path, data_dir: &DataDir) -> Result<Duration, BenchError> {
    let started = std::time::Instant::now();
    let output = std::process::Command::new(binary)
        .arg("snapshot")
        .arg("--log")
        .arg(&data_dir.path)
        .output()
        .map_err(BenchError::io("running inventory snapshot"))?;
    if !output.status.success() {
        return Err(BenchError::Server(format!(
            "binary's `inventory snapshot` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(started.elapsed())
}

pub async fn run(config: &BenchConfig, binary: &Path) -> Result<ReplayResult, BenchError> {
    let result = ReplayResult {
        log: time_replay(config, binary).await?,
        memory: measure_memory(config, binary).await?,
    };
    eprintln!(
        "  {} items: {:.0} bytes per item, {:.0} bytes per active reservation",
        result.memory.items,
        result.bytes_per_item(),
        result.bytes_per_reservation()
    );
    Ok(result)
}

/// Writes a log of `replay_events` AddStock events over the uniform data set and times a
/// restart on it.
async fn time_replay(config: &BenchConfig, binary: &Path) -> Result<LogReplay, BenchError> {
    let events = config.replay_events;
    let data_dir = DataDir::create(&config.data_root, "replay")?;
    let (server, _) = start(binary, &data_dir).await?;
    let items = uniform_items(config);
    let loaded_in = load_items(
        server.command_addr,
        &items,
        events,
        "writing the replay log",
        |product, store| LoadCommand::Add(add_stock(product, store, 1)),
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
    eprintln!(
        "  replayed {events} events in {:.2} s ({:.0} events/s)",
        ready_after.as_secs_f64(),
        events as f64 / ready_after.as_secs_f64()
    );
    let snapshot_taken_in = take_snapshot(binary, &data_dir)?;
    let (server, from_snapshot_ready_after) = start_with(binary, &data_dir, &[]).await?;
    let rss_after_snapshot_start_bytes = machine::resident_bytes(server.pid())?;
    server.stop()?;
    drop(data_dir);
    eprintln!(
        "  snapshot taken in {:.2} s; a start from it took {:.2} s",
        snapshot_taken_in.as_secs_f64(),
        from_snapshot_ready_after.as_secs_f64()
    );
    Ok(LogReplay {
        events,
        loaded_in,
        listening_after,
        ready_after,
        rss_after_replay_bytes,
        snapshot_taken_in,
        from_snapshot_ready_after,
        rss_after_snapshot_start_bytes,
    })
}

/// Memory per item and per active reservation, each measured after a restart so that only
/// what the replay builds is resident.
async fn measure_memory(config: &BenchConfig, binary: &Path) -> Result<MemoryFigures, BenchError> {
    let items = config.replay_items;
    let distinct = Arc::new(ItemSpace {
        prefix: String::new(),
        products: items.div_ceil(10),
        stores: 10,
    });
    let data_dir = DataDir::create(&config.data_root, "memory")?;
    let (server, _) = start(binary, &data_dir).await?;
    let (server, empty_ready_after) = restart(server, binary, &data_dir).await?;
    let empty_rss_bytes = machine::resident_bytes(server.pid())?;
    let address = server.command_addr;
    load_items(
        address,
        &distinct,
        items,
        "stocking distinct items",
        |product, store| LoadCommand::Add(add_stock(product, store, 1)),
    )
    .await?;
    let (server, items_ready_after) = restart(server, binary, &data_dir).await?;
    let items_rss_bytes = machine::resident_bytes(server.pid())?;
    let address = server.command_addr;
    load_items(address, &distinct, items, "reserving", |product, store| {
        LoadCommand::Reserve(reserve_stock(product, store, Some(LONG_RESERVATION_TTL)))
    })
    .await?;
    let (server, reservations_ready_after) = restart(server, binary, &data_dir).await?;
    let reservations_rss_bytes = machine::resident_bytes(server.pid())?;
    server.stop()?;
    Ok(MemoryFigures {
        items,
        empty_ready_after,
        empty_rss_bytes,
        items_rss_bytes,
        items_ready_after,
        reservations_rss_bytes,
        reservations_ready_after,
    })
}
