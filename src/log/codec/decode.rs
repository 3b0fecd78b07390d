//! Stored message → domain event, checking every field the domain relies on. The wire's
//! `InventoryEvent.kind` is one flat `oneof`: [`stored_event`] is its one exhaustive table, a
//! line per kind naming its family; each family's fields are read in its own module below, as
//! the encoder writes them (`encode_quantity_event`, …).

use super::{EventDecodeError, count_variance, pb, stock_state_from_pb, stored_level};
use crate::domain::{
    Actor, CommandId, CustomerId, EventId, LogPosition, OrderId, ProductId, Quantity,
    QuantityEvent, Reason, RecordedEvent, ReservationEvent, ReservationId, StockAlert, StockEvent,
    StockState, StoreId, StreamKey, StreamVersion, Timestamp, TransferEvent, TransferId,
};

pub(super) fn invalid(field: &'static str, problem: impl ToString) -> EventDecodeError {
    EventDecodeError::InvalidField {
        field,
        problem: problem.to_string(),
    }
}

fn stored_quantity(field: &'static str, value: i64) -> Result<Quantity, EventDecodeError> {
    Quantity::from_signed(value).map_err(|error| invalid(field, error))
}

pub(super) fn stored_count(field: &'static str, value: i64) -> Result<u64, EventDecodeError> {
    u64::try_from(value).map_err(|_| invalid(field, format!("negative: {value}")))
}

fn stored_timestamp(
    field: &'static str,
    value: Option<&prost_types::Timestamp>,
) -> Result<Timestamp, EventDecodeError> {
    value
        .and_then(super::timestamp_from_pb)
        .ok_or_else(|| invalid(field, "missing or out of range"))
}

/// A transfer's source store on a destination's event: empty in events written before it was
/// recorded.
fn stored_source(field: &'static str, value: &str) -> Result<Option<StoreId>, EventDecodeError> {
    if value.is_empty() {
        return Ok(None);
    }
    StoreId::parse(value)
        .map(Some)
        .map_err(|error| invalid(field, error))
}

fn stored_transfer_id(field: &'static str, value: &str) -> Result<TransferId, EventDecodeError> {
    TransferId::parse(value).map_err(|error| invalid(field, error))
}

fn stored_reservation_id(
    field: &'static str,
    value: &str,
) -> Result<ReservationId, EventDecodeError> {
    ReservationId::parse(value).map_err(|error| invalid(field, error))
}

fn stored_reason(field: &'static str, value: &str) -> Result<Reason, EventDecodeError> {
    Reason::parse(value).map_err(|error| invalid(field, error))
}

pub fn event_from_pb(message: pb::InventoryEvent) -> Result<RecordedEvent, EventDecodeError> {
    event_from_pb_with(&message, |_, _| None, None)
}

/// The event and its envelope. `known_stream` may return the stream key of ids already seen;
/// `known_actor` is the event's actor when the caller has it already (`Some(None)`: none
/// recorded).
pub(super) fn event_from_pb_with(
    message: &pb::InventoryEvent,
    known_stream: impl FnOnce(&str, &str) -> Option<StreamKey>,
    known_actor: Option<Option<Actor>>,
) -> Result<RecordedEvent, EventDecodeError> {
    let event = stored_event(
        message
            .kind
            .as_ref()
            .ok_or_else(|| invalid("kind", "missing"))?,
    )?;
    let stock = message
        .stock
        .as_ref()
        .ok_or_else(|| invalid("stock", "missing"))?;
    let stock_after = stored_level(stock)?;
    let event_id = uuid::Uuid::parse_str(&message.event_id)
        .map_err(|error| invalid("event_id", error))?
        .as_u128();
    let command_id = if message.command_id.is_empty() {
        None
    } else {
        Some(CommandId::parse(&message.command_id).map_err(|error| invalid("command_id", error))?)
    };
    if message.position == 0 {
        return Err(invalid("position", "must be at least 1"));
    }
    if message.version == 0 {
        return Err(invalid("version", "must be at least 1"));
    }
    // Written before multi-line commands: a command of one event.
    let command_event_count = message.command_event_count.max(1);
    if message.command_event_index >= command_event_count {
        return Err(invalid(
            "command_event_index",
            format!(
                "{} is not below command_event_count {command_event_count}",
                message.command_event_index
            ),
        ));
    }
    Ok(RecordedEvent {
        position: LogPosition(message.position),
        event_id: EventId(event_id),
        stream: match known_stream(&message.product_id, &message.store_id) {
            Some(stream) => stream,
            None => StreamKey::new(
                ProductId::parse(&message.product_id)
                    .map_err(|error| invalid("product_id", error))?,
                StoreId::parse(&message.store_id).map_err(|error| invalid("store_id", error))?,
            ),
        },
        version: StreamVersion(message.version),
        occurred_at: stored_timestamp("occurred_at", message.occurred_at.as_ref())?,
        stock_after,
        command_id,
        command_fingerprint: message.command_fingerprint,
        trace_parent: (!message.trace_parent.is_empty())
            .then(|| message.trace_parent.as_str().into()),
        command_event_index: message.command_event_index,
        command_event_count,
        actor: known_actor.unwrap_or_else(|| {
            (!message.actor.is_empty()).then(|| Actor::from(message.actor.as_str()))
        }),
        event,
    })
}

