//! Events in the canonical protobuf JSON mapping: the JSON grpcurl prints for a `Subscribe`
//! response's event (camelCase names, 64-bit integers as strings, enums by name, timestamps in
//! RFC 3339, fields at their default left out). Made by prost-reflect from the descriptors the
//! build embeds, so the JSON follows the proto file by construction.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::domain::RecordedEvent;
use crate::log::codec::encode_event;

fn event_descriptor() -> &'static MessageDescriptor {
    static DESCRIPTOR: OnceLock<MessageDescriptor> = OnceLock::new();
    DESCRIPTOR.get_or_init(|| {
        DescriptorPool::decode(crate::grpc::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set is valid")
            .get_message_by_name("inventory.v1.InventoryEvent")
            .expect("the descriptor set holds inventory.v1.InventoryEvent")
    })
}

/// Appends `event`'s canonical JSON to `out`.
pub fn write_event(event: &RecordedEvent, out: &mut Vec<u8>) {
    // The stored form is the protobuf encoding of `InventoryEvent`.
    let bytes = encode_event(event);
    let message = DynamicMessage::decode(event_descriptor().clone(), bytes.as_slice())
        .expect("an encoded event decodes against its own descriptor");
    let mut serializer = serde_json::Serializer::new(out);
    message
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .expect("an event serializes to JSON");
}

/// `event`'s canonical JSON.
pub fn event_json(event: &RecordedEvent) -> String {
    let mut out = Vec::new();
    write_event(event, &mut out);
    String::from_utf8(out).expect("JSON is UTF-8")
}
