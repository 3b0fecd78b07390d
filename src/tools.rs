//! Operator tools over a log, as subcommands of the binary: `verify` (every record and every
//! invariant), `export` (JSON lines for audits and migrations) and `migrate` (copy an embedded
//! log into PostgreSQL). They read through the same code as the servers, so what they accept
//! is what a server would replay.

use std::io::Write;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::app::ReadModel;
use crate::app::command::CommandState;
use crate::app::snapshot::{self, Snapshot};
use crate::domain::{
    LogPosition, QuantityEvent, RecordedEvent, ReservationEvent, StockAlert, StockEvent,
    StockLevel, TransferEvent,
};
use crate::log::codec::{count_variance, uuid_string};
use crate::log::{
    EmbeddedLog, EventLog, LogError, MAX_APPEND_EVENTS, MAX_READ_EVENTS, PostgresLog,
};
use crate::server::LogConfig;

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub head: LogPosition,
    pub streams: usize,
    /// Bytes of a torn tail (a write never acknowledged) that the next start will cut off.
    pub torn_tail_bytes: u64,
    /// The position of the newest usable snapshot, found equal to a replay of the log up to
    /// it (an embedded log with snapshots).
    pub snapshot_checked: Option<LogPosition>,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Refused(String),
}

fn progress(length: Option<u64>, message: &'static str) -> ProgressBar {
    let bar = match length {
        Some(length) => ProgressBar::new(length),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} events ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message);
    bar
}

/// Replays the whole log and checks checksums, gapless positions, contiguous versions and
/// every domain invariant (each event's recorded stock equals the fold). Changes nothing.
pub async fn verify(log: &LogConfig) -> Result<VerifyReport, ToolError> {
    let mut state = CommandState::new();
    match log {
        LogConfig::Embedded { data_dir } => {
            let directory = data_dir.clone();
            let (state, report, snapshot_checked) = tokio::task::spawn_blocking(move || {
                // The newest usable snapshot is checked against the fold of the log up to it.
                let snapshot = snapshot::load_newest(&directory).map(|(snapshot, ..)| snapshot);
                let model = ReadModel::detached();
                let mut checked = None;
                let mut check = |state: &mut CommandState,
                                 model: &ReadModel,
                                 event: Option<&RecordedEvent>|
                 -> Result<(), LogError> {
                    let Some(snapshot) = &snapshot else {
                        return Ok(());
                    };
                    if state.head() != snapshot.position || checked.is_some() {
                        return Ok(());
                    }
                    if let Some(event) = event {
                        state.forget_old_commands(event.occurred_at);
                    }
                    let event_id = event.map_or(0, |event| event.event_id.0);
                    let replayed = Snapshot::encode(state, model, event_id);
                    let same = event_id == snapshot.event_id
                        && replayed[replayed.len() - snapshot.body().len()..] == *snapshot.body();
                    if !same {
                        return Err(LogError::SnapshotMismatch {
                            snapshot: snapshot.path.display().to_string(),
                            problem: "its state differs from a replay of the log up to it".into(),
                        });
                    }
                    checked = Some(snapshot.position);
                    Ok(())
                };
                let bar = progress(None, "verifying");
                check(&mut state, &model, None)?;
                let result = EmbeddedLog::scan(&directory, |event| {
                    bar.inc(1);
                    state.apply(event)?;
                    model.apply(event)?;
                    if event.ends_command() {
                        check(&mut state, &model, Some(event))?;
                    }
                    Ok(())
                });
                bar.finish_and_clear();
                let report = result?;
                if let Some(snapshot) = &snapshot
                    && checked.is_none()
                {
                    return Err(LogError::SnapshotMismatch {
                        snapshot: snapshot.path.display().to_string(),
                        problem: format!("the log ends at position {}, before it", report.head.0),
                    });
                }
                Ok::<_, LogError>((state, report, checked))
            })
            .await
            .expect("verify task panicked")?;
            Ok(VerifyReport {
                events: report.events,
                head: report.head,
                streams: state.inventory().item_count(),
                torn_tail_bytes: report.truncated_bytes,
                snapshot_checked,
            })
        }
        LogConfig::Postgres { url, schema } => {
            let postgres = PostgresLog::connect(url, schema).await?;
            let head = postgres.latest_head().await?;
            let bar = progress(Some(head.0), "verifying");
            while state.head() < head {
                let events = postgres.read_all(state.head(), MAX_READ_EVENTS).await?;
                if events.is_empty() {
                    break;
                }
                for event in &events {
                    state.apply(event)?;
                }
                bar.inc(events.len() as u64);
            }
            bar.finish_and_clear();
            if state.head() != head {
                return Err(ToolError::Refused(format!(
                    "the head says {head} but events end at {}",
                    state.head()
                )));
            }
            Ok(VerifyReport {
                events: head.0,
                head,
                streams: state.inventory().item_count(),
                torn_tail_bytes: 0,
                snapshot_checked: None,
            })
        }
    }
}

