//! The scenarios of the issue, each run on a server of its own (a fresh process and data
//! directory when the bench starts the server), at each concurrency level.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot, watch};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::load::{
    self, ItemSpace, LatencySummary, LoadCommand, LoadResult, Operation, Outcome, SplitMix64,
    Tally, Window,
};
use crate::machine;
use crate::pb::command_service_client::CommandServiceClient;
use crate::pb::event_service_client::EventServiceClient;
use crate::pb::query_service_client::QueryServiceClient;
use crate::report::Report;
use crate::server_process::{DataDir, ServerProbe, ServerProcess, connect};
use crate::{BenchConfig, BenchError, Target};
use crate::{InventoryCodec, pb};

/// Stock put on each item of the uniform data set: far more than the requests in flight can
/// ever hold reserved at once, so a reservation there is never refused.
const STOCK_PER_ITEM: i64 = 1_000_000;

/// Stock of the hot item: enough for every reservation the run can make.
const HOT_ITEM_STOCK: i64 = 1_000_000_000_000_000;

/// Requests in flight while loading data sets (group commit batches them).
const LOAD_IN_FLIGHT: usize = 256;

/// Reservations made to measure their memory live this long, so none expires during the run.
const LONG_RESERVATION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Requests in flight that carry the paced command load of the subscription-lag scenario:
/// enough to reach half the measured maximum without being the limit.
pub const LAG_COMMAND_IN_FLIGHT: usize = 64;

/// Bytes per append of the disk baseline, about one small event record.
const DISK_APPEND_BYTES: usize = 128;

/// How long subscribers may take, after the command load stops, to receive its last event.
const LAG_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// One scenario of the issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    BaselineRpc,
    BaselineDisk,
    ReserveUniform,
    ReserveHot,
    Reads,
    Mixed,
    SubscriptionLag,
    Replay,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::BaselineRpc,
        Scenario::BaselineDisk,
        Scenario::ReserveUniform,
        Scenario::ReserveHot,
        Scenario::Reads,
        Scenario::Mixed,
        Scenario::SubscriptionLag,
        Scenario::Replay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::BaselineRpc => "baseline-rpc",
            Scenario::BaselineDisk => "baseline-disk",
            Scenario::ReserveUniform => "reserve-uniform",
            Scenario::ReserveHot => "reserve-hot",
            Scenario::Reads => "reads",
            Scenario::Mixed => "mixed",
            Scenario::SubscriptionLag => "subscription-lag",
            Scenario::Replay => "replay",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.name() == name)
    }
}

/// Runs every configured scenario in the order of [`Scenario::ALL`].
pub async fn run_all(config: &BenchConfig) -> Result<Report, BenchError> {
    let mut report = Report::start(config);
    for scenario in Scenario::ALL {
        if !config.scenarios.contains(&scenario) {
            continue;
        }
        eprintln!("== {}", scenario.name());
        match scenario {
            Scenario::BaselineRpc => report.loads.extend(baseline_rpc(config).await?),
            Scenario::BaselineDisk => report.loads.push(baseline_disk(config).await?),
            Scenario::ReserveUniform => report.loads.extend(reserve_uniform(config).await?),
            Scenario::ReserveHot => report.loads.extend(reserve_hot(config).await?),
            Scenario::Reads => report.loads.extend(reads(config).await?),
            Scenario::Mixed => report.loads.extend(mixed(config).await?),
            Scenario::SubscriptionLag => {
                let reserve_uniform_max = report
                    .loads
                    .iter()
                    .filter(|result| result.scenario == Scenario::ReserveUniform.name())
                    .map(|result| result.operations_per_second)
                    .reduce(f64::max);
                report
                    .lags
                    .extend(subscription_lag(config, reserve_uniform_max).await?);
            }
            Scenario::Replay => match &config.target {
                Target::Spawn { server_binary } => {
                    report.replay = Some(replay(config, server_binary).await?);
                }
                Target::Running { .. } => {
                    eprintln!("  skipped: replay restarts the server, so the bench must start it");
                }
            },
        }
    }
    report.finish();
    Ok(report)
}

/// The server one scenario runs against.
struct Setup {
    command_addr: std::net::SocketAddr,
    query_addr: std::net::SocketAddr,
    probe: ServerProbe,
    // Declared before the data directory: the server stops before its directory is removed.
    _server: Option<ServerProcess>,
    _data_dir: Option<DataDir>,
}

