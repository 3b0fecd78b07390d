//! The inventory's reservations by id. Ids are unique per store: the first reservation made
//! with an id has an entry in `Inventory::reservations`, later ones of other stores in
//! `Inventory::more_reservations`, and a reservation is known by its id and first item. Here:
//! finding the one a command names, and keeping the entries as the fold changes them.

use super::{Inventory, ReservationEntry, ReservationStatus};
use crate::domain::error::DomainError;
use crate::domain::ids::{ReservationId, StoreId, StreamKey};

impl Inventory {
    /// Every reservation made with this id: the first, then the later ones.
    pub(super) fn entries_of<'a>(
        &'a self,
        reservation_id: &ReservationId,
    ) -> impl Iterator<Item = &'a ReservationEntry> + 'a {
        self.reservations.get(reservation_id).into_iter().chain(
            self.more_reservations
                .get(reservation_id)
                .into_iter()
                .flatten(),
        )
    }

    /// Whether the reservation `entry` (made with `reservation_id`) holds an item of `store`.
    pub(super) fn entry_holds(
        &self,
        reservation_id: &ReservationId,
        entry: &ReservationEntry,
        store: &StoreId,
    ) -> bool {
        self.entry_items(reservation_id, entry)
            .any(|index| &self.item_key(index).store_id == store)
    }

    /// Whether a reservation made with this id holds an item of one of `stores`: a new
    /// reservation of those stores may not take the id.
    pub fn reservation_id_used<'a>(
        &self,
        reservation_id: &ReservationId,
        stores: impl IntoIterator<Item = &'a StoreId>,
    ) -> bool {
        let stores: Vec<&StoreId> = stores.into_iter().collect();
        self.entries_of(reservation_id).any(|entry| {
            stores
                .iter()
                .any(|store| self.entry_holds(reservation_id, entry, store))
        })
    }

    /// The reservation a command names: with `store`, the one made with this id that holds an
    /// item of that store; without, the only one made with this id. `Ok(None)` when there is
    /// none; an error when `store` is missing and the id names several (each named by its
    /// first store).
    pub(super) fn find_entry(
        &self,
        reservation_id: &ReservationId,
        store: Option<&StoreId>,
    ) -> Result<Option<&ReservationEntry>, DomainError> {
        match store {
            Some(store) => Ok(self
                .entries_of(reservation_id)
                .find(|entry| self.entry_holds(reservation_id, entry, store))),
            None => {
                let first = self.reservations.get(reservation_id);
                match self.more_reservations.get(reservation_id) {
                    Some(more) if !more.is_empty() => Err(DomainError::ReservationIdAmbiguous {
                        reservation_id: reservation_id.clone(),
                        stores: self
                            .entries_of(reservation_id)
                            .map(|entry| self.item_key(entry.item).store_id.clone())
                            .collect(),
                    }),
                    _ => Ok(first),
                }
            }
        }
    }

    /// The first store of each reservation made with this id that `sees` says true for, when
    /// the id names more than one reservation (`None` when it names at most one): what a
    /// caller's command must choose from.
    pub fn reservation_stores_seen(
        &self,
        reservation_id: &ReservationId,
        sees: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Option<Vec<StoreId>> {
        if self
            .more_reservations
            .get(reservation_id)
            .is_none_or(|more| more.is_empty())
        {
            return None;
        }
        let mut seen = Vec::new();
        for entry in self.entries_of(reservation_id) {
            let stores: Vec<&StoreId> = self
                .entry_items(reservation_id, entry)
                .map(|index| &self.item_key(index).store_id)
                .collect();
            if let Some(store) = stores.into_iter().find(|store| sees(store)) {
                seen.push(store.clone());
            }
        }
        Some(seen)
    }

    /// The streams of the reservation `store` names (see [`Inventory::find_entry`]), in the
    /// order of its lines; empty for an unknown id, or an id that names several without a
    /// store.
    pub fn reservation_items(
        &self,
        reservation_id: &ReservationId,
        store: Option<&StoreId>,
    ) -> Vec<&StreamKey> {
        match self.find_entry(reservation_id, store) {
            Ok(Some(entry)) => self
                .entry_items(reservation_id, entry)
                .map(|index| self.item_key(index))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// How many items (lines) the reservation holds; 0 for an unknown id.
    pub fn reservation_line_count(
        &self,
        reservation_id: &ReservationId,
        store: Option<&StoreId>,
    ) -> usize {
        match self.find_entry(reservation_id, store) {
            Ok(Some(entry)) => {
                1 + self
                    .more_items
                    .get(&(reservation_id.clone(), entry.item))
                    .map_or(0, |more| more.len())
            }
            _ => 0,
        }
    }

    /// The indices of a reservation's items, in the order of its lines.
    pub(super) fn entry_items(
        &self,
        reservation_id: &ReservationId,
        entry: &ReservationEntry,
    ) -> impl Iterator<Item = u32> {
        let more = self
            .more_items
            .get(&(reservation_id.clone(), entry.item))
            .map(|more| &more[..]);
        std::iter::once(entry.item).chain(more.unwrap_or_default().iter().copied())
    }

    /// Keeps the entries of `reservation_id` as they are, for a rollback, the first time the
    /// open batch touches them.
    pub(super) fn save_entries(&mut self, reservation_id: &ReservationId) {
        if let Some(undo) = &mut self.undo
            && !undo.reservations.contains_key(reservation_id)
        {
            undo.reservations.insert(
                reservation_id.clone(),
                (
                    self.reservations.get(reservation_id).copied(),
                    self.more_reservations.get(reservation_id).cloned(),
                ),
            );
        }
    }

    /// A new reservation made with `reservation_id`, whose first item is `item` (of `store`).
    /// One made with the id before that holds an item of the same store (a log written when an
    /// ended reservation's id could be used again) is replaced; otherwise it is the first
    /// made with the id, or a later one of another store.
    pub(super) fn start_reservation(
        &mut self,
        reservation_id: &ReservationId,
        item: u32,
        store: &StoreId,
    ) {
        let entry = ReservationEntry {
            item,
            status: ReservationStatus::Active,
        };
        let replaced = self
            .entries_of(reservation_id)
            .find(|old| self.entry_holds(reservation_id, old, store))
            .map(|old| old.item);
        if let Some(old) = replaced {
            let key = (reservation_id.clone(), old);
            if self.more_items.contains_key(&key) {
                self.change_more_items(key, |_| None);
            }
            self.replace_entry(reservation_id, old, entry);
        } else if self.reservations.contains_key(reservation_id) {
            self.more_reservations
                .entry(reservation_id.clone())
                .or_default()
                .push(entry);
        } else {
            self.reservations.insert(reservation_id.clone(), entry);
        }
    }

    /// Replaces the entry of the reservation made with `reservation_id` whose first item is
    /// `first`.
    pub(super) fn replace_entry(
        &mut self,
        reservation_id: &ReservationId,
        first: u32,
        entry: ReservationEntry,
    ) {
        if let Some(found) = self
            .reservations
            .get_index_of(reservation_id)
            .filter(|index| self.reservations[*index].item == first)
        {
            self.reservations[found] = entry;
            return;
        }
        if let Some(more) = self.more_reservations.get_mut(reservation_id)
            && let Some(found) = more.iter_mut().find(|old| old.item == first)
        {
            *found = entry;
        }
    }

    pub(super) fn set_status(
        &mut self,
        reservation_id: &ReservationId,
        first: u32,
        status: ReservationStatus,
    ) {
        // One line released in part makes the whole commit partial.
        let entry = self
            .entries_of(reservation_id)
            .find(|entry| entry.item == first)
            .copied();
        if let Some(entry) = entry {
            let status = match (entry.status, status) {
                (ReservationStatus::PartiallyCommitted, ReservationStatus::Committed) => {
                    ReservationStatus::PartiallyCommitted
                }
                _ => status,
            };
            self.replace_entry(reservation_id, first, ReservationEntry { status, ..entry });
        }
    }
}
