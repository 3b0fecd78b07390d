//! One stock item (a product in a store): its state, its active reservations, and the fold
//! from its events to that state.

use std::collections::HashMap;

use crate::dense_map::FastHash;

use super::event::{QuantityEvent, ReservationEvent, StockEvent, TransferEvent};
use super::ids::{CustomerId, ReservationId};
use super::state_codec::{Decode, DecodeError, Decoder, Encode, Encoder};
use super::values::{Quantity, StockLevel, StockParts, StockState, StreamVersion, Timestamp};

/// A reservation that still holds stock.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ActiveReservation {
    pub quantity: Quantity,
    pub customer_id: CustomerId,
    pub expires_at: Timestamp,
}

/// The state of one stock item: a fold of its stream's events.
///
/// Every item is held twice in memory (command side and read model), and most have only
/// on-hand and reserved units: the other parts of its level are boxed, and only held by an
/// item that has any.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct StockItem {
    on_hand: u64,
    reserved: u64,
    version: StreamVersion,
    reservations: Reservations,
    more: Option<Box<MoreStock>>,
}

/// The parts of an item's level besides on-hand and reserved, at least one of them not 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct MoreStock {
    damaged: u64,
    quality_control: u64,
    safety_stock: u64,
    incoming: u64,
    low_stock_threshold: u64,
}

/// How many active reservations an item keeps in a vector before it moves them to a hash map.
pub const SMALL_RESERVATIONS_MAX: usize = 32;

/// The active reservations of one item. Most items hold none or a few, and every item is held
/// in memory twice (command side and read model), so they are kept in a boxed slice searched
/// linearly: 16 bytes and no allocation while empty, one exact-size allocation otherwise. An item
/// that holds more than [`SMALL_RESERVATIONS_MAX`] (a hot item) moves them to a hash map, so a
/// lookup never scans more than that many entries; it moves back below half of that.
#[derive(Clone, Debug)]
pub enum Reservations {
    Small(Box<[(ReservationId, ActiveReservation)]>),
    Large(Box<HashMap<ReservationId, ActiveReservation, FastHash>>),
}

impl Default for Reservations {
    fn default() -> Reservations {
        Reservations::Small(Box::default())
    }
}

const _: () = assert!(std::mem::size_of::<Reservations>() == 16);
const _: () = assert!(std::mem::size_of::<StockItem>() == 48);

/// Equal when they hold the same reservations, in whatever order or form.
impl PartialEq for Reservations {
    fn eq(&self, other: &Reservations) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(id, reservation)| other.get(id) == Some(reservation))
    }
}

impl Eq for Reservations {}