async fn setup(config: &BenchConfig, scenario: Scenario) -> Result<Setup, BenchError> {
    match &config.target {
        Target::Spawn { server_binary } => {
            let data_dir = DataDir::create(&config.data_root, scenario.name())?;
            let server = ServerProcess::spawn(server_binary, &data_dir.path).await?;
            server.wait_ready().await?;
            Ok(Setup {
                command_addr: server.command_addr,
                query_addr: server.query_addr,
                probe: ServerProbe {
                    pid: Some(server.pid()),
                    metrics_addr: Some(server.metrics_addr),
                },
                _server: Some(server),
                _data_dir: Some(data_dir),
            })
        }
        Target::Running {
            command_addr,
            query_addr,
            metrics_addr,
        } => Ok(Setup {
            command_addr: *command_addr,
            query_addr: *query_addr,
            probe: ServerProbe {
                pid: None,
                metrics_addr: *metrics_addr,
            },
            _server: None,
            _data_dir: None,
        }),
    }
}

/// Ids that are new for this run, so runs against one running server do not share items.
fn run_prefix(config: &BenchConfig) -> String {
    match config.target {
        Target::Spawn { .. } => String::new(),
        Target::Running { .. } => format!("bench{}-", std::process::id()),
    }
}

fn uniform_items(config: &BenchConfig) -> Arc<ItemSpace> {
    Arc::new(ItemSpace {
        prefix: run_prefix(config),
        products: config.products,
        stores: config.stores,
    })
}

fn add_stock(product_id: String, store_id: String, quantity: i64) -> pb::AddStockRequest {
    pb::AddStockRequest {
        product_id,
        store_id,
        quantity,
        reason: "bench".to_owned(),
        command_id: String::new(),
        expected_version: None,
    }
}

fn reserve_stock(
    product_id: String,
    store_id: String,
    ttl: Option<Duration>,
) -> pb::ReserveStockRequest {
    pb::ReserveStockRequest {
        product_id,
        store_id,
        quantity: 1,
        customer_id: "bench".to_owned(),
        ttl: ttl.map(|ttl| prost_types::Duration {
            seconds: ttl.as_secs() as i64,
            nanos: 0,
        }),
        reservation_id: String::new(),
        command_id: String::new(),
        expected_version: None,
    }
}

/// Puts `stock` on every item of `items`; returns the position of the last event.
async fn stock_items(
    address: std::net::SocketAddr,
    items: &Arc<ItemSpace>,
    stock: i64,
) -> Result<u64, BenchError> {
    let space = items.clone();
    let loaded = load::bulk_load(
        address,
        items.len(),
        LOAD_IN_FLIGHT,
        "stocking items",
        Arc::new(move |index| {
            let (product, store) = space.key(index);
            LoadCommand::Add(add_stock(product, store, stock))
        }),
    )
    .await?;
    let seconds = loaded.took.as_secs_f64();
    eprintln!(
        "  stocked {} items in {seconds:.1} s ({:.0} commands/s)",
        items.len(),
        items.len() as f64 / seconds
    );
    Ok(loaded.last_position)
}

/// Runs one closed-loop load per level, making each worker with `make(worker, channel)`.
async fn run_levels<O: Operation>(
    config: &BenchConfig,
    scenario: Scenario,
    address: std::net::SocketAddr,
    probe: ServerProbe,
    mut make: impl FnMut(usize, Channel) -> O,
) -> Result<Vec<LoadResult>, BenchError> {
    let mut results = Vec::new();
    for &level in &config.levels {
        let connections = load::connections_for_level(level);
        let channels = load::connect_all(address, connections).await?;
        let operations = (0..level)
            .map(|worker| make(worker, channels[worker % connections].clone()))
            .collect();
        let window = Window::after_warmup(config.warmup, config.duration);
        let result = load::drive(scenario.name(), operations, connections, window, probe).await?;
        eprintln!("  {}", one_line(&result));
        results.push(result);
    }
    Ok(results)
}

fn one_line(result: &LoadResult) -> String {
    format!(
        "{} in flight: {:.0} ops/s, p50 {} µs, p99 {} µs, {} failures",
        result.in_flight,
        result.operations_per_second,
        result.latency_micros.p50,
        result.latency_micros.p99,
        result.failures
    )
}

/// `grpc.health.v1.Health/Check`, sent the way the generated clients of this crate send their
/// calls: with [`InventoryCodec`], so that the baseline's client side costs what the
/// scenarios' client side costs and only the server's work differs.
struct HealthCheck {
    grpc: tonic::client::Grpc<Channel>,
}

impl HealthCheck {
    async fn check(&mut self) -> Result<(), tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|error| tonic::Status::unknown(format!("Service was not ready: {error}")))?;
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        // As the generated clients do.
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new("grpc.health.v1.Health", "Check"));
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let codec = InventoryCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        self.grpc.unary(request, path, codec).await.map(|_| ())
    }
}

