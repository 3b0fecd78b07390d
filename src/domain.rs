//! The inventory domain: stock items, reservations, the rules that decide commands and the fold
//! that applies events.
//!
//! This module is pure: no I/O, no clock, no randomness, no tokio, tonic or prost types. Time
//! and ids come in as data, so every rule can be tested with plain values and the same events
//! always fold into the same state.

mod ids;
mod inventory;
mod reservation;
mod stock;
mod transfer;
mod values;

pub use ids::{
    Actor, CommandId, CustomerId, EventId, IdError, Identifier, OrderId, ProductId, ReservationId,
    ReservationIdText, StoreId, StreamKey, TransferId,
};
pub use inventory::{Decision, Inventory, ReservationStatus};
pub use reservation::{ReservationLineView, ReservationView};
pub use stock::{
    ActiveReservation, Command, CommitLine, CountLine, DomainError, EventKind, FoldMismatch,
    LineRule, LineViolation, MAX_ALERTS_PER_ITEM, MAX_COMMAND_EVENTS, MAX_COMMAND_LINES,
    RecordedEvent, ReservationLine, Reservations, SMALL_RESERVATIONS_MAX, SameState, StateMove,
    StockAlert, StockChangeKind, StockChangeLine, StockEvent, StockItem, TransferLine, level_after,
};
pub use transfer::{Transfer, TransferLineState, TransferStatus};
pub use values::{
    LogPosition, MAX_ON_HAND, MAX_REASON_LEN, Quantity, QuantityError, Reason, ReasonError,
    StockLevel, StockParts, StockState, StreamVersion, TimeToLive, Timestamp, TtlError,
};
