//! Physical counts: what a count of the past needs before the writer can decide it, the
//! on-hand of each counted item at `counted_at`, read from the log.
//!
//! Why here and not in the writer: finding it reads the log (a few positioned reads per
//! item), which the one writer thread must not wait for. It is safe to read first and decide
//! later: the answer is a fact about events at or before `counted_at`, which is in the past,
//! and every event appended after the read occurs later still (the writer stamps events with
//! its clock), so it is one of the "recorded after `counted_at`" that the count keeps.

use super::{CommandError, CommandKind, StockChanges};
use crate::domain::{
    Command, CountLine, EventKind, Reason, RecordCount, RecordedEvent, StreamKey, StreamVersion,
    Timestamp,
};
use crate::log::{EventLog, LogError};

/// How far back a count may be dated: the history a count's reference is read from.
pub const MAX_COUNT_AGE_MILLIS: u64 = 7 * 24 * 60 * 60 * 1000;

/// A physical count, as a client sends it: each item's counted units and when they were
/// counted (`None`: now). It becomes a [`RecordCount`] once each line's reference on-hand is
/// read from the log.
#[derive(Clone, Debug)]
pub struct CountSheet {
    pub lines: Vec<(StreamKey, u64)>,
    pub counted_at: Option<Timestamp>,
    pub reason: Reason,
}

/// What an accepted count returns: the items after it, and each line's reference and variance.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CountRecorded {
    pub changes: StockChanges,
    /// Per line, in order: the on-hand the log said at `counted_at`, and `counted` minus it.
    pub references: Vec<(u64, i64)>,
}

impl CommandKind for RecordCount {
    type Outcome = CountRecorded;

    fn into_command(self) -> (Command, bool) {
        (self.into(), false)
    }

    fn lines(&self) -> usize {
        crate::domain::Decide::lines(self)
    }

    fn outcome(answer: super::Accepted) -> Option<CountRecorded> {
        (answer.kind == EventKind::StockCounted).then_some(CountRecorded {
            changes: StockChanges {
                changes: answer.changes,
            },
            references: answer.counts,
        })
    }
}

/// Why a count's time is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum CountedAtError {
    #[error("is in the future: {counted_at_millis} ms since the epoch, now {now_millis}")]
    InTheFuture {
        counted_at_millis: u64,
        now_millis: u64,
    },
    #[error(
        "is more than {} days ago: a count is read against at most that much history",
        MAX_COUNT_AGE_MILLIS / (24 * 60 * 60 * 1000)
    )]
    TooOld,
}

/// Checks `counted_at` against `now` and reads each line's on-hand at that time from `log`.
pub(super) async fn resolve(
    count: CountSheet,
    now: Timestamp,
    log: &dyn EventLog,
) -> Result<RecordCount, CommandError> {
    let CountSheet {
        lines,
        counted_at,
        reason,
    } = count;
    if let Some(counted_at) = counted_at {
        if counted_at > now {
            return Err(CommandError::CountedAt(CountedAtError::InTheFuture {
                counted_at_millis: counted_at.unix_millis(),
                now_millis: now.unix_millis(),
            }));
        }
        if now.unix_millis() - counted_at.unix_millis() > MAX_COUNT_AGE_MILLIS {
            return Err(CommandError::CountedAt(CountedAtError::TooOld));
        }
    }
    let mut resolved = Vec::with_capacity(lines.len());
    for (stream, counted) in lines {
        let on_hand_at_count = match counted_at {
            None => None,
            Some(counted_at) => Some(on_hand_at(log, &stream, counted_at).await.map_err(
                |error| {
                    tracing::warn!(%error, %stream, "a count's reference could not be read");
                    CommandError::LogUnavailable(error.to_string())
                },
            )?),
        };
        resolved.push(CountLine {
            stream,
            counted,
            on_hand_at_count,
        });
    }
    Ok(RecordCount {
        lines: resolved,
        counted_at,
        reason,
    })
}

/// The item's on-hand after its last event that occurred at or before `time` (0 when there is
/// none), found by galloping then bisecting over its versions: one read of one event per
/// probe, about 2·log₂(versions) of them. An item's events occur in version order (one writer
/// stamps them with its clock).
async fn on_hand_at(
    log: &dyn EventLog,
    stream: &StreamKey,
    time: Timestamp,
) -> Result<u64, LogError> {
    let probe = async |version: u64| -> Result<Option<RecordedEvent>, LogError> {
        let mut events = log
            .read_stream(stream.clone(), StreamVersion(version - 1), 1)
            .await?;
        Ok(events.pop().filter(|event| event.occurred_at <= time))
    };
    // `low`: a version known to be at or before `time` (0: before the first event), with its
    // event; `high`: one known to be after it or missing.
    let mut low: (u64, Option<RecordedEvent>) = (0, None);
    let mut step = 1u64;
    let mut high = loop {
        let version = low.0.saturating_add(step);
        match probe(version).await? {
            Some(event) => {
                low = (version, Some(event));
                step = step.saturating_mul(2);
            }
            None => break version,
        }
    };
    while high - low.0 > 1 {
        let middle = low.0 + (high - low.0) / 2;
        match probe(middle).await? {
            Some(event) => low = (middle, Some(event)),
            None => high = middle,
        }
    }
    Ok(low.1.map_or(0, |event| event.stock_after.on_hand()))
}
