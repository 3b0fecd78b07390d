//! Closed-loop load: a fixed number of requests in flight, spread over a few HTTP/2
//! connections, each worker sending its next request as soon as its last one is answered.
//! Latencies go into HdrHistograms; only requests answered inside the measured window (after
//! the warm-up) count.
//!
//! Over 600 lines: the closed-loop workers, their histograms and the bulk loads, which the
//! scenarios all share.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::server_process::BenchChannel as Channel;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tonic_types::StatusExt;

use crate::BenchError;
use crate::pb;
use crate::pb::command_service_client::CommandServiceClient;
use crate::server_process::{ServerProbe, ServerSnapshot, connect};

/// The longest latency the histograms hold; slower answers are recorded as this.
const LATENCY_MICROS_MAX: u64 = 60_000_000;

/// Significant decimal digits of the histograms (0.1 % resolution).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// At most this many distinct failure messages are kept per run, to show what went wrong
/// without keeping one per failed request.
const FAILURE_EXAMPLES_MAX: usize = 5;

/// How a level of requests in flight is spread: over ⌊√level⌋ connections, so 1, 16, 64 and
/// 256 in flight are 1×1, 4×4, 8×8 and 16×16 (connections × requests per connection).
pub fn connections_for_level(level: usize) -> usize {
    level.isqrt().max(1)
}

/// An empty latency histogram in microseconds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// When the measured window starts and ends.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn after_warmup(warmup: Duration, duration: Duration) -> Window {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + duration,
        }
    }

    pub fn contains(&self, instant: Instant) -> bool {
        instant >= self.start && instant < self.end
    }
}

/// One worker's count of what happened inside the window.
pub struct Tally {
    window: Window,
    pub latencies: Histogram<u64>,
    pub operations: u64,
    /// Lines of the operations done (a 5-line cart's reservation is 5; a one-item command 1).
    pub lines: u64,
    /// Expected refusals (not enough stock): counted, not failures.
    pub refusals: u64,
    pub failures: u64,
    pub failure_examples: Vec<String>,
}

impl Tally {
    pub fn new(window: Window) -> Tally {
        Tally {
            window,
            latencies: latency_histogram(),
            operations: 0,
            lines: 0,
            refusals: 0,
            failures: 0,
            failure_examples: Vec::new(),
        }
    }

    pub fn window(&self) -> Window {
        self.window
    }

    /// Records one answered request that was sent at `sent_at`, if it was answered inside the
    /// window.
    pub fn record(&mut self, sent_at: Instant, outcome: Outcome) {
        self.record_lines(sent_at, outcome, 1);
    }

    /// Records one answered request of `lines` lines (each line of a done request counts).
    pub fn record_lines(&mut self, sent_at: Instant, outcome: Outcome, lines: u64) {
        let answered_at = Instant::now();
        if !self.window.contains(answered_at) {
            return;
        }
        let micros = u64::try_from((answered_at - sent_at).as_micros()).unwrap_or(u64::MAX);
        self.latencies.saturating_record(micros.max(1));
        match outcome {
            Outcome::Done => {
                self.operations += 1;
                self.lines += lines;
            }
            Outcome::Refused => {
                self.operations += 1;
                self.refusals += 1;
            }
            Outcome::Failed(message) => {
                self.failures += 1;
                if self.failure_examples.len() < FAILURE_EXAMPLES_MAX
                    && !self.failure_examples.contains(&message)
                {
                    self.failure_examples.push(message);
                }
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latencies.add(&other.latencies);
        self.operations += other.operations;
        self.lines += other.lines;
        self.refusals += other.refusals;
        self.failures += other.failures;
        for message in other.failure_examples {
            if self.failure_examples.len() < FAILURE_EXAMPLES_MAX
                && !self.failure_examples.contains(&message)
            {
                self.failure_examples.push(message);
            }
        }
    }
}

/// How one request ended.
pub enum Outcome {
    Done,
    /// `FAILED_PRECONDITION` with reason `INSUFFICIENT_STOCK`: the service said no, correctly.
    Refused,
    Failed(String),
}

/// Sorts an error status into an expected refusal or a failure.
pub fn classify(status: &tonic::Status) -> Outcome {
    let insufficient_stock = status.code() == tonic::Code::FailedPrecondition
        && status
            .get_details_error_info()
            .is_some_and(|info| info.reason == "INSUFFICIENT_STOCK");
    if insufficient_stock {
        Outcome::Refused
    } else {
        Outcome::Failed(format!("{:?}: {}", status.code(), status.message()))
    }
}

/// One worker's loop body: sends one or more requests and records each in the tally.
pub trait Operation: Send + 'static {
    fn run_once(&mut self, tally: &mut Tally) -> impl Future<Output = ()> + Send;
}

/// What one scenario at one level measured.
#[derive(Clone, Debug)]
pub struct LoadResult {
    pub scenario: String,
    pub in_flight: usize,
    pub connections: usize,
    pub duration: Duration,
    pub operations: u64,
    pub refusals: u64,
    pub failures: u64,
    pub failure_examples: Vec<String>,
    pub operations_per_second: f64,
    /// Lines done per second: a multi-line command counts each of its lines.
    pub lines_per_second: f64,
    pub latency_micros: LatencySummary,
    pub server_cpu_micros_per_operation: Option<f64>,
    /// The load generator's own CPU time (this process, user + system) per operation: it
    /// shares the machine with the server, so its cost is part of every throughput figure.
    pub bench_cpu_micros_per_operation: Option<f64>,
    /// How busy the machine's CPUs were during the window (all processes, all CPUs), in %.
    pub machine_busy_percent: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    pub events_per_fsync: Option<f64>,
    /// Anything worth knowing to read the row (for example the disk baseline's file).
    pub note: Option<String>,
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencySummary {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
    pub samples: u64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: histogram.value_at_quantile(0.50),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
            samples: histogram.len(),
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "p50": self.p50,
            "p99": self.p99,
            "p99_9": self.p999,
            "max": self.max,
            "mean": self.mean,
            "samples": self.samples,
        })
    }
}

