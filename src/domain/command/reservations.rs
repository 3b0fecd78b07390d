//! Commands of a reservation's life: reserve (all lines or none), commit (whole or in part),
//! release, extend, and the server's own expiry.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::{Decide, PickRefused, one_item_per_line, pick_seen};
use crate::dense_map::FastHash;
use crate::domain::error::{DomainError, LineRule, LineViolation};
use crate::domain::event::{ReservationEvent, StockEvent};
use crate::domain::ids::{CustomerId, OrderId, ReservationId, StoreId, StreamKey};
use crate::domain::inventory::{Decision, Inventory};
use crate::domain::item::ActiveReservation;
use crate::domain::values::{Quantity, Reason, StreamVersion, TimeToLive, Timestamp};

/// Sets the lines aside for a customer under one reservation id, all or nothing. Lines naming
/// the same item are summed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReserveStock {
    pub reservation_id: ReservationId,
    pub lines: Vec<ReservationLine>,
    pub customer_id: CustomerId,
    pub ttl: TimeToLive,
}

/// One line of a reservation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReservationLine {
    pub stream: StreamKey,
    pub quantity: Quantity,
    /// Refuse the command unless this item is at this version.
    pub expected_version: Option<StreamVersion>,
}

/// The reserved goods leave the stores. `lines: None` commits every line whole; otherwise
/// `lines` says what ships of each item (summed per item, at most what it reserved), and the
/// rest of the reservation, items not named included, is released by the same command.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CommitReservation {
    pub reservation_id: ReservationId,
    /// A store the reservation holds: needed only when the id names reservations in several
    /// stores (ids are unique per store). See [`Decide::narrow`].
    pub store_id: Option<StoreId>,
    pub order_id: OrderId,
    pub lines: Option<Vec<CommitLine>>,
}

/// What ships of one item of a reservation; 0 ships none of it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CommitLine {
    pub stream: StreamKey,
    pub quantity: u64,
}

/// Gives a reservation up.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReleaseReservation {
    pub reservation_id: ReservationId,
    /// As [`CommitReservation::store_id`].
    pub store_id: Option<StoreId>,
    pub reason: Reason,
}

/// A new expiry, `ttl` from now, for every line of an active reservation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExtendReservation {
    pub reservation_id: ReservationId,
    /// As [`CommitReservation::store_id`].
    pub store_id: Option<StoreId>,
    pub ttl: TimeToLive,
}

/// Sent by the server itself when a reservation's time is up.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExpireReservation {
    pub reservation_id: ReservationId,
    /// As [`CommitReservation::store_id`]: the server names the store of its first line.
    pub store_id: Option<StoreId>,
}

/// The stores and the size of a command on an existing reservation: its items'.
macro_rules! on_existing_reservation {
    () => {
        fn find_store<'a>(
            &'a self,
            inventory: &'a Inventory,
            refused: &mut dyn FnMut(&StoreId) -> bool,
        ) -> Option<&'a StoreId> {
            inventory
                .reservation_items(&self.reservation_id, self.store_id.as_ref())
                .into_iter()
                .map(|stream| &stream.store_id)
                .find(|store| refused(store))
        }

        fn item_bound(&self, inventory: &Inventory) -> usize {
            inventory
                .reservation_line_count(&self.reservation_id, self.store_id.as_ref())
                .max(1)
        }

        fn unseen(
            &self,
            inventory: &Inventory,
            sees: &mut dyn FnMut(&StoreId) -> bool,
        ) -> Option<DomainError> {
            let items = inventory.reservation_items(&self.reservation_id, self.store_id.as_ref());
            (!items.is_empty() && !items.iter().any(|stream| sees(&stream.store_id))).then(|| {
                DomainError::ReservationNotFound {
                    reservation_id: self.reservation_id.clone(),
                }
            })
        }

        fn narrow(
            &mut self,
            inventory: &Inventory,
            sees: &mut dyn FnMut(&StoreId) -> bool,
        ) -> Result<(), DomainError> {
            narrow_reservation(&self.reservation_id, &mut self.store_id, inventory, sees)
        }
    };
}

