//! The append-only event log: the only source of truth. Everything else (the command side's
//! inventory, the read model, subscriptions) is a fold of what the log holds.
//!
//! [`EventLog`] is the seam between the application and a storage engine; [`embedded`] is the
//! default engine, a checksummed file on local disk.

pub mod codec;
pub mod embedded;
pub mod postgres;
pub mod tail;

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

use crate::domain::{
    CommandKey, FoldMismatch, LogPosition, RecordedEvent, StreamKey, StreamVersion,
};

pub use embedded::{EmbeddedLog, OpenReport};
pub use postgres::PostgresLog;
pub use tail::TailCache;

impl LogError {
    /// The error of an event that does not continue a fold (see
    /// [`RecordedEvent::apply_checked`]).
    pub fn fold_mismatch(event: &RecordedEvent, mismatch: FoldMismatch) -> LogError {
        LogError::FoldMismatch {
            position: event.position,
            stream: event.stream.clone(),
            mismatch: Box::new(mismatch),
        }
    }
}

/// A boxed future, so the log trait can be used as `dyn EventLog` and chosen at start-up.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The most events one append may carry, so one write stays bounded in size and time.
pub const MAX_APPEND_EVENTS: usize = 8192;

/// How many of `events` (consecutive, in log order) there are up to the end of the last
/// command they hold whole; `None` when no command ends among them.
pub fn whole_commands_len(events: &[RecordedEvent]) -> Option<usize> {
    events
        .iter()
        .rposition(RecordedEvent::ends_command)
        .map(|last| last + 1)
}

/// Cuts `events` (a page read from a log, in order) after the last event that ends a
/// command, so that appending them elsewhere never stores part of a command. A page holding no
/// command's end is left whole: no sound log ends in the middle of a command, and a command
/// has fewer events than a page.
pub fn keep_whole_commands(events: &mut Vec<RecordedEvent>) {
    if let Some(len) = whole_commands_len(events) {
        events.truncate(len);
    }
}

/// The most events one read returns.
pub const MAX_READ_EVENTS: usize = 4096;

/// Why the log could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log i/o failed while {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The events of an append do not continue the log: its head is not where the writer
    /// expected (another writer appended first). Nothing was written; catch up and retry.
    #[error("the log's head is at {current}, the append expected {expected}")]
    HeadMoved {
        expected: LogPosition,
        current: LogPosition,
    },
    /// The storage engine failed (a lost connection, a failed transaction).
    #[error("the log's database failed while {context}: {message}")]
    Backend {
        context: &'static str,
        message: String,
    },
    /// An event's version does not follow its stream's current version: someone else wrote to
    /// the stream. The append is refused whole.
    #[error("stream {stream} is at version {current}, the event has version {got}")]
    VersionConflict {
        stream: StreamKey,
        current: StreamVersion,
        got: StreamVersion,
    },
    /// Command ids of the append are already in the log, from commands older than the
    /// idempotency window (a shared log keeps every command id unique, per sender, forever).
    /// Nothing was written.
    #[error("command ids already used: {command_ids:?}")]
    CommandIdsTaken { command_ids: Vec<CommandKey> },
    #[error("append of {count} events is over the limit of {MAX_APPEND_EVENTS}")]
    AppendTooLarge { count: usize },
    /// The embedded log's file is damaged or does not make sense at `offset` (bytes from the
    /// start of the file); the log refuses to guess.
    #[error("log is corrupt at byte offset {offset}: {problem}")]
    Corrupt { offset: u64, problem: String },
    /// A snapshot does not belong to this log: the log has no event at its position, or another
    /// event there. Loading it would give a wrong state, so the start stops.
    #[error(
        "snapshot {snapshot} does not match this log: {problem}; move the snapshots folder \
         away to replay the whole log"
    )]
    SnapshotMismatch { snapshot: String, problem: String },
    /// A database log's row does not hold a valid event, or its positions have a gap. The
    /// row is named by its `position` column.
    #[error("the log's database row at position {position} is invalid: {problem}")]
    CorruptRow {
        position: LogPosition,
        problem: String,
    },
    /// An event read from the log does not continue a fold of the events before it: a gap in
    /// positions, a version that does not follow its stream, or recorded stock that the
    /// events do not give.
    #[error("event at position {position} of stream {stream} does not fold: {mismatch}")]
    FoldMismatch {
        position: LogPosition,
        stream: StreamKey,
        /// Boxed: it holds two stock levels, and every `Result` of the log carries its size.
        mismatch: Box<FoldMismatch>,
    },
}

/// The right to append, held while a batch is decided: no other writer can move the log's
/// head until it is used or dropped. Dropping it writes nothing and releases it.
pub trait AppendLock: Send {
    /// The log's head, which cannot move while the lock is held.
    fn head(&self) -> LogPosition;

    /// Appends `events` (positions continuing [`AppendLock::head`]) and releases the lock.
    fn append(
        self: Box<Self>,
        events: Vec<RecordedEvent>,
    ) -> BoxFuture<'static, Result<(), LogError>>;

    /// [`AppendLock::append`] for a caller on a thread that may block (the command writer's
    /// own thread, inside the runtime's context but not on one of its workers). A log that
    /// writes a local file writes it on the calling thread, which saves two thread hand-offs
    /// per append; by default the append future is driven to completion here.
    fn append_blocking(self: Box<Self>, events: Vec<RecordedEvent>) -> Result<(), LogError> {
        tokio::runtime::Handle::current().block_on(self.append(events))
    }
}

/// An append-only, totally ordered log of inventory events.
///
/// Invariants every implementation keeps:
/// - positions are gapless from 1, and an event is readable only once it is durable;
/// - each stream's versions are contiguous from 1;
/// - an append is all or nothing.
pub trait EventLog: Send + Sync + 'static {
    /// Makes `events` durable, all or nothing. Their positions must continue the log
    /// (`head + 1`, `head + 2`, …) and each event's version must be its stream's current
    /// version + 1 (the expected-version check). Returns once the events are durable.
    fn append(&self, events: Vec<RecordedEvent>) -> BoxFuture<'_, Result<(), LogError>>;

    /// Up to `limit` events with positions after `after`, in order.
    fn read_all(
        &self,
        after: LogPosition,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, LogError>>;

    /// Up to `limit` events of one stream with versions after `after`, in order.
    fn read_stream(
        &self,
        stream: StreamKey,
        after: StreamVersion,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, LogError>>;

    /// The position of the last durable event (0 when the log is empty), as this process
    /// last saw it: cheap, and possibly behind other writers of a shared log.
    fn head(&self) -> LogPosition;

    /// Takes the right to append. On a log that several processes write (PostgreSQL) this
    /// waits for the other writers, so a batch decided under the lock is never out of date;
    /// on the embedded log, which one process writes, it is free.
    fn lock(&self) -> BoxFuture<'_, Result<Box<dyn AppendLock>, LogError>>;

    /// The head as the storage knows it right now, asking it if other processes may write
    /// (a shared database). A decision made against state at this head is current.
    fn latest_head(&self) -> BoxFuture<'_, Result<LogPosition, LogError>>;

    /// Follows `head`: wait on it for positions past N.
    fn watch_head(&self) -> watch::Receiver<LogPosition>;

    /// Whether the storage answers, as last seen: `false` while a shared database cannot be
    /// reached (checked at least every [`postgres::HEAD_POLL_INTERVAL`], also while idle). A
    /// local file is always reachable; its errors show on the operations themselves.
    fn reachable(&self) -> watch::Receiver<bool> {
        watch::channel(true).1
    }
}
