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
use super::projection::ReadModel;
use crate::domain::{RecordedEvent, Timestamp};
use crate::log::{EmbeddedLog, LogError, OpenReport};

/// How many batches of replayed events may wait for the read model's thread. Bounded, so a
/// slower read model holds back the reading instead of buffering the log in memory.
pub const REPLAY_QUEUE_BATCHES: usize = 8;

/// Opens (or creates) the embedded log in `directory` and folds it into a new command state,
/// and into `model` if one is given. Blocking: call it on a blocking thread.
pub fn open_embedded(
    directory: &Path,
    model: Option<&Arc<ReadModel>>,
    now: Timestamp,
) -> Result<(EmbeddedLog, CommandState, OpenReport), LogError> {
    let mut state = CommandState::new();
    let Some(model) = model else {
        let (log, report) = EmbeddedLog::open(directory, |event| state.apply(event))?;
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
    let (log, report) = opened?;
    model_result?;
    state.forget_old_commands(now);
    Ok((log, state, report))
}
