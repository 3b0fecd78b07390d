//! One reservation as a whole, across the items it holds: a fold of the events about it, for
//! looking a reservation up by its id.

use super::event::{ReservationEvent, StockEvent};
use super::ids::{CustomerId, OrderId, ReservationId, StreamKey};
use super::inventory::ReservationStatus;
use super::values::{LogPosition, Timestamp};

/// A reservation: its lines, customer, status and expiry, and where its events are.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReservationView {
    pub reservation_id: ReservationId,
    pub customer_id: CustomerId,
    pub status: ReservationStatus,
    /// When it expires (or expired, or would have, once it ended).
    pub expires_at: Timestamp,
    /// The order it was committed for, once committed.
    pub order_id: Option<OrderId>,
    /// One line per item, in the order of the reservation's lines.
    pub lines: Vec<ReservationLineView>,
    /// The log positions of every event about it, oldest first.
    pub positions: Vec<LogPosition>,
}

/// What a reservation held of one item, and what became of it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReservationLineView {
    pub stream: StreamKey,
    /// What was reserved.
    pub quantity: u64,
    /// What left the store when the reservation was committed.
    pub committed: u64,
    /// What became available again: released, expired, or not shipped by a partial commit.
    pub released: u64,
}

impl ReservationView {
    /// The view that a reservation's first event starts, or `None` for an event that is not
    /// about a reservation or does not start one.
    pub fn start(event: &StockEvent) -> Option<ReservationView> {
        match event {
            StockEvent::Reservation(ReservationEvent::StockReserved {
                reservation_id,
                customer_id,
                expires_at,
                ..
            }) => Some(ReservationView {
                reservation_id: reservation_id.clone(),
                customer_id: customer_id.clone(),
                status: ReservationStatus::Active,
                expires_at: *expires_at,
                order_id: None,
                lines: Vec::new(),
                positions: Vec::new(),
            }),
            _ => None,
        }
    }

    /// Applies one event about this reservation. Holds no rule and cannot fail.
    pub fn evolve(&mut self, stream: &StreamKey, position: LogPosition, event: &StockEvent) {
        self.positions.push(position);
        match event {
            StockEvent::Quantity(_) | StockEvent::Transfer(_) | StockEvent::Alert(_) => {}
            StockEvent::Reservation(ReservationEvent::StockReserved {
                quantity,
                expires_at,
                ..
            }) => {
                self.expires_at = *expires_at;
                self.line(stream).quantity += quantity.get();
            }
            StockEvent::Reservation(ReservationEvent::ReservationCommitted {
                quantity,
                order_id,
                released_quantity,
                ..
            }) => {
                let line = self.line(stream);
                line.committed += quantity;
                line.released += released_quantity;
                self.order_id = Some(order_id.clone());
                let partial =
                    self.status == ReservationStatus::PartiallyCommitted || *released_quantity > 0;
                self.status = if partial {
                    ReservationStatus::PartiallyCommitted
                } else {
                    ReservationStatus::Committed
                };
            }
            StockEvent::Reservation(ReservationEvent::ReservationReleased { quantity, .. }) => {
                self.line(stream).released += quantity.get();
                self.status = ReservationStatus::Released;
            }
            StockEvent::Reservation(ReservationEvent::ReservationExpired { quantity, .. }) => {
                self.line(stream).released += quantity.get();
                self.status = ReservationStatus::Expired;
            }
            StockEvent::Reservation(ReservationEvent::ReservationExtended {
                expires_at, ..
            }) => {
                self.expires_at = *expires_at;
            }
        }
    }

    fn line(&mut self, stream: &StreamKey) -> &mut ReservationLineView {
        let at = match self.lines.iter().position(|line| line.stream == *stream) {
            Some(at) => at,
            None => {
                self.lines.push(ReservationLineView {
                    stream: stream.clone(),
                    quantity: 0,
                    committed: 0,
                    released: 0,
                });
                self.lines.len() - 1
            }
        };
        &mut self.lines[at]
    }
}
