//! The inventory: every stock item, every reservation id ever used, and the schedule of
//! reservation expiries. The command side holds one and decides every command against it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

// The maps of every item and of every reservation id are `DenseMap`s: entries in a dense
// vector under a table of `u32` indices. Entries are never removed but by a rollback.
use crate::dense_map::{DenseMap, FastHash};

use super::error::DomainError;
use super::event::{ReservationEvent, StockEvent};
use super::ids::{ReservationId, StoreId, StreamKey, TransferId};
use super::item::StockItem;
use super::transfer::{Transfer, transfer_index, transfer_source};
use super::values::{StockLevel, StreamVersion, Timestamp};

mod decide;
mod reservations;
mod snapshot;

/// Where a reservation is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ReservationStatus {
    Active,
    Committed,
    Released,
    Expired,
    /// Committed with less than every line reserved: the rest was released.
    PartiallyCommitted,
}

impl fmt::Display for ReservationStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            ReservationStatus::Active => "active",
            ReservationStatus::Committed => "committed",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
            ReservationStatus::PartiallyCommitted => "partially committed",
        })
    }
}

/// One event of an accepted command, and the stream (item) it is appended to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Decision {
    pub stream: StreamKey,
    pub event: StockEvent,
}

/// What the inventory keeps of every reservation id: the (first) item it was made on and its
/// status. The item is named by its index in `Inventory::items` (4 bytes instead of a 32-byte
/// key; there is one entry per reservation ever made). Indices never change: items are never
/// removed, except by a rollback, which removes only the items its batch created, the last
/// ones, so no other item moves. A reservation of several items keeps the others in
/// `Inventory::more_items`, so the many reservations of one item cost no more than before.
#[derive(Clone, Copy, Debug)]
struct ReservationEntry {
    item: u32,
    status: ReservationStatus,
}

/// Every stock item and reservation: the command side's state, a fold of the whole log.
///
/// A reservation id is unique per store, not in the whole inventory: two reservations may
/// have one id when they share no store. A reservation is known by its id and its first
/// item (two with one id never share an item), and a command names it by its id and, where
/// the id names several, a store it holds.
#[derive(Default, Debug)]
pub struct Inventory {
    items: DenseMap<StreamKey, StockItem>,
    /// The first reservation made with each id ever used, so a reused id is refused and a late
    /// commit or release is told what happened to its reservation.
    reservations: DenseMap<ReservationId, ReservationEntry>,
    /// The later reservations made with an id that another store's reservation had first
    /// (few: ids are chosen per store, most of them UUIDs).
    more_reservations: HashMap<ReservationId, Vec<ReservationEntry>, FastHash>,
    /// The items after the first of each reservation of several items, in line order, by the
    /// reservation's id and first item.
    more_items: HashMap<(ReservationId, u32), Box<[u32]>, FastHash>,
    /// Active reservations by expiry time (with their first item, which tells them apart).
    expiry_schedule: BTreeSet<(Timestamp, ReservationId, u32)>,
    /// Every transfer ever shipped (few next to reservations: kept whole), by id: one per
    /// source store that used the id (transfer ids are unique per source store).
    transfers: HashMap<TransferId, Vec<Transfer>, FastHash>,
    /// The reservation the command being applied is making (its id and first item): its
    /// later lines join it. Cleared by [`Inventory::begin_command`].
    reserving: Option<(ReservationId, u32)>,
    /// While a batch is open: how to put back everything it changed.
    undo: Option<Undo>,
}

/// What a batch changed, to roll it back when its events could not be stored.
#[derive(Default, Debug)]
struct Undo {
    /// Each touched item as it was before the batch (`None`: it did not exist).
    items: HashMap<StreamKey, Option<StockItem>, FastHash>,
    /// Each touched reservation id's entries as they were before the batch.
    reservations: HashMap<ReservationId, SavedEntries, FastHash>,
    /// Each touched entry of `more_items` as it was before the batch.
    more_items: HashMap<(ReservationId, u32), Option<Box<[u32]>>, FastHash>,
    /// Each touched transfer as it was before the batch.
    transfers: HashMap<TransferId, Option<Vec<Transfer>>, FastHash>,
    /// Changes to the expiry schedule in order, to be undone in reverse.
    schedule: Vec<ScheduleChange>,
    /// How many items there were before the batch: the items it created come after them.
    items_before: usize,
}

/// One id's entries, first and later, as a rollback puts them back.
type SavedEntries = (Option<ReservationEntry>, Option<Vec<ReservationEntry>>);

