//! The embedded event log: one append-only file on local disk.
//!
//! File format (all integers little-endian):
//! - an 8-byte header, `INVLOG` followed by the format version `0x00 0x01`;
//! - then records, each `[payload length: u32][crc32c: u32][payload]`, where the checksum
//!   covers the length bytes and the payload, and the payload is one protobuf
//!   `inventory.v1.InventoryEvent` (the stored-event contract in `proto/`).
//!
//! Durability: an append is one positioned write of all its records followed by one
//! `fdatasync`; only then are the events indexed, made readable and reported durable (group
//! commit: the command side hands over every command decided while the previous sync ran).
//!
//! Recovery: opening replays every record, checking checksums, gapless positions and
//! contiguous stream versions. A damaged record with no valid record after it is a torn tail
//! (a crash mid-write, never acknowledged): it is cut off and reported. A damaged record with a
//! valid record after it is corruption of acknowledged data: opening fails and says where.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::dense_map::DenseMap;
use metrics::{Counter, Gauge};
use tokio::sync::watch;

use super::codec::{EventDecoder, decode_event, encode_event_into};
use super::{BoxFuture, EventLog, LogError, MAX_APPEND_EVENTS};
use crate::domain::{LogPosition, ProductId, RecordedEvent, StoreId, StreamKey, StreamVersion};

/// The file name of the log inside its directory.
pub const LOG_FILE_NAME: &str = "events.log";

const HEADER: [u8; 8] = *b"INVLOG\x00\x01";
const FRAME_HEADER_LEN: usize = 8;

/// The largest payload of one record. Events are small (ids of at most 128 bytes, reasons of at
/// most 256); a length above this in a frame header means damage, not a big event.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// How much of a damaged tail is searched for a later valid record. One unacknowledged append
/// is at most this long, so a torn write cannot hide a valid record further away.
const MAX_TORN_TAIL_BYTES: u64 = (MAX_APPEND_EVENTS * (MAX_RECORD_BYTES + FRAME_HEADER_LEN)) as u64;

/// What opening the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub events: u64,
    pub head: LogPosition,
    /// Bytes of a torn tail that were cut off (0 when the log was whole).
    pub truncated_bytes: u64,
    pub created: bool,
}

/// The default log: a checksummed append-only file. Cloning shares the same log.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The file for reads (positioned reads need no lock).
    reader: File,
    /// False for a read-only handle (tools): appends are refused.
    writable: bool,
    /// The writer side: one append at a time.
    writer: Mutex<Writer>,
    index: RwLock<Index>,
    head: watch::Sender<LogPosition>,
    metrics: LogMetrics,
}

/// The log's Prometheus metrics. The handles are looked up once, when the log opens, so an
/// append only adds to atomics instead of hashing metric names on the hot path. They are
/// no-ops when no recorder is installed (tests, the library used on its own).
struct LogMetrics {
    /// One per successful append: one write and one fdatasync.
    appends: Counter,
    events_appended: Counter,
    head_position: Gauge,
}

impl LogMetrics {
    fn register() -> LogMetrics {
        LogMetrics {
            appends: metrics::counter!("inventory_log_appends_total"),
            events_appended: metrics::counter!("inventory_log_events_appended_total"),
            head_position: metrics::gauge!("inventory_log_head_position"),
        }
    }
}

struct Writer {
    file: File,
    /// Where the next record goes: the end of the last durable record.
    end_offset: u64,
    /// Set when a write or sync failed: the bytes after `end_offset` are unknown, so the next
    /// append first cuts the file back to `end_offset`.
    needs_truncate: bool,
}

#[derive(Default)]
struct Index {
    /// `record_offsets[p - 1]` is where the record at position `p` starts.
    record_offsets: Vec<u64>,
    /// The end of the last durable record.
    end_offset: u64,
    /// For each stream, the position of each version. A [`DenseMap`] (a table of indices over
    /// a dense vector of entries) takes about half the memory of a `HashMap` at a million
    /// streams; streams are never removed.
    streams: DenseMap<StreamKey, StreamPositions>,
    /// One copy of each product id and store id, shared by every stream key that names it.
    ids: KeyInterner,
}

