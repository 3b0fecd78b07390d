//! How a command is decided against the inventory: the command's own rules (in the module of
//! its family, `domain::command`), then the alerts of the thresholds its items cross. Pure: the
//! inventory does not change until the caller applies the events with [`Inventory::evolve`].
//!
//! A multi-line command is checked whole before any event is made: every line that breaks a
//! rule is reported, and a refused command yields no event at all.

use std::collections::HashMap;

use super::{Decision, Inventory, ReservationEntry, ReservationStatus};
use crate::dense_map::FastHash;
use crate::domain::command::Command;
use crate::domain::error::DomainError;
use crate::domain::event::{StockAlert, StockEvent};
use crate::domain::ids::{ReservationId, StoreId, StreamKey, TransferId};
use crate::domain::item::{ActiveReservation, StockItem, level_after};
use crate::domain::transfer::{Transfer, TransferStatus};
use crate::domain::values::{StockLevel, Timestamp};

/// The state of an item that has no event yet.
static EMPTY_ITEM: std::sync::LazyLock<StockItem> = std::sync::LazyLock::new(StockItem::default);

impl Inventory {
    /// Decides whether a command is accepted, and if so which events it becomes: one per item
    /// it touches, in the order of its lines, each followed by the alerts of the thresholds
    /// its item crosses. Pure: the inventory does not change until the caller applies the
    /// events with [`Inventory::evolve`].
    pub fn decide(&self, command: &Command, now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let decisions = command.decide_lines(self, now)?;
        Ok(self.with_alerts(decisions))
    }

    /// The decisions with the alerts of each item after its last event in the command: what
    /// the item crossed between its state now (before the command) and after all its events.
    fn with_alerts(&self, mut decisions: Vec<Decision>) -> Vec<Decision> {
        // A command of one event (most are) needs no map: its item's alerts follow it.
        if let [decision] = decisions.as_slice() {
            let item = self.item_or_empty(&decision.stream);
            let before = item.level();
            let after = level_after(before, &decision.event);
            let stream = decision.stream.clone();
            decisions.extend(
                StockAlert::crossed(before, after, item.version().0 > 0).map(|alert| Decision {
                    stream: stream.clone(),
                    event: StockEvent::Alert(alert),
                }),
            );
            return decisions;
        }
        // Each item: its level now, after the command's events, whether it had events, and
        // the index of its last decision. A command touches few items: a vector searched
        // linearly would be quadratic for a delivery of 1,000, so a map.
        let mut items: HashMap<&StreamKey, (StockLevel, StockLevel, bool, usize), FastHash> =
            HashMap::default();
        for (index, decision) in decisions.iter().enumerate() {
            let entry = items.entry(&decision.stream).or_insert_with(|| {
                let item = self.item_or_empty(&decision.stream);
                (item.level(), item.level(), item.version().0 > 0, index)
            });
            entry.1 = level_after(entry.1, &decision.event);
            entry.3 = index;
        }
        let mut alerts_after: Vec<(usize, StockAlert)> = items
            .values()
            .flat_map(|(before, after, had_events, last)| {
                StockAlert::crossed(*before, *after, *had_events).map(|alert| (*last, alert))
            })
            .collect();
        // Most commands cross nothing: their decisions are returned as they are.
        if alerts_after.is_empty() {
            return decisions;
        }
        // By the decision they follow; `crossed` gives one item's alerts in their order, and
        // the sort is stable.
        alerts_after.sort_by_key(|(last, _)| *last);
        let mut alerts_after = alerts_after.into_iter().peekable();
        let mut with_alerts = Vec::with_capacity(decisions.len() + alerts_after.len());
        for (index, decision) in decisions.into_iter().enumerate() {
            let stream = decision.stream.clone();
            with_alerts.push(decision);
            while let Some((_, alert)) = alerts_after.next_if(|(last, _)| *last == index) {
                with_alerts.push(Decision {
                    stream: stream.clone(),
                    event: StockEvent::Alert(alert),
                });
            }
        }
        with_alerts
    }

    /// The item, or an empty one when it has no event yet.
    pub(in crate::domain) fn item_or_empty(&self, stream: &StreamKey) -> &StockItem {
        self.items.get(stream).unwrap_or(&EMPTY_ITEM)
    }

    /// A transfer that exists and is neither closed nor cancelled.
    pub(in crate::domain) fn open_transfer(
        &self,
        transfer_id: &TransferId,
        from_store: Option<&StoreId>,
    ) -> Result<&Transfer, DomainError> {
        let Some(transfer) = self.find_transfer(transfer_id, from_store)? else {
            return Err(DomainError::TransferNotFound {
                transfer_id: transfer_id.clone(),
            });
        };
        if matches!(
            transfer.status,
            TransferStatus::Received | TransferStatus::Cancelled
        ) {
            return Err(DomainError::TransferNotOpen {
                transfer_id: transfer_id.clone(),
                status: transfer.status,
            });
        }
        Ok(transfer)
    }

    /// An active reservation's entry, or why there is none (see [`Inventory::find_entry`]).
    fn active_entry(
        &self,
        reservation_id: &ReservationId,
        store: Option<&StoreId>,
    ) -> Result<&ReservationEntry, DomainError> {
        let Some(entry) = self.find_entry(reservation_id, store)? else {
            return Err(DomainError::ReservationNotFound {
                reservation_id: reservation_id.clone(),
            });
        };
        if entry.status != ReservationStatus::Active {
            return Err(DomainError::ReservationNotActive {
                reservation_id: reservation_id.clone(),
                status: entry.status,
            });
        }
        Ok(entry)
    }

    /// An active reservation's lines: each item and what it holds of it, in line order.
    pub(in crate::domain) fn active_reservation(
        &self,
        reservation_id: &ReservationId,
        store: Option<&StoreId>,
    ) -> Result<Vec<(&StreamKey, &ActiveReservation)>, DomainError> {
        let entry = self.active_entry(reservation_id, store)?;
        Ok(self
            .entry_items(reservation_id, entry)
            .map(|index| {
                let (stream, item) = self
                    .items
                    .get_index(index as usize)
                    .expect("a reservation's item exists");
                let reservation = item
                    .reservation(reservation_id)
                    .expect("an active reservation is held by each of its items");
                (stream, reservation)
            })
            .collect())
    }

    /// An active reservation whose time is not up. One whose time is up but whose expiry event
    /// is not written yet is already expired for every command.
    pub(in crate::domain) fn unexpired_reservation(
        &self,
        reservation_id: &ReservationId,
        store: Option<&StoreId>,
        now: Timestamp,
    ) -> Result<Vec<(&StreamKey, &ActiveReservation)>, DomainError> {
        let held = self.active_reservation(reservation_id, store)?;
        if held
            .iter()
            .any(|(_, reservation)| reservation.expires_at <= now)
        {
            return Err(DomainError::ReservationNotActive {
                reservation_id: reservation_id.clone(),
                status: ReservationStatus::Expired,
            });
        }
        Ok(held)
    }
}