type ScheduleKey = (Timestamp, ReservationId, u32);

#[derive(Debug)]
enum ScheduleChange {
    Inserted(ScheduleKey),
    Removed(ScheduleKey),
}

impl Inventory {
    pub fn new() -> Inventory {
        Inventory::default()
    }

    pub fn item(&self, stream: &StreamKey) -> Option<&StockItem> {
        self.items.get(stream)
    }

    pub fn version(&self, stream: &StreamKey) -> StreamVersion {
        self.items
            .get(stream)
            .map_or(StreamVersion::INITIAL, StockItem::version)
    }

    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    /// The first transfer shipped with this id (the only one, unless source stores that share
    /// nothing chose the same id).
    pub fn transfer(&self, transfer_id: &TransferId) -> Option<&Transfer> {
        self.transfers.get(transfer_id)?.first()
    }

    /// The transfer a command names: the one from `from_store`, or without it the only one
    /// shipped with this id. `Ok(None)` when there is none; an error when the id names
    /// several and no source was given (each named by its source).
    pub fn find_transfer(
        &self,
        transfer_id: &TransferId,
        from_store: Option<&StoreId>,
    ) -> Result<Option<&Transfer>, DomainError> {
        let Some(transfers) = self.transfers.get(transfer_id) else {
            return Ok(None);
        };
        if from_store.is_none() && transfers.len() > 1 {
            return Err(DomainError::TransferIdAmbiguous {
                transfer_id: transfer_id.clone(),
                stores: transfers
                    .iter()
                    .map(|transfer| transfer.from_store.clone())
                    .collect(),
            });
        }
        Ok(transfer_index(transfers, from_store).map(|index| &transfers[index]))
    }