impl Operation for HealthCheck {
    async fn run_once(&mut self, tally: &mut Tally) {
        let sent_at = Instant::now();
        let outcome = match self.check().await {
            Ok(()) => Outcome::Done,
            Err(status) => load::classify(&status),
        };
        tally.record(sent_at, outcome);
    }
}

async fn baseline_rpc(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let setup = setup(config, Scenario::BaselineRpc).await?;
    run_levels(
        config,
        Scenario::BaselineRpc,
        setup.command_addr,
        setup.probe,
        |_, channel| HealthCheck {
            grpc: tonic::client::Grpc::new(channel),
        },
    )
    .await
}

/// Appends of [`DISK_APPEND_BYTES`] to a file in the data root, each followed by
/// `fdatasync`, one writer, measured in the bench process itself.
async fn baseline_disk(config: &BenchConfig) -> Result<LoadResult, BenchError> {
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

/// Which item a reservation worker picks.
enum Pick {
    Uniform(Arc<ItemSpace>, SplitMix64),
    One(String, String),
}

impl Pick {
    fn next(&mut self) -> (String, String) {
        match self {
            Pick::Uniform(items, random) => items.key(random.below(items.len())),
            Pick::One(product, store) => (product.clone(), store.clone()),
        }
    }
}

/// Where a paced worker reports the position and time of each acknowledged command.
struct Acknowledgements {
    epoch: Instant,
    /// (log position, microseconds since `epoch` when the answer arrived)
    positions: Arc<Mutex<Vec<(u64, u64)>>>,
}

/// ReserveStock of one unit, then ReleaseReservation of it: two operations, each timed on its
/// own. Optionally paced by a semaphore (one permit per request) and reporting positions.
struct ReserveRelease {
    client: CommandServiceClient<Channel>,
    pick: Pick,
    pace: Option<Arc<Semaphore>>,
    acknowledgements: Option<Acknowledgements>,
}

impl ReserveRelease {
    /// Waits for a permit when paced; false when the window ended first.
    async fn permitted(&self, window: Window) -> bool {
        let Some(pace) = &self.pace else {
            return true;
        };
        tokio::select! {
            permit = pace.acquire() => match permit {
                Ok(permit) => {
                    permit.forget();
                    true
                }
                Err(_) => false,
            },
            () = tokio::time::sleep_until(window.end.into()) => false,
        }
    }

    fn acknowledged(&self, position: u64) {
        if let Some(acknowledgements) = &self.acknowledgements {
            let micros = acknowledgements.epoch.elapsed().as_micros() as u64;
            if let Ok(mut positions) = acknowledgements.positions.lock() {
                positions.push((position, micros));
            }
        }
    }
}

fn position_of(result: Option<&pb::CommandResult>) -> u64 {
    result.map_or(0, |result| result.position)
}

impl Operation for ReserveRelease {
    async fn run_once(&mut self, tally: &mut Tally) {
        let window = tally.window();
        if !self.permitted(window).await {
            return;
        }
        let (product, store) = self.pick.next();
        let sent_at = Instant::now();
        let reserved = self
            .client
            .reserve_stock(reserve_stock(product, store, None))
            .await;
        let reservation_id = match reserved {
            Ok(response) => {
                let response = response.into_inner();
                self.acknowledged(position_of(response.result.as_ref()));
                tally.record(sent_at, Outcome::Done);
                response.reservation_id
            }
            Err(status) => {
                tally.record(sent_at, load::classify(&status));
                return;
            }
        };
        if !self.permitted(window).await {
            // The window ended between the two halves: release anyway, untimed, so no
            // reservation is left behind.
            let _ = self
                .client
                .release_reservation(release(reservation_id))
                .await;
            return;
        }
        let sent_at = Instant::now();
        match self
            .client
            .release_reservation(release(reservation_id))
            .await
        {
            Ok(response) => {
                self.acknowledged(position_of(response.into_inner().result.as_ref()));
                tally.record(sent_at, Outcome::Done);
            }
            Err(status) => tally.record(sent_at, load::classify(&status)),
        }
    }
}

fn release(reservation_id: String) -> pb::ReleaseReservationRequest {
    pb::ReleaseReservationRequest {
        reservation_id,
        reason: "bench".to_owned(),
        command_id: String::new(),
        expected_version: None,
    }
}

async fn reserve_uniform(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let setup = setup(config, Scenario::ReserveUniform).await?;
    let items = uniform_items(config);
    stock_items(setup.command_addr, &items, STOCK_PER_ITEM).await?;
    run_levels(
        config,
        Scenario::ReserveUniform,
        setup.command_addr,
        setup.probe,
        |worker, channel| ReserveRelease {
            client: CommandServiceClient::new(channel),
            pick: Pick::Uniform(items.clone(), SplitMix64::new(worker as u64)),
            pace: None,
            acknowledgements: None,
        },
    )
    .await
}

async fn reserve_hot(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let setup = setup(config, Scenario::ReserveHot).await?;
    let prefix = run_prefix(config);
    let (product, store) = (format!("{prefix}hot"), format!("{prefix}hot-store"));
    let mut commands = CommandServiceClient::new(connect(setup.command_addr).await?);
    commands
        .add_stock(add_stock(product.clone(), store.clone(), HOT_ITEM_STOCK))
        .await
        .map_err(BenchError::rpc("stocking the hot item"))?;
    run_levels(
        config,
        Scenario::ReserveHot,
        setup.command_addr,
        setup.probe,
        |_, channel| ReserveRelease {
            client: CommandServiceClient::new(channel),
            pick: Pick::One(product.clone(), store.clone()),
            pace: None,
            acknowledgements: None,
        },
    )
    .await
}

/// GetStock and CheckAvailability, alternating, each one operation.
struct Read {
    client: QueryServiceClient<Channel>,
    items: Arc<ItemSpace>,
    random: SplitMix64,
    check_next: bool,
}

impl Read {
    async fn read_one(&mut self, tally: &mut Tally) {
        let (product_id, store_id) = self.items.key(self.random.below(self.items.len()));
        self.check_next = !self.check_next;
        let sent_at = Instant::now();
        let answer = if self.check_next {
            self.client
                .check_availability(pb::CheckAvailabilityRequest {
                    product_id,
                    store_id,
                    quantity: 1,
                    min_position: None,
                })
                .await
                .map(|_| ())
        } else {
            self.client
                .get_stock(pb::GetStockRequest {
                    product_id,
                    store_id,
                    min_position: None,
                })
                .await
                .map(|_| ())
        };
        let outcome = match answer {
            Ok(()) => Outcome::Done,
            Err(status) => load::classify(&status),
        };
        tally.record(sent_at, outcome);
    }
}

impl Operation for Read {
    async fn run_once(&mut self, tally: &mut Tally) {
        self.read_one(tally).await;
    }
}

async fn reads(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let setup = setup(config, Scenario::Reads).await?;
    let items = uniform_items(config);
    let position = stock_items(setup.command_addr, &items, STOCK_PER_ITEM).await?;
    wait_until_readable(setup.query_addr, &items, position).await?;
    run_levels(
        config,
        Scenario::Reads,
        setup.query_addr,
        setup.probe,
        |worker, channel| Read {
            client: QueryServiceClient::new(channel),
            items: items.clone(),
            random: SplitMix64::new(worker as u64),
            check_next: worker % 2 == 0,
        },
    )
    .await
}

/// Waits until the read model has applied `position` (the end of the data set), so reads
/// never measure the projection catching up.
async fn wait_until_readable(
    query_addr: std::net::SocketAddr,
    items: &ItemSpace,
    position: u64,
) -> Result<(), BenchError> {
    let mut queries = QueryServiceClient::new(connect(query_addr).await?);
    let (product_id, store_id) = items.key(0);
    queries
        .get_stock(pb::GetStockRequest {
            product_id,
            store_id,
            min_position: Some(position),
        })
        .await
        .map_err(BenchError::rpc("waiting for the read model"))?;
    Ok(())
}

/// 90 % reads, 10 % commands: each run is two requests, a reservation and its release one
/// time in ten, two reads otherwise.
struct Mixed {
    reads: Read,
    commands: ReserveRelease,
    round: u64,
}

impl Operation for Mixed {
    async fn run_once(&mut self, tally: &mut Tally) {
        self.round += 1;
        if self.round.is_multiple_of(10) {
            self.commands.run_once(tally).await;
        } else {
            self.reads.read_one(tally).await;
            self.reads.read_one(tally).await;
        }
    }
}

async fn mixed(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let setup = setup(config, Scenario::Mixed).await?;
    let items = uniform_items(config);
    let position = stock_items(setup.command_addr, &items, STOCK_PER_ITEM).await?;
    wait_until_readable(setup.query_addr, &items, position).await?;
    let mut results = Vec::new();
    for &level in &config.levels {
        let connections = load::connections_for_level(level);
        let command_channels = load::connect_all(setup.command_addr, connections).await?;
        let query_channels = load::connect_all(setup.query_addr, connections).await?;
        let operations = (0..level)
            .map(|worker| Mixed {
                reads: Read {
                    client: QueryServiceClient::new(query_channels[worker % connections].clone()),
                    items: items.clone(),
                    random: SplitMix64::new(worker as u64),
                    check_next: false,
                },
                commands: ReserveRelease {
                    client: CommandServiceClient::new(
                        command_channels[worker % connections].clone(),
                    ),
                    pick: Pick::Uniform(items.clone(), SplitMix64::new(!(worker as u64))),
                    pace: None,
                    acknowledgements: None,
                },
                // Spread the workers' command rounds out instead of all at once.
                round: worker as u64,
            })
            .collect();
        let window = Window::after_warmup(config.warmup, config.duration);
        let result = load::drive(
            Scenario::Mixed.name(),
            operations,
            connections,
            window,
            setup.probe,
        )
        .await?;
        eprintln!("  {}", one_line(&result));
        results.push(result);
    }
    Ok(results)
}

/// What the subscription-lag scenario measured with one number of subscribers.
#[derive(Clone, Debug)]
pub struct LagResult {
    pub subscribers: usize,
    pub command_rate_target: f64,
    pub command_rate: f64,
    /// From a command's acknowledgement to a subscriber receiving its event, one sample per
    /// (subscriber, event).
    pub lag_micros: LatencySummary,
    /// Events received before the command's client had its answer (counted as 0 µs lag).
    pub received_before_acknowledgement: u64,
    /// (subscriber, event) pairs never received before the drain timeout.
    pub missing: u64,
    /// Events received by all subscribers together, per second of the window.
    pub events_delivered_per_second: f64,
    pub server_cpu_micros_per_event: Option<f64>,
    pub server_rss_bytes: Option<u64>,
}

impl LagResult {
    pub fn to_json(&self) -> Value {
        json!({
            "subscribers": self.subscribers,
            "command_rate_target_per_second": self.command_rate_target,
            "command_rate_per_second": self.command_rate,
            "lag_micros": self.lag_micros.to_json(),
            "received_before_acknowledgement": self.received_before_acknowledgement,
            "missing": self.missing,
            "events_delivered_per_second": self.events_delivered_per_second,
            "server_cpu_micros_per_event": self.server_cpu_micros_per_event,
            "server_rss_bytes": self.server_rss_bytes,
        })
    }
}

async fn subscription_lag(
    config: &BenchConfig,
    reserve_uniform_max: Option<f64>,
) -> Result<Vec<LagResult>, BenchError> {
    let setup = setup(config, Scenario::SubscriptionLag).await?;
    let items = uniform_items(config);
    stock_items(setup.command_addr, &items, STOCK_PER_ITEM).await?;
    let maximum = match (config.lag_command_rate, reserve_uniform_max) {
        (Some(rate), _) => 2.0 * rate,
        (None, Some(maximum)) => maximum,
        (None, None) => {
            // reserve-uniform did not run: measure its rate briefly, at 64 in flight.
            let connections = load::connections_for_level(LAG_COMMAND_IN_FLIGHT);
            let channels = load::connect_all(setup.command_addr, connections).await?;
            let operations = (0..LAG_COMMAND_IN_FLIGHT)
                .map(|worker| ReserveRelease {
                    client: CommandServiceClient::new(channels[worker % connections].clone()),
                    pick: Pick::Uniform(items.clone(), SplitMix64::new(worker as u64)),
                    pace: None,
                    acknowledgements: None,
                })
                .collect();
            let window = Window::after_warmup(Duration::from_millis(500), Duration::from_secs(2));
            let probe = ServerProbe::default();
            let result = load::drive("probe", operations, connections, window, probe).await?;
            eprintln!(
                "  measured reserve-uniform at {LAG_COMMAND_IN_FLIGHT} in flight: {:.0} ops/s",
                result.operations_per_second
            );
            result.operations_per_second
        }
    };
    let rate = maximum / 2.0;
    let mut results = Vec::new();
    for &subscribers in &config.lag_subscribers {
        let result = lag_run(config, &setup, &items, subscribers, rate).await?;
        eprintln!(
            "  {} subscribers at {:.0} commands/s: lag p50 {} µs, p99 {} µs; {:.0} events/s delivered",
            result.subscribers,
            result.command_rate,
            result.lag_micros.p50,
            result.lag_micros.p99,
            result.events_delivered_per_second
        );
        results.push(result);
    }
    Ok(results)
}

/// What one subscriber received: `received[i]` is 1 + the microseconds since the epoch when
/// the event at position `from + 1 + i` arrived, or 0 if it never did.
struct Received {
    received: Vec<u64>,
}

async fn subscribe(
    address: std::net::SocketAddr,
    from_position: u64,
    epoch: Instant,
    caught_up: oneshot::Sender<()>,
    mut stop_at: watch::Receiver<u64>,
) -> Result<Received, BenchError> {
    let mut events = EventServiceClient::new(connect(address).await?);
    let mut stream = events
        .subscribe(pb::SubscribeRequest {
            from_position,
            filter: None,
        })
        .await
        .map_err(BenchError::rpc("Subscribe"))?
        .into_inner();
    let mut caught_up = Some(caught_up);
    let mut received = Received {
        received: Vec::new(),
    };
    let mut last_position = from_position;
    loop {
        if last_position >= *stop_at.borrow_and_update() {
            return Ok(received);
        }
        let message = tokio::select! {
            message = stream.message() => message.map_err(BenchError::rpc("the subscription"))?,
            changed = stop_at.changed() => {
                if changed.is_err() {
                    return Ok(received);
                }
                continue;
            }
        };
        let Some(message) = message else {
            return Ok(received);
        };
        match message.message {
            Some(pb::subscribe_response::Message::Event(event)) => {
                let micros = epoch.elapsed().as_micros() as u64;
                let index = (event.position - from_position - 1) as usize;
                if received.received.len() <= index {
                    received.received.resize(index + 1, 0);
                }
                received.received[index] = micros + 1;
                last_position = event.position;
            }
            Some(pb::subscribe_response::Message::CaughtUp(_)) => {
                if let Some(caught_up) = caught_up.take() {
                    let _ = caught_up.send(());
                }
            }
            // Unfiltered subscriptions get no checkpoints.
            Some(pb::subscribe_response::Message::Checkpoint(_)) | None => {}
        }
    }
}

async fn lag_run(
    config: &BenchConfig,
    setup: &Setup,
    items: &Arc<ItemSpace>,
    subscribers: usize,
    rate: f64,
) -> Result<LagResult, BenchError> {
    let epoch = Instant::now();
    // The head, from a command: subscribers start right after it.
    let mut commands = CommandServiceClient::new(connect(setup.command_addr).await?);
    let (product, store) = items.key(0);
    let head = commands
        .add_stock(add_stock(product, store, 1))
        .await
        .map_err(BenchError::rpc("reading the head"))?
        .into_inner()
        .result
        .map_or(0, |result| result.position);
    let (stop_sender, stop_at) = watch::channel(u64::MAX);
    let mut subscriptions = Vec::with_capacity(subscribers);
    let mut caught_up = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let (caught_up_sender, caught_up_receiver) = oneshot::channel();
        caught_up.push(caught_up_receiver);
        subscriptions.push(tokio::spawn(subscribe(
            setup.command_addr,
            head,
            epoch,
            caught_up_sender,
            stop_at.clone(),
        )));
    }
    for receiver in caught_up {
        tokio::time::timeout(LAG_DRAIN_TIMEOUT, receiver)
            .await
            .map_err(|_| BenchError::Server("did not catch subscribers up in time".into()))?
            .map_err(|_| BenchError::Server("ended a subscription early".into()))?;
    }

    let pace = Arc::new(Semaphore::new(0));
    let window = Window::after_warmup(config.warmup, config.duration);
    let pacer = tokio::spawn(pace_requests(pace.clone(), rate, window.end));
    let connections = load::connections_for_level(LAG_COMMAND_IN_FLIGHT);
    let channels = load::connect_all(setup.command_addr, connections).await?;
    let mut acknowledgement_lists = Vec::with_capacity(LAG_COMMAND_IN_FLIGHT);
    let operations = (0..LAG_COMMAND_IN_FLIGHT)
        .map(|worker| {
            let positions = Arc::new(Mutex::new(Vec::new()));
            acknowledgement_lists.push(positions.clone());
            ReserveRelease {
                client: CommandServiceClient::new(channels[worker % connections].clone()),
                pick: Pick::Uniform(items.clone(), SplitMix64::new(worker as u64)),
                pace: Some(pace.clone()),
                acknowledgements: Some(Acknowledgements { epoch, positions }),
            }
        })
        .collect();
    let commands_result = load::drive(
        Scenario::SubscriptionLag.name(),
        operations,
        connections,
        window,
        ServerProbe {
            pid: setup.probe.pid,
            metrics_addr: None,
        },
    )
    .await?;
    pace.close();
    pacer.abort();

    let mut acknowledged = Vec::new();
    for list in acknowledgement_lists {
        let mut list = list
            .lock()
            .map_err(|_| BenchError::Invalid("a worker panicked".into()))?;
        acknowledged.append(&mut list);
    }
    let last_position = acknowledged
        .iter()
        .map(|(position, _)| *position)
        .max()
        .unwrap_or(head);
    let _ = stop_sender.send(last_position);
    let mut received = Vec::with_capacity(subscribers);
    for subscription in subscriptions {
        match tokio::time::timeout(LAG_DRAIN_TIMEOUT, subscription).await {
            Ok(Ok(Ok(one))) => received.push(one),
            Ok(Ok(Err(error))) => return Err(error),
            Ok(Err(error)) => {
                return Err(BenchError::Invalid(format!("a subscriber failed: {error}")));
            }
            Err(_) => {
                return Err(BenchError::Server(
                    "did not deliver every event in time".into(),
                ));
            }
        }
    }

    let window_start = (window.start - epoch).as_micros() as u64;
    let window_end = (window.end - epoch).as_micros() as u64;
    let in_window = |micros: u64| micros >= window_start && micros < window_end;
    let mut lag = load::latency_histogram();
    let mut before_acknowledgement = 0;
    let mut missing = 0;
    for (position, acknowledged_at) in &acknowledged {
        if !in_window(*acknowledged_at) || *position <= head {
            continue;
        }
        let index = (position - head - 1) as usize;
        for subscriber in &received {
            match subscriber.received.get(index).copied().unwrap_or(0) {
                0 => missing += 1,
                stamp => {
                    let received_at = stamp - 1;
                    if received_at < *acknowledged_at {
                        before_acknowledgement += 1;
                    }
                    lag.saturating_record(received_at.saturating_sub(*acknowledged_at).max(1));
                }
            }
        }
    }
    let delivered: u64 = received
        .iter()
        .map(|subscriber| {
            subscriber
                .received
                .iter()
                .filter(|stamp| **stamp > 0 && in_window(**stamp - 1))
                .count() as u64
        })
        .sum();
    let seconds = commands_result.duration.as_secs_f64();
    let events_delivered_per_second = delivered as f64 / seconds;
    Ok(LagResult {
        subscribers,
        command_rate_target: rate,
        command_rate: commands_result.operations_per_second,
        lag_micros: LatencySummary::of(&lag),
        received_before_acknowledgement: before_acknowledgement,
        missing,
        events_delivered_per_second,
        server_cpu_micros_per_event: commands_result.server_cpu_micros_per_operation.map(
            |per_command| per_command * commands_result.operations as f64 / delivered.max(1) as f64,
        ),
        server_rss_bytes: commands_result.server_rss_bytes,
    })
}

