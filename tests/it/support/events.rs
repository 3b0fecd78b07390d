//! A strategy for any event the log may hold: every kind, every id shape, every level, with
//! and without the optional parts. Shared by the stored-form and the JSON tests.

use std::sync::Arc;

use inventory::domain::{
    Actor, CommandId, CustomerId, EventId, LogPosition, OrderId, ProductId, Quantity,
    QuantityEvent, Reason, RecordedEvent, ReservationEvent, ReservationId, StockAlert, StockEvent,
    StockLevel, StockParts, StockState, StoreId, StreamKey, StreamVersion, Timestamp,
    TransferEvent, TransferId,
};
use proptest::prelude::*;

fn id_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,40}"
}

pub fn any_event() -> impl Strategy<Value = RecordedEvent> {
    let reservation = prop_oneof![
        any::<u128>().prop_map(ReservationId::from_uuid),
        id_text().prop_map(|text| ReservationId::parse(&text).unwrap()),
    ];
    let quantity = (1u64..=u64::from(u32::MAX)).prop_map(|value| Quantity::new(value).unwrap());
    let reason = "[ -~]{1,60}".prop_map(|text| Reason::parse(&text).unwrap());
    let states = prop_oneof![
        Just(StockState::Available),
        Just(StockState::Damaged),
        Just(StockState::QualityControl),
    ];
    let kind = (
        0u8..21,
        states,
        reservation,
        quantity,
        reason,
        (id_text(), id_text()),
        any::<u64>(),
        0u64..=u64::from(u32::MAX),
    )
        .prop_map(
            |(
                kind,
                state,
                reservation_id,
                quantity,
                reason,
                (customer, order),
                millis,
                on_hand,
            )| {
                let other = match state {
                    StockState::Available => StockState::Damaged,
                    StockState::Damaged | StockState::QualityControl => StockState::Available,
                };
                match kind {
                    0 => StockEvent::Quantity(QuantityEvent::StockAdded { quantity, reason }),
                    1 => StockEvent::Quantity(QuantityEvent::StockAdjusted {
                        previous_on_hand: on_hand / 2,
                        on_hand,
                        reason,
                    }),
                    2 => StockEvent::Reservation(ReservationEvent::StockReserved {
                        reservation_id,
                        quantity,
                        customer_id: CustomerId::parse(&customer).unwrap(),
                        expires_at: Timestamp::from_unix_millis(millis % 4_000_000_000_000),
                    }),
                    3 => StockEvent::Reservation(ReservationEvent::ReservationCommitted {
                        reservation_id,
                        // A partial commit: none, some or all of the line shipped.
                        quantity: quantity.get() / (1 + millis % 3),
                        order_id: OrderId::parse(&order).unwrap(),
                        released_quantity: quantity.get() - quantity.get() / (1 + millis % 3),
                    }),
                    6 => StockEvent::Quantity(QuantityEvent::StockRemoved {
                        quantity,
                        from: state,
                        reason,
                    }),
                    8 => StockEvent::Quantity(QuantityEvent::StockMoved {
                        quantity,
                        from: state,
                        to: other,
                        reason,
                    }),
                    9 => StockEvent::Quantity(QuantityEvent::ItemPolicyChanged {
                        safety_stock: on_hand,
                        low_stock_threshold: millis % 1000,
                    }),
                    10 => StockEvent::Alert(StockAlert::StockLow),
                    11 => StockEvent::Alert(StockAlert::OutOfStock),
                    12 => StockEvent::Alert(StockAlert::BackInStock),
                    13 => StockEvent::Alert(StockAlert::StockShort),
                    15 => StockEvent::Transfer(TransferEvent::TransferShipped {
                        transfer_id: TransferId::parse(&customer).unwrap(),
                        to_store: StoreId::parse(&order).unwrap(),
                        quantity,
                        reason,
                    }),
                    16 => StockEvent::Transfer(TransferEvent::TransferIncoming {
                        transfer_id: TransferId::parse(&customer).unwrap(),
                        from_store: StoreId::parse(&order).unwrap(),
                        quantity,
                    }),
                    17 => StockEvent::Transfer(TransferEvent::TransferReceived {
                        transfer_id: TransferId::parse(&customer).unwrap(),
                        quantity,
                        from_store: Some(StoreId::parse(&order).unwrap()),
                    }),
                    // Also as written before the source was recorded.
                    18 => StockEvent::Transfer(TransferEvent::TransferLost {
                        transfer_id: TransferId::parse(&customer).unwrap(),
                        quantity,
                        from_store: None,
                    }),
                    19 => StockEvent::Transfer(TransferEvent::TransferCancelled {
                        transfer_id: TransferId::parse(&customer).unwrap(),
                        quantity,
                        reason,
                        from_store: Some(StoreId::parse(&order).unwrap()),
                    }),
                    20 => StockEvent::Transfer(TransferEvent::TransferReturned {
                        transfer_id: TransferId::parse(&customer).unwrap(),
                        quantity,
                    }),
                    14 => StockEvent::Quantity(QuantityEvent::StockCounted {
                        // Either side of what the log said: a variance of either sign.
                        counted: millis % 1000,
                        counted_at: Timestamp::from_unix_millis(millis % 4_000_000_000_000),
                        on_hand_at_count: on_hand % 1000,
                        previous_on_hand: on_hand,
                        on_hand: quantity.get(),
                        damaged_not_found: millis % 7,
                        quality_control_not_found: on_hand % 5,
                        reason,
                    }),
                    7 => StockEvent::Reservation(ReservationEvent::ReservationExtended {
                        reservation_id,
                        expires_at: Timestamp::from_unix_millis(millis % 4_000_000_000_000),
                    }),
                    4 => StockEvent::Reservation(ReservationEvent::ReservationReleased {
                        reservation_id,
                        quantity,
                        reason,
                    }),
                    _ => StockEvent::Reservation(ReservationEvent::ReservationExpired {
                        reservation_id,
                        quantity,
                    }),
                }
            },
        );
    let numbers = (
        prop_oneof![Just(0u64), any::<u64>()],
        any::<u128>(),
        prop_oneof![Just(0u64), any::<u64>()],
        0u64..4_000_000_000_000,
        (0u64..=u64::from(u32::MAX), 0u64..=u64::from(u32::MAX)),
        prop_oneof![Just(0u64), any::<u64>()],
        // The other parts of a level: mostly none, sometimes any (a shortfall included).
        prop_oneof![
            Just([0u64; 5]),
            proptest::array::uniform5(0u64..=u64::from(u32::MAX))
        ],
    );
    let context = (
        proptest::option::of(id_text()),
        proptest::option::of(prop_oneof![Just(String::new()), "[ -~]{1,80}"]),
        prop_oneof![
            Just((0u32, 1u32)),
            (1u32..=1000).prop_flat_map(|count| (0..count, Just(count)))
        ],
        // Any name a credential may have, or none (an event from before actors).
        proptest::option::of("[ -~\u{e9}\u{4e2d}]{1,40}"),
    );
    (kind, (id_text(), id_text()), numbers, context).prop_map(
        |(
            event,
            (product, store),
            (position, event_id, version, millis, (a, b), fingerprint, more),
            (command_id, trace_parent, (command_event_index, command_event_count), actor),
        )| {
            RecordedEvent {
                position: LogPosition(position),
                event_id: EventId(event_id),
                stream: StreamKey::new(
                    ProductId::parse(&product).unwrap(),
                    StoreId::parse(&store).unwrap(),
                ),
                version: StreamVersion(version),
                occurred_at: Timestamp::from_unix_millis(millis),
                stock_after: StockLevel::from_parts(StockParts {
                    on_hand: a.max(b),
                    reserved: a.min(b),
                    damaged: more[0],
                    quality_control: more[1],
                    safety_stock: more[2],
                    incoming: more[3],
                    low_stock_threshold: more[4],
                })
                .unwrap(),
                command_id: command_id.map(|text| CommandId::parse(&text).unwrap()),
                command_fingerprint: fingerprint,
                trace_parent: trace_parent.map(Arc::from),
                command_event_index,
                command_event_count,
                actor: actor.as_deref().map(Actor::from),
                event,
            }
        },
    )
}