/// The hasher of the index's maps: fast on short string keys, seeded per process.
type FastHash = foldhash::fast::RandomState;

/// The positions of one stream's events, `positions[v - 1]` for version `v`. Most streams of
/// a large inventory have one or two events, and there is an entry per stream, so those are
/// held inline (the enum is the size of a `Vec`) instead of in an allocation of their own.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StreamPositions {
    One(LogPosition),
    Two(LogPosition, LogPosition),
    Many(Vec<LogPosition>),
}

const _: () = assert!(std::mem::size_of::<StreamPositions>() == std::mem::size_of::<Vec<u64>>());

impl StreamPositions {
    fn version(&self) -> StreamVersion {
        StreamVersion(match self {
            StreamPositions::One(_) => 1,
            StreamPositions::Two(..) => 2,
            StreamPositions::Many(positions) => positions.len() as u64,
        })
    }

    fn push(&mut self, position: LogPosition) {
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
struct KeyInterner {
    products: std::collections::HashSet<ProductId, FastHash>,
    stores: std::collections::HashSet<StoreId, FastHash>,
}

impl KeyInterner {
    /// The key of a product id and a store id both seen before (so already checked).
    fn known(&self, product_id: &str, store_id: &str) -> Option<StreamKey> {
        Some(StreamKey::new(
            self.products.get(product_id)?.clone(),
            self.stores.get(store_id)?.clone(),
        ))
    }

    fn key(&mut self, stream: &StreamKey) -> StreamKey {
        StreamKey::new(
            intern(&mut self.products, &stream.product_id),
            intern(&mut self.stores, &stream.store_id),
        )
    }
}

fn intern<T: Clone + Eq + std::hash::Hash>(
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
    fn head(&self) -> LogPosition {
        LogPosition(self.record_offsets.len() as u64)
    }

    fn stream_version(&self, stream: &StreamKey) -> StreamVersion {
        self.streams
            .get(stream)
            .map_or(StreamVersion::INITIAL, StreamPositions::version)
    }

    /// Records the event at `offset`: its position, and its version in its stream. Returns the
    /// stream's version before the event, and replaces `stream` by the index's own copy of
    /// the key, so that every fold that keeps the key shares that copy.
    fn record(
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
    fn positions(
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

fn io_error(context: &'static str) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::Io { context, source }
}

impl EmbeddedLog {
    /// Opens (or creates) the log in `directory`, replaying every event into `visit` in order.
    /// `visit` may refuse an event (for example when its recorded stock does not match the
    /// fold), which stops the opening with that error.
    pub fn open(
        directory: &Path,
        mut visit: impl FnMut(&RecordedEvent) -> Result<(), LogError>,
    ) -> Result<(EmbeddedLog, OpenReport), LogError> {
        EmbeddedLog::open_with(
            directory,
            |events| events.iter().try_for_each(&mut visit),
            true,
        )
    }

    /// [`EmbeddedLog::open`], handing the replayed events over in batches of up to
    /// [`REPLAY_BATCH_EVENTS`], in order, so the caller can pass them to other threads.
    pub fn open_batched(
        directory: &Path,
        visit: impl FnMut(Vec<RecordedEvent>) -> Result<(), LogError>,
    ) -> Result<(EmbeddedLog, OpenReport), LogError> {
        EmbeddedLog::open_with(directory, visit, true)
    }

    /// Opens an existing log for reading only: nothing is created, cut off or appended. A
    /// server may be writing the same file meanwhile; this handle sees what was durable when
    /// it opened.
    pub fn open_read_only(directory: &Path) -> Result<EmbeddedLog, LogError> {
        EmbeddedLog::open_with(directory, |_| Ok(()), false).map(|(log, _)| log)
    }

    fn open_with(
        directory: &Path,
        mut visit: impl FnMut(Vec<RecordedEvent>) -> Result<(), LogError>,
        writable: bool,
    ) -> Result<(EmbeddedLog, OpenReport), LogError> {
        let path = directory.join(LOG_FILE_NAME);
        let mut report = OpenReport::default();
        if writable {
            std::fs::create_dir_all(directory).map_err(io_error("creating the data directory"))?;
            if !path.exists() {
                create_log_file(directory, &path)?;
                report.created = true;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(io_error("opening the log file"))?;
        let mut index = Index::default();
        let end_offset = replay(&file, &mut index, &mut visit, &mut report)?;
        let file_length = file
            .metadata()
            .map_err(io_error("reading the log file's size"))?
            .len();
        if writable && file_length > end_offset {
            report.truncated_bytes = file_length - end_offset;
            file.set_len(end_offset)
                .map_err(io_error("cutting off a torn tail"))?;
            file.sync_all()
                .map_err(io_error("syncing after cutting off a torn tail"))?;
            tracing::warn!(
                path = %path.display(),
                truncated_bytes = report.truncated_bytes,
                head = index.head().0,
                "cut off a torn tail of the log (a write that was never acknowledged)"
            );
        }
        index.end_offset = end_offset;
        report.head = index.head();
        report.events = index.head().0;
        let reader = file
            .try_clone()
            .map_err(io_error("opening the log file for reads"))?;
        let (head, _) = watch::channel(index.head());
        let metrics = LogMetrics::register();
        metrics.head_position.set(index.head().0 as f64);
        let log = EmbeddedLog {
            inner: Arc::new(Inner {
                path,
                reader,
                writable,
                writer: Mutex::new(Writer {
                    file,
                    end_offset,
                    needs_truncate: false,
                }),
                index: RwLock::new(index),
                head,
                metrics,
            }),
        };
        Ok((log, report))
    }

    /// Reads every record of the log in `directory` into `visit` without changing anything:
    /// a torn tail is reported in `truncated_bytes` but not cut off. For tools that inspect a
    /// log (`verify`, `export`), also while a server runs on it.
    pub fn scan(
        directory: &Path,
        mut visit: impl FnMut(&RecordedEvent) -> Result<(), LogError>,
    ) -> Result<OpenReport, LogError> {
        let path = directory.join(LOG_FILE_NAME);
        let file = File::open(&path).map_err(io_error("opening the log file"))?;
        let mut index = Index::default();
        let mut report = OpenReport::default();
        let mut visit = |events: Vec<RecordedEvent>| events.iter().try_for_each(&mut visit);
        let end_offset = replay(&file, &mut index, &mut visit, &mut report)?;
        let file_length = file
            .metadata()
            .map_err(io_error("reading the log file's size"))?
            .len();
        report.truncated_bytes = file_length.saturating_sub(end_offset);
        report.head = index.head();
        Ok(report)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The number of events of one stream (its current version).
    pub fn stream_version(&self, stream: &StreamKey) -> StreamVersion {
        self.inner
            .index
            .read()
            .expect("index lock poisoned")
            .stream_version(stream)
    }

    fn append_blocking(&self, events: &[RecordedEvent]) -> Result<(), LogError> {
        if events.is_empty() {
            return Ok(());
        }
        if events.len() > MAX_APPEND_EVENTS {
            return Err(LogError::AppendTooLarge {
                count: events.len(),
            });
        }
        if !self.inner.writable {
            return Err(LogError::Io {
                context: "appending to a log opened read-only",
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            });
        }
        let mut writer = self.inner.writer.lock().expect("writer lock poisoned");
        if writer.needs_truncate {
            let end_offset = writer.end_offset;
            writer
                .file
                .set_len(end_offset)
                .and_then(|()| writer.file.sync_all())
                .map_err(io_error("cutting off a failed append"))?;
            writer.needs_truncate = false;
        }
        // Check the batch against the log before a byte is written: positions continue the
        // log, versions continue their streams (the expected-version check).
        {
            let index = self.inner.index.read().expect("index lock poisoned");
            let first = events[0].position;
            if first != index.head().next() {
                return Err(LogError::HeadMoved {
                    expected: LogPosition(first.0 - 1),
                    current: index.head(),
                });
            }
            let mut expected_position = first;
            let mut batch_versions: HashMap<&StreamKey, StreamVersion, FastHash> =
                HashMap::default();
            for event in events {
                assert_eq!(
                    event.position, expected_position,
                    "the positions of one append are contiguous"
                );
                expected_position = expected_position.next();
                let current = *batch_versions
                    .entry(&event.stream)
                    .or_insert_with(|| index.stream_version(&event.stream));
                if event.version != current.next() {
                    return Err(LogError::VersionConflict {
                        stream: event.stream.clone(),
                        current,
                        got: event.version,
                    });
                }
                batch_versions.insert(&event.stream, event.version);
            }
        }
        let mut buffer = Vec::with_capacity(events.len() * 160);
        let mut offsets = Vec::with_capacity(events.len());
        for event in events {
            offsets.push(writer.end_offset + buffer.len() as u64);
            push_event_frame(&mut buffer, event);
        }
        let write_offset = writer.end_offset;
        let written = writer
            .file
            .write_all_at(&buffer, write_offset)
            .map_err(io_error("writing events"))
            .and_then(|()| writer.file.sync_data().map_err(io_error("syncing events")));
        if let Err(error) = written {
            // After a failed write or fsync the file's tail is unknown; cut it off before the
            // next append rather than trust it.
            writer.needs_truncate = true;
            return Err(error);
        }
        writer.end_offset += buffer.len() as u64;
        let head = {
            let mut index = self.inner.index.write().expect("index lock poisoned");
            for (event, offset) in events.iter().zip(offsets) {
                let before = index.record(&mut event.stream.clone(), event.position, offset);
                debug_assert_eq!(before.next(), event.version, "checked before writing");
            }
            index.end_offset = writer.end_offset;
            index.head()
        };
        drop(writer);
        let metrics = &self.inner.metrics;
        metrics.appends.increment(1);
        metrics.events_appended.increment(events.len() as u64);
        metrics.head_position.set(head.0 as f64);
        self.inner.head.send_replace(head);
        Ok(())
    }

    fn read_all_blocking(
        &self,
        after: LogPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let (start, end, count) = {
            let index = self.inner.index.read().expect("index lock poisoned");
            let head = index.head();
            if after >= head || limit == 0 {
                return Ok(Vec::new());
            }
            let first = after.0 as usize; // index of position after + 1
            let last_exclusive = (first + limit).min(head.0 as usize);
            let start = index.record_offsets[first];
            let end = index
                .record_offsets
                .get(last_exclusive)
                .copied()
                .unwrap_or(index.end_offset);
            (start, end, last_exclusive - first)
        };
        let mut buffer = vec![0; (end - start) as usize];
        self.inner
            .reader
            .read_exact_at(&mut buffer, start)
            .map_err(io_error("reading events"))?;
        let mut events = Vec::with_capacity(count);
        let mut cursor = 0;
        while cursor < buffer.len() {
            let (payload, frame_len) =
                parse_frame(&buffer[cursor..]).map_err(|problem| LogError::Corrupt {
                    offset: start + cursor as u64,
                    problem: problem.to_owned(),
                })?;
            events.push(decode_checked(payload, start + cursor as u64)?);
            cursor += frame_len;
        }
        let expected_first = after.next();
        assert!(
            events.first().is_none_or(|e| e.position == expected_first),
            "read_all returned a record that is not the one after {after}"
        );
        Ok(events)
    }

    fn read_stream_blocking(
        &self,
        stream: &StreamKey,
        after: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let locations: Vec<(u64, u64)> = {
            let index = self.inner.index.read().expect("index lock poisoned");
            index
                .positions(stream, after, limit)
                .into_iter()
                .map(|position| {
                    let i = (position.0 - 1) as usize;
                    let start = index.record_offsets[i];
                    let end = index
                        .record_offsets
                        .get(i + 1)
                        .copied()
                        .unwrap_or(index.end_offset);
                    (start, end)
                })
                .collect()
        };
        let mut events = Vec::with_capacity(locations.len());
        let mut buffer = Vec::new();
        for (start, end) in locations {
            buffer.resize((end - start) as usize, 0);
            self.inner
                .reader
                .read_exact_at(&mut buffer, start)
                .map_err(io_error("reading a stream"))?;
            let (payload, _) = parse_frame(&buffer).map_err(|problem| LogError::Corrupt {
                offset: start,
                problem: problem.to_owned(),
            })?;
            let event = decode_checked(payload, start)?;
            assert_eq!(
                &event.stream, stream,
                "stream index points at another stream"
            );
            events.push(event);
        }
        Ok(events)
    }
}

impl EventLog for EmbeddedLog {
    fn append(&self, events: Vec<RecordedEvent>) -> BoxFuture<'_, Result<(), LogError>> {
        let log = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || log.append_blocking(&events))
                .await
                .expect("append task panicked")
        })
    }

    fn read_all(
        &self,
        after: LogPosition,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, LogError>> {
        let log = self.clone();
        let limit = limit.min(super::MAX_READ_EVENTS);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || log.read_all_blocking(after, limit))
                .await
                .expect("read task panicked")
        })
    }

    fn read_stream(
        &self,
        stream: StreamKey,
        after: StreamVersion,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, LogError>> {
        let log = self.clone();
        let limit = limit.min(super::MAX_READ_EVENTS);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || log.read_stream_blocking(&stream, after, limit))
                .await
                .expect("read task panicked")
        })
    }