/// Adds permits to `pace` at `rate` per second until `until`: an open-loop pace for
/// closed-loop workers. Ticks of a millisecond; each adds what the elapsed time allows, so a
/// late tick catches up.
async fn pace_requests(pace: Arc<Semaphore>, rate: f64, until: Instant) {
    let started = Instant::now();
    let mut issued: u64 = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    while Instant::now() < until {
        ticks.tick().await;
        let allowed = (started.elapsed().as_secs_f64() * rate) as u64;
        if allowed > issued {
            pace.add_permits((allowed - issued) as usize);
            issued = allowed;
        }
    }
}

/// Start-up after a restart, and memory per item and per reservation.
#[derive(Clone, Debug)]
pub struct ReplayResult {
    /// The log whose replay is timed.
    pub events: u64,
    pub loaded_in: Duration,
    pub listening_after: Duration,
    pub ready_after: Duration,
    pub events_per_second: f64,
    pub rss_after_replay_bytes: u64,
    /// The memory measurement: an empty server, then `items` distinct items, then one active
    /// reservation on each.
    pub items: u64,
    /// Start-up with an empty log: what a start costs besides the replay.
    pub empty_ready_after: Duration,
    pub empty_rss_bytes: u64,
    pub items_rss_bytes: u64,
    pub items_ready_after: Duration,
    pub reservations_rss_bytes: u64,
    pub reservations_ready_after: Duration,
}

