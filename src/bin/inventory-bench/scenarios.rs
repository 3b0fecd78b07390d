//! The scenarios of the issue, each run on a server of its own (a fresh process and data
//! directory when the bench starts the server), at each concurrency level. Each scenario is a
//! module below; this one holds what they share: the list, the server set-up, the requests
//! and data sets, and the loop over the levels.

mod baseline_disk;
mod baseline_rpc;
mod bulk;
mod cart;
// The report reads its results.
pub mod delivery;
mod mixed;
mod reads;
mod reserve_hot;
mod reserve_release;
mod reserve_uniform;
// The report reads these two's results.
pub mod replay;
pub mod subscription_lag;

use std::sync::Arc;
use std::time::Duration;

use crate::server_process::BenchChannel as Channel;

use crate::load::{self, BulkLoad, ItemSpace, LoadCommand, LoadResult, Operation, Window};
use crate::pb;
use crate::report::Report;
use crate::server_process::{DataDir, Security, ServerProbe, ServerProcess};
use crate::{BenchConfig, BenchError, Target};

/// Stock put on each item of the uniform data set: far more than the requests in flight can
/// ever hold reserved at once, so a reservation there is never refused.
const STOCK_PER_ITEM: i64 = 1_000_000;

/// Requests in flight while loading data sets (group commit batches them).
const LOAD_IN_FLIGHT: usize = 256;

/// One scenario of the issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    BaselineRpc,
    BaselineDisk,
    ReserveUniform,
    Cart,
    Bulk,
    ReserveHot,
    Reads,
    Mixed,
    SubscriptionLag,
    Delivery,
    Replay,
}

impl Scenario {
    pub const ALL: [Scenario; 11] = [
        Scenario::BaselineRpc,
        Scenario::BaselineDisk,
        Scenario::ReserveUniform,
        Scenario::Cart,
        Scenario::Bulk,
        Scenario::ReserveHot,
        Scenario::Reads,
        Scenario::Mixed,
        Scenario::SubscriptionLag,
        Scenario::Delivery,
        Scenario::Replay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::BaselineRpc => "baseline-rpc",
            Scenario::BaselineDisk => "baseline-disk",
            Scenario::ReserveUniform => "reserve-uniform",
            Scenario::Cart => "cart",
            Scenario::Bulk => "bulk",
            Scenario::ReserveHot => "reserve-hot",
            Scenario::Reads => "reads",
            Scenario::Mixed => "mixed",
            Scenario::SubscriptionLag => "subscription-lag",
            Scenario::Delivery => "delivery",
            Scenario::Replay => "replay",
        }
    }

    /// The name of this scenario's rows in a secured pass (`--secure`).
    pub fn secured_name(self) -> String {
        format!("{} {SECURED_SUFFIX}", self.name())
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.name() == name)
    }
}

/// What the rows of a secured pass add to their scenario's name.
pub const SECURED_SUFFIX: &str = "(tls+token)";

/// The load scenarios: each runs again over TLS with a token after its plain run when
/// `--secure` is given.
async fn run_load(config: &BenchConfig, scenario: Scenario) -> Result<Vec<LoadResult>, BenchError> {
    match scenario {
        Scenario::BaselineRpc => baseline_rpc::run(config).await,
        Scenario::ReserveUniform => reserve_uniform::run(config).await,
        Scenario::Cart => cart::run(config).await,
        Scenario::Bulk => bulk::run(config).await,
        Scenario::ReserveHot => reserve_hot::run(config).await,
        Scenario::Reads => reads::run(config).await,
        Scenario::Mixed => mixed::run(config).await,
        Scenario::BaselineDisk
        | Scenario::SubscriptionLag
        | Scenario::Delivery
        | Scenario::Replay => {
            unreachable!("{} is not a load over gRPC", scenario.name())
        }
    }
}

