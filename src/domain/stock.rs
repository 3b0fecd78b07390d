//! One stock item (a product in a store): its state, the commands and events that concern it,
//! and the fold from events to state.

use std::collections::HashMap;
use std::sync::Arc;

use crate::dense_map::FastHash;

use super::ids::{
    Actor, CommandId, CustomerId, EventId, OrderId, ProductId, ReservationId, StoreId, StreamKey,
    TransferId,
};
use super::inventory::ReservationStatus;
use super::transfer::TransferStatus;
use super::values::{
    LogPosition, MAX_ON_HAND, Quantity, Reason, StockLevel, StockParts, StockState, StreamVersion,
    TimeToLive, Timestamp,
};

/// The most lines of one multi-line command (a cart's reservation lines, a delivery's stock
/// changes, a partial commit's lines).
pub const MAX_COMMAND_LINES: usize = 1_000;

/// The most alerts one command raises on one item: low, out of stock and short at once.
pub const MAX_ALERTS_PER_ITEM: usize = 3;

/// The most events of one command: an event per line and its item's alerts.
pub const MAX_COMMAND_EVENTS: usize = MAX_COMMAND_LINES * (1 + MAX_ALERTS_PER_ITEM);

/// What a client asks the inventory to do. Commands are in the imperative. An accepted command
/// becomes one event per stock item it touches; a multi-line command is accepted or refused
/// whole.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    AddStock {
        stream: StreamKey,
        quantity: Quantity,
        reason: Reason,
    },
    AdjustStock {
        stream: StreamKey,
        on_hand: u64,
        reason: Reason,
    },
    /// Shrinkage, theft, a write-off: on-hand shrinks by units of state `from`, never below
    /// what is reserved.
    RemoveStock {
        stream: StreamKey,
        quantity: Quantity,
        from: StockState,
        reason: Reason,
    },
    /// Units change state on the shelf: found damaged, sent to or released from inspection.
    MoveStock {
        stream: StreamKey,
        quantity: Quantity,
        states: StateMove,
        reason: Reason,
    },
    /// The item's safety stock and low-stock threshold; `None` keeps what it has.
    SetItemPolicy {
        stream: StreamKey,
        safety_stock: Option<u64>,
        low_stock_threshold: Option<u64>,
    },
    /// A delivery note, a recount, a write-off list: every change or none. One change per item.
    ApplyStockChanges {
        changes: Vec<StockChangeLine>,
        reason: Reason,
    },
    /// Sets the lines aside for a customer under one reservation id, all or nothing. Lines
    /// naming the same item are summed.
    ReserveStock {
        reservation_id: ReservationId,
        lines: Vec<ReservationLine>,
        customer_id: CustomerId,
        ttl: TimeToLive,
    },
    /// The reserved goods leave the stores. `lines: None` commits every line whole; otherwise
    /// `lines` says what ships of each item (summed per item, at most what it reserved), and
    /// the rest of the reservation, items not named included, is released by the same command.
    CommitReservation {
        reservation_id: ReservationId,
        order_id: OrderId,
        lines: Option<Vec<CommitLine>>,
    },
    ReleaseReservation {
        reservation_id: ReservationId,
        reason: Reason,
    },
    /// A new expiry, `ttl` from now, for every line of an active reservation.
    ExtendReservation {
        reservation_id: ReservationId,
        ttl: TimeToLive,
    },
    /// Sent by the server itself when a reservation's time is up.
    ExpireReservation { reservation_id: ReservationId },
    /// Goods leave `from_store` for `to_store`: each line's quantity leaves the source's
    /// on-hand (its unreserved good units) and joins the destination's `incoming`. All or
    /// nothing.
    ShipTransfer {
        transfer_id: TransferId,
        from_store: StoreId,
        to_store: StoreId,
        lines: Vec<TransferLine>,
        reason: Reason,
    },
    /// What of a transfer arrived: each line moves from the destination's `incoming` to its
    /// on-hand. `close` (or everything arrived) closes the transfer, and what is still
    /// missing is recorded as lost in transit.
    ReceiveTransfer {
        transfer_id: TransferId,
        lines: Vec<TransferLine>,
        close: bool,
    },
    /// Before anything arrived: the goods go back to the source's on-hand.
    CancelTransfer {
        transfer_id: TransferId,
        reason: Reason,
    },
    /// A physical count: what was on the shelf of each item at `counted_at` (`None`: now).
    /// Never refused because of reservations: it is the physical truth.
    RecordCount {
        lines: Vec<CountLine>,
        counted_at: Option<Timestamp>,
        reason: Reason,
    },
}

