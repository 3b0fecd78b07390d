//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so a fresh machine needs no
//! system `protoc`. The encoded descriptor set is written beside the generated code for
//! gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/inventory/v1/events.proto",
        "proto/inventory/v1/inventory.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let file_descriptor_set = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("inventory_descriptor.bin"),
        prost::Message::encode_to_vec(&file_descriptor_set),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // prost's encoding with per-call buffers sized for this API's small messages.
        .codec_path("crate::proto::InventoryCodec")
        .compile_fds(file_descriptor_set)?;
    Ok(())
}
