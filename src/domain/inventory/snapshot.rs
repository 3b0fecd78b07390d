//! The inventory as a snapshot holds it (see `app::snapshot`): items and reservation entries
//! in the order of their maps (entries name items by index, so the order is part of the
//! state), the rest sorted, so that equal inventories encode to the same bytes.

use super::{Inventory, ReservationEntry, ReservationStatus};
use crate::domain::ids::{ReservationId, StreamKey};
use crate::domain::state_codec::{Decode, DecodeError, Decoder, Encode, Encoder};
use crate::domain::transfer::Transfer;

impl ReservationStatus {
    const ALL: [ReservationStatus; 5] = [
        ReservationStatus::Active,
        ReservationStatus::Committed,
        ReservationStatus::Released,
        ReservationStatus::Expired,
        ReservationStatus::PartiallyCommitted,
    ];
}

impl Encode for Inventory {
    fn encode(&self, out: &mut Encoder) {
        assert!(self.undo.is_none(), "a snapshot is taken between batches");
        out.len_of(self.items.len());
        for (stream, item) in self.items.iter() {
            out.put(stream);
            out.put(item);
        }
        let entry = |out: &mut Encoder, entry: &ReservationEntry| {
            out.put(&entry.item);
            let status = ReservationStatus::ALL
                .iter()
                .position(|status| *status == entry.status)
                .expect("every status is listed");
            out.len_of(status);
        };
        out.len_of(self.reservations.len());
        for (reservation_id, first) in self.reservations.iter() {
            out.put(reservation_id);
            entry(out, first);
        }
        let mut more_reservations: Vec<_> = self.more_reservations.iter().collect();
        more_reservations.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out.len_of(more_reservations.len());
        for (reservation_id, more) in more_reservations {
            out.put(reservation_id);
            out.len_of(more.len());
            for later in more {
                entry(out, later);
            }
        }
        let mut more_items: Vec<_> = self.more_items.iter().collect();
        more_items.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out.len_of(more_items.len());
        for ((reservation_id, first), items) in more_items {
            out.put(reservation_id);
            out.put(first);
            out.seq(items.iter());
        }
        out.len_of(self.expiry_schedule.len());
        for (expires_at, reservation_id, first) in &self.expiry_schedule {
            out.put(expires_at);
            out.put(reservation_id);
            out.put(first);
        }
        let mut transfers: Vec<_> = self.transfers.values().flatten().collect();
        transfers.sort_unstable_by(|a, b| {
            (&a.transfer_id, &a.from_store).cmp(&(&b.transfer_id, &b.from_store))
        });
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
        let entry = |input: &mut Decoder<'_>| -> Result<ReservationEntry, DecodeError> {
            let item = item_index(input)?;
            let tag = input.u64()?;
            let status = *ReservationStatus::ALL
                .get(tag as usize)
                .ok_or_else(|| DecodeError::new(format!("{tag} is not a reservation status")))?;
            Ok(ReservationEntry { item, status })
        };
        for _ in 0..input.len()? {
            let reservation_id: ReservationId = input.get()?;
            let first = entry(input)?;
            if inventory
                .reservations
                .insert(reservation_id, first)
                .is_some()
            {
                return Err(DecodeError::new("a reservation twice"));
            }
        }
        for _ in 0..input.len()? {
            let reservation_id: ReservationId = input.get()?;
            let count = input.len()?;
            let more = (0..count)
                .map(|_| entry(input))
                .collect::<Result<Vec<_>, _>>()?;
            inventory.more_reservations.insert(reservation_id, more);
        }
        for _ in 0..input.len()? {
            let reservation_id: ReservationId = input.get()?;
            let first = item_index(input)?;
            let count = input.len()?;
            let items = (0..count)
                .map(|_| item_index(input))
                .collect::<Result<Box<[u32]>, _>>()?;
            inventory.more_items.insert((reservation_id, first), items);
        }
        for _ in 0..input.len()? {
            let expires_at = input.get()?;
            let reservation_id = input.get()?;
            let first = item_index(input)?;
            inventory
                .expiry_schedule
                .insert((expires_at, reservation_id, first));
        }
        for _ in 0..input.len()? {
            let transfer: Transfer = input.get()?;
            inventory
                .transfers
                .entry(transfer.transfer_id.clone())
                .or_default()
                .push(transfer);
        }
        Ok(inventory)
    }
}
