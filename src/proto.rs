//! The protobuf types generated from `proto/`, and the hand-written conversions between them
//! and the domain. Only this module and its callers at the edges know prost.

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("inventory.v1");
}

/// How many bytes each call's encode and decode buffers start with. tonic's default, 8 KiB,
/// is past what glibc serves from its per-thread caches, so each call paid two slow
/// allocations (and frees that consolidate the heap) for messages of a few hundred bytes. A
/// larger message grows its buffer as it needs.
pub const CODEC_BUFFER_BYTES: usize = 512;

/// The codec of the inventory services, in the generated servers and clients alike
/// (`build.rs` names it): prost's encoding, with buffers of [`CODEC_BUFFER_BYTES`].
#[derive(Debug, Clone)]
pub struct InventoryCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for InventoryCodec<T, U> {
    fn default() -> Self {
        InventoryCodec(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for InventoryCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(codec_buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(codec_buffers())
    }
}

fn codec_buffers() -> tonic::codec::BufferSettings {
    // The yield threshold stays tonic's default (32 KiB): a stream yields once that much is
    // encoded.
    tonic::codec::BufferSettings::new(CODEC_BUFFER_BYTES, 32 * 1024)
}

/// The encoded descriptors of every proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/inventory_descriptor.bin"));

use prost::Message;

use crate::domain::{
    CommandId, CustomerId, EventId, LogPosition, OrderId, ProductId, Quantity, Reason,
    RecordedEvent, ReservationId, StockEvent, StockLevel, StoreId, StreamKey, StreamVersion,
    Timestamp,
};

/// Why bytes or a message are not a valid stored event.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("not a protobuf InventoryEvent: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("field {field} is invalid: {problem}")]
    InvalidField {
        field: &'static str,
        problem: String,
    },
}

/// Encodes an event in its stored (and wire) form.
pub fn encode_event(event: &RecordedEvent) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(192);
    encode_event_into(event, &mut buffer);
    buffer
}

/// Appends an event's stored form to `buffer`: the bytes of
/// `event_to_pb(event).encode_to_vec()`, written straight from the domain event instead of
/// first copying every id into a `String` of an owned message (the writer encodes each event
/// of every batch).
pub fn encode_event_into(event: &RecordedEvent, buffer: &mut Vec<u8>) {
    let mut event_id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let event_id = uuid::Uuid::from_u128(event.event_id.0)
        .hyphenated()
        .encode_lower(&mut event_id);
    let command_id = event.command_id.as_ref().map_or("", CommandId::as_str);
    let header = [
        Field::Text(1, event_id),
        Field::Unsigned(2, event.position.0),
        Field::Text(3, event.stream.product_id.as_str()),
        Field::Text(4, event.stream.store_id.as_str()),
        Field::Unsigned(5, event.version.0),
        Field::Time(6, timestamp_to_pb(event.occurred_at)),
        Field::Level(7, stock_level_to_pb(event.stock_after)),
        Field::Text(8, command_id),
        Field::Fixed(9, event.command_fingerprint),
        Field::Text(10, event.trace_parent.as_deref().unwrap_or_default()),
    ];
    for field in &header {
        field.encode(buffer);
    }
    let reservation_text;
    let (tag, kind): (u32, [Field<'_>; 4]) = match &event.event {
        StockEvent::StockAdded { quantity, reason } => (
            20,
            [
                Field::Signed(1, quantity.get() as i64),
                Field::Text(2, reason.as_str()),
                Field::Absent,
                Field::Absent,
            ],
        ),
        StockEvent::StockAdjusted {
            previous_on_hand,
            on_hand,
            reason,
        } => (
            21,
            [
                Field::Signed(1, *previous_on_hand as i64),
                Field::Signed(2, *on_hand as i64),
                Field::Text(3, reason.as_str()),
                Field::Absent,
            ],
        ),
        StockEvent::StockReserved {
            reservation_id,
            quantity,
            customer_id,
            expires_at,
        } => {
            reservation_text = reservation_id.as_str();
            let more = [
                Field::Text(3, customer_id.as_str()),
                Field::Time(4, timestamp_to_pb(*expires_at)),
            ];
            (22, reservation_fields(&reservation_text, *quantity, more))
        }
        StockEvent::ReservationCommitted {
            reservation_id,
            quantity,
            order_id,
        } => {
            reservation_text = reservation_id.as_str();
            let more = [Field::Text(3, order_id.as_str()), Field::Absent];
            (23, reservation_fields(&reservation_text, *quantity, more))
        }
        StockEvent::ReservationReleased {
            reservation_id,
            quantity,
            reason,
        } => {
            reservation_text = reservation_id.as_str();
            let more = [Field::Text(3, reason.as_str()), Field::Absent];
            (24, reservation_fields(&reservation_text, *quantity, more))
        }
        StockEvent::ReservationExpired {
            reservation_id,
            quantity,
        } => {
            reservation_text = reservation_id.as_str();
            let more = [Field::Absent, Field::Absent];
            (25, reservation_fields(&reservation_text, *quantity, more))
        }
    };
    // The oneof's message is always written, even when every field of it is a default.
    let length: usize = kind.iter().map(Field::encoded_len).sum();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buffer);
    prost::encoding::encode_varint(length as u64, buffer);
    for field in &kind {
        field.encode(buffer);
    }
}