    fn head(&self) -> LogPosition {
        *self.inner.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<LogPosition> {
        self.inner.head.subscribe()
    }

    fn lock(&self) -> BoxFuture<'_, Result<Box<dyn super::AppendLock>, LogError>> {
        let lock: Box<dyn super::AppendLock> = Box::new(EmbeddedAppendLock {
            log: self.clone(),
            head: self.head(),
        });
        Box::pin(async move { Ok(lock) })
    }

    fn latest_head(&self) -> BoxFuture<'_, Result<LogPosition, LogError>> {
        // One process writes the file: what it knows is the latest.
        let head = self.head();
        Box::pin(async move { Ok(head) })
    }
}

fn create_log_file(directory: &Path, path: &Path) -> Result<(), LogError> {
    // Write the header to a temporary name and rename it into place, so a crash never leaves
    // a log file without its header.
    let temporary = directory.join(format!("{LOG_FILE_NAME}.new"));
    let file = File::create(&temporary).map_err(io_error("creating the log file"))?;
    file.write_all_at(&HEADER, 0)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing the log header"))?;
    std::fs::rename(&temporary, path).map_err(io_error("renaming the new log file"))?;
    File::open(directory)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("syncing the data directory"))?;
    Ok(())
}

/// Appends `event`'s frame to `buffer`, encoding the event in place: its header is written
/// once the payload's length and checksum are known.
fn push_event_frame(buffer: &mut Vec<u8>, event: &RecordedEvent) {
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
fn checksum_matches(frame_header: &[u8; FRAME_HEADER_LEN], payload: &[u8]) -> bool {
    let stored = u32::from_le_bytes(frame_header[4..8].try_into().expect("4 bytes"));
    crc32c::crc32c_append(crc32c::crc32c(&frame_header[0..4]), payload) == stored
}

/// The payload and whole length of the frame at the start of `bytes`.
fn parse_frame(bytes: &[u8]) -> Result<(&[u8], usize), &'static str> {
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

fn decode_checked(payload: &[u8], offset: u64) -> Result<RecordedEvent, LogError> {
    decode_event(payload).map_err(|error| LogError::Corrupt {
        offset,
        problem: error.to_string(),
    })
}

/// How many replayed events are handed to the visitor at once.
pub const REPLAY_BATCH_EVENTS: usize = 1024;

/// How many decoded batches may wait for the indexing thread during a replay.
const REPLAY_QUEUE_BATCHES: usize = 8;

/// Events decoded from consecutive records, and where each record starts.
struct DecodedBatch {
    offsets: Vec<u64>,
    events: Vec<RecordedEvent>,
}

impl DecodedBatch {
    fn new() -> DecodedBatch {
        DecodedBatch {
            offsets: Vec::with_capacity(REPLAY_BATCH_EVENTS),
            events: Vec::with_capacity(REPLAY_BATCH_EVENTS),
        }
    }
}

/// Reads every record from the start, indexing and visiting each (in batches of up to
/// [`REPLAY_BATCH_EVENTS`], in order); returns the offset just past the last whole record.
/// Stops with an error on corruption that is not a torn tail; the first problem in log order
/// is the one reported.
///
/// Reading the records, checking their checksums and decoding them (most of a replay's work)
/// runs on a thread of its own, ahead of this one, which checks positions and versions,
/// indexes and visits. That thread also keeps one copy of each product and store id, so
/// the ids of a stream seen before are neither parsed nor allocated again (and allocations
/// made on one thread are not all freed on the other, which is slow with glibc's arenas).
fn replay(
    file: &File,
    index: &mut Index,
    visit: &mut impl FnMut(Vec<RecordedEvent>) -> Result<(), LogError>,
    report: &mut OpenReport,
) -> Result<u64, LogError> {
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel(REPLAY_QUEUE_BATCHES);
        let decoder = std::thread::Builder::new()
            .name("replay-decode".to_owned())
            .spawn_scoped(scope, move || decode_records(file, &sender))
            .map_err(io_error("starting the replay's decoding thread"))?;
        for batch in receiver {
            // An error here drops the receiver, which stops the decoding thread.
            index_and_visit(batch, index, visit, report)?;
        }
        decoder
            .join()
            .expect("the replay's decoding thread panicked")
    })
}