impl LoadResult {
    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "in_flight": self.in_flight,
            "connections": self.connections,
            "duration_seconds": self.duration.as_secs_f64(),
            "operations": self.operations,
            "refusals": self.refusals,
            "failures": self.failures,
            "failure_examples": self.failure_examples,
            "operations_per_second": self.operations_per_second,
            "lines_per_second": self.lines_per_second,
            "latency_micros": self.latency_micros.to_json(),
            "server_cpu_micros_per_operation": self.server_cpu_micros_per_operation,
            "bench_cpu_micros_per_operation": self.bench_cpu_micros_per_operation,
            "machine_busy_percent": self.machine_busy_percent,
            "server_rss_bytes": self.server_rss_bytes,
            "events_per_fsync": self.events_per_fsync,
            "note": self.note,
        })
    }
}

/// The server-side figures between two snapshots.
pub struct ServerDelta {
    pub cpu_micros: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub events_per_fsync: Option<f64>,
}

impl ServerDelta {
    pub fn between(before: &ServerSnapshot, after: &ServerSnapshot) -> ServerDelta {
        let cpu_micros = before
            .cpu_ticks
            .zip(after.cpu_ticks)
            .map(|(before, after)| crate::machine::ticks_to_micros(before, after));
        let events_per_fsync = match (
            before.log_appends.zip(after.log_appends),
            before.log_events.zip(after.log_events),
        ) {
            (Some((appends_before, appends_after)), Some((events_before, events_after)))
                if appends_after > appends_before =>
            {
                Some((events_after - events_before) / (appends_after - appends_before))
            }
            _ => None,
        };
        ServerDelta {
            cpu_micros,
            rss_bytes: after.rss_bytes,
            events_per_fsync,
        }
    }
}