/// Every kind of the wire, to its family: the one table a new kind is added to.
fn stored_event(kind: &pb::inventory_event::Kind) -> Result<StockEvent, EventDecodeError> {
    use pb::inventory_event::Kind;
    use {quantities as q, reservations as r, transfers as t};
    Ok(match kind {
        Kind::StockAdded(added) => StockEvent::Quantity(q::added(added)?),
        Kind::StockAdjusted(adjusted) => StockEvent::Quantity(q::adjusted(adjusted)?),
        Kind::StockRemoved(removed) => StockEvent::Quantity(q::removed(removed)?),
        Kind::StockMoved(moved) => StockEvent::Quantity(q::moved(moved)?),
        Kind::ItemPolicyChanged(policy) => StockEvent::Quantity(q::policy(policy)?),
        Kind::StockCounted(count) => StockEvent::Quantity(q::counted(count)?),
        Kind::StockReserved(reserved) => StockEvent::Reservation(r::reserved(reserved)?),
        Kind::ReservationCommitted(committed) => StockEvent::Reservation(r::committed(committed)?),
        Kind::ReservationExtended(extended) => StockEvent::Reservation(r::extended(extended)?),
        Kind::ReservationReleased(released) => StockEvent::Reservation(r::released(released)?),
        Kind::ReservationExpired(expired) => StockEvent::Reservation(r::expired(expired)?),
        Kind::TransferShipped(shipped) => StockEvent::Transfer(t::shipped(shipped)?),
        Kind::TransferIncoming(incoming) => StockEvent::Transfer(t::incoming(incoming)?),
        Kind::TransferReceived(received) => StockEvent::Transfer(t::received(received)?),
        Kind::TransferLost(lost) => StockEvent::Transfer(t::lost(lost)?),
        Kind::TransferCancelled(cancelled) => StockEvent::Transfer(t::cancelled(cancelled)?),
        Kind::TransferReturned(returned) => StockEvent::Transfer(t::returned(returned)?),
        Kind::StockLow(_) => StockEvent::Alert(StockAlert::StockLow),
        Kind::OutOfStock(_) => StockEvent::Alert(StockAlert::OutOfStock),
        Kind::BackInStock(_) => StockEvent::Alert(StockAlert::BackInStock),
        Kind::StockShort(_) => StockEvent::Alert(StockAlert::StockShort),
    })
}

/// The quantity family: receipts, adjustments, removals, moves between states, policies and
/// counts.
mod quantities {
    use super::*;

    type Decoded = Result<QuantityEvent, EventDecodeError>;

    pub(super) fn added(added: &pb::StockAdded) -> Decoded {
        Ok(QuantityEvent::StockAdded {
            quantity: stored_quantity("stock_added.quantity", added.quantity)?,
            reason: stored_reason("stock_added.reason", &added.reason)?,
        })
    }

    pub(super) fn adjusted(adjusted: &pb::StockAdjusted) -> Decoded {
        Ok(QuantityEvent::StockAdjusted {
            previous_on_hand: stored_count(
                "stock_adjusted.previous_on_hand",
                adjusted.previous_on_hand,
            )?,
            on_hand: stored_count("stock_adjusted.on_hand", adjusted.on_hand)?,
            reason: stored_reason("stock_adjusted.reason", &adjusted.reason)?,
        })
    }

