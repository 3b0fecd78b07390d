//! Why a command is refused: every variant is a business-rule outcome, not a fault.

use super::ids::{ReservationId, StoreId, StreamKey, TransferId};
use super::inventory::ReservationStatus;
use super::transfer::TransferStatus;
use super::values::{MAX_ON_HAND, StockState, StreamVersion};

/// Why a command is refused. Every variant is a business-rule outcome, not a fault.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DomainError {
    /// Lines of the command break rules of their items: every such line is named, and nothing
    /// is changed.
    #[error("{}", describe_violations(.violations))]
    LinesRefused { violations: Vec<LineViolation> },
    #[error("reservation {reservation_id} not found")]
    ReservationNotFound { reservation_id: ReservationId },
    #[error("reservation {reservation_id} is already {status}")]
    ReservationNotActive {
        reservation_id: ReservationId,
        status: ReservationStatus,
    },
    #[error("reservation {reservation_id} already exists")]
    ReservationAlreadyExists { reservation_id: ReservationId },
    /// Reservation ids are unique per store: this one names reservations in several stores,
    /// each named here by a store it holds (only stores the caller may see).
    #[error(
        "reservation id {reservation_id} names reservations in several stores ({}): set store_id to one of them",
        stores.iter().map(|store| store.as_str()).collect::<Vec<_>>().join(", ")
    )]
    ReservationIdAmbiguous {
        reservation_id: ReservationId,
        stores: Vec<StoreId>,
    },
    #[error("transfer {transfer_id} not found")]
    TransferNotFound { transfer_id: TransferId },
    /// Transfer ids are unique per source store: this one names transfers from several
    /// stores, each named here by its source (only those the caller may see an end of).
    #[error(
        "transfer id {transfer_id} names transfers from several stores ({}): set from_store_id to one of them",
        stores.iter().map(|store| store.as_str()).collect::<Vec<_>>().join(", ")
    )]
    TransferIdAmbiguous {
        transfer_id: TransferId,
        stores: Vec<StoreId>,
    },
    #[error("transfer {transfer_id} already exists")]
    TransferAlreadyExists { transfer_id: TransferId },
    /// A receipt of no line that does not close the transfer would change nothing.
    #[error("a receipt into transfer {transfer_id} names no line and does not close it")]
    NothingReceived { transfer_id: TransferId },
    /// Receiving into a closed or cancelled transfer, or cancelling one that has received.
    #[error("transfer {transfer_id} is {status}")]
    TransferNotOpen {
        transfer_id: TransferId,
        status: TransferStatus,
    },
}

impl DomainError {
    /// `value` when no line broke a rule; otherwise the refusal naming every broken line, in
    /// line order.
    pub fn unless_lines_broke<T>(
        value: T,
        mut violations: Vec<LineViolation>,
    ) -> Result<T, DomainError> {
        if violations.is_empty() {
            return Ok(value);
        }
        violations.sort_by_key(|violation| violation.line);
        Err(DomainError::LinesRefused { violations })
    }
}

impl LineViolation {
    pub fn new(line: usize, stream: &StreamKey, rule: LineRule) -> LineViolation {
        LineViolation {
            line,
            stream: stream.clone(),
            rule,
        }
    }
}

/// One line of a command that breaks a rule of its item. `line` is its index in the
/// command's lines (the first line naming the item, when several do).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LineViolation {
    pub line: usize,
    pub stream: StreamKey,
    pub rule: LineRule,
}

#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LineRule {
    #[error("insufficient stock: requested {requested}, available {available}")]
    InsufficientStock { requested: u64, available: u64 },
    #[error(
        "on_hand {requested_on_hand} is below the {reserved} units reserved, damaged or in quality control"
    )]
    OnHandBelowReserved {
        requested_on_hand: u64,
        reserved: u64,
    },
    #[error("on_hand would exceed {MAX_ON_HAND}: on_hand {on_hand} + quantity {quantity}")]
    OnHandOverflow { on_hand: u64, quantity: u64 },
    #[error("version {current}, the command expected {expected}")]
    WrongExpectedVersion {
        expected: StreamVersion,
        current: StreamVersion,
    },
    #[error("commits {requested}, but the reservation holds {reserved} of this item")]
    CommitExceedsReserved { requested: u64, reserved: u64 },
    #[error("the reservation holds nothing of this item")]
    NotInReservation,
    #[error("names the same item as line {first_line}: one change per item")]
    DuplicateItem { first_line: usize },
    /// The transfer holds nothing of this product.
    #[error("the transfer holds nothing of this product")]
    NotInTransfer,
    /// More is received than is still on its way.
    #[error("receives {requested}, but {in_transit} are in transit")]
    ReceiveExceedsInTransit { requested: u64, in_transit: u64 },
    /// A commit ships more units than the item has in good condition on hand (a count found
    /// fewer than reserved).
    #[error("ships {requested}, but only {on_hand} good units are on hand")]
    StockShort { requested: u64, on_hand: u64 },
    /// A removal or move takes more units of a state than the item has in it.
    #[error("takes {requested} {state} units, the item has {held}")]
    StateHoldsLess {
        state: StockState,
        requested: u64,
        held: u64,
    },
}

fn describe_violations(violations: &[LineViolation]) -> String {
    match violations {
        [only] if only.line == 0 => only.rule.to_string(),
        _ => violations
            .iter()
            .map(|v| format!("line {} ({}): {}", v.line, v.stream, v.rule))
            .collect::<Vec<_>>()
            .join("; "),
    }
}