impl ReplayResult {
    /// Events per second of the replay alone: the start-up time less an empty log's.
    pub fn replay_only_events_per_second(&self) -> f64 {
        let replay_only = self.ready_after.saturating_sub(self.empty_ready_after);
        self.events as f64 / replay_only.as_secs_f64().max(1e-6)
    }

    pub fn bytes_per_item(&self) -> f64 {
        self.items_rss_bytes.saturating_sub(self.empty_rss_bytes) as f64 / self.items.max(1) as f64
    }

    pub fn bytes_per_reservation(&self) -> f64 {
        self.reservations_rss_bytes
            .saturating_sub(self.items_rss_bytes) as f64
            / self.items.max(1) as f64
    }

    pub fn to_json(&self) -> Value {
        json!({
            "events": self.events,
            "load_seconds": self.loaded_in.as_secs_f64(),
            "listening_after_seconds": self.listening_after.as_secs_f64(),
            "ready_after_seconds": self.ready_after.as_secs_f64(),
            "events_per_second": self.events_per_second,
            "rss_after_replay_bytes": self.rss_after_replay_bytes,
            "items": self.items,
            "empty_ready_after_seconds": self.empty_ready_after.as_secs_f64(),
            "replay_only_events_per_second": self.replay_only_events_per_second(),
            "empty_rss_bytes": self.empty_rss_bytes,
            "items_rss_bytes": self.items_rss_bytes,
            "items_ready_after_seconds": self.items_ready_after.as_secs_f64(),
            "bytes_per_item": self.bytes_per_item(),
            "active_reservations": self.items,
            "reservations_rss_bytes": self.reservations_rss_bytes,
            "reservations_ready_after_seconds": self.reservations_ready_after.as_secs_f64(),
            "bytes_per_reservation": self.bytes_per_reservation(),
        })
    }
}

