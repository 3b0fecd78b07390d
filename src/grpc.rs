//! The gRPC adapters: tonic services over the application layer, the conversions from wire
//! requests to domain commands (validated once, here), the one mapping from errors to gRPC
//! status codes, and the follower that copies a command server's log into a query server.
//! Only this layer knows tonic.

pub mod auth;
pub mod budget;
pub mod codec;
pub mod command_service;
pub mod connection_guard;
pub mod convert;
pub mod delivery_service;
pub mod event_service;
pub mod follower;
pub mod observe;
pub mod overload;
pub mod query_service;
pub mod status;
pub mod tls;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use codec::InventoryCodec;

/// The generated services, clients and request messages of `inventory.proto`, with the event
/// messages of the log's stored format (`log::codec::pb`) beside them: one namespace for
/// everything a client sends or receives.
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/wire/inventory.v1.rs"));
    pub use crate::log::codec::pb::*;
}

/// The encoded descriptors of every proto file, for gRPC reflection.
pub use crate::log::codec::FILE_DESCRIPTOR_SET;

/// The future of the servers' tower layers (`observe`, `overload`): a boxed gRPC response.
type ResponseFuture<E> = Pin<
    Box<dyn Future<Output = Result<tonic::codegen::http::Response<tonic::body::Body>, E>> + Send>,
>;

/// The largest request a server decodes. Every valid request is smaller: a multi-line command
/// of `MAX_COMMAND_LINES` lines, each naming an item by two ids of at most 128 bytes, is under
/// 300 KiB; anything bigger is refused before it is parsed.
pub const MAX_REQUEST_BYTES: usize = 512 * 1024;

const _: () =
    assert!(crate::domain::MAX_COMMAND_LINES * (2 * (128 + 3) + 30) + 1024 < MAX_REQUEST_BYTES);

/// The largest response a server encodes (a page of history is the largest).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// How long a query with `min_position` waits when the client set no deadline.
pub const MAX_MIN_POSITION_WAIT: Duration = Duration::from_secs(10);

/// Rewrites tonic's answer to an oversized request (`OUT_OF_RANGE`, "decoded message length
/// too large") into `INVALID_ARGUMENT` with a `BadRequest` naming the request, like every other
/// invalid input. Nothing was decoded, so nothing changed.
pub fn oversized_request_as_invalid_argument(
    response: tonic::codegen::http::Response<tonic::body::Body>,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    let headers = response.headers();
    let is_out_of_range = headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == b"11");
    let is_too_large = headers
        .get("grpc-message")
        .and_then(|message| message.to_str().ok())
        // grpc-message is percent-encoded on the wire.
        .is_some_and(|message| {
            message
                .replace("%20", " ")
                .contains("message length too large")
        });
    if !(is_out_of_range && is_too_large) {
        return response;
    }
    status::invalid_argument(&[status::FieldViolation::new(
        "request",
        format!("the message is over the limit of {MAX_REQUEST_BYTES} bytes"),
    )])
    .into_http()
}

/// The client's deadline from the `grpc-timeout` header, if it sent one.
pub fn request_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}
