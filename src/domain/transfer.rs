//! Transfers of goods between two stores: what a transfer holds of each product and where it
//! is in its life, a fold of its events. The command side decides against it; the read model
//! keeps one per transfer for `GetTransfer` and `ListTransfers`.

use std::fmt;

use super::event::{StockEvent, TransferEvent};
use super::ids::{ProductId, StoreId, StreamKey, TransferId};
use super::state_codec::{Decode, DecodeError, Decoder, Encode, Encoder};
use super::values::LogPosition;

/// Where a transfer is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TransferStatus {
    /// Shipped; nothing received yet.
    InTransit,
    /// Some of it arrived; more may.
    PartiallyReceived,
    /// Closed: everything arrived, or what did not was recorded as lost in transit.
    Received,
    /// Called back before anything arrived: the goods went back to the source.
    Cancelled,
}

impl fmt::Display for TransferStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            TransferStatus::InTransit => "in transit",
            TransferStatus::PartiallyReceived => "partially received",
            TransferStatus::Received => "received",
            TransferStatus::Cancelled => "cancelled",
        })
    }
}

/// One product of a transfer and what became of it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TransferLineState {
    pub product_id: ProductId,
    pub shipped: u64,
    pub received: u64,
    /// Recorded as lost in transit when the transfer was closed.
    pub lost: u64,
}

impl TransferLineState {
    /// What is still on its way: shipped, not received, not recorded lost.
    pub fn in_transit(&self) -> u64 {
        self.shipped
            .saturating_sub(self.received)
            .saturating_sub(self.lost)
    }
}

/// One transfer: a fold of its events.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transfer {
    pub transfer_id: TransferId,
    pub from_store: StoreId,
    pub to_store: StoreId,
    /// In the order the transfer shipped them.
    pub lines: Vec<TransferLineState>,
    pub status: TransferStatus,
    /// The log positions of its events, oldest first (the read model's copy keeps them).
    pub positions: Vec<LogPosition>,
}

/// The source store of the transfer an event on an item of `store` is about, when the event
/// tells: the item's own store for the source's events, the recorded source for the
/// destination's (`None` in events written before it was recorded, when transfer ids were
/// unique in the whole log). Transfer ids are unique per source store.
pub fn transfer_source<'a>(store: &'a StoreId, event: &'a StockEvent) -> Option<&'a StoreId> {
    match event {
        StockEvent::Transfer(TransferEvent::TransferShipped { .. })
        | StockEvent::Transfer(TransferEvent::TransferReturned { .. }) => Some(store),
        StockEvent::Transfer(TransferEvent::TransferIncoming { from_store, .. }) => {
            Some(from_store)
        }
        StockEvent::Transfer(TransferEvent::TransferReceived { from_store, .. })
        | StockEvent::Transfer(TransferEvent::TransferLost { from_store, .. })
        | StockEvent::Transfer(TransferEvent::TransferCancelled { from_store, .. }) => {
            from_store.as_ref()
        }
        _ => None,
    }
}

/// Of the transfers made with one id (one per source store), the one an event is about: the
/// one from `source`, or the only one when the event does not say.
pub fn transfer_index(transfers: &[Transfer], source: Option<&StoreId>) -> Option<usize> {
    match source {
        Some(source) => transfers
            .iter()
            .position(|transfer| &transfer.from_store == source),
        None => (transfers.len() == 1).then_some(0),
    }
}

impl Transfer {
    /// The transfer its first event (a `TransferShipped` on the source's item) starts.
    pub fn start(stream: &StreamKey, event: &StockEvent) -> Option<Transfer> {
        match event {
            StockEvent::Transfer(TransferEvent::TransferShipped {
                transfer_id,
                to_store,
                ..
            }) => Some(Transfer {
                transfer_id: transfer_id.clone(),
                from_store: stream.store_id.clone(),
                to_store: to_store.clone(),
                lines: Vec::new(),
                status: TransferStatus::InTransit,
                positions: Vec::new(),
            }),
            _ => None,
        }
    }

    pub fn line(&self, product_id: &ProductId) -> Option<&TransferLineState> {
        self.lines
            .iter()
            .find(|line| &line.product_id == product_id)
    }