/// Takes a snapshot of an embedded log at its head, from its newest snapshot (or from the
/// start) and the events after it: what a server does in the background, for a log no server
/// runs on. `None` when the newest snapshot is already at the head.
pub async fn take_snapshot(
    data_dir: &Path,
    keep: usize,
) -> Result<Option<snapshot::Taken>, ToolError> {
    let directory = data_dir.to_owned();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let log: std::sync::Arc<dyn EventLog> =
            std::sync::Arc::new(EmbeddedLog::open_read_only(&directory)?);
        let head = log.head();
        snapshot::take(&directory, head, keep, snapshot::read_through(runtime, log))
            .map_err(|error| ToolError::Refused(error.to_string()))
    })
    .await
    .expect("snapshot task panicked")
}

/// A destination's transfer event's `data`, with its transfer's source store when the event
/// records it (events written before transfer ids were per source store do not).
fn with_source(
    mut data: serde_json::Value,
    from_store: &Option<crate::domain::StoreId>,
) -> serde_json::Value {
    if let (Some(store), Some(fields)) = (from_store, data.as_object_mut()) {
        fields.insert("from_store_id".to_owned(), json!(store.as_str()));
    }
    data
}

/// One event as a JSON object: the audit and migration format of `export`, each event kind's
/// fields named as `export` has always written them (a stored format of its own, which old
/// exports and `migrate` depend on), by family.
pub fn event_json(event: &RecordedEvent) -> serde_json::Value {
    let (kind, details) = match &event.event {
        StockEvent::Quantity(event) => quantity_json(event),
        StockEvent::Reservation(event) => reservation_json(event),
        StockEvent::Transfer(event) => transfer_json(event),
        StockEvent::Alert(alert) => (
            match alert {
                StockAlert::StockLow => "StockLow",
                StockAlert::OutOfStock => "OutOfStock",
                StockAlert::BackInStock => "BackInStock",
                StockAlert::StockShort => "StockShort",
            },
            json!({}),
        ),
    };
    json!({
        "position": event.position.0,
        "event_id": uuid_string(event.event_id.0),
        "product_id": event.stream.product_id.as_str(),
        "store_id": event.stream.store_id.as_str(),
        "version": event.version.0,
        "occurred_at_unix_ms": event.occurred_at.unix_millis(),
        "type": kind,
        "data": details,
        "stock": stock_json(event.stock_after),
        "command_id": event.command_id.as_ref().map(|id| id.as_str()),
        "command_event_index": event.command_event_index,
        "command_event_count": event.command_event_count,
        "actor": event.actor.as_ref().map(|actor| actor.as_str()),
    })
}

/// The kind and details of a quantity event, as `export` writes them.
fn quantity_json(event: &QuantityEvent) -> (&'static str, serde_json::Value) {
    match event {
        QuantityEvent::StockAdded { quantity, reason } => (
            "StockAdded",
            json!({"quantity": quantity.get(), "reason": reason.as_str()}),
        ),
        QuantityEvent::StockAdjusted {
            previous_on_hand,
            on_hand,
            reason,
        } => (
            "StockAdjusted",
            json!({"previous_on_hand": previous_on_hand, "on_hand": on_hand, "reason": reason.as_str()}),
        ),
        QuantityEvent::StockRemoved {
            quantity,
            from,
            reason,
        } => (
            "StockRemoved",
            json!({"quantity": quantity.get(), "from": from.to_string(), "reason": reason.as_str()}),
        ),
        QuantityEvent::StockMoved {
            quantity,
            from,
            to,
            reason,
        } => (
            "StockMoved",
            json!({
                "quantity": quantity.get(),
                "from": from.to_string(),
                "to": to.to_string(),
                "reason": reason.as_str(),
            }),
        ),
        QuantityEvent::ItemPolicyChanged {
            safety_stock,
            low_stock_threshold,
        } => (
            "ItemPolicyChanged",
            json!({"safety_stock": safety_stock, "low_stock_threshold": low_stock_threshold}),
        ),
        QuantityEvent::StockCounted {
            counted,
            counted_at,
            on_hand_at_count,
            previous_on_hand,
            on_hand,
            damaged_not_found,
            quality_control_not_found,
            reason,
        } => (
            "StockCounted",
            json!({
                "counted": counted,
                "counted_at_unix_ms": counted_at.unix_millis(),
                "on_hand_at_count": on_hand_at_count,
                "variance": count_variance(*counted, *on_hand_at_count),
                "previous_on_hand": previous_on_hand,
                "on_hand": on_hand,
                "damaged_not_found": damaged_not_found,
                "quality_control_not_found": quality_control_not_found,
                "reason": reason.as_str(),
            }),
        ),
    }
}

