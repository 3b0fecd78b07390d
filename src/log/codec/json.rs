//! Events in the canonical protobuf JSON mapping: the JSON grpcurl prints for a `Subscribe`
//! response's event (camelCase names, 64-bit integers as strings, enums by name, timestamps in
//! RFC 3339, fields at their default left out, fields in field-number order).
//!
//! An event's stored form (its protobuf encoding) is transcoded straight to JSON, one pass
//! over the bytes, by a plan made once from the descriptors the build embeds: so the JSON
//! follows the proto file by construction. The plan covers what `events.proto` uses (scalars
//! but floats and bytes, strings, enums, messages, oneofs, `google.protobuf.Timestamp`); for
//! anything else, in the schema or in the bytes, the event goes through prost-reflect's
//! `DynamicMessage` instead ([`reference_json`], what the transcoder is tested against),
//! which handles every mapping but decodes each event into maps of boxed values first (the
//! webhook catch-up ran at 0.42× the transcoder's rate with it, BENCHMARKS.md).

use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;

use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, EnumDescriptor, Kind, MessageDescriptor,
    SerializeOptions,
};

use crate::domain::RecordedEvent;
use crate::log::codec::encode_event_into;

fn event_descriptor() -> &'static MessageDescriptor {
    static DESCRIPTOR: OnceLock<MessageDescriptor> = OnceLock::new();
    DESCRIPTOR.get_or_init(|| {
        DescriptorPool::decode(super::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set is valid")
            .get_message_by_name("inventory.v1.InventoryEvent")
            .expect("the descriptor set holds inventory.v1.InventoryEvent")
    })
}

fn event_plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| Plan::new(event_descriptor())).as_ref()
}

/// Appends `event`'s canonical JSON to `out`.
pub fn write_event(event: &RecordedEvent, out: &mut Vec<u8>) {
    let mut bytes = Vec::with_capacity(256);
    encode_event_into(event, &mut bytes);
    let start = out.len();
    if let Some(plan) = event_plan()
        && plan.write(plan.root, &bytes, out).is_some()
    {
        return;
    }
    out.truncate(start);
    write_reference(&bytes, out);
}

