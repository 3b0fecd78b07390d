//! The inventory domain: stock items, reservations, the rules that decide commands and the fold
//! that applies events.
//!
//! This module is pure: no I/O, no clock, no randomness, no tokio, tonic or prost types. Time
//! and ids come in as data, so every rule can be tested with plain values and the same events
//! always fold into the same state.

mod command;
mod error;
mod event;
mod ids;
mod inventory;
mod item;
mod reservation;
pub mod state_codec;
mod transfer;
mod values;

pub use command::{
    AddStock, AdjustStock, ApplyStockChanges, CancelTransfer, Command, CommitLine,
    CommitReservation, CountLine, Decide, ExpireReservation, ExtendReservation, MAX_COMMAND_EVENTS,
    MAX_COMMAND_LINES, MoveStock, ReceiveTransfer, RecordCount, ReleaseReservation, RemoveStock,
    ReservationLine, ReserveStock, SameState, SetItemPolicy, ShipTransfer, StateMove,
    StockChangeKind, StockChangeLine, TransferLine,
};
pub use error::{DomainError, LineRule, LineViolation};
pub use event::{
    EventKind, FoldMismatch, MAX_ALERTS_PER_ITEM, QuantityEvent, RecordedEvent, ReservationEvent,
    StockAlert, StockEvent, TransferEvent,
};
pub use ids::{
    Actor, CommandId, CommandKey, CustomerId, EventId, IdError, Identifier, OrderId, ProductId,
    ReservationId, ReservationIdText, StoreId, StreamKey, TransferId,
};
pub use inventory::{Decision, Inventory, ReservationStatus};
pub use item::{ActiveReservation, Reservations, SMALL_RESERVATIONS_MAX, StockItem, level_after};
pub use reservation::{ReservationLineView, ReservationView};
pub use transfer::{Transfer, TransferLineState, TransferStatus, transfer_index, transfer_source};
pub use values::{
    LogPosition, MAX_ON_HAND, MAX_REASON_LEN, Quantity, QuantityError, Reason, ReasonError,
    StockLevel, StockParts, StockState, StreamVersion, TimeToLive, Timestamp, TtlError,
};