/// Checks each event's position and version, indexes it and hands the batch to `visit`.
fn index_and_visit(
    batch: DecodedBatch,
    index: &mut Index,
    visit: &mut impl FnMut(Vec<RecordedEvent>) -> Result<(), LogError>,
    report: &mut OpenReport,
) -> Result<(), LogError> {
    let DecodedBatch {
        offsets,
        mut events,
    } = batch;
    let mut problem = None;
    for (at, (event, &offset)) in events.iter_mut().zip(&offsets).enumerate() {
        if let Err(error) = index_event(event, offset, index) {
            problem = Some((at, error));
            break;
        }
    }
    // The events before a problem are visited first: a refusal among them comes first in
    // the log.
    events.truncate(problem.as_ref().map_or(events.len(), |(at, _)| *at));
    report.events += events.len() as u64;
    if !events.is_empty() {
        visit(events)?;
    }
    match problem {
        Some((_, error)) => Err(error),
        None => Ok(()),
    }
}

fn index_event(event: &mut RecordedEvent, offset: u64, index: &mut Index) -> Result<(), LogError> {
    let expected_position = index.head().next();
    if event.position != expected_position {
        return Err(LogError::Corrupt {
            offset,
            problem: format!(
                "position {} where {expected_position} was expected",
                event.position
            ),
        });
    }
    // Indexing also gives the event the index's copy of its stream key, which the folds
    // keep. If the version is wrong the open fails, so the index entry does not matter.
    let expected_version = index
        .record(&mut event.stream, event.position, offset)
        .next();
    if event.version != expected_version {
        return Err(LogError::Corrupt {
            offset,
            problem: format!(
                "stream {} has version {} where {expected_version} was expected",
                event.stream, event.version
            ),
        });
    }
    Ok(())
}