/// Runs `operations` (one worker each) through the warm-up and the measured window, reading
/// the server's figures at both ends of the window.
pub async fn drive<O: Operation>(
    scenario: &str,
    operations: Vec<O>,
    connections: usize,
    window: Window,
    probe: ServerProbe,
) -> Result<LoadResult, BenchError> {
    let in_flight = operations.len();
    let workers: Vec<_> = operations
        .into_iter()
        .map(|mut operation| {
            tokio::spawn(async move {
                let mut tally = Tally::new(window);
                while Instant::now() < window.end {
                    operation.run_once(&mut tally).await;
                }
                tally
            })
        })
        .collect();
    tokio::time::sleep_until(window.start.into()).await;
    let before = probe.snapshot().await?;
    let bench = BenchSnapshot::now();
    tokio::time::sleep_until(window.end.into()).await;
    let bench = bench.until_now();
    let after = probe.snapshot().await?;
    let mut total = Tally::new(window);
    for worker in workers {
        let tally = worker
            .await
            .map_err(|error| BenchError::Invalid(format!("a load worker failed: {error}")))?;
        total.merge(tally);
    }
    let duration = window.end - window.start;
    let delta = ServerDelta::between(&before, &after);
    let answered = total.operations + total.failures;
    let per_operation = |micros: Option<f64>| {
        micros
            .filter(|_| answered > 0)
            .map(|micros| micros / answered as f64)
    };
    Ok(LoadResult {
        scenario: scenario.to_owned(),
        in_flight,
        connections,
        duration,
        operations: total.operations,
        refusals: total.refusals,
        failures: total.failures,
        failure_examples: total.failure_examples,
        operations_per_second: total.operations as f64 / duration.as_secs_f64(),
        lines_per_second: total.lines as f64 / duration.as_secs_f64(),
        latency_micros: LatencySummary::of(&total.latencies),
        server_cpu_micros_per_operation: per_operation(delta.cpu_micros),
        bench_cpu_micros_per_operation: per_operation(bench.cpu_micros),
        machine_busy_percent: bench.machine_busy_percent,
        server_rss_bytes: delta.rss_bytes,
        events_per_fsync: delta.events_per_fsync,
        note: None,
    })
}

/// The load generator's CPU time and the machine's CPU ticks at one instant. Unreadable
/// figures (not Linux) leave the columns empty rather than failing the run.
struct BenchSnapshot {
    cpu_ticks: Option<u64>,
    machine_ticks: Option<(u64, u64)>,
}

/// What the load generator and the machine spent between two [`BenchSnapshot`]s.
struct BenchDelta {
    cpu_micros: Option<f64>,
    machine_busy_percent: Option<f64>,
}

impl BenchSnapshot {
    fn now() -> BenchSnapshot {
        BenchSnapshot {
            cpu_ticks: crate::machine::cpu_ticks(std::process::id()).ok(),
            machine_ticks: crate::machine::machine_ticks().ok(),
        }
    }

    fn until_now(self) -> BenchDelta {
        let now = BenchSnapshot::now();
        BenchDelta {
            cpu_micros: self
                .cpu_ticks
                .zip(now.cpu_ticks)
                .map(|(before, after)| crate::machine::ticks_to_micros(before, after)),
            machine_busy_percent: self.machine_ticks.zip(now.machine_ticks).and_then(
                |((busy_before, total_before), (busy_after, total_after))| {
                    let total = total_after.saturating_sub(total_before);
                    (total > 0).then(|| {
                        busy_after.saturating_sub(busy_before) as f64 * 100.0 / total as f64
                    })
                },
            ),
        }
    }
}

/// `count` HTTP/2 connections to `address`.
pub async fn connect_all(
    address: std::net::SocketAddr,
    count: usize,
) -> Result<Vec<Channel>, BenchError> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(connect(address).await?);
    }
    Ok(channels)
}

/// A small, fast, seedable random number generator (SplitMix64): the bench needs uniform
/// picks, not cryptography, and the same seed gives the same sequence in every run.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0), with negligible bias for the bounds used here.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// The stock items of a data set: `products × stores`, numbered `0..products × stores`.
#[derive(Clone, Debug)]
pub struct ItemSpace {
    /// Makes ids distinct between runs against the same running server.
    pub prefix: String,
    pub products: u64,
    pub stores: u64,
}

impl ItemSpace {
    pub fn len(&self) -> u64 {
        self.products * self.stores
    }

    /// The (product id, store id) of item `index`.
    pub fn key(&self, index: u64) -> (String, String) {
        (
            format!("{}p{}", self.prefix, index / self.stores),
            format!("{}s{}", self.prefix, index % self.stores),
        )
    }

    /// A receipt of one unit of item `index`, as a line of `ApplyStockChanges`.
    pub fn receipt(&self, index: u64) -> pb::StockChange {
        let (product_id, store_id) = self.key(index);
        pb::StockChange {
            product_id,
            store_id,
            change: Some(pb::stock_change::Change::Add(1)),
            expected_version: None,
            from: 0,
        }
    }
}

/// A command of a bulk load.
pub enum LoadCommand {
    Add(pb::AddStockRequest),
    Reserve(pb::ReserveStockRequest),
}

/// What a bulk load took.
pub struct BulkLoad {
    pub took: Duration,
    /// The highest log position among the answers.
    pub last_position: u64,
}

