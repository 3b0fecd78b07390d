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

mod format;
mod index;
mod replay;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use metrics::{Counter, Gauge};
use tokio::sync::watch;

use super::{BoxFuture, EventLog, LogError, MAX_APPEND_EVENTS};
use crate::domain::{LogPosition, RecordedEvent, StreamKey, StreamVersion};
use format::{HEADER, decode_checked, parse_frame, push_event_frame};
use index::Index;

pub use format::MAX_RECORD_BYTES;
pub use replay::REPLAY_BATCH_EVENTS;

/// The file name of the log inside its directory.
pub const LOG_FILE_NAME: &str = "events.log";

/// What opening the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub events: u64,
    pub head: LogPosition,
    /// Bytes of a torn tail that were cut off (0 when the log was whole).
    pub truncated_bytes: u64,
    pub created: bool,
    /// The position of the snapshot the state was loaded from, when one was: only the events
    /// after it were folded.
    pub snapshot: Option<LogPosition>,
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
pub(super) fn io_error(context: &'static str) -> impl FnOnce(std::io::Error) -> LogError {
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
            create_private_directory(directory).map_err(io_error("creating the data directory"))?;
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
        let end_offset = replay::replay(&file, &mut index, &mut visit, &mut report)?;
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
        let end_offset = replay::replay(&file, &mut index, &mut visit, &mut report)?;
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
        // Check the batch against the log before a byte is written.
        self.inner
            .index
            .read()
            .expect("index lock poisoned")
            .check_append(events)?;
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

/// Who may read the data directory and the files the server writes: only the user it runs as
/// (0700 and 0600). The log holds every event of every store, its customers' ids and the
/// actors; a directory that exists already keeps its mode (an operator's choice).
pub const PRIVATE_DIRECTORY_MODE: u32 = 0o700;
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `directory` and any missing parent, each readable by its owner only.
pub fn create_private_directory(directory: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIRECTORY_MODE)
        .create(directory)
}

/// Creates (or truncates) the file at `path`, readable and writable by its owner only.
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
}

fn create_log_file(directory: &Path, path: &Path) -> Result<(), LogError> {
    // Write the header to a temporary name and rename it into place, so a crash never leaves
    // a log file without its header.
    let temporary = directory.join(format!("{LOG_FILE_NAME}.new"));
    let file = create_private_file(&temporary).map_err(io_error("creating the log file"))?;
    file.write_all_at(&HEADER, 0)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing the log header"))?;
    std::fs::rename(&temporary, path).map_err(io_error("renaming the new log file"))?;
    File::open(directory)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("syncing the data directory"))?;
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