    pub(super) fn removed(removed: &pb::StockRemoved) -> Decoded {
        Ok(QuantityEvent::StockRemoved {
            quantity: stored_quantity("stock_removed.quantity", removed.quantity)?,
            // Written before states existed: from the available units.
            from: match removed.from {
                0 => StockState::Available,
                from => stock_state_from_pb(from)
                    .ok_or_else(|| invalid("stock_removed.from", format!("unknown: {from}")))?,
            },
            reason: stored_reason("stock_removed.reason", &removed.reason)?,
        })
    }

    pub(super) fn moved(moved: &pb::StockMoved) -> Decoded {
        let from = stock_state_from_pb(moved.from)
            .ok_or_else(|| invalid("stock_moved.from", format!("unknown: {}", moved.from)))?;
        let to = stock_state_from_pb(moved.to)
            .filter(|to| *to != from)
            .ok_or_else(|| invalid("stock_moved.to", format!("unknown or from: {}", moved.to)))?;
        Ok(QuantityEvent::StockMoved {
            quantity: stored_quantity("stock_moved.quantity", moved.quantity)?,
            from,
            to,
            reason: stored_reason("stock_moved.reason", &moved.reason)?,
        })
    }

    pub(super) fn policy(policy: &pb::ItemPolicyChanged) -> Decoded {
        Ok(QuantityEvent::ItemPolicyChanged {
            safety_stock: stored_count("item_policy_changed.safety_stock", policy.safety_stock)?,
            low_stock_threshold: stored_count(
                "item_policy_changed.low_stock_threshold",
                policy.low_stock_threshold,
            )?,
        })
    }

    pub(super) fn counted(count: &pb::StockCounted) -> Decoded {
        let counted = stored_count("stock_counted.counted", count.counted)?;
        let on_hand_at_count =
            stored_count("stock_counted.on_hand_at_count", count.on_hand_at_count)?;
        if count.variance != count_variance(counted, on_hand_at_count) {
            return Err(invalid(
                "stock_counted.variance",
                format!("{} is not counted - on_hand_at_count", count.variance),
            ));
        }
        Ok(QuantityEvent::StockCounted {
            counted,
            counted_at: stored_timestamp("stock_counted.counted_at", count.counted_at.as_ref())?,
            on_hand_at_count,
            previous_on_hand: stored_count(
                "stock_counted.previous_on_hand",
                count.previous_on_hand,
            )?,
            on_hand: stored_count("stock_counted.on_hand", count.on_hand)?,
            damaged_not_found: stored_count(
                "stock_counted.damaged_not_found",
                count.damaged_not_found,
            )?,
            quality_control_not_found: stored_count(
                "stock_counted.quality_control_not_found",
                count.quality_control_not_found,
            )?,
            reason: stored_reason("stock_counted.reason", &count.reason)?,
        })
    }
}

/// The reservation family.
mod reservations {
    use super::*;

    type Decoded = Result<ReservationEvent, EventDecodeError>;

    pub(super) fn reserved(reserved: &pb::StockReserved) -> Decoded {
        Ok(ReservationEvent::StockReserved {
            reservation_id: stored_reservation_id(
                "stock_reserved.reservation_id",
                &reserved.reservation_id,
            )?,
            quantity: stored_quantity("stock_reserved.quantity", reserved.quantity)?,
            customer_id: CustomerId::parse(&reserved.customer_id)
                .map_err(|error| invalid("stock_reserved.customer_id", error))?,
            expires_at: stored_timestamp(
                "stock_reserved.expires_at",
                reserved.expires_at.as_ref(),
            )?,
        })
    }

    pub(super) fn committed(committed: &pb::ReservationCommitted) -> Decoded {
        Ok(ReservationEvent::ReservationCommitted {
            reservation_id: stored_reservation_id(
                "reservation_committed.reservation_id",
                &committed.reservation_id,
            )?,
            quantity: stored_count("reservation_committed.quantity", committed.quantity)?,
            order_id: OrderId::parse(&committed.order_id)
                .map_err(|error| invalid("reservation_committed.order_id", error))?,
            released_quantity: stored_count(
                "reservation_committed.released_quantity",
                committed.released_quantity,
            )?,
        })
    }

