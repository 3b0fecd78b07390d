//! The read side's model: every stock item as a fold of the log, kept in concurrent maps so
//! queries never wait for the writer, and a projection task that follows a log.

mod snapshot;

pub use snapshot::ReadModelState;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use metrics::Gauge;
use tokio::sync::watch;

use super::sharded_map::ShardedMap;
use super::shutdown::Shutdown;
use crate::dense_map::FastHash;
use crate::domain::{
    ActiveReservation, LogPosition, ProductId, RecordedEvent, ReservationEvent, ReservationId,
    StockEvent, StockItem, StockLevel, StoreId, StreamKey, StreamVersion, Transfer, TransferId,
    transfer_index, transfer_source,
};
use crate::log::{EventLog, LogError, MAX_READ_EVENTS};
use crate::telemetry;

/// The first and the longest wait before reading a failing log again.
pub const FOLLOW_RETRY_MIN: Duration = Duration::from_millis(50);
pub const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(5);

/// One stock item as the read model holds it.
#[derive(Clone, Debug, Default)]
pub struct StockView {
    pub item: StockItem,
    /// The position of the item's last event.
    pub position: LogPosition,
}

impl StockView {
    pub fn level(&self) -> StockLevel {
        self.item.level()
    }

    pub fn version(&self) -> StreamVersion {
        self.item.version()
    }
}

/// Where a reservation's commands are in the log: its reservation's first event, its end's
/// (`START` while it has not ended), and how many lines (events per command) it has.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReservationRecord {
    reserved_at: LogPosition,
    ended_at: LogPosition,
    lines: u32,
}

/// The later reservations made with one id, each with its stores: see
/// `ReadModel::more_reservations`.
type LaterReservations = Vec<(Vec<StoreId>, ReservationRecord)>;

/// Where one reservation's commands are: see [`ReadModel::reservation_commands`].
#[derive(Clone, Debug)]
pub struct ReservationCommands {
    pub starts: Vec<LogPosition>,
    pub lines: u32,
    pub stores: Option<Vec<StoreId>>,
}

/// The query side's state. Readers see each item either before or after an event, never
/// half-applied.
pub struct ReadModel {
    /// Every item: a dense sharded map, about half the memory of a `DashMap` of a million.
    items: ShardedMap<StreamKey, StockView>,
    stores_by_product: DashMap<ProductId, BTreeSet<StoreId>, FastHash>,
    /// The items at or below their low-stock threshold, by store then product: few, and
    /// listed in order by `ListLowStock`.
    low_stock: DashMap<StoreId, BTreeSet<ProductId>, FastHash>,
    /// Where the commands of every reservation ever made are in the log: `GetReservation`
    /// reads them back (a few positions per reservation, instead of a copy of its lines). The
    /// first reservation made with each id; ids are unique per store, so a later one with the
    /// same id, of other stores, is in `more_reservations`.
    reservations_by_id: ShardedMap<ReservationId, ReservationRecord>,
    /// The later reservations made with an id another store's reservation had first, each
    /// with its stores (which tell the events about it from the first one's): few.
    more_reservations: DashMap<ReservationId, LaterReservations, FastHash>,
    /// Every transfer, whole (with the positions of its events): few next to reservations.
    /// By id: one per source store that used the id (transfer ids are unique per source store).
    transfers: DashMap<TransferId, Vec<Transfer>, FastHash>,
    /// Each store's transfers, as source or destination, by id: `ListTransfers`.
    transfers_by_store: DashMap<StoreId, BTreeSet<TransferId>, FastHash>,
    /// The positions of the extensions of reservations that were extended (few are).
    extensions: DashMap<ReservationId, Vec<LogPosition>, FastHash>,
    /// The position of the last event applied (by the one task that applies events).
    head: AtomicU64,
    /// The position published to queries: the end of the last command applied whole, so that
    /// a query waiting for a position never sees part of a command.
    applied: watch::Sender<LogPosition>,
    /// Since when the model's upstream (the command server it follows, or the database) is
    /// unreachable; `None` while it is reachable. Queries report it, so clients know how
    /// stale an answer may be.
    upstream_unreachable_since: std::sync::Mutex<Option<std::time::SystemTime>>,
    /// `inventory_read_model_position`, looked up once so applying an event only stores a
    /// number.
    position_gauge: Gauge,
    /// `inventory_read_model_lag_events`: events in the log not yet applied.
    lag_gauge: Gauge,
}

impl Default for ReadModel {
    fn default() -> ReadModel {
        ReadModel::new()
    }
}