/// The fields of a reservation event: its id (1) and quantity (2), then `more`.
fn reservation_fields<'a>(
    reservation_id: &'a str,
    quantity: Quantity,
    [third, fourth]: [Field<'a>; 2],
) -> [Field<'a>; 4] {
    [
        Field::Text(1, reservation_id),
        Field::Signed(2, quantity.get() as i64),
        third,
        fourth,
    ]
}

/// One field of a stored event, written as prost writes it: proto3 scalars and strings only
/// when they differ from their default, messages always.
enum Field<'a> {
    Absent,
    Text(u32, &'a str),
    Unsigned(u32, u64),
    Signed(u32, i64),
    Fixed(u32, u64),
    Time(u32, prost_types::Timestamp),
    Level(u32, pb::StockLevel),
}

impl Field<'_> {
    fn encoded_len(&self) -> usize {
        use prost::encoding::{fixed64, int64, key_len, message, uint64};
        match self {
            Field::Text(tag, text) if !text.is_empty() => {
                key_len(*tag) + prost::encoding::encoded_len_varint(text.len() as u64) + text.len()
            }
            Field::Unsigned(tag, value) if *value != 0 => uint64::encoded_len(*tag, value),
            Field::Signed(tag, value) if *value != 0 => int64::encoded_len(*tag, value),
            Field::Fixed(tag, value) if *value != 0 => fixed64::encoded_len(*tag, value),
            Field::Time(tag, time) => message::encoded_len(*tag, time),
            Field::Level(tag, level) => message::encoded_len(*tag, level),
            Field::Absent
            | Field::Text(..)
            | Field::Unsigned(..)
            | Field::Signed(..)
            | Field::Fixed(..) => 0,
        }
    }

    fn encode(&self, buffer: &mut Vec<u8>) {
        use prost::encoding::{
            WireType, encode_key, encode_varint, fixed64, int64, message, uint64,
        };
        match self {
            Field::Text(tag, text) if !text.is_empty() => {
                encode_key(*tag, WireType::LengthDelimited, buffer);
                encode_varint(text.len() as u64, buffer);
                buffer.extend_from_slice(text.as_bytes());
            }
            Field::Unsigned(tag, value) if *value != 0 => uint64::encode(*tag, value, buffer),
            Field::Signed(tag, value) if *value != 0 => int64::encode(*tag, value, buffer),
            Field::Fixed(tag, value) if *value != 0 => fixed64::encode(*tag, value, buffer),
            Field::Time(tag, time) => message::encode(*tag, time, buffer),
            Field::Level(tag, level) => message::encode(*tag, level, buffer),
            Field::Absent
            | Field::Text(..)
            | Field::Unsigned(..)
            | Field::Signed(..)
            | Field::Fixed(..) => {}
        }
    }
}

/// Decodes a stored event and checks every field the domain relies on.
pub fn decode_event(bytes: &[u8]) -> Result<RecordedEvent, EventDecodeError> {
    event_from_pb(pb::InventoryEvent::decode(bytes)?)
}

/// Decodes stored events one after another (a replay) into one reused protobuf message: the
/// ids of each event are read into strings that already have room, instead of three new
/// allocations per event, and freed once at the end.
#[derive(Default)]
pub struct EventDecoder {
    message: pb::InventoryEvent,
}

