//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so a fresh machine needs no
//! system `protoc`. The encoded descriptor set is written beside the generated code for
//! gRPC reflection.
//!
//! Two owners, two outputs: the messages of `events.proto` are the log's stored format and are
//! generated alone into `stored/` (plain prost, no tonic), for `log::codec`; the services and
//! the request messages of `inventory.proto` are generated into `wire/`, for `grpc::pb`, and
//! refer to the event messages where the log's codec keeps them.

use std::path::PathBuf;

const EVENTS_PROTO: &str = "inventory/v1/events.proto";
const SERVICES_PROTO: &str = "inventory/v1/inventory.proto";

/// Where `log::codec` includes the stored event messages from.
const STORED_MODULE_PATH: &str = "crate::log::codec::pb";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        format!("proto/{EVENTS_PROTO}"),
        format!("proto/{SERVICES_PROTO}"),
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let file_descriptor_set = protox::compile(&protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("inventory_descriptor.bin"),
        prost::Message::encode_to_vec(&file_descriptor_set),
    )?;

    // The stored format: every file but the services' (the events and what they import).
    let mut stored = file_descriptor_set.clone();
    stored
        .file
        .retain(|file| file.name.as_deref() != Some(SERVICES_PROTO));
    let stored_dir = out_dir.join("stored");
    std::fs::create_dir_all(&stored_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .out_dir(&stored_dir)
        .compile_fds(stored)?;

    // The wire: everything, with the event messages taken from the stored format's module
    // instead of generated a second time.
    let event_types: Vec<String> = file_descriptor_set
        .file
        .iter()
        .filter(|file| file.name.as_deref() == Some(EVENTS_PROTO))
        .flat_map(|file| {
            let messages = file.message_type.iter().filter_map(|m| m.name.clone());
            let enums = file.enum_type.iter().filter_map(|e| e.name.clone());
            messages.chain(enums).collect::<Vec<_>>()
        })
        .collect();
    let wire_dir = out_dir.join("wire");
    std::fs::create_dir_all(&wire_dir)?;
    let mut wire = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&wire_dir)
        // prost's encoding with per-call buffers sized for this API's small messages.
        .codec_path("crate::grpc::InventoryCodec");
    for name in &event_types {
        wire = wire.extern_path(
            format!(".inventory.v1.{name}"),
            format!("{STORED_MODULE_PATH}::{name}"),
        );
    }
    wire.compile_fds(file_descriptor_set)?;
    Ok(())
}