impl ReadModel {
    pub fn new() -> ReadModel {
        ReadModel {
            items: ShardedMap::default(),
            stores_by_product: DashMap::default(),
            low_stock: DashMap::default(),
            reservations_by_id: ShardedMap::default(),
            more_reservations: DashMap::default(),
            extensions: DashMap::default(),
            transfers: DashMap::default(),
            transfers_by_store: DashMap::default(),
            head: AtomicU64::new(0),
            applied: watch::channel(LogPosition::START).0,
            upstream_unreachable_since: std::sync::Mutex::new(None),
            position_gauge: metrics::gauge!("inventory_read_model_position"),
            lag_gauge: metrics::gauge!("inventory_read_model_lag_events"),
        }
    }

    /// Records whether the upstream answers. Only the first failure of an outage sets the time.
    pub fn set_upstream_reachable(&self, reachable: bool) {
        let mut since = self
            .upstream_unreachable_since
            .lock()
            .expect("upstream lock poisoned");
        match (reachable, *since) {
            (true, _) => *since = None,
            (false, None) => *since = Some(std::time::SystemTime::now()),
            (false, Some(_)) => {}
        }
    }

    pub fn upstream_unreachable_since(&self) -> Option<std::time::SystemTime> {
        *self
            .upstream_unreachable_since
            .lock()
            .expect("upstream lock poisoned")
    }

    /// The position queries answer as of: the end of the last command applied whole.
    pub fn position(&self) -> LogPosition {
        *self.applied.borrow()
    }

    /// The position of the last event applied, which may be inside a command whose other
    /// events are still to come.
    pub fn head(&self) -> LogPosition {
        LogPosition(self.head.load(Ordering::Acquire))
    }

    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    /// Applies the next event of the log. Events must come in log order with no gap; the
    /// recorded stock must match the fold.
    pub fn apply(&self, event: &RecordedEvent) -> Result<(), LogError> {
        self.apply_batch(std::slice::from_ref(event))
    }