impl EventDecoder {
    /// [`decode_event`]. `known_stream` may return the stream key of a product id and store
    /// id already seen (and checked), so that a replay does not parse and allocate the same
    /// ids for every event; on `None` they are parsed.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        known_stream: impl FnOnce(&str, &str) -> Option<StreamKey>,
    ) -> Result<RecordedEvent, EventDecodeError> {
        // Every field back to its default (a field the record leaves out is its default), the
        // strings keeping their capacity.
        self.message.clear();
        self.message.merge(bytes)?;
        event_from_pb_with(&self.message, known_stream)
    }
}

pub fn timestamp_to_pb(timestamp: Timestamp) -> prost_types::Timestamp {
    let millis = timestamp.unix_millis();
    prost_types::Timestamp {
        seconds: (millis / 1000) as i64,
        nanos: ((millis % 1000) * 1_000_000) as i32,
    }
}

/// A protobuf timestamp as milliseconds since the epoch; `None` before the epoch or when
/// `nanos` is out of range.
pub fn timestamp_from_pb(timestamp: &prost_types::Timestamp) -> Option<Timestamp> {
    if timestamp.seconds < 0 || !(0..1_000_000_000).contains(&timestamp.nanos) {
        return None;
    }
    let millis = (timestamp.seconds as u64)
        .checked_mul(1000)?
        .checked_add(timestamp.nanos as u64 / 1_000_000)?;
    Some(Timestamp::from_unix_millis(millis))
}

pub fn stock_level_to_pb(level: StockLevel) -> pb::StockLevel {
    pb::StockLevel {
        on_hand: level.on_hand() as i64,
        reserved: level.reserved() as i64,
        available: level.available() as i64,
    }
}

pub fn uuid_string(id: u128) -> String {
    uuid::Uuid::from_u128(id).to_string()
}

pub fn event_to_pb(event: &RecordedEvent) -> pb::InventoryEvent {
    use pb::inventory_event::Kind;
    let kind = match &event.event {
        StockEvent::StockAdded { quantity, reason } => Kind::StockAdded(pb::StockAdded {
            quantity: quantity.get() as i64,
            reason: reason.as_str().to_owned(),
        }),
        StockEvent::StockAdjusted {
            previous_on_hand,
            on_hand,
            reason,
        } => Kind::StockAdjusted(pb::StockAdjusted {
            previous_on_hand: *previous_on_hand as i64,
            on_hand: *on_hand as i64,
            reason: reason.as_str().to_owned(),
        }),
        StockEvent::StockReserved {
            reservation_id,
            quantity,
            customer_id,
            expires_at,
        } => Kind::StockReserved(pb::StockReserved {
            reservation_id: reservation_id.to_string(),
            quantity: quantity.get() as i64,
            customer_id: customer_id.to_string(),
            expires_at: Some(timestamp_to_pb(*expires_at)),
        }),
        StockEvent::ReservationCommitted {
            reservation_id,
            quantity,
            order_id,
        } => Kind::ReservationCommitted(pb::ReservationCommitted {
            reservation_id: reservation_id.to_string(),
            quantity: quantity.get() as i64,
            order_id: order_id.to_string(),
        }),
        StockEvent::ReservationReleased {
            reservation_id,
            quantity,
            reason,
        } => Kind::ReservationReleased(pb::ReservationReleased {
            reservation_id: reservation_id.to_string(),
            quantity: quantity.get() as i64,
            reason: reason.as_str().to_owned(),
        }),
        StockEvent::ReservationExpired {
            reservation_id,
            quantity,
        } => Kind::ReservationExpired(pb::ReservationExpired {
            reservation_id: reservation_id.to_string(),
            quantity: quantity.get() as i64,
        }),
    };
    pb::InventoryEvent {
        event_id: uuid_string(event.event_id.0),
        position: event.position.0,
        product_id: event.stream.product_id.to_string(),
        store_id: event.stream.store_id.to_string(),
        version: event.version.0,
        occurred_at: Some(timestamp_to_pb(event.occurred_at)),
        stock: Some(stock_level_to_pb(event.stock_after)),
        command_id: event
            .command_id
            .as_ref()
            .map(CommandId::to_string)
            .unwrap_or_default(),
        command_fingerprint: event.command_fingerprint,
        trace_parent: event.trace_parent.as_deref().unwrap_or_default().to_owned(),
        kind: Some(kind),
    }
}