/// The kind and details of a reservation event, as `export` writes them.
fn reservation_json(event: &ReservationEvent) -> (&'static str, serde_json::Value) {
    match event {
        ReservationEvent::StockReserved {
            reservation_id,
            quantity,
            customer_id,
            expires_at,
        } => (
            "StockReserved",
            json!({
                "reservation_id": reservation_id.to_string(),
                "quantity": quantity.get(),
                "customer_id": customer_id.as_str(),
                "expires_at_unix_ms": expires_at.unix_millis(),
            }),
        ),
        ReservationEvent::ReservationCommitted {
            reservation_id,
            quantity,
            order_id,
            released_quantity,
        } => (
            "ReservationCommitted",
            json!({
                "reservation_id": reservation_id.to_string(),
                "quantity": quantity,
                "order_id": order_id.as_str(),
                "released_quantity": released_quantity,
            }),
        ),
        ReservationEvent::ReservationExtended {
            reservation_id,
            expires_at,
        } => (
            "ReservationExtended",
            json!({
                "reservation_id": reservation_id.to_string(),
                "expires_at_unix_ms": expires_at.unix_millis(),
            }),
        ),
        ReservationEvent::ReservationReleased {
            reservation_id,
            quantity,
            reason,
        } => (
            "ReservationReleased",
            json!({"reservation_id": reservation_id.to_string(), "quantity": quantity.get(), "reason": reason.as_str()}),
        ),
        ReservationEvent::ReservationExpired {
            reservation_id,
            quantity,
        } => (
            "ReservationExpired",
            json!({"reservation_id": reservation_id.to_string(), "quantity": quantity.get()}),
        ),
    }
}

/// The kind and details of a transfer event, as `export` writes them.
fn transfer_json(event: &TransferEvent) -> (&'static str, serde_json::Value) {
    match event {
        TransferEvent::TransferShipped {
            transfer_id,
            to_store,
            quantity,
            reason,
        } => (
            "TransferShipped",
            json!({
                "transfer_id": transfer_id.as_str(),
                "to_store_id": to_store.as_str(),
                "quantity": quantity.get(),
                "reason": reason.as_str(),
            }),
        ),
        TransferEvent::TransferIncoming {
            transfer_id,
            from_store,
            quantity,
        } => (
            "TransferIncoming",
            json!({
                "transfer_id": transfer_id.as_str(),
                "from_store_id": from_store.as_str(),
                "quantity": quantity.get(),
            }),
        ),
        TransferEvent::TransferReceived {
            transfer_id,
            quantity,
            from_store,
        } => (
            "TransferReceived",
            with_source(
                json!({"transfer_id": transfer_id.as_str(), "quantity": quantity.get()}),
                from_store,
            ),
        ),
        TransferEvent::TransferLost {
            transfer_id,
            quantity,
            from_store,
        } => (
            "TransferLost",
            with_source(
                json!({"transfer_id": transfer_id.as_str(), "quantity": quantity.get()}),
                from_store,
            ),
        ),
        TransferEvent::TransferCancelled {
            transfer_id,
            quantity,
            reason,
            from_store,
        } => (
            "TransferCancelled",
            with_source(
                json!({"transfer_id": transfer_id.as_str(), "quantity": quantity.get(), "reason": reason.as_str()}),
                from_store,
            ),
        ),
        TransferEvent::TransferReturned {
            transfer_id,
            quantity,
        } => (
            "TransferReturned",
            json!({"transfer_id": transfer_id.as_str(), "quantity": quantity.get()}),
        ),
    }
}