impl Decide for ReserveStock {
    /// One event per item the lines name, with the lines naming it summed; refused whole when
    /// any item has less available than its lines ask for together.
    fn decide(&self, inventory: &Inventory, now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let stores = self.lines.iter().map(|line| &line.stream.store_id);
        if inventory.reservation_id_used(&self.reservation_id, stores) {
            return Err(DomainError::ReservationAlreadyExists {
                reservation_id: self.reservation_id.clone(),
            });
        }
        let expires_at = now.saturating_add(self.ttl);
        let lines = &self.lines;
        // Each item once, in the order of its first line: (its stream, that line, the sum).
        let mut items: Vec<(&StreamKey, usize, u64)> = Vec::with_capacity(lines.len());
        let mut index_of: HashMap<&StreamKey, usize, FastHash> = HashMap::default();
        let mut violations = Vec::new();
        for (line, requested) in lines.iter().enumerate() {
            if let Some(expected) = requested.expected_version {
                let current = inventory.item_or_empty(&requested.stream).version();
                if expected != current {
                    violations.push(LineViolation::new(
                        line,
                        &requested.stream,
                        LineRule::WrongExpectedVersion { expected, current },
                    ));
                }
            }
            let quantity = requested.quantity.get();
            if lines.len() == 1 {
                items.push((&requested.stream, line, quantity));
                continue;
            }
            match index_of.entry(&requested.stream) {
                Entry::Occupied(at) => {
                    let sum = &mut items[*at.get()].2;
                    *sum = sum.saturating_add(quantity);
                }
                Entry::Vacant(vacant) => {
                    vacant.insert(items.len());
                    items.push((&requested.stream, line, quantity));
                }
            }
        }
        let mut decisions = Vec::with_capacity(items.len());
        for (stream, line, requested) in items {
            let available = inventory.item_or_empty(stream).level().available();
            match Quantity::new(requested) {
                Ok(quantity) if requested <= available => decisions.push(Decision {
                    stream: stream.clone(),
                    event: StockEvent::Reservation(ReservationEvent::StockReserved {
                        reservation_id: self.reservation_id.clone(),
                        quantity,
                        customer_id: self.customer_id.clone(),
                        expires_at,
                    }),
                }),
                _ => violations.push(LineViolation::new(
                    line,
                    stream,
                    LineRule::InsufficientStock {
                        requested,
                        available,
                    },
                )),
            }
        }
        DomainError::unless_lines_broke(decisions, violations)
    }

    one_item_per_line!(lines);
}

impl Decide for CommitReservation {
    fn decide(&self, inventory: &Inventory, now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let held =
            inventory.unexpired_reservation(&self.reservation_id, self.store_id.as_ref(), now)?;
        let shipped = match &self.lines {
            None => held
                .iter()
                .map(|(_, reservation)| reservation.quantity.get())
                .collect(),
            Some(lines) => shipped_quantities(&held, lines)?,
        };
        // The goods must be there: after a count found fewer units than reserved, a commit
        // ships at most the good units on hand.
        let short: Vec<LineViolation> = held
            .iter()
            .zip(&shipped)
            .enumerate()
            .filter_map(|(line, ((stream, _), shipped))| {
                let level = inventory.item_or_empty(stream).level();
                let good = level
                    .on_hand()
                    .saturating_sub(level.damaged() + level.quality_control());
                (*shipped > good).then(|| {
                    LineViolation::new(
                        line,
                        stream,
                        LineRule::StockShort {
                            requested: *shipped,
                            on_hand: good,
                        },
                    )
                })
            })
            .collect();
        if !short.is_empty() {
            return Err(DomainError::LinesRefused { violations: short });
        }
        Ok(held
            .iter()
            .zip(shipped)
            .map(|((stream, reservation), shipped)| Decision {
                stream: (*stream).clone(),
                event: StockEvent::Reservation(ReservationEvent::ReservationCommitted {
                    reservation_id: self.reservation_id.clone(),
                    quantity: shipped,
                    order_id: self.order_id.clone(),
                    released_quantity: reservation.quantity.get() - shipped,
                }),
            })
            .collect())
    }

    on_existing_reservation!();
}

