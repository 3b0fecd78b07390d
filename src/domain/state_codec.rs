//! The byte encoding of a fold's state, for snapshots: varints, length-prefixed text, and the
//! [`Encode`] and [`Decode`] traits that each state type implements beside its private fields.
//!
//! Pure (it writes to and reads from memory), so the domain's types can implement it. The
//! encoding is canonical: a state type writes its maps in a fixed order (sorted, or the order
//! that the fold itself fixes), so two equal states encode to the same bytes, which is how
//! `inventory verify` compares a snapshot with a full replay. Whether the bytes are whole is
//! the snapshot file's business (its checksum); a decoder only refuses what cannot be a state
//! (a truncated input, an invalid identifier, an unknown tag), so that a damaged snapshot is
//! skipped instead of loaded.

use std::collections::HashSet;
use std::sync::Arc;

use super::{
    Actor, CommandId, CustomerId, EventKind, LogPosition, OrderId, ProductId, ReservationId,
    StockAlert, StockLevel, StockParts, StoreId, StreamKey, StreamVersion, Timestamp, TransferId,
};
use crate::dense_map::FastHash;

/// Why bytes are not a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(what: impl Into<String>) -> DecodeError {
        DecodeError(what.into())
    }
}

/// Appends a state's bytes.
#[derive(Default)]
pub struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn u64(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.bytes.push(value as u8);
    }

    pub fn i64(&mut self, value: i64) {
        // Zig-zag: small magnitudes of either sign stay short.
        self.u64(((value << 1) ^ (value >> 63)) as u64);
    }

    pub fn u128(&mut self, value: u128) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn bool(&mut self, value: bool) {
        self.bytes.push(u8::from(value));
    }

    pub fn len_of(&mut self, length: usize) {
        self.u64(length as u64);
    }

    pub fn str(&mut self, text: &str) {
        self.len_of(text.len());
        self.bytes.extend_from_slice(text.as_bytes());
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        self.len_of(bytes.len());
        self.bytes.extend_from_slice(bytes);
    }

    pub fn put<T: Encode + ?Sized>(&mut self, value: &T) {
        value.encode(self);
    }

    /// A sequence: its length, then each element.
    pub fn seq<'a, T: Encode + 'a>(&mut self, items: impl ExactSizeIterator<Item = &'a T>) {
        self.len_of(items.len());
        for item in items {
            item.encode(self);
        }
    }
}

/// Reads a state's bytes back. Shares one copy of each product and store id it reads, as the
/// log's index does, so a state loaded from a snapshot holds no more memory than a replayed one.
pub struct Decoder<'a> {
    input: &'a [u8],
    products: HashSet<ProductId, FastHash>,
    stores: HashSet<StoreId, FastHash>,
}

impl<'a> Decoder<'a> {
    pub fn new(input: &'a [u8]) -> Decoder<'a> {
        Decoder {
            input,
            products: HashSet::default(),
            stores: HashSet::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::new(format!(
                "{} bytes left after the state",
                self.input.len()
            )))
        }
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], DecodeError> {
        if self.input.len() < length {
            return Err(DecodeError::new("the state ends early"));
        }
        let (taken, rest) = self.input.split_at(length);
        self.input = rest;
        Ok(taken)
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::new("a number longer than 64 bits"))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.u64()?).map_err(|_| DecodeError::new("a number past 32 bits"))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let zigzag = self.u64()?;
        Ok(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
    }

    pub fn u128(&mut self) -> Result<u128, DecodeError> {
        let bytes = self.take(16)?;
        Ok(u128::from_le_bytes(bytes.try_into().expect("16 bytes")))
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::new(format!("{other} is not a boolean"))),
        }
    }

    /// A length, at most what is left to read (each element takes at least a byte), so a
    /// damaged length cannot make a decoder reserve memory the input does not back.
    pub fn len(&mut self) -> Result<usize, DecodeError> {
        let length = self.u64()?;
        if length > self.input.len() as u64 {
            return Err(DecodeError::new(format!(
                "a length of {length} past the {} bytes left",
                self.input.len()
            )));
        }
        Ok(length as usize)
    }

    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let length = self.len()?;
        std::str::from_utf8(self.take(length)?).map_err(|_| DecodeError::new("text not UTF-8"))
    }

    /// The next `length` bytes, as they are.
    pub fn raw(&mut self, length: usize) -> Result<&'a [u8], DecodeError> {
        self.take(length)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let length = self.len()?;
        self.take(length)
    }

    pub fn get<T: Decode>(&mut self) -> Result<T, DecodeError> {
        T::decode(self)
    }

    pub fn seq<T: Decode>(&mut self) -> Result<Vec<T>, DecodeError> {
        let length = self.len()?;
        (0..length).map(|_| T::decode(self)).collect()
    }
}

