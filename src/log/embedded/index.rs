//! The embedded log's in-memory index: each position's byte offset, and each stream's
//! positions, with one shared copy of every stream key.

use std::collections::HashMap;

use crate::dense_map::{DenseMap, FastHash};
use crate::domain::{LogPosition, ProductId, RecordedEvent, StoreId, StreamKey, StreamVersion};
use crate::log::LogError;

#[derive(Default)]
pub(super) struct Index {
    /// `record_offsets[p - 1]` is where the record at position `p` starts.
    pub(super) record_offsets: Vec<u64>,
    /// The end of the last durable record.
    pub(super) end_offset: u64,
    /// For each stream, the position of each version. A [`DenseMap`] (a table of indices over
    /// a dense vector of entries) takes about half the memory of a `HashMap` at a million
    /// streams; streams are never removed.
    streams: DenseMap<StreamKey, StreamPositions>,
    /// One copy of each product id and store id, shared by every stream key that names it.
    ids: KeyInterner,
}

/// The positions of one stream's events, `positions[v - 1]` for version `v`. Most streams of
/// a large inventory have one or two events, and there is an entry per stream, so those are
/// held inline (the enum is the size of a `Vec`) instead of in an allocation of their own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum StreamPositions {
    One(LogPosition),
    Two(LogPosition, LogPosition),
    Many(Vec<LogPosition>),
}

const _: () = assert!(std::mem::size_of::<StreamPositions>() == std::mem::size_of::<Vec<u64>>());

impl StreamPositions {
    pub(super) fn version(&self) -> StreamVersion {
        StreamVersion(match self {
            StreamPositions::One(_) => 1,
            StreamPositions::Two(..) => 2,
            StreamPositions::Many(positions) => positions.len() as u64,
        })
    }

    pub(super) fn push(&mut self, position: LogPosition) {
        match self {
            StreamPositions::One(first) => *self = StreamPositions::Two(*first, position),
            StreamPositions::Two(first, second) => {
                let mut positions = Vec::with_capacity(4);
                positions.extend([*first, *second, position]);
                *self = StreamPositions::Many(positions);
            }
            StreamPositions::Many(positions) => positions.push(position),
        }
    }
}

/// Shares one copy of each product id and each store id between the stream keys the index
/// holds, and (through the events it canonicalizes before they are folded) the command side's
/// and the read model's maps: a thousand stores hold one copy of a product's id, not a
/// thousand.
#[derive(Default)]
pub(super) struct KeyInterner {
    products: std::collections::HashSet<ProductId, FastHash>,
    stores: std::collections::HashSet<StoreId, FastHash>,
}

impl KeyInterner {
    /// The key of a product id and a store id both seen before (so already checked).
    pub(super) fn known(&self, product_id: &str, store_id: &str) -> Option<StreamKey> {
        Some(StreamKey::new(
            self.products.get(product_id)?.clone(),
            self.stores.get(store_id)?.clone(),
        ))
    }

    pub(super) fn key(&mut self, stream: &StreamKey) -> StreamKey {
        StreamKey::new(
            intern(&mut self.products, &stream.product_id),
            intern(&mut self.stores, &stream.store_id),
        )
    }
}

pub(super) fn intern<T: Clone + Eq + std::hash::Hash>(
    set: &mut std::collections::HashSet<T, FastHash>,
    value: &T,
) -> T {
    if let Some(shared) = set.get(value) {
        return shared.clone();
    }
    set.insert(value.clone());
    value.clone()
}

impl Index {
    /// Whether `events` may be appended: their positions continue the log and each version
    /// continues its stream (the expected-version check), also across the events of the one
    /// append.
    pub(super) fn check_append(&self, events: &[RecordedEvent]) -> Result<(), LogError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        if first.position != self.head().next() {
            return Err(LogError::HeadMoved {
                expected: LogPosition(first.position.0 - 1),
                current: self.head(),
            });
        }
        let mut expected_position = first.position;
        let mut batch_versions: HashMap<&StreamKey, StreamVersion, FastHash> = HashMap::default();
        for event in events {
            assert_eq!(
                event.position, expected_position,
                "the positions of one append are contiguous"
            );
            expected_position = expected_position.next();
            let current = *batch_versions
                .entry(&event.stream)
                .or_insert_with(|| self.stream_version(&event.stream));
            if event.version != current.next() {
                return Err(LogError::VersionConflict {
                    stream: event.stream.clone(),
                    current,
                    got: event.version,
                });
            }
            batch_versions.insert(&event.stream, event.version);
        }
        Ok(())
    }

    pub(super) fn head(&self) -> LogPosition {
        LogPosition(self.record_offsets.len() as u64)
    }

    pub(super) fn stream_version(&self, stream: &StreamKey) -> StreamVersion {
        self.streams
            .get(stream)
            .map_or(StreamVersion::INITIAL, StreamPositions::version)
    }

    /// Records the event at `offset`: its position, and its version in its stream. Returns the
    /// stream's version before the event, and replaces `stream` by the index's own copy of
    /// the key, so that every fold that keeps the key shares that copy.
    pub(super) fn record(
        &mut self,
        stream: &mut StreamKey,
        position: LogPosition,
        offset: u64,
    ) -> StreamVersion {
        self.record_offsets.push(offset);
        match self.streams.get_index_of(stream) {
            Some(index) => {
                let (key, positions) = self.streams.get_index_mut(index).expect("just found");
                *stream = key.clone();
                let before = positions.version();
                positions.push(position);
                before
            }
            None => {
                *stream = self.ids.key(stream);
                self.streams
                    .insert(stream.clone(), StreamPositions::One(position));
                StreamVersion::INITIAL
            }
        }
    }

    /// The positions of one stream's versions after `after`, at most `limit`.
    pub(super) fn positions(
        &self,
        stream: &StreamKey,
        after: StreamVersion,
        limit: usize,
    ) -> Vec<LogPosition> {
        let two;
        let positions: &[LogPosition] = match self.streams.get(stream) {
            None => &[],
            Some(StreamPositions::One(first)) => std::slice::from_ref(first),
            Some(StreamPositions::Two(first, second)) => {
                two = [*first, *second];
                &two
            }
            Some(StreamPositions::Many(positions)) => positions,
        };
        positions
            .iter()
            .skip(after.0 as usize)
            .take(limit)
            .copied()
            .collect()
    }
}
