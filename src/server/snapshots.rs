//! Snapshots of an embedded log's state, taken in the background while a server runs and once
//! more at a clean shutdown (see `app::snapshot`): for a command server's log and for a
//! following query server's copy of it. A database log takes none.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{CommandConfig, LogConfig};
use crate::app::Shutdown;
use crate::app::snapshot::{self, SnapshotPolicy};
use crate::domain::LogPosition;
use crate::log::EventLog;

/// The periodic snapshots of a command server's embedded log; `None` for a database log.
pub(super) fn periodic(
    config: &CommandConfig,
    log: Arc<dyn EventLog>,
    shutdown: Shutdown,
) -> Option<JoinHandle<()>> {
    let LogConfig::Embedded { data_dir } = &config.log else {
        return None;
    };
    every(data_dir, config.snapshots, log, shutdown)
}

/// Takes a snapshot of the log in `data_dir` every `policy.every_events` events, in the
/// background, until `shutdown`; `None` when periodic snapshots are off.
pub(super) fn every(
    data_dir: &Path,
    policy: SnapshotPolicy,
    log: Arc<dyn EventLog>,
    mut shutdown: Shutdown,
) -> Option<JoinHandle<()>> {
    if !policy.enabled() || policy.every_events == 0 {
        return None;
    }
    let data_dir = data_dir.to_owned();
    Some(tokio::spawn(async move {
        let mut last = snapshot::list(&data_dir)
            .first()
            .map_or(LogPosition::START, |(position, _)| *position);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.wait() => return,
            }
            let head = log.head();
            if head.0.saturating_sub(last.0) < policy.every_events {
                continue;
            }
            take(&data_dir, policy, log.clone(), head).await;
            last = head;
        }
    }))
}

/// At a clean shutdown of a command server, once nothing appends any more.
pub(super) async fn at_shutdown(
    config: &CommandConfig,
    periodic: Option<JoinHandle<()>>,
    log: Arc<dyn EventLog>,
) {
    if let LogConfig::Embedded { data_dir } = &config.log {
        finish(data_dir, config.snapshots, periodic, log).await;
    }
}

/// Waits for the periodic snapshots to stop (the shutdown signal stops them; one being written
/// is finished first), then takes one at the head, so the next start folds nothing.
pub(super) async fn finish(
    data_dir: &Path,
    policy: SnapshotPolicy,
    periodic: Option<JoinHandle<()>>,
    log: Arc<dyn EventLog>,
) {
    if let Some(periodic) = periodic {
        let _ = periodic.await;
    }
    if policy.enabled() {
        take(data_dir, policy, log.clone(), log.head()).await;
    }
}

/// Takes a snapshot at `until` on a blocking thread, and says what it did.
async fn take(data_dir: &Path, policy: SnapshotPolicy, log: Arc<dyn EventLog>, until: LogPosition) {
    let directory: PathBuf = data_dir.to_owned();
    let runtime = tokio::runtime::Handle::current();
    let started = std::time::Instant::now();
    let taken = tokio::task::spawn_blocking(move || {
        snapshot::take(
            &directory,
            until,
            policy.keep,
            snapshot::read_through(runtime, log),
        )
    })
    .await
    .expect("taking a snapshot panicked");
    match taken {
        Ok(Some(taken)) => tracing::info!(
            position = taken.position.0,
            folded_from = taken.from.0,
            bytes = taken.bytes,
            seconds = started.elapsed().as_secs_f64(),
            path = %taken.path.display(),
            "snapshot written"
        ),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "a snapshot could not be taken; the log is intact"),
    }
}
