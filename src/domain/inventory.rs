//! The inventory: every stock item, every reservation id ever used, and the schedule of
//! reservation expiries. The command side holds one and decides every command against it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

// The maps of every item and of every reservation id are `DenseMap`s: entries in a dense
// vector under a table of `u32` indices. Entries are never removed but by a rollback.
use crate::dense_map::{DenseMap, FastHash};

use super::event::{ReservationEvent, StockEvent};
use super::ids::{ReservationId, StreamKey, TransferId};
use super::item::StockItem;
use super::state_codec::{Decode, DecodeError, Decoder, Encode, Encoder};
use super::transfer::Transfer;
use super::values::{StockLevel, StreamVersion, Timestamp};

mod decide;

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
#[derive(Default, Debug)]
pub struct Inventory {
    items: DenseMap<StreamKey, StockItem>,
    /// Every reservation id ever used, so a reused id is refused and a late commit or release
    /// is told what happened to its reservation.
    reservations: DenseMap<ReservationId, ReservationEntry>,
    /// The items after the first of each reservation of several items, in line order.
    more_items: HashMap<ReservationId, Box<[u32]>, FastHash>,
    /// Active reservations by expiry time.
    expiry_schedule: BTreeSet<(Timestamp, ReservationId)>,
    /// Every transfer ever shipped (few next to reservations: kept whole).
    transfers: HashMap<TransferId, Transfer, FastHash>,
    /// While a batch is open: how to put back everything it changed.
    undo: Option<Undo>,
}

/// What a batch changed, to roll it back when its events could not be stored.
#[derive(Default, Debug)]
struct Undo {
    /// Each touched item as it was before the batch (`None`: it did not exist).
    items: HashMap<StreamKey, Option<StockItem>, FastHash>,
    /// Each touched reservation entry as it was before the batch.
    reservations: HashMap<ReservationId, Option<ReservationEntry>, FastHash>,
    /// Each touched entry of `more_items` as it was before the batch.
    more_items: HashMap<ReservationId, Option<Box<[u32]>>, FastHash>,
    /// Each touched transfer as it was before the batch.
    transfers: HashMap<TransferId, Option<Transfer>, FastHash>,
    /// Changes to the expiry schedule in order, to be undone in reverse.
    schedule: Vec<ScheduleChange>,
    /// How many items there were before the batch: the items it created come after them.
    items_before: usize,
}

#[derive(Debug)]
enum ScheduleChange {
    Inserted((Timestamp, ReservationId)),
    Removed((Timestamp, ReservationId)),
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

    pub fn transfer(&self, transfer_id: &TransferId) -> Option<&Transfer> {
        self.transfers.get(transfer_id)
    }

    pub fn reservation_status(&self, reservation_id: &ReservationId) -> Option<ReservationStatus> {
        self.reservations
            .get(reservation_id)
            .map(|entry| entry.status)
    }