/// One product of a transfer and its units.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TransferLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// One line of [`Command::RecordCount`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CountLine {
    pub stream: StreamKey,
    pub counted: u64,
    /// The item's on-hand at the count's `counted_at`, as the log says (the stock after its
    /// last event at or before then; 0 before its first); `None` for a count of now, whose
    /// reference is the item's on-hand when the command is decided. Sales and receipts
    /// recorded after `counted_at` still happened: the new on-hand is
    /// `counted + (on-hand now − on_hand_at_count)`.
    pub on_hand_at_count: Option<u64>,
}

/// One change of [`Command::ApplyStockChanges`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StockChangeLine {
    pub stream: StreamKey,
    pub change: StockChangeKind,
    /// Refuse the command unless this item is at this version.
    pub expected_version: Option<StreamVersion>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StockChangeKind {
    Add(Quantity),
    Remove(Quantity, StockState),
    SetOnHand(u64),
}

/// Where a move takes units from and where it puts them: two different states.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct StateMove {
    from: StockState,
    to: StockState,
}

/// A move from a state to itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("from and to are both {0}: a move needs two different states")]
pub struct SameState(pub StockState);

impl StateMove {
    pub fn new(from: StockState, to: StockState) -> Result<StateMove, SameState> {
        if from == to {
            return Err(SameState(from));
        }
        Ok(StateMove { from, to })
    }

    pub fn from(self) -> StockState {
        self.from
    }

    pub fn to(self) -> StockState {
        self.to
    }
}

/// A threshold an item's stock crossed, raised as an event by the command that crossed it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum StockAlert {
    /// Available fell to or below the low-stock threshold, from above it (or the threshold
    /// rose to or above available).
    StockLow,
    /// Available fell to 0.
    OutOfStock,
    /// Available rose above 0, on an item that had stock events before.
    BackInStock,
    /// On-hand fell below what is reserved, damaged or in quality control (a count found less).
    StockShort,
}

impl StockAlert {
    /// The alerts of one item whose stock went from `before` to `after` in one command, in
    /// this order: short, low, out of stock, back in stock. `had_events`: whether the item had
    /// any event before the command (its first stock is not "back" in stock).
    /// At most [`MAX_ALERTS_PER_ITEM`]: out of stock and back in stock exclude each other.
    pub fn crossed(
        before: StockLevel,
        after: StockLevel,
        had_events: bool,
    ) -> impl Iterator<Item = StockAlert> {
        [
            (before.shortfall() == 0 && after.shortfall() > 0).then_some(StockAlert::StockShort),
            (!before.is_low() && after.is_low()).then_some(StockAlert::StockLow),
            (before.available() > 0 && after.available() == 0).then_some(StockAlert::OutOfStock),
            (had_events && before.available() == 0 && after.available() > 0)
                .then_some(StockAlert::BackInStock),
        ]
        .into_iter()
        .flatten()
    }
}

/// One line of a reservation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReservationLine {
    pub stream: StreamKey,
    pub quantity: Quantity,
    /// Refuse the command unless this item is at this version.
    pub expected_version: Option<StreamVersion>,
}

/// What ships of one item of a reservation; 0 ships none of it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CommitLine {
    pub stream: StreamKey,
    pub quantity: u64,
}