/// Reads, checks and decodes every record from the start, sending them in batches; returns
/// the offset just past the last whole record, or the first damage that is not a torn tail.
/// Stops early, without error, when the receiver is gone.
fn decode_records(
    file: &File,
    sender: &std::sync::mpsc::SyncSender<DecodedBatch>,
) -> Result<u64, LogError> {
    let mut batch = DecodedBatch::new();
    let mut records = 0u64;
    let mut ids = KeyInterner::default();
    let send = |batch: DecodedBatch| sender.send(batch).is_ok();
    let file_length = file
        .metadata()
        .map_err(io_error("reading the log file's size"))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; 8];
    reader
        .read_exact(&mut header)
        .map_err(|_| LogError::Corrupt {
            offset: 0,
            problem: "file is shorter than its header".to_owned(),
        })?;
    if header != HEADER {
        return Err(LogError::Corrupt {
            offset: 0,
            problem: format!("not an inventory log (header {header:?})"),
        });
    }
    let mut offset = HEADER.len() as u64;
    let mut frame_header = [0u8; FRAME_HEADER_LEN];
    let mut payload = Vec::with_capacity(MAX_RECORD_BYTES);
    let mut decoder = EventDecoder::default();
    loop {
        if offset == file_length {
            break;
        }
        // The records before a damaged one are sent first: a problem among them comes first.
        let damaged = |problem: &str, batch: DecodedBatch| -> Result<u64, LogError> {
            if !send(batch) {
                return Ok(offset);
            }
            check_torn_tail(file, offset, file_length, LogPosition(records), problem)?;
            Ok(offset)
        };
        if file_length - offset < FRAME_HEADER_LEN as u64 {
            return damaged("frame header cut short", batch);
        }
        reader
            .read_exact(&mut frame_header)
            .map_err(io_error("reading the log"))?;
        let length = u32::from_le_bytes(frame_header[0..4].try_into().expect("4 bytes")) as usize;
        if length == 0 || length > MAX_RECORD_BYTES {
            return damaged("frame length out of range", batch);
        }
        if file_length - offset - (FRAME_HEADER_LEN as u64) < length as u64 {
            return damaged("frame payload cut short", batch);
        }
        payload.resize(length, 0);
        reader
            .read_exact(&mut payload)
            .map_err(io_error("reading the log"))?;
        if !checksum_matches(&frame_header, &payload) {
            return damaged("checksum mismatch", batch);
        }
        let mut known = true;
        let decoded = decoder.decode(&payload, |product_id, store_id| {
            let stream = ids.known(product_id, store_id);
            known = stream.is_some();
            stream
        });
        let mut event = match decoded {
            Ok(event) => event,
            Err(error) => {
                send(batch);
                return Err(LogError::Corrupt {
                    offset,
                    problem: error.to_string(),
                });
            }
        };
        if !known {
            event.stream = ids.key(&event.stream);
        }
        batch.offsets.push(offset);
        batch.events.push(event);
        records += 1;
        if batch.events.len() == REPLAY_BATCH_EVENTS
            && !send(std::mem::replace(&mut batch, DecodedBatch::new()))
        {
            return Ok(offset);
        }
        offset += (FRAME_HEADER_LEN + length) as u64;
    }
    send(batch);
    Ok(offset)
}

