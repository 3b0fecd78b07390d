//! baseline-disk: what one `fdatasync` of a small append costs on the data root's disk, the
//! floor under a command's latency.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Instant;

use super::{Scenario, one_line};
use crate::load::{LatencySummary, LoadResult, Outcome, Tally, Window};
use crate::server_process::DataDir;
use crate::{BenchConfig, BenchError};

/// Bytes per append of the disk baseline, about one small event record.
const DISK_APPEND_BYTES: usize = 128;

/// Appends of [`DISK_APPEND_BYTES`] to a file in the data root, each followed by
/// `fdatasync`, one writer, measured in the bench process itself.
pub async fn run(config: &BenchConfig) -> Result<LoadResult, BenchError> {
    let data_dir = DataDir::create(&config.data_root, Scenario::BaselineDisk.name())?;
    let path = data_dir.path.join("fsync-probe");
    let window = Window::after_warmup(config.warmup, config.duration);
    let file_path = path.clone();
    let tally = tokio::task::spawn_blocking(move || {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file_path)
            .map_err(BenchError::io(format!("creating {}", file_path.display())))?;
        let record = [0x5a_u8; DISK_APPEND_BYTES];
        let mut tally = Tally::new(window);
        while Instant::now() < window.end {
            let sent_at = Instant::now();
            let outcome = match file.write_all(&record).and_then(|()| file.sync_data()) {
                Ok(()) => Outcome::Done,
                Err(error) => Outcome::Failed(error.to_string()),
            };
            tally.record(sent_at, outcome);
        }
        Ok::<Tally, BenchError>(tally)
    })
    .await
    .map_err(|error| BenchError::Invalid(format!("the disk baseline failed: {error}")))??;
    let duration = window.end - window.start;
    let result = LoadResult {
        scenario: Scenario::BaselineDisk.name().to_owned(),
        in_flight: 1,
        connections: 0,
        duration,
        operations: tally.operations,
        refusals: 0,
        failures: tally.failures,
        failure_examples: tally.failure_examples.clone(),
        operations_per_second: tally.operations as f64 / duration.as_secs_f64(),
        lines_per_second: tally.lines as f64 / duration.as_secs_f64(),
        latency_micros: LatencySummary::of(&tally.latencies),
        server_cpu_micros_per_operation: None,
        bench_cpu_micros_per_operation: None,
        machine_busy_percent: None,
        server_rss_bytes: None,
        events_per_fsync: Some(1.0),
        note: Some(format!(
            "write of {DISK_APPEND_BYTES} bytes + fdatasync, in {}",
            config.data_root.display()
        )),
    };
    eprintln!("  {}", one_line(&result));
    Ok(result)
}