/// What happened to a stock item. Events are in the past tense and carry everything the fold
/// needs: applying them never consults a rule.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum StockEvent {
    StockAdded {
        quantity: Quantity,
        reason: Reason,
    },
    StockAdjusted {
        previous_on_hand: u64,
        on_hand: u64,
        reason: Reason,
    },
    /// On-hand shrank by `quantity` units of state `from` (never below what was reserved).
    StockRemoved {
        quantity: Quantity,
        from: StockState,
        reason: Reason,
    },
    /// `quantity` units went from one state to another; on-hand is unchanged.
    StockMoved {
        quantity: Quantity,
        from: StockState,
        to: StockState,
        reason: Reason,
    },
    /// The item's policy is now this.
    ItemPolicyChanged {
        safety_stock: u64,
        low_stock_threshold: u64,
    },
    /// The command before this event in the same append crossed one of the item's thresholds.
    /// Changes nothing.
    StockAlertRaised {
        alert: StockAlert,
    },
    /// Shipped by a transfer: on-hand (the source's) shrank by `quantity`.
    TransferShipped {
        transfer_id: TransferId,
        to_store: StoreId,
        quantity: Quantity,
        reason: Reason,
    },
    /// On its way by a transfer: `incoming` (the destination's) grew by `quantity`.
    TransferIncoming {
        transfer_id: TransferId,
        from_store: StoreId,
        quantity: Quantity,
    },
    /// Arrived by a transfer: `quantity` moved from `incoming` to on-hand.
    TransferReceived {
        transfer_id: TransferId,
        quantity: Quantity,
    },
    /// Lost in transit: the transfer was closed with `quantity` still missing, which leaves
    /// `incoming`.
    TransferLost {
        transfer_id: TransferId,
        quantity: Quantity,
    },
    /// The transfer was called back: `quantity` leaves the destination's `incoming`.
    TransferCancelled {
        transfer_id: TransferId,
        quantity: Quantity,
        reason: Reason,
    },
    /// Back from a cancelled transfer: the source's on-hand grew by `quantity`.
    TransferReturned {
        transfer_id: TransferId,
        quantity: Quantity,
    },
    /// A physical count found `counted` units at `counted_at`, when the log said
    /// `on_hand_at_count`; on-hand went from `previous_on_hand` to `on_hand`, which keeps what
    /// was recorded after `counted_at`. May leave on-hand below what is reserved (a shortfall).
    /// When it found fewer units than were recorded damaged or in inspection, those states
    /// lose the units not found (`damaged_not_found`, `quality_control_not_found`).
    StockCounted {
        counted: u64,
        counted_at: Timestamp,
        on_hand_at_count: u64,
        previous_on_hand: u64,
        on_hand: u64,
        damaged_not_found: u64,
        quality_control_not_found: u64,
        reason: Reason,
    },
    StockReserved {
        reservation_id: ReservationId,
        quantity: Quantity,
        customer_id: CustomerId,
        expires_at: Timestamp,
    },
    /// `quantity` of the item's reservation left the store (0 when none of it shipped) and
    /// `released_quantity`, the rest of what it reserved, became available again.
    ReservationCommitted {
        reservation_id: ReservationId,
        quantity: u64,
        order_id: OrderId,
        released_quantity: u64,
    },
    ReservationReleased {
        reservation_id: ReservationId,
        quantity: Quantity,
        reason: Reason,
    },
    ReservationExpired {
        reservation_id: ReservationId,
        quantity: Quantity,
    },
    /// The item's reservation now holds until `expires_at`.
    ReservationExtended {
        reservation_id: ReservationId,
        expires_at: Timestamp,
    },
}

/// The kind of an event, without its data: what subscribers filter on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EventKind {
    StockAdded,
    StockAdjusted,
    StockReserved,
    ReservationCommitted,
    ReservationReleased,
    ReservationExpired,
    StockRemoved,
    ReservationExtended,
    StockMoved,
    ItemPolicyChanged,
    StockLow,
    OutOfStock,
    BackInStock,
    StockShort,
    StockCounted,
    TransferShipped,
    TransferIncoming,
    TransferReceived,
    TransferLost,
    TransferCancelled,
    TransferReturned,
}

impl EventKind {
    /// Every kind, in the order of the proto's `EventType`.
    pub const ALL: [EventKind; 21] = [
        EventKind::StockAdded,
        EventKind::StockAdjusted,
        EventKind::StockReserved,
        EventKind::ReservationCommitted,
        EventKind::ReservationReleased,
        EventKind::ReservationExpired,
        EventKind::StockRemoved,
        EventKind::ReservationExtended,
        EventKind::StockMoved,
        EventKind::ItemPolicyChanged,
        EventKind::StockLow,
        EventKind::OutOfStock,
        EventKind::BackInStock,
        EventKind::StockShort,
        EventKind::StockCounted,
        EventKind::TransferShipped,
        EventKind::TransferIncoming,
        EventKind::TransferReceived,
        EventKind::TransferLost,
        EventKind::TransferCancelled,
        EventKind::TransferReturned,
    ];