fn invalid(field: &'static str, problem: impl ToString) -> EventDecodeError {
    EventDecodeError::InvalidField {
        field,
        problem: problem.to_string(),
    }
}

fn stored_quantity(field: &'static str, value: i64) -> Result<Quantity, EventDecodeError> {
    Quantity::from_signed(value).map_err(|error| invalid(field, error))
}

fn stored_count(field: &'static str, value: i64) -> Result<u64, EventDecodeError> {
    u64::try_from(value).map_err(|_| invalid(field, format!("negative: {value}")))
}

fn stored_timestamp(
    field: &'static str,
    value: Option<&prost_types::Timestamp>,
) -> Result<Timestamp, EventDecodeError> {
    value
        .and_then(timestamp_from_pb)
        .ok_or_else(|| invalid(field, "missing or out of range"))
}

fn stored_reason(field: &'static str, value: &str) -> Result<Reason, EventDecodeError> {
    Reason::parse(value).map_err(|error| invalid(field, error))
}

pub fn event_from_pb(message: pb::InventoryEvent) -> Result<RecordedEvent, EventDecodeError> {
    event_from_pb_with(&message, |_, _| None)
}

fn event_from_pb_with(
    message: &pb::InventoryEvent,
    known_stream: impl FnOnce(&str, &str) -> Option<StreamKey>,
) -> Result<RecordedEvent, EventDecodeError> {
    use pb::inventory_event::Kind;
    let event = match message.kind.as_ref() {
        None => return Err(invalid("kind", "missing")),
        Some(Kind::StockAdded(added)) => StockEvent::StockAdded {
            quantity: stored_quantity("stock_added.quantity", added.quantity)?,
            reason: stored_reason("stock_added.reason", &added.reason)?,
        },
        Some(Kind::StockAdjusted(adjusted)) => StockEvent::StockAdjusted {
            previous_on_hand: stored_count(
                "stock_adjusted.previous_on_hand",
                adjusted.previous_on_hand,
            )?,
            on_hand: stored_count("stock_adjusted.on_hand", adjusted.on_hand)?,
            reason: stored_reason("stock_adjusted.reason", &adjusted.reason)?,
        },
        Some(Kind::StockReserved(reserved)) => StockEvent::StockReserved {
            reservation_id: ReservationId::parse(&reserved.reservation_id)
                .map_err(|error| invalid("stock_reserved.reservation_id", error))?,
            quantity: stored_quantity("stock_reserved.quantity", reserved.quantity)?,
            customer_id: CustomerId::parse(&reserved.customer_id)
                .map_err(|error| invalid("stock_reserved.customer_id", error))?,
            expires_at: stored_timestamp(
                "stock_reserved.expires_at",
                reserved.expires_at.as_ref(),
            )?,
        },
        Some(Kind::ReservationCommitted(committed)) => StockEvent::ReservationCommitted {
            reservation_id: ReservationId::parse(&committed.reservation_id)
                .map_err(|error| invalid("reservation_committed.reservation_id", error))?,
            quantity: stored_quantity("reservation_committed.quantity", committed.quantity)?,
            order_id: OrderId::parse(&committed.order_id)
                .map_err(|error| invalid("reservation_committed.order_id", error))?,
        },
        Some(Kind::ReservationReleased(released)) => StockEvent::ReservationReleased {
            reservation_id: ReservationId::parse(&released.reservation_id)
                .map_err(|error| invalid("reservation_released.reservation_id", error))?,
            quantity: stored_quantity("reservation_released.quantity", released.quantity)?,
            reason: stored_reason("reservation_released.reason", &released.reason)?,
        },
        Some(Kind::ReservationExpired(expired)) => StockEvent::ReservationExpired {
            reservation_id: ReservationId::parse(&expired.reservation_id)
                .map_err(|error| invalid("reservation_expired.reservation_id", error))?,
            quantity: stored_quantity("reservation_expired.quantity", expired.quantity)?,
        },
    };
    let stock = message
        .stock
        .as_ref()
        .ok_or_else(|| invalid("stock", "missing"))?;
    let on_hand = stored_count("stock.on_hand", stock.on_hand)?;
    let reserved = stored_count("stock.reserved", stock.reserved)?;
    let stock_after = StockLevel::new(on_hand, reserved)
        .filter(|level| level.available() as i64 == stock.available)
        .ok_or_else(|| invalid("stock", format!("inconsistent: {stock:?}")))?;
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
        event,
    })
}