/// A damaged record at `offset`: a torn tail if no valid record follows it, else corruption.
fn check_torn_tail(
    file: &File,
    offset: u64,
    file_length: u64,
    head: LogPosition,
    problem: &str,
) -> Result<(), LogError> {
    let tail_length = file_length - offset;
    let corrupt = |detail: String| LogError::Corrupt {
        offset,
        problem: format!("{problem} after position {head}; {detail}"),
    };
    if tail_length > MAX_TORN_TAIL_BYTES {
        return Err(corrupt(format!(
            "{tail_length} bytes follow, more than one append can leave behind"
        )));
    }
    let mut tail = vec![0; tail_length as usize];
    file.read_exact_at(&mut tail, offset)
        .map_err(io_error("reading the log's tail"))?;
    for start in 1..tail.len() {
        if let Ok((payload, _)) = parse_frame(&tail[start..])
            && decode_event(payload).is_ok()
        {
            return Err(corrupt(format!(
                "a valid record follows at byte offset {}",
                offset + start as u64
            )));
        }
    }
    Ok(())
}

/// The embedded log has one writer (the command side of its process), so its lock is only the
/// head it saw; the append still checks the head.
struct EmbeddedAppendLock {
    log: EmbeddedLog,
    head: LogPosition,
}

impl super::AppendLock for EmbeddedAppendLock {
    fn head(&self) -> LogPosition {
        self.head
    }

    fn append(
        self: Box<Self>,
        events: Vec<RecordedEvent>,
    ) -> BoxFuture<'static, Result<(), LogError>> {
        Box::pin(async move { EventLog::append(&self.log, events).await })
    }

    fn append_blocking(self: Box<Self>, events: Vec<RecordedEvent>) -> Result<(), LogError> {
        self.log.append_blocking(&events)
    }
}