impl Reservations {
    pub fn len(&self) -> usize {
        match self {
            Reservations::Small(entries) => entries.len(),
            Reservations::Large(entries) => entries.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, reservation_id: &ReservationId) -> Option<&ActiveReservation> {
        match self {
            Reservations::Small(entries) => entries
                .iter()
                .find(|(id, _)| id == reservation_id)
                .map(|(_, reservation)| reservation),
            Reservations::Large(entries) => entries.get(reservation_id),
        }
    }

    pub fn get_mut(&mut self, reservation_id: &ReservationId) -> Option<&mut ActiveReservation> {
        match self {
            Reservations::Small(entries) => entries
                .iter_mut()
                .find(|(id, _)| id == reservation_id)
                .map(|(_, reservation)| reservation),
            Reservations::Large(entries) => entries.get_mut(reservation_id),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ReservationId, &ActiveReservation)> {
        let (small, large) = match self {
            Reservations::Small(entries) => (Some(entries.iter()), None),
            Reservations::Large(entries) => (None, Some(entries.iter())),
        };
        let small = small
            .into_iter()
            .flatten()
            .map(|(id, reservation)| (id, reservation));
        small.chain(large.into_iter().flatten())
    }

    /// Adds or replaces a reservation.
    pub fn insert(&mut self, reservation_id: ReservationId, reservation: ActiveReservation) {
        match self {
            Reservations::Small(entries) => {
                if let Some(entry) = entries.iter_mut().find(|(id, _)| *id == reservation_id) {
                    entry.1 = reservation;
                    return;
                }
                let mut small = std::mem::take(entries).into_vec();
                if small.len() == SMALL_RESERVATIONS_MAX {
                    let mut map: HashMap<_, _, _> = small.into_iter().collect();
                    map.insert(reservation_id, reservation);
                    *self = Reservations::Large(Box::new(map));
                    return;
                }
                // Exactly one more: the slice is reallocated on every change while small.
                small.reserve_exact(1);
                small.push((reservation_id, reservation));
                *entries = small.into_boxed_slice();
            }
            Reservations::Large(entries) => {
                entries.insert(reservation_id, reservation);
            }
        }
    }

    pub fn remove(&mut self, reservation_id: &ReservationId) -> Option<ActiveReservation> {
        match self {
            Reservations::Small(entries) => {
                let at = entries.iter().position(|(id, _)| id == reservation_id)?;
                let mut small = std::mem::take(entries).into_vec();
                let (_, reservation) = small.swap_remove(at);
                // Shrinks to the exact size; an item with no active reservation holds no
                // allocation.
                *entries = small.into_boxed_slice();
                Some(reservation)
            }
            Reservations::Large(entries) => {
                let reservation = entries.remove(reservation_id)?;
                if entries.len() < SMALL_RESERVATIONS_MAX / 2 {
                    let small: Box<[_]> = entries.drain().collect();
                    *self = Reservations::Small(small);
                }
                Some(reservation)
            }
        }
    }
}

impl StockItem {
    pub fn level(&self) -> StockLevel {
        let more = self.more.as_deref().copied().unwrap_or(MoreStock {
            damaged: 0,
            quality_control: 0,
            safety_stock: 0,
            incoming: 0,
            low_stock_threshold: 0,
        });
        StockLevel::from_parts(StockParts {
            on_hand: self.on_hand,
            reserved: self.reserved,
            damaged: more.damaged,
            quality_control: more.quality_control,
            safety_stock: more.safety_stock,
            incoming: more.incoming,
            low_stock_threshold: more.low_stock_threshold,
        })
        .expect("an item's parts are each at most MAX_ON_HAND")
    }

    fn set_level(&mut self, level: StockLevel) {
        let parts = level.parts();
        self.on_hand = parts.on_hand;
        self.reserved = parts.reserved;
        let more = MoreStock {
            damaged: parts.damaged,
            quality_control: parts.quality_control,
            safety_stock: parts.safety_stock,
            incoming: parts.incoming,
            low_stock_threshold: parts.low_stock_threshold,
        };
        let none = more.damaged == 0
            && more.quality_control == 0
            && more.safety_stock == 0
            && more.incoming == 0
            && more.low_stock_threshold == 0;
        match (&mut self.more, none) {
            (_, true) => self.more = None,
            (Some(boxed), false) => **boxed = more,
            (None, false) => self.more = Some(Box::new(more)),
        }
    }

    pub fn version(&self) -> StreamVersion {
        self.version
    }

    pub fn reservation(&self, reservation_id: &ReservationId) -> Option<&ActiveReservation> {
        self.reservations.get(reservation_id)
    }

    pub fn reservations(&self) -> impl Iterator<Item = (&ReservationId, &ActiveReservation)> {
        self.reservations.iter()
    }

    /// Applies one event. It holds no rule and cannot fail: events are facts. Quantities
    /// saturate instead of wrapping, so even a log written by a faulty version folds into a
    /// state whose `level` a caller can compare with the event's recorded `stock_after`.
    pub fn evolve(&mut self, event: &StockEvent) {
        match event {
            StockEvent::Reservation(ReservationEvent::StockReserved {
                reservation_id,
                quantity,
                customer_id,
                expires_at,
            }) => {
                self.reservations.insert(
                    reservation_id.clone(),
                    ActiveReservation {
                        quantity: *quantity,
                        customer_id: customer_id.clone(),
                        expires_at: *expires_at,
                    },
                );
            }
            StockEvent::Reservation(ReservationEvent::ReservationCommitted {
                reservation_id,
                ..
            })
            | StockEvent::Reservation(ReservationEvent::ReservationReleased {
                reservation_id,
                ..
            })
            | StockEvent::Reservation(ReservationEvent::ReservationExpired {
                reservation_id,
                ..
            }) => {
                self.reservations.remove(reservation_id);
            }
            StockEvent::Reservation(ReservationEvent::ReservationExtended {
                reservation_id,
                expires_at,
            }) => {
                if let Some(reservation) = self.reservations.get_mut(reservation_id) {
                    reservation.expires_at = *expires_at;
                }
            }
            StockEvent::Quantity(_) | StockEvent::Transfer(_) | StockEvent::Alert(_) => {}
        }
        self.set_level(level_after(self.level(), event));
        self.version = self.version.next();
    }
}

/// The level of an item after `event`: the part of the fold that concerns quantities, so a
/// rule can see what an event would leave without applying it.
/// Over 70 lines: one arm per event that moves a quantity, an exhaustive table that reads
/// best whole.
pub fn level_after(level: StockLevel, event: &StockEvent) -> StockLevel {
    fn take(parts: &mut StockParts, state: StockState, quantity: u64) {
        match state {
            StockState::Available => {}
            StockState::Damaged => parts.damaged = parts.damaged.saturating_sub(quantity),
            StockState::QualityControl => {
                parts.quality_control = parts.quality_control.saturating_sub(quantity)
            }
        }
    }
    fn put(parts: &mut StockParts, state: StockState, quantity: u64) {
        match state {
            StockState::Available => {}
            StockState::Damaged => parts.damaged = parts.damaged.saturating_add(quantity),
            StockState::QualityControl => {
                parts.quality_control = parts.quality_control.saturating_add(quantity)
            }
        }
    }
    level.changed(|parts| match event {
        StockEvent::Quantity(QuantityEvent::StockAdded { quantity, .. }) => {
            parts.on_hand = parts.on_hand.saturating_add(quantity.get())
        }
        StockEvent::Quantity(QuantityEvent::StockAdjusted { on_hand, .. }) => {
            parts.on_hand = *on_hand
        }
        StockEvent::Quantity(QuantityEvent::StockCounted {
            on_hand,
            damaged_not_found,
            quality_control_not_found,
            ..
        }) => {
            parts.on_hand = *on_hand;
            parts.damaged = parts.damaged.saturating_sub(*damaged_not_found);
            parts.quality_control = parts
                .quality_control
                .saturating_sub(*quality_control_not_found);
        }
        StockEvent::Quantity(QuantityEvent::StockRemoved { quantity, from, .. }) => {
            parts.on_hand = parts.on_hand.saturating_sub(quantity.get());
            take(parts, *from, quantity.get());
        }
        StockEvent::Quantity(QuantityEvent::StockMoved {
            quantity, from, to, ..
        }) => {
            take(parts, *from, quantity.get());
            put(parts, *to, quantity.get());
        }
        StockEvent::Quantity(QuantityEvent::ItemPolicyChanged {
            safety_stock,
            low_stock_threshold,
        }) => {
            parts.safety_stock = *safety_stock;
            parts.low_stock_threshold = *low_stock_threshold;
        }
        StockEvent::Reservation(ReservationEvent::StockReserved { quantity, .. }) => {
            parts.reserved = parts.reserved.saturating_add(quantity.get())
        }
        StockEvent::Reservation(ReservationEvent::ReservationCommitted {
            quantity,
            released_quantity,
            ..
        }) => {
            parts.on_hand = parts.on_hand.saturating_sub(*quantity);
            parts.reserved = parts
                .reserved
                .saturating_sub(*quantity)
                .saturating_sub(*released_quantity);
        }
        StockEvent::Reservation(ReservationEvent::ReservationReleased { quantity, .. })
        | StockEvent::Reservation(ReservationEvent::ReservationExpired { quantity, .. }) => {
            parts.reserved = parts.reserved.saturating_sub(quantity.get())
        }
        StockEvent::Transfer(TransferEvent::TransferShipped { quantity, .. }) => {
            parts.on_hand = parts.on_hand.saturating_sub(quantity.get())
        }
        StockEvent::Transfer(TransferEvent::TransferReturned { quantity, .. }) => {
            parts.on_hand = parts.on_hand.saturating_add(quantity.get())
        }
        StockEvent::Transfer(TransferEvent::TransferIncoming { quantity, .. }) => {
            parts.incoming = parts.incoming.saturating_add(quantity.get())
        }
        StockEvent::Transfer(TransferEvent::TransferReceived { quantity, .. }) => {
            parts.incoming = parts.incoming.saturating_sub(quantity.get());
            parts.on_hand = parts.on_hand.saturating_add(quantity.get());
        }
        StockEvent::Transfer(TransferEvent::TransferLost { quantity, .. })
        | StockEvent::Transfer(TransferEvent::TransferCancelled { quantity, .. }) => {
            parts.incoming = parts.incoming.saturating_sub(quantity.get())
        }
        StockEvent::Reservation(ReservationEvent::ReservationExtended { .. })
        | StockEvent::Alert(_) => {}
    })
}

/// An item as a snapshot holds it: its level's parts, its version and its active reservations
/// (by id, so the bytes do not depend on the order they were made in).
impl Encode for StockItem {
    fn encode(&self, out: &mut Encoder) {
        out.put(&self.level());
        out.put(&self.version);
        let mut reservations: Vec<_> = self.reservations.iter().collect();
        reservations.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out.len_of(reservations.len());
        for (reservation_id, reservation) in reservations {
            out.put(reservation_id);
            out.u64(reservation.quantity.get());
            out.put(&reservation.customer_id);
            out.put(&reservation.expires_at);
        }
    }
}

impl Decode for StockItem {
    fn decode(input: &mut Decoder<'_>) -> Result<StockItem, DecodeError> {
        let level = input.get()?;
        let mut item = StockItem {
            version: input.get()?,
            ..StockItem::default()
        };
        item.set_level(level);
        let count = input.len()?;
        let mut reservations = Reservations::default();
        for _ in 0..count {
            let reservation_id: ReservationId = input.get()?;
            let quantity = Quantity::new(input.u64()?)
                .map_err(|error| DecodeError::new(format!("a reservation's quantity: {error}")))?;
            let reservation = ActiveReservation {
                quantity,
                customer_id: input.get()?,
                expires_at: input.get()?,
            };
            reservations.insert(reservation_id, reservation);
        }
        item.reservations = reservations;
        Ok(item)
    }
}