    fn line_mut(&mut self, product_id: &ProductId) -> &mut TransferLineState {
        match self
            .lines
            .iter()
            .position(|line| &line.product_id == product_id)
        {
            Some(at) => &mut self.lines[at],
            None => {
                self.lines.push(TransferLineState {
                    product_id: product_id.clone(),
                    shipped: 0,
                    received: 0,
                    lost: 0,
                });
                self.lines.last_mut().expect("just pushed")
            }
        }
    }

    /// Applies one event about this transfer (on the item `stream`). Holds no rule and cannot
    /// fail; `position` is recorded when given.
    pub fn evolve(
        &mut self,
        stream: &StreamKey,
        event: &StockEvent,
        position: Option<LogPosition>,
    ) {
        position.into_iter().for_each(|at| self.positions.push(at));
        let product_id = &stream.product_id;
        match event {
            StockEvent::Transfer(TransferEvent::TransferShipped { quantity, .. }) => {
                let line = self.line_mut(product_id);
                line.shipped = line.shipped.saturating_add(quantity.get());
            }
            StockEvent::Transfer(TransferEvent::TransferReceived { quantity, .. }) => {
                let line = self.line_mut(product_id);
                line.received = line.received.saturating_add(quantity.get());
                self.status = TransferStatus::PartiallyReceived;
            }
            StockEvent::Transfer(TransferEvent::TransferLost { quantity, .. }) => {
                let line = self.line_mut(product_id);
                line.lost = line.lost.saturating_add(quantity.get());
                self.status = TransferStatus::Received;
            }
            StockEvent::Transfer(TransferEvent::TransferCancelled { .. }) => {
                self.status = TransferStatus::Cancelled
            }
            _ => {}
        }
        // Everything arrived (or was recorded lost): closed.
        if matches!(
            event,
            StockEvent::Transfer(TransferEvent::TransferReceived { .. })
                | StockEvent::Transfer(TransferEvent::TransferLost { .. })
        ) && self.lines.iter().all(|line| line.in_transit() == 0)
        {
            self.status = TransferStatus::Received;
        }
    }
}

impl TransferStatus {
    const ALL: [TransferStatus; 4] = [
        TransferStatus::InTransit,
        TransferStatus::PartiallyReceived,
        TransferStatus::Received,
        TransferStatus::Cancelled,
    ];
}

impl Encode for TransferStatus {
    fn encode(&self, out: &mut Encoder) {
        let tag = TransferStatus::ALL
            .iter()
            .position(|status| status == self)
            .expect("every status is listed");
        out.len_of(tag);
    }
}

impl Decode for TransferStatus {
    fn decode(input: &mut Decoder<'_>) -> Result<TransferStatus, DecodeError> {
        let tag = input.u64()?;
        TransferStatus::ALL
            .get(tag as usize)
            .copied()
            .ok_or_else(|| DecodeError::new(format!("{tag} is not a transfer status")))
    }
}

impl Encode for Transfer {
    fn encode(&self, out: &mut Encoder) {
        out.put(&self.transfer_id);
        out.put(&self.from_store);
        out.put(&self.to_store);
        out.len_of(self.lines.len());
        for line in &self.lines {
            out.put(&line.product_id);
            out.u64(line.shipped);
            out.u64(line.received);
            out.u64(line.lost);
        }
        out.put(&self.status);
        out.seq(self.positions.iter());
    }
}

impl Decode for Transfer {
    fn decode(input: &mut Decoder<'_>) -> Result<Transfer, DecodeError> {
        let transfer_id = input.get()?;
        let from_store = input.get()?;
        let to_store = input.get()?;
        let count = input.len()?;
        let mut lines = Vec::with_capacity(count);
        for _ in 0..count {
            lines.push(TransferLineState {
                product_id: input.get()?,
                shipped: input.u64()?,
                received: input.u64()?,
                lost: input.u64()?,
            });
        }
        Ok(Transfer {
            transfer_id,
            from_store,
            to_store,
            lines,
            status: input.get()?,
            positions: input.seq()?,
        })
    }
}