    /// Applies the next events of the log, in order, and publishes the position once, at the
    /// end of the last command applied whole (on an error, of the last one before it). A read
    /// page or a replay is one batch: waking every waiter per event cost more than applying it.
    pub fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), LogError> {
        let mut head = self.head();
        let mut applied = self.position();
        let mut result = Ok(());
        for event in events {
            result = self.apply_unpublished(event, head);
            if result.is_err() {
                break;
            }
            head = event.position;
            if event.ends_command() {
                applied = head;
            }
        }
        self.head.store(head.0, Ordering::Release);
        if applied != self.position() {
            // Set before publishing the position, so whoever waited for it also sees the gauge.
            self.position_gauge.set(applied.0 as f64);
            self.applied.send_replace(applied);
        }
        result
    }

    fn apply_unpublished(&self, event: &RecordedEvent, head: LogPosition) -> Result<(), LogError> {
        let (new_stream, was_low) = {
            let mut view = self.items.get_or_default(&event.stream);
            let was_low = view.level().is_low();
            event
                .apply_checked(head, view.version(), || {
                    view.item.evolve(&event.event);
                    view.position = event.position;
                    view.level()
                })
                .map_err(|mismatch| LogError::fold_mismatch(event, mismatch))?;
            (event.version == StreamVersion(1), was_low)
        };
        if was_low != event.stock_after.is_low() {
            let mut products = self
                .low_stock
                .entry(event.stream.store_id.clone())
                .or_default();
            if was_low {
                products.remove(&event.stream.product_id);
            } else {
                products.insert(event.stream.product_id.clone());
            }
        }
        if let Some(transfer_id) = event.event.transfer_id() {
            self.apply_to_transfer(transfer_id, event);
        }
        if new_stream {
            self.stores_by_product
                .entry(event.stream.product_id.clone())
                .or_default()
                .insert(event.stream.store_id.clone());
        }
        // One entry per command about a reservation: its first event says where it starts.
        if let Some(reservation_id) = event.event.reservation_id() {
            self.apply_to_reservation(reservation_id, event);
        }
        Ok(())
    }

    /// Records where a reservation's commands are: a reservation's first event makes its
    /// record (the first made with the id, or a later one of other stores), its later lines
    /// add their stores to a later one's, and the first event of an extension or of its end
    /// says where that command is.
    fn apply_to_reservation(&self, reservation_id: &ReservationId, event: &RecordedEvent) {
        let store = &event.stream.store_id;
        let reserved = matches!(
            event.event,
            StockEvent::Reservation(ReservationEvent::StockReserved { .. })
        );
        if reserved && event.command_event_index > 0 {
            // A later line: a later reservation keeps its stores.
            if let Some(mut more) = self.more_reservations.get_mut(reservation_id)
                && let Some((stores, record)) = more.last_mut()
                && record.reserved_at.0 + u64::from(event.command_event_index) == event.position.0
                && !stores.contains(store)
            {
                stores.push(store.clone());
            }
            return;
        }
        if event.command_event_index != 0 {
            return;
        }
        if reserved {
            let record = ReservationRecord {
                reserved_at: event.position,
                ended_at: LogPosition::START,
                lines: event.command_event_count,
            };
            // The first made with this id, or a later one (of other stores).
            if self.reservations_by_id.get(reservation_id).is_none() {
                *self.reservations_by_id.get_or_default(reservation_id) = record;
            } else {
                self.more_reservations
                    .entry(reservation_id.clone())
                    .or_default()
                    .push((vec![store.clone()], record));
            }
            return;
        }
        let ends = match &event.event {
            StockEvent::Reservation(ReservationEvent::ReservationExtended { .. }) => {
                self.extensions
                    .entry(reservation_id.clone())
                    .or_default()
                    .push(event.position);
                return;
            }
            StockEvent::Reservation(ReservationEvent::ReservationCommitted { .. })
            | StockEvent::Reservation(ReservationEvent::ReservationReleased { .. })
            | StockEvent::Reservation(ReservationEvent::ReservationExpired { .. }) => true,
            _ => false,
        };
        if !ends {
            return;
        }
        if let Some(mut more) = self.more_reservations.get_mut(reservation_id)
            && let Some((_, record)) = more.iter_mut().find(|(stores, _)| stores.contains(store))
        {
            record.ended_at = event.position;
            return;
        }
        if let Some(mut record) = self.reservations_by_id.get_mut(reservation_id) {
            record.ended_at = event.position;
        }
    }

    fn apply_to_transfer(&self, transfer_id: &TransferId, event: &RecordedEvent) {
        let source = transfer_source(&event.stream.store_id, &event.event);
        let mut transfers = self.transfers.entry(transfer_id.clone()).or_default();
        let index = match transfer_index(&transfers, source) {
            Some(index) => index,
            None => {
                let Some(transfer) = Transfer::start(&event.stream, &event.event) else {
                    // An event of a transfer that never shipped: the command side's fold
                    // refuses such a log; here it changes nothing.
                    return;
                };
                for store_id in [&transfer.from_store, &transfer.to_store] {
                    self.transfers_by_store
                        .entry(store_id.clone())
                        .or_default()
                        .insert(transfer_id.clone());
                }
                transfers.push(transfer);
                transfers.len() - 1
            }
        };
        transfers[index].evolve(&event.stream, &event.event, Some(event.position));
    }

    /// Every transfer shipped with this id: one per source store that used it.
    pub fn transfers_named(&self, transfer_id: &TransferId) -> Vec<Transfer> {
        self.transfers
            .get(transfer_id)
            .map(|transfers| transfers.clone())
            .unwrap_or_default()
    }

    /// The transfers of `store_id` (from it or to it) after `after`, by id, that `keep`
    /// accepts: at most `limit`, and whether there are more.
    pub fn store_transfers(
        &self,
        store_id: &StoreId,
        after: Option<&TransferId>,
        limit: usize,
        keep: impl Fn(&Transfer) -> bool,
    ) -> (Vec<Transfer>, bool) {
        use std::ops::Bound;
        let Some(ids) = self.transfers_by_store.get(store_id).map(|ids| ids.clone()) else {
            return (Vec::new(), false);
        };
        let start = match after {
            Some(transfer_id) => Bound::Excluded(transfer_id),
            None => Bound::Unbounded,
        };
        let mut transfers = ids
            .range::<TransferId, _>((start, Bound::Unbounded))
            .flat_map(|transfer_id| self.transfers_named(transfer_id))
            .filter(|transfer| &transfer.from_store == store_id || &transfer.to_store == store_id)
            .filter(|transfer| keep(transfer));
        let page: Vec<_> = transfers.by_ref().take(limit).collect();
        let more = transfers.next().is_some();
        (page, more)
    }

    /// The products of `store_id` that are low, after `after`, at most `limit`; and whether
    /// there are more.
    pub fn low_stock(
        &self,
        store_id: &StoreId,
        after: Option<&ProductId>,
        limit: usize,
    ) -> (Vec<ProductId>, bool) {
        use std::ops::Bound;
        let Some(low) = self.low_stock.get(store_id) else {
            return (Vec::new(), false);
        };
        let start = match after {
            Some(product_id) => Bound::Excluded(product_id),
            None => Bound::Unbounded,
        };
        let mut products = low
            .range::<ProductId, _>((start, Bound::Unbounded))
            .cloned();
        let page: Vec<_> = products.by_ref().take(limit).collect();
        let more = products.next().is_some();
        (page, more)
    }

    /// Every reservation made with this id (the first, then later ones of other stores), each
    /// with where its commands start in the log, in order (its reservation, its end), how many
    /// events each has (one per line), and its stores when the model keeps them (a later one's;
    /// the first one's are in its events). Then the positions of every extension of a
    /// reservation made with this id, for the caller to tell apart by their stores.
    pub fn reservation_commands(
        &self,
        reservation_id: &ReservationId,
    ) -> (Vec<ReservationCommands>, Vec<LogPosition>) {
        let commands = |record: ReservationRecord, stores: Option<Vec<StoreId>>| {
            let mut starts = vec![record.reserved_at];
            if record.ended_at != LogPosition::START {
                starts.push(record.ended_at);
            }
            ReservationCommands {
                starts,
                lines: record.lines,
                stores,
            }
        };
        let mut found = Vec::new();
        if let Some(record) = self.reservations_by_id.get(reservation_id) {
            found.push(commands(*record, None));
        }
        if let Some(more) = self.more_reservations.get(reservation_id) {
            for (stores, record) in more.iter() {
                found.push(commands(*record, Some(stores.clone())));
            }
        }
        let extensions = self
            .extensions
            .get(reservation_id)
            .map(|positions| positions.clone())
            .unwrap_or_default();
        (found, extensions)
    }

    pub fn get(&self, stream: &StreamKey) -> Option<StockView> {
        self.items.get(stream).map(|view| view.clone())
    }

    /// The level, version and position of one item, without copying its reservations.
    pub fn stock(&self, stream: &StreamKey) -> Option<(StockLevel, StreamVersion, LogPosition)> {
        self.items
            .get(stream)
            .map(|view| (view.level(), view.version(), view.position))
    }

    /// Every store that has had the product, ordered by store id.
    pub fn product(
        &self,
        product_id: &ProductId,
    ) -> Vec<(StoreId, StockLevel, StreamVersion, LogPosition)> {
        let Some(stores) = self
            .stores_by_product
            .get(product_id)
            .map(|stores| stores.clone())
        else {
            return Vec::new();
        };
        stores
            .into_iter()
            .filter_map(|store_id| {
                let stream = StreamKey::new(product_id.clone(), store_id.clone());
                self.stock(&stream)
                    .map(|(level, version, position)| (store_id, level, version, position))
            })
            .collect()
    }

    /// The active reservations of one item, soonest expiry first.
    pub fn reservations(&self, stream: &StreamKey) -> Vec<(ReservationId, ActiveReservation)> {
        let mut reservations: Vec<_> = self
            .items
            .get(stream)
            .map(|view| {
                view.item
                    .reservations()
                    .map(|(id, reservation)| (id.clone(), reservation.clone()))
                    .collect()
            })
            .unwrap_or_default();
        reservations.sort_by(|a, b| (a.1.expires_at, &a.0).cmp(&(b.1.expires_at, &b.0)));
        reservations
    }

    /// Waits until the model has applied `position`, for at most `timeout`. Returns whether it
    /// got there.
    pub async fn wait_for(&self, position: LogPosition, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|applied| *applied >= position))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// Follows `log` from the model's position, applying every event, until `shutdown`. A log
    /// that cannot be read (a database gone away) is retried with backoff while the model
    /// keeps answering from what it has; damaged data stops the projection.
    pub async fn follow(
        self: Arc<ReadModel>,
        log: Arc<dyn EventLog>,
        mut shutdown: Shutdown,
    ) -> Result<(), LogError> {
        let mut head = log.watch_head();
        let mut delay = FOLLOW_RETRY_MIN;
        // Whether the last read failed: the model then says its upstream is unreachable until
        // a read works again.
        let mut failing = false;
        loop {
            let head_now = *head.borrow_and_update();
            if self.head() < head_now {
                let events = match log.read_all(self.head(), MAX_READ_EVENTS).await {
                    Ok(events) => events,
                    Err(error @ (LogError::Io { .. } | LogError::Backend { .. })) => {
                        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "the read model cannot read its log");
                        self.set_upstream_reachable(false);
                        failing = true;
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = shutdown.wait() => return Ok(()),
                        }
                        delay = (delay * 2).min(FOLLOW_RETRY_MAX);
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                delay = FOLLOW_RETRY_MIN;
                if failing {
                    failing = false;
                    self.set_upstream_reachable(log.reachable().borrow().to_owned());
                }
                if telemetry::enabled() && events.iter().any(|event| event.trace_parent.is_some()) {
                    // One event at a time, each in a span that continues the trace of the
                    // command that caused it.
                    for event in &events {
                        let span = telemetry::projection_span(event.trace_parent.as_deref());
                        let _entered = span.as_ref().map(tracing::Span::enter);
                        self.apply(event)?;
                    }
                } else {
                    self.apply_batch(&events)?;
                }
                self.lag_gauge
                    .set(log.head().0.saturating_sub(self.head().0) as f64);
                continue;
            }
            tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = shutdown.wait() => return Ok(()),
            }
        }
    }
}