    /// The kind's public name, as the proto's `EventType` spells it (`STOCK_LOW`): what
    /// configuration files filter on and NATS subjects end with.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::StockAdded => "STOCK_ADDED",
            EventKind::StockAdjusted => "STOCK_ADJUSTED",
            EventKind::StockReserved => "STOCK_RESERVED",
            EventKind::ReservationCommitted => "RESERVATION_COMMITTED",
            EventKind::ReservationReleased => "RESERVATION_RELEASED",
            EventKind::ReservationExpired => "RESERVATION_EXPIRED",
            EventKind::StockRemoved => "STOCK_REMOVED",
            EventKind::ReservationExtended => "RESERVATION_EXTENDED",
            EventKind::StockMoved => "STOCK_MOVED",
            EventKind::ItemPolicyChanged => "ITEM_POLICY_CHANGED",
            EventKind::StockLow => "STOCK_LOW",
            EventKind::OutOfStock => "OUT_OF_STOCK",
            EventKind::BackInStock => "BACK_IN_STOCK",
            EventKind::StockShort => "STOCK_SHORT",
            EventKind::StockCounted => "STOCK_COUNTED",
            EventKind::TransferShipped => "TRANSFER_SHIPPED",
            EventKind::TransferIncoming => "TRANSFER_INCOMING",
            EventKind::TransferReceived => "TRANSFER_RECEIVED",
            EventKind::TransferLost => "TRANSFER_LOST",
            EventKind::TransferCancelled => "TRANSFER_CANCELLED",
            EventKind::TransferReturned => "TRANSFER_RETURNED",
        }
    }

    /// The kind named `name` (see [`EventKind::name`]).
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether events of this kind are alerts.
    pub fn is_alert(self) -> bool {
        matches!(
            self,
            EventKind::StockLow
                | EventKind::OutOfStock
                | EventKind::BackInStock
                | EventKind::StockShort
        )
    }
}

impl StockEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            StockEvent::StockAdded { .. } => EventKind::StockAdded,
            StockEvent::StockAdjusted { .. } => EventKind::StockAdjusted,
            StockEvent::StockRemoved { .. } => EventKind::StockRemoved,
            StockEvent::StockReserved { .. } => EventKind::StockReserved,
            StockEvent::ReservationCommitted { .. } => EventKind::ReservationCommitted,
            StockEvent::ReservationReleased { .. } => EventKind::ReservationReleased,
            StockEvent::ReservationExpired { .. } => EventKind::ReservationExpired,
            StockEvent::ReservationExtended { .. } => EventKind::ReservationExtended,
            StockEvent::StockMoved { .. } => EventKind::StockMoved,
            StockEvent::StockCounted { .. } => EventKind::StockCounted,
            StockEvent::TransferShipped { .. } => EventKind::TransferShipped,
            StockEvent::TransferIncoming { .. } => EventKind::TransferIncoming,
            StockEvent::TransferReceived { .. } => EventKind::TransferReceived,
            StockEvent::TransferLost { .. } => EventKind::TransferLost,
            StockEvent::TransferCancelled { .. } => EventKind::TransferCancelled,
            StockEvent::TransferReturned { .. } => EventKind::TransferReturned,
            StockEvent::ItemPolicyChanged { .. } => EventKind::ItemPolicyChanged,
            StockEvent::StockAlertRaised { alert } => match alert {
                StockAlert::StockLow => EventKind::StockLow,
                StockAlert::OutOfStock => EventKind::OutOfStock,
                StockAlert::BackInStock => EventKind::BackInStock,
                StockAlert::StockShort => EventKind::StockShort,
            },
        }
    }

    /// The transfer the event is about, if any.
    pub fn transfer_id(&self) -> Option<&TransferId> {
        match self {
            StockEvent::TransferShipped { transfer_id, .. }
            | StockEvent::TransferIncoming { transfer_id, .. }
            | StockEvent::TransferReceived { transfer_id, .. }
            | StockEvent::TransferLost { transfer_id, .. }
            | StockEvent::TransferCancelled { transfer_id, .. }
            | StockEvent::TransferReturned { transfer_id, .. } => Some(transfer_id),
            _ => None,
        }
    }

    /// The reservation the event is about, if any.
    pub fn reservation_id(&self) -> Option<&ReservationId> {
        match self {
            StockEvent::StockAdded { .. }
            | StockEvent::StockAdjusted { .. }
            | StockEvent::StockRemoved { .. }
            | StockEvent::StockMoved { .. }
            | StockEvent::ItemPolicyChanged { .. }
            | StockEvent::StockAlertRaised { .. }
            | StockEvent::StockCounted { .. }
            | StockEvent::TransferShipped { .. }
            | StockEvent::TransferIncoming { .. }
            | StockEvent::TransferReceived { .. }
            | StockEvent::TransferLost { .. }
            | StockEvent::TransferCancelled { .. }
            | StockEvent::TransferReturned { .. } => None,
            StockEvent::StockReserved { reservation_id, .. }
            | StockEvent::ReservationCommitted { reservation_id, .. }
            | StockEvent::ReservationReleased { reservation_id, .. }
            | StockEvent::ReservationExpired { reservation_id, .. }
            | StockEvent::ReservationExtended { reservation_id, .. } => Some(reservation_id),
        }
    }
}

