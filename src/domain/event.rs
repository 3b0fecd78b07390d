//! What happened to a stock item: the events (in the past tense, carrying everything the fold
//! needs), their kinds and alerts, and an event as the log records it.

use std::sync::Arc;

use super::ids::{
    Actor, CommandId, CustomerId, EventId, OrderId, ReservationId, StoreId, StreamKey, TransferId,
};
use super::values::{
    LogPosition, Quantity, Reason, StockLevel, StockState, StreamVersion, Timestamp,
};

/// The most alerts one command raises on one item: low, out of stock and short at once.
pub const MAX_ALERTS_PER_ITEM: usize = 3;

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

/// What happened to a stock item. Events are in the past tense and carry everything the fold
/// needs: applying them never consults a rule. They come in families, so that code that cares
/// about one family (the reservations, the transfers) handles the others in one arm each.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum StockEvent {
    Quantity(QuantityEvent),
    Reservation(ReservationEvent),
    Transfer(TransferEvent),
    /// The command before this event in the same append crossed one of the item's thresholds.
    /// Changes nothing.
    Alert(StockAlert),
}

/// Events that change an item's quantities or policy directly: receipts, corrections,
/// removals, moves between states, the policy, counts.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum QuantityEvent {
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
}

/// Events of one reservation on one item: each names the reservation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ReservationEvent {
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

/// Events of one transfer on one item (the source's or the destination's): each names the
/// transfer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TransferEvent {
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
    /// Arrived by a transfer: `quantity` moved from `incoming` to on-hand. `from_store`, the
    /// transfer's source (ids are unique per source store), is `None` in events written before
    /// it was recorded, when transfer ids were unique in the whole log.
    TransferReceived {
        transfer_id: TransferId,
        quantity: Quantity,
        from_store: Option<StoreId>,
    },
    /// Lost in transit: the transfer was closed with `quantity` still missing, which leaves
    /// `incoming`.
    TransferLost {
        transfer_id: TransferId,
        quantity: Quantity,
        from_store: Option<StoreId>,
    },
    /// The transfer was called back: `quantity` leaves the destination's `incoming`.
    TransferCancelled {
        transfer_id: TransferId,
        quantity: Quantity,
        reason: Reason,
        from_store: Option<StoreId>,
    },
    /// Back from a cancelled transfer: the source's on-hand grew by `quantity`.
    TransferReturned {
        transfer_id: TransferId,
        quantity: Quantity,
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
            StockEvent::Quantity(QuantityEvent::StockAdded { .. }) => EventKind::StockAdded,
            StockEvent::Quantity(QuantityEvent::StockAdjusted { .. }) => EventKind::StockAdjusted,
            StockEvent::Quantity(QuantityEvent::StockRemoved { .. }) => EventKind::StockRemoved,
            StockEvent::Reservation(ReservationEvent::StockReserved { .. }) => {
                EventKind::StockReserved
            }
            StockEvent::Reservation(ReservationEvent::ReservationCommitted { .. }) => {
                EventKind::ReservationCommitted
            }
            StockEvent::Reservation(ReservationEvent::ReservationReleased { .. }) => {
                EventKind::ReservationReleased
            }
            StockEvent::Reservation(ReservationEvent::ReservationExpired { .. }) => {
                EventKind::ReservationExpired
            }
            StockEvent::Reservation(ReservationEvent::ReservationExtended { .. }) => {
                EventKind::ReservationExtended
            }
            StockEvent::Quantity(QuantityEvent::StockMoved { .. }) => EventKind::StockMoved,
            StockEvent::Quantity(QuantityEvent::StockCounted { .. }) => EventKind::StockCounted,
            StockEvent::Transfer(TransferEvent::TransferShipped { .. }) => {
                EventKind::TransferShipped
            }
            StockEvent::Transfer(TransferEvent::TransferIncoming { .. }) => {
                EventKind::TransferIncoming
            }
            StockEvent::Transfer(TransferEvent::TransferReceived { .. }) => {
                EventKind::TransferReceived
            }
            StockEvent::Transfer(TransferEvent::TransferLost { .. }) => EventKind::TransferLost,
            StockEvent::Transfer(TransferEvent::TransferCancelled { .. }) => {
                EventKind::TransferCancelled
            }
            StockEvent::Transfer(TransferEvent::TransferReturned { .. }) => {
                EventKind::TransferReturned
            }
            StockEvent::Quantity(QuantityEvent::ItemPolicyChanged { .. }) => {
                EventKind::ItemPolicyChanged
            }
            StockEvent::Alert(alert) => match alert {
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
            StockEvent::Transfer(event) => Some(event.transfer_id()),
            StockEvent::Quantity(_) | StockEvent::Reservation(_) | StockEvent::Alert(_) => None,
        }
    }

    /// The reservation the event is about, if any.
    pub fn reservation_id(&self) -> Option<&ReservationId> {
        match self {
            StockEvent::Reservation(event) => Some(event.reservation_id()),
            StockEvent::Quantity(_) | StockEvent::Transfer(_) | StockEvent::Alert(_) => None,
        }
    }
}

impl ReservationEvent {
    /// The reservation the event is about.
    pub fn reservation_id(&self) -> &ReservationId {
        match self {
            ReservationEvent::StockReserved { reservation_id, .. }
            | ReservationEvent::ReservationCommitted { reservation_id, .. }
            | ReservationEvent::ReservationReleased { reservation_id, .. }
            | ReservationEvent::ReservationExpired { reservation_id, .. }
            | ReservationEvent::ReservationExtended { reservation_id, .. } => reservation_id,
        }
    }
}

impl TransferEvent {
    /// The transfer the event is about.
    pub fn transfer_id(&self) -> &TransferId {
        match self {
            TransferEvent::TransferShipped { transfer_id, .. }
            | TransferEvent::TransferIncoming { transfer_id, .. }
            | TransferEvent::TransferReceived { transfer_id, .. }
            | TransferEvent::TransferLost { transfer_id, .. }
            | TransferEvent::TransferCancelled { transfer_id, .. }
            | TransferEvent::TransferReturned { transfer_id, .. } => transfer_id,
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