    pub(super) fn extended(extended: &pb::ReservationExtended) -> Decoded {
        Ok(ReservationEvent::ReservationExtended {
            reservation_id: stored_reservation_id(
                "reservation_extended.reservation_id",
                &extended.reservation_id,
            )?,
            expires_at: stored_timestamp(
                "reservation_extended.expires_at",
                extended.expires_at.as_ref(),
            )?,
        })
    }

    pub(super) fn released(released: &pb::ReservationReleased) -> Decoded {
        Ok(ReservationEvent::ReservationReleased {
            reservation_id: stored_reservation_id(
                "reservation_released.reservation_id",
                &released.reservation_id,
            )?,
            quantity: stored_quantity("reservation_released.quantity", released.quantity)?,
            reason: stored_reason("reservation_released.reason", &released.reason)?,
        })
    }

    pub(super) fn expired(expired: &pb::ReservationExpired) -> Decoded {
        Ok(ReservationEvent::ReservationExpired {
            reservation_id: stored_reservation_id(
                "reservation_expired.reservation_id",
                &expired.reservation_id,
            )?,
            quantity: stored_quantity("reservation_expired.quantity", expired.quantity)?,
        })
    }
}

/// The transfer family: the source's shipment, the destination's incoming, receipt, loss,
/// cancellation and return.
mod transfers {
    use super::*;

    type Decoded = Result<TransferEvent, EventDecodeError>;

    pub(super) fn shipped(shipped: &pb::TransferShipped) -> Decoded {
        Ok(TransferEvent::TransferShipped {
            transfer_id: stored_transfer_id("transfer_shipped.transfer_id", &shipped.transfer_id)?,
            to_store: StoreId::parse(&shipped.to_store_id)
                .map_err(|error| invalid("transfer_shipped.to_store_id", error))?,
            quantity: stored_quantity("transfer_shipped.quantity", shipped.quantity)?,
            reason: stored_reason("transfer_shipped.reason", &shipped.reason)?,
        })
    }

    pub(super) fn incoming(incoming: &pb::TransferIncoming) -> Decoded {
        Ok(TransferEvent::TransferIncoming {
            transfer_id: stored_transfer_id(
                "transfer_incoming.transfer_id",
                &incoming.transfer_id,
            )?,
            from_store: StoreId::parse(&incoming.from_store_id)
                .map_err(|error| invalid("transfer_incoming.from_store_id", error))?,
            quantity: stored_quantity("transfer_incoming.quantity", incoming.quantity)?,
        })
    }

    pub(super) fn received(received: &pb::TransferReceived) -> Decoded {
        Ok(TransferEvent::TransferReceived {
            transfer_id: stored_transfer_id(
                "transfer_received.transfer_id",
                &received.transfer_id,
            )?,
            quantity: stored_quantity("transfer_received.quantity", received.quantity)?,
            from_store: stored_source("transfer_received.from_store_id", &received.from_store_id)?,
        })
    }

    pub(super) fn lost(lost: &pb::TransferLost) -> Decoded {
        Ok(TransferEvent::TransferLost {
            transfer_id: stored_transfer_id("transfer_lost.transfer_id", &lost.transfer_id)?,
            quantity: stored_quantity("transfer_lost.quantity", lost.quantity)?,
            from_store: stored_source("transfer_lost.from_store_id", &lost.from_store_id)?,
        })
    }

    pub(super) fn cancelled(cancelled: &pb::TransferCancelled) -> Decoded {
        Ok(TransferEvent::TransferCancelled {
            transfer_id: stored_transfer_id(
                "transfer_cancelled.transfer_id",
                &cancelled.transfer_id,
            )?,
            quantity: stored_quantity("transfer_cancelled.quantity", cancelled.quantity)?,
            reason: stored_reason("transfer_cancelled.reason", &cancelled.reason)?,
            from_store: stored_source(
                "transfer_cancelled.from_store_id",
                &cancelled.from_store_id,
            )?,
        })
    }

    pub(super) fn returned(returned: &pb::TransferReturned) -> Decoded {
        Ok(TransferEvent::TransferReturned {
            transfer_id: stored_transfer_id(
                "transfer_returned.transfer_id",
                &returned.transfer_id,
            )?,
            quantity: stored_quantity("transfer_returned.quantity", returned.quantity)?,
        })
    }
}
