//! The embedded log's file format: the header, and records framed as
//! `[payload length: u32][crc32c: u32][payload]` (little-endian), the checksum covering the
//! length bytes and the payload, the payload one stored event (`log::codec`).

use crate::domain::RecordedEvent;
use crate::log::LogError;
use crate::log::MAX_APPEND_EVENTS;
use crate::log::codec::{decode_event, encode_event_into};

pub(super) const HEADER: [u8; 8] = *b"INVLOG\x00\x01";
pub(super) const FRAME_HEADER_LEN: usize = 8;

/// The largest payload of one record. Events are small (ids of at most 128 bytes, reasons of at
/// most 256); a length above this in a frame header means damage, not a big event.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// How much of a damaged tail is searched for a later valid record. One unacknowledged append
/// is at most this long, so a torn write cannot hide a valid record further away.
pub(super) const MAX_TORN_TAIL_BYTES: u64 =
    (MAX_APPEND_EVENTS * (MAX_RECORD_BYTES + FRAME_HEADER_LEN)) as u64;

/// Appends `event`'s frame to `buffer`, encoding the event in place: its header is written
/// once the payload's length and checksum are known.
pub(super) fn push_event_frame(buffer: &mut Vec<u8>, event: &RecordedEvent) {
    let start = buffer.len();
    buffer.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    encode_event_into(event, buffer);
    let payload_len = buffer.len() - start - FRAME_HEADER_LEN;
    assert!(
        payload_len <= MAX_RECORD_BYTES,
        "an event of {payload_len} bytes is over MAX_RECORD_BYTES; validation let it through"
    );
    let length = (payload_len as u32).to_le_bytes();
    let checksum =
        crc32c::crc32c_append(crc32c::crc32c(&length), &buffer[start + FRAME_HEADER_LEN..]);
    buffer[start..start + 4].copy_from_slice(&length);
    buffer[start + 4..start + FRAME_HEADER_LEN].copy_from_slice(&checksum.to_le_bytes());
}

/// Whether a frame's stored checksum (in its header) matches its length and payload.
pub(super) fn checksum_matches(frame_header: &[u8; FRAME_HEADER_LEN], payload: &[u8]) -> bool {
    let stored = u32::from_le_bytes(frame_header[4..8].try_into().expect("4 bytes"));
    crc32c::crc32c_append(crc32c::crc32c(&frame_header[0..4]), payload) == stored
}

/// The payload and whole length of the frame at the start of `bytes`.
pub(super) fn parse_frame(bytes: &[u8]) -> Result<(&[u8], usize), &'static str> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err("frame header cut short");
    }
    let length_bytes: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    let length = u32::from_le_bytes(length_bytes) as usize;
    if length == 0 || length > MAX_RECORD_BYTES {
        return Err("frame length out of range");
    }
    if bytes.len() < FRAME_HEADER_LEN + length {
        return Err("frame payload cut short");
    }
    let stored = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let payload = &bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + length];
    if crc32c::crc32c_append(crc32c::crc32c(&length_bytes), payload) != stored {
        return Err("checksum mismatch");
    }
    Ok((payload, FRAME_HEADER_LEN + length))
}

pub(super) fn decode_checked(payload: &[u8], offset: u64) -> Result<RecordedEvent, LogError> {
    decode_event(payload).map_err(|error| LogError::Corrupt {
        offset,
        problem: error.to_string(),
    })
}