/// `event`'s canonical JSON.
pub fn event_json(event: &RecordedEvent) -> String {
    let mut out = Vec::new();
    write_event(event, &mut out);
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// `event`'s canonical JSON as prost-reflect writes it: the reference the transcoder is
/// tested against.
pub fn reference_json(event: &RecordedEvent) -> String {
    let mut out = Vec::new();
    let mut bytes = Vec::new();
    encode_event_into(event, &mut bytes);
    write_reference(&bytes, &mut out);
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// Whether events are transcoded by the plan (`false`: the schema holds something the plan
/// does not cover, and every event goes through prost-reflect).
pub fn transcoded() -> bool {
    event_plan().is_some()
}

fn write_reference(bytes: &[u8], out: &mut Vec<u8>) {
    let message = DynamicMessage::decode(event_descriptor().clone(), bytes)
        .expect("an encoded event decodes against its own descriptor");
    let mut serializer = serde_json::Serializer::new(out);
    message
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .expect("an event serializes to JSON");
}

/// How one field's value is written.
enum Value {
    Int32,
    Int64,
    UInt32,
    UInt64,
    SInt32,
    SInt64,
    Fixed32,
    Fixed64,
    SFixed32,
    SFixed64,
    Bool,
    String,
    Enum(EnumDescriptor),
    Message(usize),
    Timestamp,
}

struct Field {
    number: u32,
    /// `"jsonName":`, ready to append.
    key: Vec<u8>,
    value: Value,
    /// Written whenever present on the wire (a message, a oneof's member); otherwise only
    /// when not the default.
    presence: bool,
    /// The oneof it belongs to, by index: at most one member may be present.
    oneof: Option<usize>,
}

/// The fields of one message, by number.
struct MessagePlan {
    fields: Vec<Field>,
}

impl MessagePlan {
    fn field(&self, number: u32) -> Option<(usize, &Field)> {
        let index = self
            .fields
            .binary_search_by_key(&number, |field| field.number)
            .ok()?;
        Some((index, &self.fields[index]))
    }
}

struct Plan {
    messages: Vec<MessagePlan>,
    root: usize,
}

/// One field as read off the wire.
#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl Plan {
    /// The plan for `descriptor`; `None` if it (or a message it holds) uses a mapping the plan
    /// does not cover.
    fn new(descriptor: &MessageDescriptor) -> Option<Plan> {
        let mut plan = Plan {
            messages: Vec::new(),
            root: 0,
        };
        let mut indices = HashMap::new();
        plan.root = plan.add(descriptor, &mut indices)?;
        Some(plan)
    }

    fn add(
        &mut self,
        descriptor: &MessageDescriptor,
        indices: &mut HashMap<String, usize>,
    ) -> Option<usize> {
        if let Some(&index) = indices.get(descriptor.full_name()) {
            return Some(index);
        }
        let index = self.messages.len();
        indices.insert(descriptor.full_name().to_owned(), index);
        self.messages.push(MessagePlan { fields: Vec::new() });
        let mut fields = Vec::new();
        for field in descriptor.fields() {
            if field.cardinality() == Cardinality::Repeated || field.is_map() {
                return None;
            }
            let oneof = field.containing_oneof();
            if field.supports_presence() && oneof.is_none() && field.kind().as_message().is_none() {
                // proto3 `optional` and proto2 scalars: not in the schema, not planned.
                return None;
            }
            let value = match field.kind() {
                Kind::Int32 => Value::Int32,
                Kind::Int64 => Value::Int64,
                Kind::Uint32 => Value::UInt32,
                Kind::Uint64 => Value::UInt64,
                Kind::Sint32 => Value::SInt32,
                Kind::Sint64 => Value::SInt64,
                Kind::Fixed32 => Value::Fixed32,
                Kind::Fixed64 => Value::Fixed64,
                Kind::Sfixed32 => Value::SFixed32,
                Kind::Sfixed64 => Value::SFixed64,
                Kind::Bool => Value::Bool,
                Kind::String => Value::String,
                Kind::Enum(descriptor) => Value::Enum(descriptor),
                Kind::Message(message) if message.full_name() == "google.protobuf.Timestamp" => {
                    Value::Timestamp
                }
                Kind::Message(message) if message.full_name().starts_with("google.protobuf.") => {
                    // The other well-known types have mappings of their own.
                    return None;
                }
                Kind::Message(message) => Value::Message(self.add(&message, indices)?),
                Kind::Float | Kind::Double | Kind::Bytes => return None,
            };
            let mut key = Vec::new();
            serde_json::to_writer(&mut key, field.json_name()).ok()?;
            key.push(b':');
            fields.push(Field {
                number: field.number(),
                key,
                presence: field.supports_presence(),
                value,
                oneof: oneof.map(|oneof| {
                    descriptor
                        .oneofs()
                        .position(|other| other.name() == oneof.name())
                        .expect("a field's oneof is its message's")
                }),
            });
        }
        fields.sort_by_key(|field| field.number);
        self.messages[index].fields = fields;
        Some(index)
    }

    /// Writes the message `bytes` of plan `message` as JSON; `None` (with part of it
    /// written) for bytes the plan does not cover: an unknown or repeated field, a field of an
    /// unexpected wire type, two members of one oneof, text that is not UTF-8, a timestamp out
    /// of range, bytes cut short.
    fn write(&self, message: usize, bytes: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let plan = &self.messages[message];
        // (field index, value), in field-number order once sorted.
        let mut present: Vec<(usize, Wire<'_>)> = Vec::with_capacity(plan.fields.len());
        let mut input = bytes;
        while !input.is_empty() {
            let key = varint(&mut input)?;
            let number = u32::try_from(key >> 3).ok()?;
            let wire = match key & 7 {
                0 => Wire::Varint(varint(&mut input)?),
                1 => Wire::Fixed64(u64::from_le_bytes(take(&mut input, 8)?.try_into().ok()?)),
                2 => {
                    let length = usize::try_from(varint(&mut input)?).ok()?;
                    Wire::Bytes(take(&mut input, length)?)
                }
                5 => Wire::Fixed32(u32::from_le_bytes(take(&mut input, 4)?.try_into().ok()?)),
                _ => return None,
            };
            let (index, _) = plan.field(number)?;
            present.push((index, wire));
        }
        present.sort_by_key(|(index, _)| *index);
        out.push(b'{');
        let mut first = true;
        let mut previous: Option<&Field> = None;
        for (index, wire) in present {
            let field = &plan.fields[index];
            if let Some(previous) = previous
                && (previous.number == field.number
                    || (field.oneof.is_some() && previous.oneof == field.oneof))
            {
                return None;
            }
            previous = Some(field);
            if !field.presence && is_default(wire) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&field.key);
            self.write_value(&field.value, wire, out)?;
        }
        out.push(b'}');
        Some(())
    }

    fn write_value(&self, value: &Value, wire: Wire<'_>, out: &mut Vec<u8>) -> Option<()> {
        match (value, wire) {
            (Value::Int32, Wire::Varint(raw)) => write!(out, "{}", raw as i32).ok(),
            (Value::UInt32, Wire::Varint(raw)) => write!(out, "{}", raw as u32).ok(),
            (Value::SInt32, Wire::Varint(raw)) => write!(out, "{}", zigzag(raw) as i32).ok(),
            (Value::Int64, Wire::Varint(raw)) => write!(out, "\"{}\"", raw as i64).ok(),
            (Value::UInt64, Wire::Varint(raw)) => write!(out, "\"{raw}\"").ok(),
            (Value::SInt64, Wire::Varint(raw)) => write!(out, "\"{}\"", zigzag(raw)).ok(),
            (Value::Fixed32, Wire::Fixed32(raw)) => write!(out, "{raw}").ok(),
            (Value::SFixed32, Wire::Fixed32(raw)) => write!(out, "{}", raw as i32).ok(),
            (Value::Fixed64, Wire::Fixed64(raw)) => write!(out, "\"{raw}\"").ok(),
            (Value::SFixed64, Wire::Fixed64(raw)) => write!(out, "\"{}\"", raw as i64).ok(),
            (Value::Bool, Wire::Varint(raw)) => {
                out.extend_from_slice(if raw != 0 { b"true" } else { b"false" });
                Some(())
            }
            (Value::String, Wire::Bytes(text)) => {
                serde_json::to_writer(&mut *out, std::str::from_utf8(text).ok()?).ok()
            }
            (Value::Enum(descriptor), Wire::Varint(raw)) => {
                match descriptor.get_value(raw as i32) {
                    Some(value) => serde_json::to_writer(&mut *out, value.name()).ok(),
                    None => write!(out, "{}", raw as i32).ok(),
                }
            }
            (Value::Message(message), Wire::Bytes(bytes)) => self.write(*message, bytes, out),
            (Value::Timestamp, Wire::Bytes(bytes)) => write_timestamp(bytes, out),
            _ => None,
        }
    }
}

/// A `google.protobuf.Timestamp` in RFC 3339 as prost-reflect writes it (`Z`, and 0, 3, 6 or
/// 9 fractional digits, the fewest that hold the nanoseconds); `None` outside years 1 to
/// 9999, where prost-reflect refuses it.
fn write_timestamp(mut bytes: &[u8], out: &mut Vec<u8>) -> Option<()> {
    const MIN_SECONDS: i64 = -62_135_596_800;
    const MAX_SECONDS: i64 = 253_402_300_799;
    let (mut seconds, mut nanos) = (0i64, 0i64);
    while !bytes.is_empty() {
        match varint(&mut bytes)? {
            0x08 => seconds = varint(&mut bytes)? as i64,
            0x10 => nanos = i64::from(varint(&mut bytes)? as i32),
            _ => return None,
        }
    }
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) || !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    write!(
        out,
        "\"{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
    .ok()?;
    match nanos {
        0 => {}
        _ if nanos % 1_000_000 == 0 => write!(out, ".{:03}", nanos / 1_000_000).ok()?,
        _ if nanos % 1_000 == 0 => write!(out, ".{:06}", nanos / 1_000).ok()?,
        _ => write!(out, ".{nanos:09}").ok()?,
    }
    out.extend_from_slice(b"Z\"");
    Some(())
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_default(wire: Wire<'_>) -> bool {
    match wire {
        Wire::Varint(raw) | Wire::Fixed64(raw) => raw == 0,
        Wire::Fixed32(raw) => raw == 0,
        Wire::Bytes(bytes) => bytes.is_empty(),
    }
}

fn zigzag(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

fn take<'a>(input: &mut &'a [u8], length: usize) -> Option<&'a [u8]> {
    if input.len() < length {
        return None;
    }
    let (taken, rest) = input.split_at(length);
    *input = rest;
    Some(taken)
}

fn varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (index, &byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            *input = &input[index + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_schema_is_transcoded_not_reflected() {
        assert!(transcoded(), "events.proto uses a mapping the plan lacks");
    }

    fn timestamp(seconds: i64, nanos: i32) -> String {
        let mut bytes = Vec::new();
        for (key, value) in [(0x08u8, seconds as u64), (0x10, nanos as i64 as u64)] {
            bytes.push(key);
            let mut value = value;
            while value >= 0x80 {
                bytes.push((value as u8 & 0x7f) | 0x80);
                value >>= 7;
            }
            bytes.push(value as u8);
        }
        let mut out = Vec::new();
        write_timestamp(&bytes, &mut out).expect("in range");
        String::from_utf8(out).unwrap()
    }

    // The events' own timestamps are after 1970 (the property test covers them); the
    // transcoder takes every timestamp prost-reflect does.
    #[test]
    fn timestamps_are_written_as_rfc_3339_across_the_whole_range() {
        assert_eq!(timestamp(0, 0), "\"1970-01-01T00:00:00Z\"");
        assert_eq!(timestamp(-1, 0), "\"1969-12-31T23:59:59Z\"");
        assert_eq!(
            timestamp(951_782_400, 5_000_000),
            "\"2000-02-29T00:00:00.005Z\""
        );
        assert_eq!(
            timestamp(1_796_256_000, 120_000),
            "\"2026-12-03T00:00:00.000120Z\""
        );
        assert_eq!(
            timestamp(-62_135_596_800, 1),
            "\"0001-01-01T00:00:00.000000001Z\""
        );
        assert_eq!(timestamp(253_402_300_799, 0), "\"9999-12-31T23:59:59Z\"");
        let mut out = Vec::new();
        assert!(
            write_timestamp(
                &[
                    0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01
                ],
                &mut out
            )
            .is_none()
        );
    }
}