/// Every quantity of a level, as `export` writes it.
pub fn stock_json(level: StockLevel) -> serde_json::Value {
    json!({
        "on_hand": level.on_hand(),
        "reserved": level.reserved(),
        "available": level.available(),
        "damaged": level.damaged(),
        "quality_control": level.quality_control(),
        "safety_stock": level.safety_stock(),
        "incoming": level.incoming(),
        "shortfall": level.shortfall(),
        "low_stock_threshold": level.low_stock_threshold(),
    })
}

/// Writes every event after `from` as one JSON object per line. Returns how many.
pub async fn export(
    log: &LogConfig,
    from: LogPosition,
    output: &mut (dyn Write + Send),
) -> Result<u64, ToolError> {
    let source = open_for_reading(log).await?;
    let head = source.latest_head().await?;
    let bar = progress(Some(head.0.saturating_sub(from.0)), "exporting");
    let mut position = from;
    let mut written = 0;
    loop {
        let events = source.read_all(position, MAX_READ_EVENTS).await?;
        let Some(last) = events.last() else { break };
        position = last.position;
        for event in &events {
            serde_json::to_writer(&mut *output, &event_json(event))
                .map_err(std::io::Error::other)?;
            output.write_all(b"\n")?;
        }
        written += events.len() as u64;
        bar.inc(events.len() as u64);
    }
    output.flush()?;
    bar.finish_and_clear();
    Ok(written)
}

/// Copies an embedded log into a PostgreSQL log. The target must be empty or hold a prefix of
/// the source (an interrupted migration resumes); anything else is refused.
pub async fn migrate(source_dir: &Path, target: &PostgresLog) -> Result<u64, ToolError> {
    let source = open_for_reading(&LogConfig::Embedded {
        data_dir: source_dir.to_owned(),
    })
    .await?;
    let source_head = source.latest_head().await?;
    let target_head = target.latest_head().await?;
    if target_head > source_head {
        return Err(ToolError::Refused(format!(
            "the target holds {target_head} events, more than the source's {source_head}"
        )));
    }
    check_prefix(&*source, target, target_head).await?;
    let bar = progress(Some(source_head.0 - target_head.0), "migrating");
    let mut position = target_head;
    let mut copied = 0;
    while position < source_head {
        let mut events = source.read_all(position, MAX_APPEND_EVENTS).await?;
        // Each append holds whole commands, so an interrupted migration leaves none in half.
        crate::log::keep_whole_commands(&mut events);
        let Some(last) = events.last() else { break };
        position = last.position;
        let count = events.len() as u64;
        target.append(events).await?;
        copied += count;
        bar.inc(count);
    }
    bar.finish_and_clear();
    Ok(copied)
}

/// Refuses a target whose events are not, one for one, the source's first `target_head`
/// events: an interrupted migration resumes, anything else would mix two logs.
async fn check_prefix(
    source: &dyn EventLog,
    target: &PostgresLog,
    target_head: LogPosition,
) -> Result<(), ToolError> {
    let bar = progress(Some(target_head.0), "checking the target");
    let mut position = LogPosition::START;
    while position < target_head {
        let theirs = target.read_all(position, MAX_READ_EVENTS).await?;
        let ours = source.read_all(position, theirs.len()).await?;
        if let Some((at, _)) = theirs
            .iter()
            .zip(ours.iter().map(Some).chain(std::iter::repeat(None)))
            .find(|(theirs, ours)| Some(*theirs) != *ours)
        {
            return Err(ToolError::Refused(format!(
                "the target's event at {} differs from the source's: not a prefix",
                at.position
            )));
        }
        let Some(last) = theirs.last() else { break };
        position = last.position;
        bar.inc(theirs.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// A log to read from. An embedded log is opened through a copy-free read-only path when a
/// server may be running on it: the tools never cut a torn tail.
async fn open_for_reading(log: &LogConfig) -> Result<Box<dyn EventLog>, ToolError> {
    match log {
        LogConfig::Embedded { data_dir } => {
            let directory = data_dir.clone();
            let log = tokio::task::spawn_blocking(move || EmbeddedLog::open_read_only(&directory))
                .await
                .expect("open task panicked")?;
            Ok(Box::new(log))
        }
        LogConfig::Postgres { url, schema } => {
            Ok(Box::new(PostgresLog::connect(url, schema).await?))
        }
    }
}
