//! Start-up of a server on the embedded log: one pass over the file folds every event into the
//! command side's state and, in combined mode, into the read model.
//!
//! The two folds are independent, so in combined mode the read model folds on a thread of its
//! own while the opening thread reads, decodes and indexes the log and folds the command side:
//! the start-up uses two cores instead of one. The batches are shared (`Arc`), not copied.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use super::command::CommandState;
use super::projection::{ReadModel, ReadModelState};
use super::snapshot::{self, SnapshotPolicy};
use crate::domain::{LogPosition, RecordedEvent, Timestamp};
use crate::log::{EmbeddedLog, LogError, OpenReport};

/// How many batches of replayed events may wait for the read model's thread. Bounded, so a
/// slower read model holds back the reading instead of buffering the log in memory.
pub const REPLAY_QUEUE_BATCHES: usize = 8;

/// Opens (or creates) the embedded log in `directory` and folds it into a new command state,
/// and into `model` if one is given. With `snapshots` enabled, the state starts from the newest
/// usable snapshot and only the events after it are folded. Blocking: call it on a blocking
/// thread.
pub fn open_embedded(
    directory: &Path,
    model: Option<&Arc<ReadModel>>,
    now: Timestamp,
    snapshots: SnapshotPolicy,
) -> Result<(EmbeddedLog, CommandState, OpenReport), LogError> {
    let (mut state, anchor) = match Anchor::load(directory, snapshots) {
        Some((anchor, state, model_state)) => {
            if let Some(model) = model {
                model.restore_state(model_state);
            }
            (state, Some(anchor))
        }
        None => (CommandState::new(), None),
    };
    let after_snapshot = |events| Anchor::after(&anchor, events);
    let Some(model) = model else {
        let (log, mut report) = EmbeddedLog::open_batched(directory, |events| {
            after_snapshot(events)?
                .iter()
                .try_for_each(|event| state.apply(event))
        })?;
        finish(&anchor, &mut report)?;
        state.forget_old_commands(now);
        return Ok((log, state, report));
    };
    let (sender, receiver) = mpsc::sync_channel::<Arc<Vec<RecordedEvent>>>(REPLAY_QUEUE_BATCHES);
    let (opened, model_result) = std::thread::scope(|scope| {
        let model_fold = std::thread::Builder::new()
            .name("replay-read-model".to_owned())
            .spawn_scoped(scope, move || {
                // Keep receiving after a failure, so the sender never blocks on a full queue;
                // the first error is reported once the log is read.
                let mut result = Ok(());
                for events in receiver {
                    if result.is_ok() {
                        result = model.apply_batch(&events);
                    }
                }
                result
            })
            .expect("starting the read model's replay thread");
        let opened = EmbeddedLog::open_batched(directory, |events| {
            let events = after_snapshot(events)?;
            if events.is_empty() {
                return Ok(());
            }
            let events = Arc::new(events);
            sender
                .send(events.clone())
                .expect("the read model's replay thread receives until the sender is dropped");
            events.iter().try_for_each(|event| state.apply(event))
        });
        drop(sender);
        let model_result = model_fold.join().expect("the read model's replay panicked");
        (opened, model_result)
    });
    let (log, mut report) = opened?;
    model_result?;
    finish(&anchor, &mut report)?;
    state.forget_old_commands(now);
    Ok((log, state, report))
}

/// Opens (or creates) a following query server's copy of the log in `directory` and folds it
/// into `model`: from the newest usable snapshot's read model and the events after it, with
/// `snapshots` enabled. Blocking: call it on a blocking thread.
pub fn open_replica(
    directory: &Path,
    model: &ReadModel,
    snapshots: SnapshotPolicy,
) -> Result<(EmbeddedLog, OpenReport), LogError> {
    let anchor = Anchor::load(directory, snapshots).map(|(anchor, _, model_state)| {
        model.restore_state(model_state);
        anchor
    });
    let (log, mut report) = EmbeddedLog::open_batched(directory, |events| {
        model.apply_batch(&Anchor::after(&anchor, events)?)
    })?;
    finish(&anchor, &mut report)?;
    Ok((log, report))
}

/// Where a loaded snapshot stands in the log.
struct Anchor {
    position: LogPosition,
    event_id: u128,
    path: String,
}

impl Anchor {
    /// The newest usable snapshot in `directory` when `snapshots` are enabled: where it
    /// stands, and the states it holds.
    fn load(
        directory: &Path,
        snapshots: SnapshotPolicy,
    ) -> Option<(Anchor, CommandState, ReadModelState)> {
        if !snapshots.enabled() {
            return None;
        }
        let (snapshot, state, model_state) = snapshot::load_newest(directory)?;
        let anchor = Anchor {
            position: snapshot.position,
            event_id: snapshot.event_id,
            path: snapshot.path.display().to_string(),
        };
        Some((anchor, state, model_state))
    }

    /// The events of a replayed batch that a snapshot does not cover: those it covers are read
    /// (the log indexes them) but not folded again, and the one at its position must be the
    /// one it names.
    fn after(
        anchor: &Option<Anchor>,
        events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let Some(anchor) = anchor else {
            return Ok(events);
        };
        if let Some(at) = events.iter().find(|e| e.position == anchor.position) {
            anchor.check(at)?;
        }
        if events
            .last()
            .is_none_or(|last| last.position <= anchor.position)
        {
            return Ok(Vec::new());
        }
        Ok(events
            .into_iter()
            .filter(|event| event.position > anchor.position)
            .collect())
    }

    fn check(&self, event: &RecordedEvent) -> Result<(), LogError> {
        if event.event_id.0 == self.event_id {
            return Ok(());
        }
        Err(LogError::SnapshotMismatch {
            snapshot: self.path.clone(),
            problem: format!("another event is at position {}", self.position.0),
        })
    }
}

/// Checks that the log reaches the snapshot's position, and reports the snapshot.
fn finish(anchor: &Option<Anchor>, report: &mut OpenReport) -> Result<(), LogError> {
    let Some(anchor) = anchor else {
        return Ok(());
    };
    if report.head < anchor.position {
        return Err(LogError::SnapshotMismatch {
            snapshot: anchor.path.clone(),
            problem: format!(
                "the log ends at position {}, before the snapshot's {}",
                report.head.0, anchor.position.0
            ),
        });
    }
    report.snapshot = Some(anchor.position);
    Ok(())
}
