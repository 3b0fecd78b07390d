//! The read model as a snapshot holds it (see `app::snapshot`).

use std::sync::atomic::Ordering;

use metrics::Gauge;

use super::{LaterReservations, ReadModel, ReservationRecord};
use crate::domain::state_codec::{Decode, DecodeError, Decoder, Encoder};
use crate::domain::{LogPosition, ReservationId, StockItem, StreamKey, Transfer};

/// The read model as a snapshot holds it: its position and its own maps, each sorted; the
/// maps derived from them (stores by product, low stock, transfers by store) are rebuilt.
impl ReadModel {
    /// Writes the model's state. Call it between two batches (nothing applies meanwhile), at
    /// the end of a command.
    pub fn encode_state(&self, out: &mut Encoder) {
        assert_eq!(
            self.head(),
            self.position(),
            "a snapshot is taken at a command boundary"
        );
        out.put(&self.position());
        let items = self.items.sorted_entries();
        out.len_of(items.len());
        for (stream, view) in &items {
            out.put(stream);
            out.put(&view.item);
            out.put(&view.position);
        }
        let reservations = self.reservations_by_id.sorted_entries();
        out.len_of(reservations.len());
        for (reservation_id, record) in &reservations {
            out.put(reservation_id);
            out.put(&record.reserved_at);
            out.put(&record.ended_at);
            out.put(&record.lines);
        }
        let mut more: Vec<(ReservationId, LaterReservations)> = self
            .more_reservations
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().clone()))
            .collect();
        more.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.len_of(more.len());
        for (reservation_id, later) in &more {
            out.put(reservation_id);
            out.len_of(later.len());
            for (stores, record) in later {
                out.seq(stores.iter());
                out.put(&record.reserved_at);
                out.put(&record.ended_at);
                out.put(&record.lines);
            }
        }
        let mut transfers: Vec<Transfer> = self
            .transfers
            .iter()
            .flat_map(|entry| entry.value().clone())
            .collect();
        transfers.sort_unstable_by(|a, b| {
            (&a.transfer_id, &a.from_store).cmp(&(&b.transfer_id, &b.from_store))
        });
        out.len_of(transfers.len());
        for transfer in &transfers {
            out.put(transfer);
        }
        let mut extensions: Vec<(ReservationId, Vec<LogPosition>)> = self
            .extensions
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().clone()))
            .collect();
        extensions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.len_of(extensions.len());
        for (reservation_id, positions) in &extensions {
            out.put(reservation_id);
            out.seq(positions.iter());
        }
    }

    /// Loads a state [`ReadModel::encode_state`] wrote into this model, which must be new
    /// (nothing applied yet), and publishes its position.
    pub fn restore_state(&self, state: ReadModelState) {
        assert!(
            self.head() == LogPosition::START && self.items.is_empty(),
            "a snapshot is loaded into a new read model"
        );
        for (stream, item, item_position) in state.items {
            if item.level().is_low() {
                self.low_stock
                    .entry(stream.store_id.clone())
                    .or_default()
                    .insert(stream.product_id.clone());
            }
            self.stores_by_product
                .entry(stream.product_id.clone())
                .or_default()
                .insert(stream.store_id.clone());
            let mut view = self.items.get_or_default(&stream);
            view.item = item;
            view.position = item_position;
        }
        for (reservation_id, record) in state.reservations {
            *self.reservations_by_id.get_or_default(&reservation_id) = record;
        }
        for (reservation_id, later) in state.more_reservations {
            self.more_reservations.insert(reservation_id, later);
        }
        for transfer in state.transfers {
            for store_id in [&transfer.from_store, &transfer.to_store] {
                self.transfers_by_store
                    .entry(store_id.clone())
                    .or_default()
                    .insert(transfer.transfer_id.clone());
            }
            self.transfers
                .entry(transfer.transfer_id.clone())
                .or_default()
                .push(transfer);
        }
        for (reservation_id, positions) in state.extensions {
            self.extensions.insert(reservation_id, positions);
        }
        self.head.store(state.position.0, Ordering::Release);
        self.position_gauge.set(state.position.0 as f64);
        self.applied.send_replace(state.position);
    }

    /// A model whose gauges report nowhere: the one a snapshot is folded into in the
    /// background, beside the server's own.
    pub fn detached() -> ReadModel {
        ReadModel {
            position_gauge: Gauge::noop(),
            lag_gauge: Gauge::noop(),
            ..ReadModel::new()
        }
    }
}

/// A read model's state read from a snapshot, checked whole before it is loaded (so a damaged
/// snapshot leaves the model untouched): see [`ReadModel::restore_state`].
pub struct ReadModelState {
    position: LogPosition,
    items: Vec<(StreamKey, StockItem, LogPosition)>,
    reservations: Vec<(ReservationId, ReservationRecord)>,
    more_reservations: Vec<(ReservationId, LaterReservations)>,
    transfers: Vec<Transfer>,
    extensions: Vec<(ReservationId, Vec<LogPosition>)>,
}

impl ReadModelState {
    pub fn position(&self) -> LogPosition {
        self.position
    }
}

impl Decode for ReadModelState {
    fn decode(input: &mut Decoder<'_>) -> Result<ReadModelState, DecodeError> {
        let position = input.get()?;
        let count = input.len()?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push((input.get()?, input.get()?, input.get()?));
        }
        let count = input.len()?;
        let mut reservations = Vec::with_capacity(count);
        for _ in 0..count {
            let reservation_id = input.get()?;
            let record = ReservationRecord {
                reserved_at: input.get()?,
                ended_at: input.get()?,
                lines: input.get()?,
            };
            reservations.push((reservation_id, record));
        }
        let count = input.len()?;
        let mut more_reservations = Vec::with_capacity(count);
        for _ in 0..count {
            let reservation_id = input.get()?;
            let later_count = input.len()?;
            let mut later = Vec::with_capacity(later_count);
            for _ in 0..later_count {
                let stores = input.seq()?;
                let record = ReservationRecord {
                    reserved_at: input.get()?,
                    ended_at: input.get()?,
                    lines: input.get()?,
                };
                later.push((stores, record));
            }
            more_reservations.push((reservation_id, later));
        }
        let transfers = input.seq()?;
        let extensions = input.seq()?;
        Ok(ReadModelState {
            position,
            items,
            reservations,
            more_reservations,
            transfers,
            extensions,
        })
    }
}