impl Decide for ReleaseReservation {
    fn decide(&self, inventory: &Inventory, now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let held =
            inventory.unexpired_reservation(&self.reservation_id, self.store_id.as_ref(), now)?;
        Ok(each_line(&held, |reservation| {
            StockEvent::Reservation(ReservationEvent::ReservationReleased {
                reservation_id: self.reservation_id.clone(),
                quantity: reservation.quantity,
                reason: self.reason.clone(),
            })
        }))
    }

    on_existing_reservation!();
}

impl Decide for ExtendReservation {
    fn decide(&self, inventory: &Inventory, now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let expires_at = now.saturating_add(self.ttl);
        let held =
            inventory.unexpired_reservation(&self.reservation_id, self.store_id.as_ref(), now)?;
        Ok(each_line(&held, |_| {
            StockEvent::Reservation(ReservationEvent::ReservationExtended {
                reservation_id: self.reservation_id.clone(),
                expires_at,
            })
        }))
    }

    on_existing_reservation!();
}

impl Decide for ExpireReservation {
    fn decide(&self, inventory: &Inventory, _now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let held = inventory.active_reservation(&self.reservation_id, self.store_id.as_ref())?;
        Ok(each_line(&held, |reservation| {
            StockEvent::Reservation(ReservationEvent::ReservationExpired {
                reservation_id: self.reservation_id.clone(),
                quantity: reservation.quantity,
            })
        }))
    }

    on_existing_reservation!();
}

/// Picks the reservation a caller means when its id names reservations in several stores
/// (ids are unique per store) and no store was given: the one it may see, if there is one and
/// only one. Otherwise the caller learns of none it may not see: none seen is not found,
/// several seen must be told apart by `store_id`.
fn narrow_reservation(
    reservation_id: &ReservationId,
    store_id: &mut Option<StoreId>,
    inventory: &Inventory,
    sees: &mut dyn FnMut(&StoreId) -> bool,
) -> Result<(), DomainError> {
    pick_seen(store_id, || {
        inventory.reservation_stores_seen(reservation_id, sees)
    })
    .map_err(|refused| match refused {
        PickRefused::NoneSeen => DomainError::ReservationNotFound {
            reservation_id: reservation_id.clone(),
        },
        PickRefused::Several(stores) => DomainError::ReservationIdAmbiguous {
            reservation_id: reservation_id.clone(),
            stores,
        },
    })
}

/// One decision per line of `held`, each with the event `event` makes of its reservation.
fn each_line(
    held: &[(&StreamKey, &ActiveReservation)],
    event: impl Fn(&ActiveReservation) -> StockEvent,
) -> Vec<Decision> {
    held.iter()
        .map(|(stream, reservation)| Decision {
            stream: (*stream).clone(),
            event: event(reservation),
        })
        .collect()
}

/// What ships of each line of `held` (in its order), from a partial commit's lines: summed
/// per item, each at most what the item holds, and none for an item the lines do not name.
fn shipped_quantities(
    held: &[(&StreamKey, &ActiveReservation)],
    lines: &[CommitLine],
) -> Result<Vec<u64>, DomainError> {
    let mut shipped = vec![0u64; held.len()];
    // The first line naming each item, to report it.
    let mut first_line = vec![None; held.len()];
    let mut violations = Vec::new();
    for (line, commit) in lines.iter().enumerate() {
        match held
            .iter()
            .position(|(stream, _)| **stream == commit.stream)
        {
            Some(at) => {
                shipped[at] = shipped[at].saturating_add(commit.quantity);
                first_line[at].get_or_insert(line);
            }
            None => {
                if !violations
                    .iter()
                    .any(|v: &LineViolation| v.stream == commit.stream)
                {
                    violations.push(LineViolation::new(
                        line,
                        &commit.stream,
                        LineRule::NotInReservation,
                    ));
                }
            }
        }
    }
    for (at, (stream, reservation)) in held.iter().enumerate() {
        let reserved = reservation.quantity.get();
        if shipped[at] > reserved {
            violations.push(LineViolation::new(
                first_line[at].expect("an item ships only if a line names it"),
                stream,
                LineRule::CommitExceedsReserved {
                    requested: shipped[at],
                    reserved,
                },
            ));
        }
    }
    DomainError::unless_lines_broke(shipped, violations)
}