    /// The sources of the transfers shipped with this id that `sees` says true for at either
    /// end, when the id names more than one (`None` when it names at most one).
    pub fn transfer_sources_seen(
        &self,
        transfer_id: &TransferId,
        sees: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Option<Vec<StoreId>> {
        let transfers = self.transfers.get(transfer_id)?;
        (transfers.len() > 1).then(|| {
            transfers
                .iter()
                .filter(|transfer| sees(&transfer.from_store) || sees(&transfer.to_store))
                .map(|transfer| transfer.from_store.clone())
                .collect()
        })
    }

    /// The status of the first reservation made with this id (the only one, unless stores
    /// that share nothing chose the same id).
    pub fn reservation_status(&self, reservation_id: &ReservationId) -> Option<ReservationStatus> {
        self.reservations
            .get(reservation_id)
            .map(|entry| entry.status)
    }

    fn item_key(&self, index: u32) -> &StreamKey {
        self.items
            .get_index(index as usize)
            .expect("a reservation's item exists")
            .0
    }

    /// Starts a batch: every change until [`Inventory::commit_batch`] can be undone by
    /// [`Inventory::rollback_batch`]. The command side opens one per group commit, so a batch
    /// whose events the log refused leaves no trace.
    pub fn begin_batch(&mut self) {
        assert!(self.undo.is_none(), "a batch is already open");
        self.undo = Some(Undo {
            items_before: self.items.len(),
            ..Undo::default()
        });
    }

    /// Keeps every change of the open batch.
    pub fn commit_batch(&mut self) {
        assert!(self.undo.take().is_some(), "no batch is open");
    }

    /// Puts back the state from before the open batch.
    pub fn rollback_batch(&mut self) {
        let undo = self.undo.take().expect("no batch is open");
        for change in undo.schedule.into_iter().rev() {
            match change {
                ScheduleChange::Inserted(key) => {
                    self.expiry_schedule.remove(&key);
                }
                ScheduleChange::Removed(key) => {
                    self.expiry_schedule.insert(key);
                }
            }
        }
        for (reservation_id, (first, more)) in undo.reservations {
            match more {
                Some(more) => self.more_reservations.insert(reservation_id.clone(), more),
                None => self.more_reservations.remove(&reservation_id),
            };
            match first {
                Some(entry) => self.reservations.insert(reservation_id, entry),
                None => self.reservations.swap_remove(&reservation_id),
            };
        }
        self.reserving = None;
        for (transfer_id, transfer) in undo.transfers {
            match transfer {
                Some(transfer) => self.transfers.insert(transfer_id, transfer),
                None => self.transfers.remove(&transfer_id),
            };
        }
        for (key, more) in undo.more_items {
            match more {
                Some(more) => self.more_items.insert(key, more),
                None => self.more_items.remove(&key),
            };
        }
        for (stream, item) in undo.items {
            match item {
                Some(item) => {
                    self.items.insert(stream, item);
                }
                None => {
                    // Only the batch's own items, the last ones, move: reservation entries
                    // name items by index.
                    let index = self
                        .items
                        .get_index_of(&stream)
                        .expect("an item the batch created exists");
                    assert!(index >= undo.items_before, "an older item was removed");
                    self.items.swap_remove(&stream);
                }
            }
        }
        assert_eq!(self.items.len(), undo.items_before);
    }

    /// Applies one event to its stream and returns the stream's new version and stock. Holds
    /// no rule and cannot fail.
    /// Over 70 lines: one arm per event kind, an exhaustive table that reads best whole, then
    /// the reservation's entry and schedule.
    pub fn evolve(
        &mut self,
        stream: &StreamKey,
        event: &StockEvent,
    ) -> (StreamVersion, StockLevel) {
        if let Some(undo) = &mut self.undo
            && !undo.items.contains_key(stream)
        {
            undo.items
                .insert(stream.clone(), self.items.get(stream).cloned());
        }
        let item_index = match self.items.get_index_of(stream) {
            Some(index) => index,
            None => self
                .items
                .get_or_insert_with(stream.clone(), StockItem::default),
        };
        let item_index = u32::try_from(item_index).expect("fewer than 2^32 items");
        // The reservation the event changes: its new status, the expiry it leaves the schedule
        // with (its old one) and the one it enters it with.
        let mut expiry_added = None;
        let status_change = match event {
            StockEvent::Quantity(_) | StockEvent::Transfer(_) | StockEvent::Alert(_) => None,
            StockEvent::Reservation(ReservationEvent::StockReserved {
                reservation_id,
                expires_at,
                ..
            }) => {
                expiry_added = Some(*expires_at);
                Some((reservation_id, ReservationStatus::Active))
            }
            StockEvent::Reservation(ReservationEvent::ReservationCommitted {
                reservation_id,
                released_quantity,
                ..
            }) => {
                // One line released in part makes the whole commit partial (see `set_status`).
                let status = if *released_quantity > 0 {
                    ReservationStatus::PartiallyCommitted
                } else {
                    ReservationStatus::Committed
                };
                Some((reservation_id, status))
            }
            StockEvent::Reservation(ReservationEvent::ReservationReleased {
                reservation_id,
                ..
            }) => Some((reservation_id, ReservationStatus::Released)),
            StockEvent::Reservation(ReservationEvent::ReservationExpired {
                reservation_id,
                ..
            }) => Some((reservation_id, ReservationStatus::Expired)),
            StockEvent::Reservation(ReservationEvent::ReservationExtended {
                reservation_id,
                expires_at,
            }) => {
                expiry_added = Some(*expires_at);
                Some((reservation_id, ReservationStatus::Active))
            }
        };
        let store = &stream.store_id;
        // The reservation the event is about: a `StockReserved` continues the one its command
        // is making, or starts one; any other event is about the reservation with this id
        // that holds an item of this store (the first one made with the id, in a log written
        // before ids were per store, when there was only one).
        let reserved = matches!(
            event,
            StockEvent::Reservation(ReservationEvent::StockReserved { .. })
        );
        let existing: Option<u32> = status_change.as_ref().and_then(|(reservation_id, _)| {
            if reserved {
                return self
                    .reserving
                    .as_ref()
                    .filter(|(id, _)| id == *reservation_id)
                    .map(|(_, first)| *first);
            }
            // Most ids name one reservation: no store to tell apart.
            if !self.more_reservations.contains_key(*reservation_id) {
                return self
                    .reservations
                    .get(reservation_id)
                    .map(|entry| entry.item);
            }
            self.entries_of(reservation_id)
                .find(|entry| self.entry_holds(reservation_id, entry, store))
                .or_else(|| self.reservations.get(reservation_id))
                .map(|entry| entry.item)
        });
        // Every event about a reservation but the first takes it off the schedule at its old
        // expiry; the first line's event does it for the whole reservation, the others find
        // it done.
        let item = &mut self.items[item_index as usize];
        let expiry_removed = match event {
            StockEvent::Reservation(ReservationEvent::StockReserved { .. }) => None,
            _ => event
                .reservation_id()
                .and_then(|id| item.reservation(id))
                .map(|reservation| reservation.expires_at),
        };
        item.evolve(event);
        let result = (item.version(), item.level());
        if let Some(transfer_id) = event.transfer_id() {
            self.evolve_transfer(transfer_id, stream, event);
        }
        if let Some((reservation_id, status)) = status_change {
            self.save_entries(reservation_id);
            let first = match existing {
                // A later line of the same reservation, or a later event about it.
                Some(first) => {
                    let key = (reservation_id.clone(), first);
                    if first != item_index
                        && !self
                            .more_items
                            .get(&key)
                            .is_some_and(|more| more.contains(&item_index))
                    {
                        self.change_more_items(key, |more| {
                            Some(
                                more.unwrap_or_default()
                                    .into_iter()
                                    .chain([item_index])
                                    .collect(),
                            )
                        });
                    }
                    first
                }
                None => {
                    self.start_reservation(reservation_id, item_index, store);
                    item_index
                }
            };
            if reserved {
                self.reserving = Some((reservation_id.clone(), first));
            }
            if let Some(expires_at) = expiry_removed {
                self.unschedule((expires_at, reservation_id.clone(), first));
            }
            if let Some(expires_at) = expiry_added {
                self.schedule((expires_at, reservation_id.clone(), first));
            }
            self.set_status(reservation_id, first, status);
        }
        result
    }

    /// Marks the start of a command's events: a `StockReserved` after it starts a new
    /// reservation instead of continuing the one the previous command made. Whoever applies
    /// events calls it before each command's first.
    pub fn begin_command(&mut self) {
        self.reserving = None;
    }

    /// Applies a transfer's event to it (a `TransferShipped` starts it), keeping the old one
    /// for a rollback.
    fn evolve_transfer(
        &mut self,
        transfer_id: &TransferId,
        stream: &StreamKey,
        event: &StockEvent,
    ) {
        if let Some(undo) = &mut self.undo
            && !undo.transfers.contains_key(transfer_id)
        {
            undo.transfers.insert(
                transfer_id.clone(),
                self.transfers.get(transfer_id).cloned(),
            );
        }
        let source = transfer_source(&stream.store_id, event);
        let transfers = self.transfers.entry(transfer_id.clone()).or_default();
        let index = match transfer_index(transfers, source) {
            Some(index) => Some(index),
            None => Transfer::start(stream, event).map(|transfer| {
                transfers.push(transfer);
                transfers.len() - 1
            }),
        };
        match index {
            Some(index) => transfers[index].evolve(stream, event, None),
            // An event of a transfer that never shipped: nothing to keep.
            None if transfers.is_empty() => {
                self.transfers.remove(transfer_id);
            }
            None => {}
        }
    }

    /// Replaces a reservation's `more_items` with what `change` makes of them, keeping the
    /// old ones for a rollback.
    fn change_more_items(
        &mut self,
        key: (ReservationId, u32),
        change: impl FnOnce(Option<Vec<u32>>) -> Option<Box<[u32]>>,
    ) {
        let old = self.more_items.remove(&key);
        if let Some(undo) = &mut self.undo
            && !undo.more_items.contains_key(&key)
        {
            undo.more_items.insert(key.clone(), old.clone());
        }
        if let Some(new) = change(old.map(Vec::from)) {
            self.more_items.insert(key, new);
        }
    }

    fn schedule(&mut self, key: ScheduleKey) {
        if self.expiry_schedule.insert(key.clone())
            && let Some(undo) = &mut self.undo
        {
            undo.schedule.push(ScheduleChange::Inserted(key));
        }
    }

    fn unschedule(&mut self, key: ScheduleKey) {
        if self.expiry_schedule.remove(&key)
            && let Some(undo) = &mut self.undo
        {
            undo.schedule.push(ScheduleChange::Removed(key));
        }
    }

    /// Active reservations whose time is up at `now`, soonest first, at most `limit`.
    pub fn due_reservations(&self, now: Timestamp, limit: usize) -> Vec<ReservationId> {
        self.due(now, limit)
            .into_iter()
            .map(|(reservation_id, _)| reservation_id)
            .collect()
    }

    /// [`Inventory::due_reservations`], each with its first item's store, which tells it apart
    /// from another store's reservation with the same id.
    pub fn due(&self, now: Timestamp, limit: usize) -> Vec<(ReservationId, StoreId)> {
        self.expiry_schedule
            .iter()
            .take_while(|(expires_at, ..)| *expires_at <= now)
            .take(limit)
            .map(|(_, reservation_id, first)| {
                (
                    reservation_id.clone(),
                    self.item_key(*first).store_id.clone(),
                )
            })
            .collect()
    }

    /// When the next active reservation expires, if any is active.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.expiry_schedule
            .first()
            .map(|(expires_at, ..)| *expires_at)
    }
}