/// Runs every configured scenario in the order of [`Scenario::ALL`]; with `--secure`, each
/// load scenario right after again over TLS with a token, on a server started so, so the two
/// are measured minutes apart on the same machine.
pub async fn run_all(config: &BenchConfig) -> Result<Report, BenchError> {
    let mut report = Report::start(config);
    let security = match (&config.target, config.secure) {
        (Target::Spawn { .. }, true) => Some(Arc::new(Security::create(&config.data_root)?)),
        (Target::Running { .. }, true) => {
            eprintln!("  --secure skipped: the bench must start the servers to secure them");
            None
        }
        (_, false) => None,
    };
    for scenario in Scenario::ALL {
        if !config.scenarios.contains(&scenario) {
            continue;
        }
        eprintln!("== {}", scenario.name());
        match scenario {
            Scenario::BaselineDisk => report.loads.push(baseline_disk::run(config).await?),
            Scenario::BaselineRpc
            | Scenario::ReserveUniform
            | Scenario::Cart
            | Scenario::Bulk
            | Scenario::ReserveHot
            | Scenario::Reads
            | Scenario::Mixed => {
                report.loads.extend(run_load(config, scenario).await?);
                if let Some(security) = &security {
                    eprintln!("== {}", scenario.secured_name());
                    Security::apply(Some(security.clone()));
                    let secured = run_load(config, scenario).await;
                    Security::apply(None);
                    report.loads.extend(secured?.into_iter().map(|mut result| {
                        result.scenario = scenario.secured_name();
                        result
                    }));
                }
            }
            Scenario::SubscriptionLag => {
                let reserve_uniform_max = best_reserve_uniform_rate(&report);
                report
                    .lags
                    .extend(subscription_lag::run(config, reserve_uniform_max).await?);
            }
            Scenario::Delivery => match &config.target {
                Target::Spawn { server_binary } => {
                    let reserve_uniform_max = best_reserve_uniform_rate(&report);
                    report
                        .deliveries
                        .extend(delivery::run(config, server_binary, reserve_uniform_max).await?);
                }
                Target::Running { .. } => {
                    eprintln!(
                        "  skipped: delivery configures sinks, so the bench must start the server"
                    );
                }
            },
            Scenario::Replay => match &config.target {
                Target::Spawn { server_binary } => {
                    report.replay = Some(replay::run(config, server_binary).await?);
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

/// The best reserve-uniform rate of this run so far, if it ran: what the paced loads of
/// subscription-lag and delivery take half of.
fn best_reserve_uniform_rate(report: &Report) -> Option<f64> {
    report
        .loads
        .iter()
        .filter(|result| result.scenario == Scenario::ReserveUniform.name())
        .map(|result| result.operations_per_second)
        .reduce(f64::max)
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
        lines: Vec::new(),
        command_id: String::new(),
        expected_version: None,
    }
}

/// The uniform data set, each item with [`STOCK_PER_ITEM`], on a server of its own for
/// `scenario`; with the position of the last event written.
async fn stocked_data_set(
    config: &BenchConfig,
    scenario: Scenario,
) -> Result<(Setup, Arc<ItemSpace>, u64), BenchError> {
    let setup = setup(config, scenario).await?;
    let items = uniform_items(config);
    let position = stock_items(setup.command_addr, &items, STOCK_PER_ITEM).await?;
    Ok((setup, items, position))
}

/// Puts `stock` on every item of `items`; returns the position of the last event.
async fn stock_items(
    address: std::net::SocketAddr,
    items: &Arc<ItemSpace>,
    stock: i64,
) -> Result<u64, BenchError> {
    let loaded = load_items(
        address,
        items,
        items.len(),
        "stocking items",
        move |product, store| LoadCommand::Add(add_stock(product, store, stock)),
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

/// Sends `count` commands as fast as the server takes them, command `index` being
/// `command(product, store)` of item `index` modulo the items (so a count above the items
/// goes round them again).
async fn load_items(
    address: std::net::SocketAddr,
    items: &Arc<ItemSpace>,
    count: u64,
    what: &str,
    command: impl Fn(String, String) -> LoadCommand + Send + Sync + 'static,
) -> Result<BulkLoad, BenchError> {
    let items = items.clone();
    let make = Arc::new(move |index| {
        let (product, store) = items.key(index % items.len());
        command(product, store)
    });
    load::bulk_load(address, count, LOAD_IN_FLIGHT, what, make).await
}

/// Runs one closed-loop load per level against the servers at `addresses`. Each level opens
/// `connections_for_level(level)` connections to each address, and makes worker `worker` with
/// `make(worker, channels)`, where `channels[i]` is its connection to `addresses[i]`.
async fn run_levels<O: Operation, const ADDRESSES: usize>(
    config: &BenchConfig,
    scenario: Scenario,
    addresses: [std::net::SocketAddr; ADDRESSES],
    probe: ServerProbe,
    make: impl FnMut(usize, [Channel; ADDRESSES]) -> O,
) -> Result<Vec<LoadResult>, BenchError> {
    run_levels_at(config, &config.levels, scenario, addresses, probe, make).await
}

/// [`run_levels`] at the given levels instead of the configured ones.
async fn run_levels_at<O: Operation, const ADDRESSES: usize>(
    config: &BenchConfig,
    levels: &[usize],
    scenario: Scenario,
    addresses: [std::net::SocketAddr; ADDRESSES],
    probe: ServerProbe,
    mut make: impl FnMut(usize, [Channel; ADDRESSES]) -> O,
) -> Result<Vec<LoadResult>, BenchError> {
    let mut results = Vec::new();
    for &level in levels {
        let connections = load::connections_for_level(level);
        let mut channels_per_address = Vec::with_capacity(ADDRESSES);
        for address in addresses {
            channels_per_address.push(load::connect_all(address, connections).await?);
        }
        let operations = (0..level)
            .map(|worker| {
                let channels = std::array::from_fn(|address| {
                    channels_per_address[address][worker % connections].clone()
                });
                make(worker, channels)
            })
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
        "{} in flight: {:.0} ops/s ({:.0} lines/s), p50 {} µs, p99 {} µs, {} failures",
        result.in_flight,
        result.operations_per_second,
        result.lines_per_second,
        result.latency_micros.p50,
        result.latency_micros.p99,
        result.failures
    )
}