/// An event as the log holds it: the event with its place in the log and its context.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecordedEvent {
    pub position: LogPosition,
    pub event_id: EventId,
    pub stream: StreamKey,
    pub version: StreamVersion,
    pub occurred_at: Timestamp,
    /// The stock item right after the event.
    pub stock_after: StockLevel,
    /// The idempotency key of the command that caused the event, if it had one.
    pub command_id: Option<CommandId>,
    /// A hash of that command's request (0 when there is no command id).
    pub command_fingerprint: u64,
    /// The W3C `traceparent` of the command that caused the event, when traces are exported:
    /// opaque here, carried so that whoever applies the event continues the caller's trace.
    pub trace_parent: Option<Arc<str>>,
    /// This event's index among the events of the command that caused it (0-based), and how
    /// many events that command appended, at contiguous positions. A subscriber has the whole
    /// command once it has the event with `command_event_index + 1 == command_event_count`.
    /// Events written before multi-line commands existed are each a command of one event.
    pub command_event_index: u32,
    pub command_event_count: u32,
    /// Who caused the event; `None` for events written before actors were recorded.
    pub actor: Option<Actor>,
    pub event: StockEvent,
}

/// How an event fails to continue the fold it is applied to.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum FoldMismatch {
    #[error("position {got} where {expected} was expected")]
    Position {
        expected: LogPosition,
        got: LogPosition,
    },
    #[error("version {got} where {expected} was expected")]
    Version {
        expected: StreamVersion,
        got: StreamVersion,
    },
    #[error("recorded stock {recorded:?} but the events fold into {folded:?}")]
    Stock {
        recorded: StockLevel,
        folded: StockLevel,
    },
    /// An event other than a physical count left the item with a larger shortfall: only a
    /// count may find fewer units than are reserved, damaged or in quality control.
    #[error("the shortfall went from {before} to {after}, and the event is not a count")]
    Shortfall { before: u64, after: u64 },
    /// The event is not where its command needs it: a command's events are contiguous, from
    /// index 0 to its count − 1, and a new command starts only after the last one ended.
    #[error(
        "event {got_index} of a command of {got_count} where event {expected_index} of its command was expected"
    )]
    CommandEvents {
        expected_index: u32,
        got_index: u32,
        got_count: u32,
    },
}

impl RecordedEvent {
    /// Whether this is the last event of its command: a reader that stops here has every
    /// command it read whole.
    pub fn ends_command(&self) -> bool {
        self.command_event_index.saturating_add(1) >= self.command_event_count
    }

    /// The one check of every fold of the log (the command side, the read model, `verify`):
    /// the event's position follows `head`, its version follows its stream's `version`, and
    /// the stock it records is what `evolve` (the fold applying it) computes. `evolve` runs
    /// only when position and version follow.
    pub fn apply_checked(
        &self,
        head: LogPosition,
        version: StreamVersion,
        evolve: impl FnOnce() -> StockLevel,
    ) -> Result<(), FoldMismatch> {
        if self.position != head.next() {
            return Err(FoldMismatch::Position {
                expected: head.next(),
                got: self.position,
            });
        }
        if self.version != version.next() {
            return Err(FoldMismatch::Version {
                expected: version.next(),
                got: self.version,
            });
        }
        let folded = evolve();
        if folded != self.stock_after {
            return Err(FoldMismatch::Stock {
                recorded: self.stock_after,
                folded,
            });
        }
        Ok(())
    }
}

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
    #[error("transfer {transfer_id} not found")]
    TransferNotFound { transfer_id: TransferId },
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

