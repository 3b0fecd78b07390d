//! The wire codec of the inventory services: prost's encoding with per-call buffers sized for
//! this API's small messages. `build.rs` names it for every generated server and client.

use prost::Message;

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
