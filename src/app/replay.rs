//! Start-up of a server on the embedded log: one pass over the file folds every event into the
//! command side's state and, in combined mode, into the read model.

use std::path::Path;
use std::sync::Arc;

use super::command::CommandState;
use super::projection::ReadModel;
use crate::domain::Timestamp;
use crate::log::{EmbeddedLog, LogError, OpenReport};

/// Opens (or creates) the embedded log in `directory` and folds it into a new command state,
/// and into `model` if one is given. Blocking: call it on a blocking thread.
pub fn open_embedded(
    directory: &Path,
    model: Option<&Arc<ReadModel>>,
    now: Timestamp,
) -> Result<(EmbeddedLog, CommandState, OpenReport), LogError> {
    let mut state = CommandState::new();
    let (log, report) = EmbeddedLog::open(directory, |event| {
        state.apply(event)?;
        if let Some(model) = model {
            model.apply(event)?;
        }
        Ok(())
    })?;
    state.forget_old_commands(now);
    Ok((log, state, report))
}