/// A reservation that still holds stock.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ActiveReservation {
    pub quantity: Quantity,
    pub customer_id: CustomerId,
    pub expires_at: Timestamp,
}

/// The state of one stock item: a fold of its stream's events.
///
/// Every item is held twice in memory (command side and read model), and most have only
/// on-hand and reserved units: the other parts of its level are boxed, and only held by an
/// item that has any.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct StockItem {
    on_hand: u64,
    reserved: u64,
    version: StreamVersion,
    reservations: Reservations,
    more: Option<Box<MoreStock>>,
}

/// The parts of an item's level besides on-hand and reserved, at least one of them not 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct MoreStock {
    damaged: u64,
    quality_control: u64,
    safety_stock: u64,
    incoming: u64,
    low_stock_threshold: u64,
}

/// How many active reservations an item keeps in a vector before it moves them to a hash map.
pub const SMALL_RESERVATIONS_MAX: usize = 32;

/// The active reservations of one item. Most items hold none or a few, and every item is held
/// in memory twice (command side and read model), so they are kept in a boxed slice searched
/// linearly: 16 bytes and no allocation while empty, one exact-size allocation otherwise. An item
/// that holds more than [`SMALL_RESERVATIONS_MAX`] (a hot item) moves them to a hash map, so a
/// lookup never scans more than that many entries; it moves back below half of that.
#[derive(Clone, Debug)]
pub enum Reservations {
    Small(Box<[(ReservationId, ActiveReservation)]>),
    Large(Box<HashMap<ReservationId, ActiveReservation, FastHash>>),
}

impl Default for Reservations {
    fn default() -> Reservations {
        Reservations::Small(Box::default())
    }
}

const _: () = assert!(std::mem::size_of::<Reservations>() == 16);
const _: () = assert!(std::mem::size_of::<StockItem>() == 48);

/// Equal when they hold the same reservations, in whatever order or form.
impl PartialEq for Reservations {
    fn eq(&self, other: &Reservations) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(id, reservation)| other.get(id) == Some(reservation))
    }
}

impl Eq for Reservations {}