/// Sends `count` commands (made by `make(index)`) with `in_flight` requests in flight over a
/// few connections, as fast as the server takes them; fails on the first error. Prints
/// progress to stderr for large loads.
pub async fn bulk_load(
    address: std::net::SocketAddr,
    count: u64,
    in_flight: usize,
    what: &str,
    make: Arc<dyn Fn(u64) -> LoadCommand + Send + Sync>,
) -> Result<BulkLoad, BenchError> {
    /// Loads larger than this report their progress.
    const PROGRESS_EVERY: u64 = 250_000;
    let started = Instant::now();
    let channels = connect_all(address, connections_for_level(in_flight)).await?;
    let next = Arc::new(AtomicU64::new(0));
    let last_position = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(in_flight);
    for worker in 0..in_flight {
        let mut client = CommandServiceClient::new(channels[worker % channels.len()].clone());
        let next = next.clone();
        let make = make.clone();
        let last_position = last_position.clone();
        let what = what.to_owned();
        workers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return Ok::<(), BenchError>(());
                }
                if index > 0 && index.is_multiple_of(PROGRESS_EVERY) {
                    eprintln!("  {what}: {index} of {count}");
                }
                let result = match make(index) {
                    LoadCommand::Add(request) => {
                        client
                            .add_stock(request)
                            .await
                            .map_err(BenchError::rpc("loading AddStock"))?
                            .into_inner()
                            .result
                    }
                    LoadCommand::Reserve(request) => {
                        client
                            .reserve_stock(request)
                            .await
                            .map_err(BenchError::rpc("loading ReserveStock"))?
                            .into_inner()
                            .result
                    }
                };
                let position = result.map_or(0, |result| result.position);
                last_position.fetch_max(position, Ordering::Relaxed);
            }
        }));
    }
    for worker in workers {
        worker
            .await
            .map_err(|error| BenchError::Invalid(format!("a load worker failed: {error}")))??;
    }
    Ok(BulkLoad {
        took: started.elapsed(),
        last_position: last_position.load(Ordering::Relaxed),
    })
}

/// The pure parts: how levels are spread, item ids, the random picks, how errors are sorted.
/// No timing is asserted here: the bench's own `--smoke` mode proves the whole tool runs.
#[cfg(test)]
mod tests {
    use inventory::domain::{ProductId, StoreId};
    use tonic_types::{ErrorDetails, StatusExt};

    use super::{ItemSpace, Outcome, SplitMix64, classify, connections_for_level};

    #[test]
    fn levels_are_spread_over_the_square_root_of_connections() {
        let spread: Vec<(usize, usize)> = [1, 16, 64, 256]
            .into_iter()
            .map(|level| (level, connections_for_level(level)))
            .collect();
        assert_eq!(spread, [(1, 1), (16, 4), (64, 8), (256, 16)]);
        assert_eq!(connections_for_level(2), 1);
    }

    #[test]
    fn item_space_keys_are_distinct_valid_ids() {
        let items = ItemSpace {
            prefix: "bench7-".to_owned(),
            products: 3,
            stores: 2,
        };
        let keys: Vec<(String, String)> = (0..items.len()).map(|index| items.key(index)).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 6);
        for (product, store) in keys {
            assert!(ProductId::parse(&product).is_ok(), "{product}");
            assert!(StoreId::parse(&store).is_ok(), "{store}");
        }
    }

    #[test]
    fn random_picks_stay_below_the_bound_and_repeat_per_seed() {
        let mut first = SplitMix64::new(42);
        let mut second = SplitMix64::new(42);
        for _ in 0..10_000 {
            let pick = first.below(7);
            assert!(pick < 7);
            assert_eq!(pick, second.below(7));
        }
    }

    #[test]
    fn only_insufficient_stock_is_an_expected_refusal() {
        let mut details = ErrorDetails::new();
        details.set_error_info(
            "INSUFFICIENT_STOCK",
            "inventory",
            std::collections::HashMap::new(),
        );
        let insufficient = tonic::Status::with_error_details(
            tonic::Code::FailedPrecondition,
            "not enough",
            details,
        );
        assert!(matches!(classify(&insufficient), Outcome::Refused));
        let mut details = ErrorDetails::new();
        details.set_error_info(
            "RESERVATION_RELEASED",
            "inventory",
            std::collections::HashMap::new(),
        );
        let released =
            tonic::Status::with_error_details(tonic::Code::FailedPrecondition, "released", details);
        assert!(matches!(classify(&released), Outcome::Failed(_)));
        let unavailable = tonic::Status::unavailable("disk full");
        assert!(matches!(classify(&unavailable), Outcome::Failed(_)));
    }
}