/// Stops the server and starts it again on the same data; returns the new one once it
/// answers, with its start-up time.
async fn restart(
    server: ServerProcess,
    binary: &std::path::Path,
    data_dir: &DataDir,
) -> Result<(ServerProcess, Duration), BenchError> {
    server.stop()?;
    let server = ServerProcess::spawn(binary, &data_dir.path).await?;
    let ready_after = server.wait_ready().await?;
    Ok((server, ready_after))
}

async fn replay(
    config: &BenchConfig,
    binary: &std::path::Path,
) -> Result<ReplayResult, BenchError> {
    // Part one: a log of `replay_events` AddStock events over the uniform data set.
    let events = config.replay_events;
    let data_dir = DataDir::create(&config.data_root, "replay")?;
    let server = ServerProcess::spawn(binary, &data_dir.path).await?;
    server.wait_ready().await?;
    let items = uniform_items(config);
    let space = items.clone();
    let loaded_in = load::bulk_load(
        server.command_addr,
        events,
        LOAD_IN_FLIGHT,
        "writing the replay log",
        Arc::new(move |index| {
            let (product, store) = space.key(index % space.len());
            LoadCommand::Add(add_stock(product, store, 1))
        }),
    )
    .await?
    .took;
    eprintln!(
        "  wrote {events} events in {:.1} s ({:.0} commands/s)",
        loaded_in.as_secs_f64(),
        events as f64 / loaded_in.as_secs_f64()
    );
    let (server, ready_after) = restart(server, binary, &data_dir).await?;
    let listening_after = server.listening_after;
    let rss_after_replay_bytes = machine::resident_bytes(server.pid())?;
    server.stop()?;
    drop(data_dir);
    eprintln!(
        "  replayed {events} events in {:.2} s ({:.0} events/s)",
        ready_after.as_secs_f64(),
        events as f64 / ready_after.as_secs_f64()
    );

    // Part two: memory per item and per active reservation, each measured after a restart
    // so that only what the replay builds is resident.
    let item_count = config.replay_items;
    let distinct = Arc::new(ItemSpace {
        prefix: String::new(),
        products: item_count.div_ceil(10),
        stores: 10,
    });
    let data_dir = DataDir::create(&config.data_root, "memory")?;
    let server = ServerProcess::spawn(binary, &data_dir.path).await?;
    server.wait_ready().await?;
    let (server, empty_ready_after) = restart(server, binary, &data_dir).await?;
    let empty_rss_bytes = machine::resident_bytes(server.pid())?;
    let space = distinct.clone();
    load::bulk_load(
        server.command_addr,
        item_count,
        LOAD_IN_FLIGHT,
        "stocking distinct items",
        Arc::new(move |index| {
            let (product, store) = space.key(index);
            LoadCommand::Add(add_stock(product, store, 1))
        }),
    )
    .await?;
    let (server, items_ready_after) = restart(server, binary, &data_dir).await?;
    let items_rss_bytes = machine::resident_bytes(server.pid())?;
    let space = distinct.clone();
    load::bulk_load(
        server.command_addr,
        item_count,
        LOAD_IN_FLIGHT,
        "reserving",
        Arc::new(move |index| {
            let (product, store) = space.key(index);
            LoadCommand::Reserve(reserve_stock(product, store, Some(LONG_RESERVATION_TTL)))
        }),
    )
    .await?;
    let (server, reservations_ready_after) = restart(server, binary, &data_dir).await?;
    let reservations_rss_bytes = machine::resident_bytes(server.pid())?;
    server.stop()?;
    let result = ReplayResult {
        events,
        loaded_in,
        listening_after,
        ready_after,
        events_per_second: events as f64 / ready_after.as_secs_f64(),
        rss_after_replay_bytes,
        items: item_count,
        empty_ready_after,
        empty_rss_bytes,
        items_rss_bytes,
        items_ready_after,
        reservations_rss_bytes,
        reservations_ready_after,
    };
    eprintln!(
        "  {} items: {:.0} bytes per item, {:.0} bytes per active reservation",
        result.items,
        result.bytes_per_item(),
        result.bytes_per_reservation()
    );
    Ok(result)
}