impl Reservations {
    pub fn len(&self) -> usize {
        match self {
            Reservations::Small(entries) => entries.len(),
            Reservations::Large(entries) => entries.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, reservation_id: &ReservationId) -> Option<&ActiveReservation> {
        match self {
            Reservations::Small(entries) => entries
                .iter()
                .find(|(id, _)| id == reservation_id)
                .map(|(_, reservation)| reservation),
            Reservations::Large(entries) => entries.get(reservation_id),
        }
    }

    pub fn get_mut(&mut self, reservation_id: &ReservationId) -> Option<&mut ActiveReservation> {
        match self {
            Reservations::Small(entries) => entries
                .iter_mut()
                .find(|(id, _)| id == reservation_id)
                .map(|(_, reservation)| reservation),
            Reservations::Large(entries) => entries.get_mut(reservation_id),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ReservationId, &ActiveReservation)> {
        let (small, large) = match self {
            Reservations::Small(entries) => (Some(entries.iter()), None),
            Reservations::Large(entries) => (None, Some(entries.iter())),
        };
        let small = small
            .into_iter()
            .flatten()
            .map(|(id, reservation)| (id, reservation));
        small.chain(large.into_iter().flatten())
    }

    /// Adds or replaces a reservation.
    pub fn insert(&mut self, reservation_id: ReservationId, reservation: ActiveReservation) {
        match self {
            Reservations::Small(entries) => {
                if let Some(entry) = entries.iter_mut().find(|(id, _)| *id == reservation_id) {
                    entry.1 = reservation;
                    return;
                }
                let mut small = std::mem::take(entries).into_vec();
                if small.len() == SMALL_RESERVATIONS_MAX {
                    let mut map: HashMap<_, _, _> = small.into_iter().collect();
                    map.insert(reservation_id, reservation);
                    *self = Reservations::Large(Box::new(map));
                    return;
                }
                // Exactly one more: the slice is reallocated on every change while small.
                small.reserve_exact(1);
                small.push((reservation_id, reservation));
                *entries = small.into_boxed_slice();
            }
            Reservations::Large(entries) => {
                entries.insert(reservation_id, reservation);
            }
        }
    }

    pub fn remove(&mut self, reservation_id: &ReservationId) -> Option<ActiveReservation> {
        match self {
            Reservations::Small(entries) => {
                let at = entries.iter().position(|(id, _)| id == reservation_id)?;
                let mut small = std::mem::take(entries).into_vec();
                let (_, reservation) = small.swap_remove(at);
                // Shrinks to the exact size; an item with no active reservation holds no
                // allocation.
                *entries = small.into_boxed_slice();
                Some(reservation)
            }
            Reservations::Large(entries) => {
                let reservation = entries.remove(reservation_id)?;
                if entries.len() < SMALL_RESERVATIONS_MAX / 2 {
                    let small: Box<[_]> = entries.drain().collect();
                    *self = Reservations::Small(small);
                }
                Some(reservation)
            }
        }
    }
}

impl StockItem {
    pub fn level(&self) -> StockLevel {
        let more = self.more.as_deref().copied().unwrap_or(MoreStock {
            damaged: 0,
            quality_control: 0,
            safety_stock: 0,
            incoming: 0,
            low_stock_threshold: 0,
        });
        StockLevel::from_parts(StockParts {
            on_hand: self.on_hand,
            reserved: self.reserved,
            damaged: more.damaged,
            quality_control: more.quality_control,
            safety_stock: more.safety_stock,
            incoming: more.incoming,
            low_stock_threshold: more.low_stock_threshold,
        })
        .expect("an item's parts are each at most MAX_ON_HAND")
    }

    fn set_level(&mut self, level: StockLevel) {
        let parts = level.parts();
        self.on_hand = parts.on_hand;
        self.reserved = parts.reserved;
        let more = MoreStock {
            damaged: parts.damaged,
            quality_control: parts.quality_control,
            safety_stock: parts.safety_stock,
            incoming: parts.incoming,
            low_stock_threshold: parts.low_stock_threshold,
        };
        let none = more.damaged == 0
            && more.quality_control == 0
            && more.safety_stock == 0
            && more.incoming == 0
            && more.low_stock_threshold == 0;
        match (&mut self.more, none) {
            (_, true) => self.more = None,
            (Some(boxed), false) => **boxed = more,
            (None, false) => self.more = Some(Box::new(more)),
        }
    }

    pub fn version(&self) -> StreamVersion {
        self.version
    }

    pub fn reservation(&self, reservation_id: &ReservationId) -> Option<&ActiveReservation> {
        self.reservations.get(reservation_id)
    }

    pub fn reservations(&self) -> impl Iterator<Item = (&ReservationId, &ActiveReservation)> {
        self.reservations.iter()
    }

    /// Applies one event. It holds no rule and cannot fail: events are facts. Quantities
    /// saturate instead of wrapping, so even a log written by a faulty version folds into a
    /// state whose `level` a caller can compare with the event's recorded `stock_after`.
    pub fn evolve(&mut self, event: &StockEvent) {
        match event {
            StockEvent::StockReserved {
                reservation_id,
                quantity,
                customer_id,
                expires_at,
            } => {
                self.reservations.insert(
                    reservation_id.clone(),
                    ActiveReservation {
                        quantity: *quantity,
                        customer_id: customer_id.clone(),
                        expires_at: *expires_at,
                    },
                );
            }
            StockEvent::ReservationCommitted { reservation_id, .. }
            | StockEvent::ReservationReleased { reservation_id, .. }
            | StockEvent::ReservationExpired { reservation_id, .. } => {
                self.reservations.remove(reservation_id);
            }
            StockEvent::ReservationExtended {
                reservation_id,
                expires_at,
            } => {
                if let Some(reservation) = self.reservations.get_mut(reservation_id) {
                    reservation.expires_at = *expires_at;
                }
            }
            StockEvent::StockAdded { .. }
            | StockEvent::StockAdjusted { .. }
            | StockEvent::StockRemoved { .. }
            | StockEvent::StockMoved { .. }
            | StockEvent::ItemPolicyChanged { .. }
            | StockEvent::StockAlertRaised { .. }
            | StockEvent::StockCounted { .. }
            | StockEvent::TransferShipped { .. }
            | StockEvent::TransferIncoming { .. }
            | StockEvent::TransferReceived { .. }
            | StockEvent::TransferLost { .. }
            | StockEvent::TransferCancelled { .. }
            | StockEvent::TransferReturned { .. } => {}
        }
        self.set_level(level_after(self.level(), event));
        self.version = self.version.next();
    }
}

/// The level of an item after `event`: the part of the fold that concerns quantities, so a
/// rule can see what an event would leave without applying it.
pub fn level_after(level: StockLevel, event: &StockEvent) -> StockLevel {
    fn take(parts: &mut StockParts, state: StockState, quantity: u64) {
        match state {
            StockState::Available => {}
            StockState::Damaged => parts.damaged = parts.damaged.saturating_sub(quantity),
            StockState::QualityControl => {
                parts.quality_control = parts.quality_control.saturating_sub(quantity)
            }
        }
    }
    fn put(parts: &mut StockParts, state: StockState, quantity: u64) {
        match state {
            StockState::Available => {}
            StockState::Damaged => parts.damaged = parts.damaged.saturating_add(quantity),
            StockState::QualityControl => {
                parts.quality_control = parts.quality_control.saturating_add(quantity)
            }
        }
    }
    level.changed(|parts| match event {
        StockEvent::StockAdded { quantity, .. } => {
            parts.on_hand = parts.on_hand.saturating_add(quantity.get())
        }
        StockEvent::StockAdjusted { on_hand, .. } => parts.on_hand = *on_hand,
        StockEvent::StockCounted {
            on_hand,
            damaged_not_found,
            quality_control_not_found,
            ..
        } => {
            parts.on_hand = *on_hand;
            parts.damaged = parts.damaged.saturating_sub(*damaged_not_found);
            parts.quality_control = parts
                .quality_control
                .saturating_sub(*quality_control_not_found);
        }
        StockEvent::StockRemoved { quantity, from, .. } => {
            parts.on_hand = parts.on_hand.saturating_sub(quantity.get());
            take(parts, *from, quantity.get());
        }
        StockEvent::StockMoved {
            quantity, from, to, ..
        } => {
            take(parts, *from, quantity.get());
            put(parts, *to, quantity.get());
        }
        StockEvent::ItemPolicyChanged {
            safety_stock,
            low_stock_threshold,
        } => {
            parts.safety_stock = *safety_stock;
            parts.low_stock_threshold = *low_stock_threshold;
        }
        StockEvent::StockReserved { quantity, .. } => {
            parts.reserved = parts.reserved.saturating_add(quantity.get())
        }
        StockEvent::ReservationCommitted {
            quantity,
            released_quantity,
            ..
        } => {
            parts.on_hand = parts.on_hand.saturating_sub(*quantity);
            parts.reserved = parts
                .reserved
                .saturating_sub(*quantity)
                .saturating_sub(*released_quantity);
        }
        StockEvent::ReservationReleased { quantity, .. }
        | StockEvent::ReservationExpired { quantity, .. } => {
            parts.reserved = parts.reserved.saturating_sub(quantity.get())
        }
        StockEvent::TransferShipped { quantity, .. } => {
            parts.on_hand = parts.on_hand.saturating_sub(quantity.get())
        }
        StockEvent::TransferReturned { quantity, .. } => {
            parts.on_hand = parts.on_hand.saturating_add(quantity.get())
        }
        StockEvent::TransferIncoming { quantity, .. } => {
            parts.incoming = parts.incoming.saturating_add(quantity.get())
        }
        StockEvent::TransferReceived { quantity, .. } => {
            parts.incoming = parts.incoming.saturating_sub(quantity.get());
            parts.on_hand = parts.on_hand.saturating_add(quantity.get());
        }
        StockEvent::TransferLost { quantity, .. }
        | StockEvent::TransferCancelled { quantity, .. } => {
            parts.incoming = parts.incoming.saturating_sub(quantity.get())
        }
        StockEvent::ReservationExtended { .. } | StockEvent::StockAlertRaised { .. } => {}
    })
}