/// What a state type writes of itself.
pub trait Encode {
    fn encode(&self, out: &mut Encoder);
}

/// How a state type reads itself back.
pub trait Decode: Sized {
    fn decode(input: &mut Decoder<'_>) -> Result<Self, DecodeError>;
}

impl Encode for u64 {
    fn encode(&self, out: &mut Encoder) {
        out.u64(*self);
    }
}

impl Decode for u64 {
    fn decode(input: &mut Decoder<'_>) -> Result<u64, DecodeError> {
        input.u64()
    }
}

impl Encode for u32 {
    fn encode(&self, out: &mut Encoder) {
        out.u64(u64::from(*self));
    }
}

impl Decode for u32 {
    fn decode(input: &mut Decoder<'_>) -> Result<u32, DecodeError> {
        input.u32()
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, out: &mut Encoder) {
        match self {
            None => out.bool(false),
            Some(value) => {
                out.bool(true);
                value.encode(out);
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(input: &mut Decoder<'_>) -> Result<Option<T>, DecodeError> {
        Ok(if input.bool()? {
            Some(T::decode(input)?)
        } else {
            None
        })
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, out: &mut Encoder) {
        out.seq(self.iter());
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(input: &mut Decoder<'_>) -> Result<Vec<T>, DecodeError> {
        input.seq()
    }
}

impl<A: Encode, B: Encode> Encode for (A, B) {
    fn encode(&self, out: &mut Encoder) {
        self.0.encode(out);
        self.1.encode(out);
    }
}

impl<A: Decode, B: Decode> Decode for (A, B) {
    fn decode(input: &mut Decoder<'_>) -> Result<(A, B), DecodeError> {
        Ok((A::decode(input)?, B::decode(input)?))
    }
}

impl Encode for LogPosition {
    fn encode(&self, out: &mut Encoder) {
        out.u64(self.0);
    }
}

impl Decode for LogPosition {
    fn decode(input: &mut Decoder<'_>) -> Result<LogPosition, DecodeError> {
        input.u64().map(LogPosition)
    }
}

impl Encode for StreamVersion {
    fn encode(&self, out: &mut Encoder) {
        out.u64(self.0);
    }
}

impl Decode for StreamVersion {
    fn decode(input: &mut Decoder<'_>) -> Result<StreamVersion, DecodeError> {
        input.u64().map(StreamVersion)
    }
}

impl Encode for Timestamp {
    fn encode(&self, out: &mut Encoder) {
        out.u64(self.0);
    }
}

impl Decode for Timestamp {
    fn decode(input: &mut Decoder<'_>) -> Result<Timestamp, DecodeError> {
        input.u64().map(Timestamp)
    }
}

/// The identifier newtypes: their text.
macro_rules! identifier_codec {
    ($($name:ident),*) => {$(
        impl Encode for $name {
            fn encode(&self, out: &mut Encoder) {
                out.str(&self.as_str());
            }
        }

        impl Decode for $name {
            fn decode(input: &mut Decoder<'_>) -> Result<$name, DecodeError> {
                let text = input.str()?;
                $name::parse(text)
                    .map_err(|error| DecodeError::new(format!("id {text:?}: {error}")))
            }
        }
    )*};
}

identifier_codec!(CustomerId, OrderId, ReservationId, TransferId, CommandId);

impl Encode for StreamKey {
    fn encode(&self, out: &mut Encoder) {
        out.str(self.product_id.as_str());
        out.str(self.store_id.as_str());
    }
}

impl Decode for StreamKey {
    fn decode(input: &mut Decoder<'_>) -> Result<StreamKey, DecodeError> {
        let product_id = input.get::<ProductId>()?;
        let store_id = input.get::<StoreId>()?;
        Ok(StreamKey::new(product_id, store_id))
    }
}

impl Encode for ProductId {
    fn encode(&self, out: &mut Encoder) {
        out.str(self.as_str());
    }
}

impl Decode for ProductId {
    fn decode(input: &mut Decoder<'_>) -> Result<ProductId, DecodeError> {
        let text = input.str()?;
        if let Some(known) = input.products.get(text) {
            return Ok(known.clone());
        }
        let id = ProductId::parse(text)
            .map_err(|error| DecodeError::new(format!("product id {text:?}: {error}")))?;
        input.products.insert(id.clone());
        Ok(id)
    }
}

impl Encode for StoreId {
    fn encode(&self, out: &mut Encoder) {
        out.str(self.as_str());
    }
}

impl Decode for StoreId {
    fn decode(input: &mut Decoder<'_>) -> Result<StoreId, DecodeError> {
        let text = input.str()?;
        if let Some(known) = input.stores.get(text) {
            return Ok(known.clone());
        }
        let id = StoreId::parse(text)
            .map_err(|error| DecodeError::new(format!("store id {text:?}: {error}")))?;
        input.stores.insert(id.clone());
        Ok(id)
    }
}

impl Encode for Actor {
    fn encode(&self, out: &mut Encoder) {
        out.str(self.as_str());
    }
}

impl Decode for Actor {
    fn decode(input: &mut Decoder<'_>) -> Result<Actor, DecodeError> {
        Ok(Actor::from(input.str()?))
    }
}

impl Encode for Arc<str> {
    fn encode(&self, out: &mut Encoder) {
        out.str(self);
    }
}

impl Decode for Arc<str> {
    fn decode(input: &mut Decoder<'_>) -> Result<Arc<str>, DecodeError> {
        Ok(Arc::from(input.str()?))
    }
}

/// A value of a closed list, as its index in the list.
fn encode_tag<T: PartialEq>(all: &[T], value: &T, out: &mut Encoder) {
    let tag = all
        .iter()
        .position(|candidate| candidate == value)
        .expect("every value is listed");
    out.len_of(tag);
}

fn decode_tag<T: Copy>(all: &[T], what: &str, input: &mut Decoder<'_>) -> Result<T, DecodeError> {
    let tag = input.u64()?;
    all.get(tag as usize)
        .copied()
        .ok_or_else(|| DecodeError::new(format!("{tag} is not a {what}")))
}

impl Encode for EventKind {
    fn encode(&self, out: &mut Encoder) {
        encode_tag(&EventKind::ALL, self, out);
    }
}

impl Decode for EventKind {
    fn decode(input: &mut Decoder<'_>) -> Result<EventKind, DecodeError> {
        decode_tag(&EventKind::ALL, "kind of event", input)
    }
}

const ALERTS: [StockAlert; 4] = [
    StockAlert::StockLow,
    StockAlert::OutOfStock,
    StockAlert::BackInStock,
    StockAlert::StockShort,
];

impl Encode for StockAlert {
    fn encode(&self, out: &mut Encoder) {
        encode_tag(&ALERTS, self, out);
    }
}

impl Decode for StockAlert {
    fn decode(input: &mut Decoder<'_>) -> Result<StockAlert, DecodeError> {
        decode_tag(&ALERTS, "stock alert", input)
    }
}

impl Encode for StockLevel {
    fn encode(&self, out: &mut Encoder) {
        let parts = self.parts();
        for part in [
            parts.on_hand,
            parts.reserved,
            parts.damaged,
            parts.quality_control,
            parts.safety_stock,
            parts.incoming,
            parts.low_stock_threshold,
        ] {
            out.u64(part);
        }
    }
}

impl Decode for StockLevel {
    fn decode(input: &mut Decoder<'_>) -> Result<StockLevel, DecodeError> {
        let mut part = || input.u64();
        let parts = StockParts {
            on_hand: part()?,
            reserved: part()?,
            damaged: part()?,
            quality_control: part()?,
            safety_stock: part()?,
            incoming: part()?,
            low_stock_threshold: part()?,
        };
        StockLevel::from_parts(parts)
            .ok_or_else(|| DecodeError::new("a level has a part past the most on hand"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        let mut out = Encoder::new();
        for value in [0u64, 1, 127, 128, 300, u64::MAX] {
            out.u64(value);
        }
        for value in [0i64, -1, 1, i64::MIN, i64::MAX] {
            out.i64(value);
        }
        let bytes = out.into_bytes();
        let mut input = Decoder::new(&bytes);
        for value in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(input.u64().unwrap(), value);
        }
        for value in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(input.i64().unwrap(), value);
        }
        input.finish().unwrap();
    }

    #[test]
    fn a_length_past_the_input_is_refused() {
        let mut out = Encoder::new();
        out.u64(1_000_000);
        let bytes = out.into_bytes();
        assert!(Decoder::new(&bytes).len().is_err());
    }
}