    /// The streams of a reservation's items, in the order of its lines; empty for an unknown
    /// id.
    pub fn reservation_items(&self, reservation_id: &ReservationId) -> Vec<&StreamKey> {
        self.reservations
            .get(reservation_id)
            .map(|entry| {
                self.entry_items(reservation_id, entry)
                    .map(|index| self.item_key(index))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many items (lines) a reservation holds; 0 for an unknown id.
    pub fn reservation_line_count(&self, reservation_id: &ReservationId) -> usize {
        match self.reservations.get(reservation_id) {
            None => 0,
            Some(_) => {
                1 + self
                    .more_items
                    .get(reservation_id)
                    .map_or(0, |more| more.len())
            }
        }
    }

    /// The indices of a reservation's items, in the order of its lines.
    fn entry_items(
        &self,
        reservation_id: &ReservationId,
        entry: &ReservationEntry,
    ) -> impl Iterator<Item = u32> {
        let more = self.more_items.get(reservation_id).map(|more| &more[..]);
        std::iter::once(entry.item).chain(more.unwrap_or_default().iter().copied())
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
        for (reservation_id, entry) in undo.reservations {
            match entry {
                Some(entry) => self.reservations.insert(reservation_id, entry),
                None => self.reservations.swap_remove(&reservation_id),
            };
        }
        for (transfer_id, transfer) in undo.transfers {
            match transfer {
                Some(transfer) => self.transfers.insert(transfer_id, transfer),
                None => self.transfers.remove(&transfer_id),
            };
        }
        for (reservation_id, more) in undo.more_items {
            match more {
                Some(more) => self.more_items.insert(reservation_id, more),
                None => self.more_items.remove(&reservation_id),
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
        let item = &mut self.items[item_index];
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
                // One line released in part makes the whole commit partial.
                let partial = *released_quantity > 0
                    || self
                        .reservations
                        .get(reservation_id)
                        .map(|entry| entry.status)
                        == Some(ReservationStatus::PartiallyCommitted);
                let status = if partial {
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
        // Every event about a reservation but the first takes it off the schedule at its old
        // expiry; the first line's event does it for the whole reservation, the others find
        // it done.
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
            if let Some(expires_at) = expiry_removed {
                self.unschedule((expires_at, reservation_id.clone()));
            }
            if let Some(expires_at) = expiry_added {
                self.schedule((expires_at, reservation_id.clone()));
            }
            if let Some(undo) = &mut self.undo
                && !undo.reservations.contains_key(reservation_id)
            {
                undo.reservations.insert(
                    reservation_id.clone(),
                    self.reservations.get(reservation_id).cloned(),
                );
            }
            let reserved = matches!(
                event,
                StockEvent::Reservation(ReservationEvent::StockReserved { .. })
            );
            let item = match self.reservations.get(reservation_id).copied() {
                // A later line of the same reservation, or a later event about it.
                Some(entry) if entry.status == ReservationStatus::Active || !reserved => {
                    if entry.item != item_index
                        && !self
                            .more_items
                            .get(reservation_id)
                            .is_some_and(|more| more.contains(&item_index))
                    {
                        self.change_more_items(reservation_id, |more| {
                            Some(
                                more.unwrap_or_default()
                                    .into_iter()
                                    .chain([item_index])
                                    .collect(),
                            )
                        });
                    }
                    entry.item
                }
                _ => {
                    if self.more_items.contains_key(reservation_id) {
                        self.change_more_items(reservation_id, |_| None);
                    }
                    item_index
                }
            };
            self.reservations
                .insert(reservation_id.clone(), ReservationEntry { item, status });
        }
        result
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
        if !self.transfers.contains_key(transfer_id)
            && let Some(transfer) = Transfer::start(stream, event)
        {
            self.transfers.insert(transfer_id.clone(), transfer);
        }
        if let Some(transfer) = self.transfers.get_mut(transfer_id) {
            transfer.evolve(stream, event, None);
        }
    }

    /// Replaces a reservation's `more_items` with what `change` makes of them, keeping the
    /// old ones for a rollback.
    fn change_more_items(
        &mut self,
        reservation_id: &ReservationId,
        change: impl FnOnce(Option<Vec<u32>>) -> Option<Box<[u32]>>,
    ) {
        let old = self.more_items.remove(reservation_id);
        if let Some(undo) = &mut self.undo
            && !undo.more_items.contains_key(reservation_id)
        {
            undo.more_items.insert(reservation_id.clone(), old.clone());
        }
        if let Some(new) = change(old.map(Vec::from)) {
            self.more_items.insert(reservation_id.clone(), new);
        }
    }

    fn schedule(&mut self, key: (Timestamp, ReservationId)) {
        if self.expiry_schedule.insert(key.clone())
            && let Some(undo) = &mut self.undo
        {
            undo.schedule.push(ScheduleChange::Inserted(key));
        }
    }

    fn unschedule(&mut self, key: (Timestamp, ReservationId)) {
        if self.expiry_schedule.remove(&key)
            && let Some(undo) = &mut self.undo
        {
            undo.schedule.push(ScheduleChange::Removed(key));
        }
    }

    /// Active reservations whose time is up at `now`, soonest first, at most `limit`.
    pub fn due_reservations(&self, now: Timestamp, limit: usize) -> Vec<ReservationId> {
        self.expiry_schedule
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(limit)
            .map(|(_, reservation_id)| reservation_id.clone())
            .collect()
    }

    /// When the next active reservation expires, if any is active.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.expiry_schedule
            .first()
            .map(|(expires_at, _)| *expires_at)
    }
}

impl ReservationStatus {
    const ALL: [ReservationStatus; 5] = [
        ReservationStatus::Active,
        ReservationStatus::Committed,
        ReservationStatus::Released,
        ReservationStatus::Expired,
        ReservationStatus::PartiallyCommitted,
    ];
}

/// The inventory as a snapshot holds it: items and reservation entries in the order of their
/// maps (entries name items by index, so the order is part of the state), the rest sorted.
impl Encode for Inventory {
    fn encode(&self, out: &mut Encoder) {
        assert!(self.undo.is_none(), "a snapshot is taken between batches");
        out.len_of(self.items.len());
        for (stream, item) in self.items.iter() {
            out.put(stream);
            out.put(item);
        }
        out.len_of(self.reservations.len());
        for (reservation_id, entry) in self.reservations.iter() {
            out.put(reservation_id);
            out.put(&entry.item);
            let status = ReservationStatus::ALL
                .iter()
                .position(|status| *status == entry.status)
                .expect("every status is listed");
            out.len_of(status);
        }
        let mut more_items: Vec<_> = self.more_items.iter().collect();
        more_items.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out.len_of(more_items.len());
        for (reservation_id, items) in more_items {
            out.put(reservation_id);
            out.seq(items.iter());
        }
        out.len_of(self.expiry_schedule.len());
        for (expires_at, reservation_id) in &self.expiry_schedule {
            out.put(expires_at);
            out.put(reservation_id);
        }
        let mut transfers: Vec<_> = self.transfers.values().collect();
        transfers.sort_unstable_by(|a, b| a.transfer_id.cmp(&b.transfer_id));
        out.len_of(transfers.len());
        for transfer in transfers {
            out.put(transfer);
        }
    }
}

impl Decode for Inventory {
    fn decode(input: &mut Decoder<'_>) -> Result<Inventory, DecodeError> {
        let mut inventory = Inventory::new();
        for _ in 0..input.len()? {
            let stream: StreamKey = input.get()?;
            let item = input.get()?;
            if inventory.items.insert(stream, item).is_some() {
                return Err(DecodeError::new("an item twice"));
            }
        }
        let item_count = inventory.items.len();
        let item_index = |input: &mut Decoder<'_>| -> Result<u32, DecodeError> {
            let index = input.u32()?;
            if index as usize >= item_count {
                return Err(DecodeError::new(format!(
                    "item index {index} past the items"
                )));
            }
            Ok(index)
        };
        for _ in 0..input.len()? {
            let reservation_id: ReservationId = input.get()?;
            let item = item_index(input)?;
            let tag = input.u64()?;
            let status = *ReservationStatus::ALL
                .get(tag as usize)
                .ok_or_else(|| DecodeError::new(format!("{tag} is not a reservation status")))?;
            let entry = ReservationEntry { item, status };
            if inventory
                .reservations
                .insert(reservation_id, entry)
                .is_some()
            {
                return Err(DecodeError::new("a reservation twice"));
            }
        }
        for _ in 0..input.len()? {
            let reservation_id: ReservationId = input.get()?;
            let count = input.len()?;
            let items = (0..count)
                .map(|_| item_index(input))
                .collect::<Result<Box<[u32]>, _>>()?;
            inventory.more_items.insert(reservation_id, items);
        }
        for _ in 0..input.len()? {
            let expires_at = input.get()?;
            let reservation_id = input.get()?;
            inventory
                .expiry_schedule
                .insert((expires_at, reservation_id));
        }
        for _ in 0..input.len()? {
            let transfer: Transfer = input.get()?;
            inventory
                .transfers
                .insert(transfer.transfer_id.clone(), transfer);
        }
        Ok(inventory)
    }
}
