//! `inventory-bench`: the load generator of the project (see BENCHMARKS.md). It drives the
//! real gRPC API over loopback, with the generated tonic clients, and measures what the issue
//! "Benchmark tool and performance targets" asks for.
//!
//! It is a client of the service like any other, not part of it: it lives in this binary's own
//! module tree, so the server library does not carry it (nor its histogram crate). It starts
//! the `inventory` binary as a separate process (so server CPU and RSS can be read from
//! `/proc`) or targets a running server, runs each scenario at each concurrency level, and
//! reports a markdown table and a JSON document.
//!
//! Run it optimised: `cargo run --release --bin inventory-bench` (which also needs the release
//! `inventory` binary beside it: `cargo build --release` builds both).
#![forbid(unsafe_code)]

mod load;
mod machine;
mod report;
mod scenarios;
mod server_process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

// The bench sees the service only through its wire contract: the generated messages and clients
// and the codec they are sent with. Every module takes them from here.
use inventory::grpc::{InventoryCodec, pb};

use scenarios::Scenario;

/// Everything a bench run needs to know, made from the [`Flags`] by [`config`].
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub scenarios: Vec<Scenario>,
    /// Requests in flight; each level is spread over `connections_for_level(level)`
    /// connections.
    pub levels: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Where the temporary data directories go (each removed when its server stops).
    pub data_root: PathBuf,
    pub target: Target,
    /// Products × stores of the data set the uniform, read and mixed scenarios use.
    pub products: u64,
    pub stores: u64,
    /// Subscriber counts of the subscription-lag scenario.
    pub lag_subscribers: Vec<usize>,
    /// Commands per second during the subscription-lag scenario; by default half the best
    /// reserve-uniform rate of the run.
    pub lag_command_rate: Option<f64>,
    /// Events in the log whose replay is timed.
    pub replay_events: u64,
    /// Run each load scenario a second time over TLS with an API token (`--secure`).
    pub secure: bool,
    /// Distinct stock items (and then active reservations) loaded to measure RSS per item.
    pub replay_items: u64,
    /// Events in the log that the delivery scenario's sinks catch up on.
    pub delivery_backlog: u64,
    /// The NATS server (with JetStream) of the delivery scenario; its NATS rows are skipped
    /// when it does not answer.
    pub nats_url: String,
}

/// Which server the bench talks to.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start the `inventory` binary at this path, a fresh one (with a fresh data directory) for
    /// each scenario.
    Spawn { server_binary: PathBuf },
    /// A server that is already running. No CPU or RSS figures; events per fsync only if its
    /// metrics address is known.
    Running {
        command_addr: SocketAddr,
        query_addr: SocketAddr,
        metrics_addr: Option<SocketAddr>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(
        "the server binary {path} cannot be started: {source} (build it first: cargo build --release)"
    )]
    ServerBinary {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the server {0}")]
    Server(String),
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: tonic::transport::Error,
    },
    #[error("{context} failed: {status}")]
    Rpc {
        context: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("cannot read metrics from {address}: {problem}")]
    Metrics {
        address: SocketAddr,
        problem: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl BenchError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let context = context.into();
        move |source| BenchError::Io { context, source }
    }

    pub fn rpc(context: &'static str) -> impl FnOnce(tonic::Status) -> BenchError {
        move |status| BenchError::Rpc {
            context,
            status: Box::new(status),
        }
    }
}

/// Drives the inventory service over gRPC and reports throughput, latency, server CPU and
/// memory for each scenario of the project's benchmark issue.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Flags {
    /// Seconds measured per scenario and level, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before each measurement starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Requests in flight, comma-separated; each level uses ⌊√level⌋ connections.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    levels: Vec<usize>,
    /// Scenarios to run, comma-separated (default: all): baseline-rpc, baseline-disk,
    /// reserve-uniform, cart, bulk, reserve-hot, reads, mixed, subscription-lag, delivery,
    /// replay.
    #[arg(long, value_delimiter = ',', value_parser = parse_scenario)]
    scenarios: Vec<Scenario>,
    /// A quick run that only proves the tool works (for CI): about a second per scenario,
    /// 1 and 16 in flight, small data sets. Flags given explicitly still win.
    #[arg(long)]
    smoke: bool,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the markdown report to this file too.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Where the started servers' data directories go (default: the system temp dir).
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// The `inventory` binary to start (default: the one beside this executable).
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Target a running command server instead of starting one (needs --target-query).
    #[arg(long, requires = "target_query")]
    target_command: Option<SocketAddr>,
    /// The running server's query server.
    #[arg(long, requires = "target_command")]
    target_query: Option<SocketAddr>,
    /// The running server's metrics endpoint, for events per fsync.
    #[arg(long, requires = "target_command")]
    target_metrics: Option<SocketAddr>,
    /// Products of the uniform data set (× --stores items).
    #[arg(long)]
    products: Option<u64>,
    /// Stores of the uniform data set.
    #[arg(long, default_value_t = 10)]
    stores: u64,
    /// Subscriber counts of the subscription-lag scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    lag_subscribers: Vec<usize>,
    /// Commands per second while subscribers are measured (default: half the best
    /// reserve-uniform rate of the run, measured briefly if reserve-uniform does not run).
    #[arg(long)]
    lag_command_rate: Option<f64>,
    /// Events in the log whose replay is timed (the issue asks for 10,000,000).
    #[arg(long)]
    replay_events: Option<u64>,
    /// Distinct items, then one active reservation on each, for the memory measurement.
    #[arg(long)]
    replay_items: Option<u64>,
    /// Events the delivery scenario's sinks catch up on (the issue asks for 1,000,000).
    #[arg(long)]
    delivery_backlog: Option<u64>,
    /// The NATS server with JetStream for the delivery scenario.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Run each load scenario again right after its plain run, on a server with TLS and
    /// `[[auth.tokens]]`, every request sending the token; the report compares the two.
    #[arg(long)]
    secure: bool,
}

fn parse_scenario(name: &str) -> Result<Scenario, String> {
    Scenario::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL
            .iter()
            .map(|scenario| scenario.name())
            .collect();
        format!("unknown scenario; one of {}", names.join(", "))
    })
}

/// Flag defaults of a full run and of `--smoke`.
struct Defaults {
    duration: f64,
    warmup: f64,
    levels: &'static [usize],
    products: u64,
    replay_events: u64,
    replay_items: u64,
    delivery_backlog: u64,
}

const FULL_RUN: Defaults = Defaults {
    duration: 10.0,
    warmup: 2.0,
    levels: &[1, 16, 64, 256],
    products: 10_000,
    replay_events: 1_000_000,
    replay_items: 1_000_000,
    delivery_backlog: 1_000_000,
};

const SMOKE_RUN: Defaults = Defaults {
    duration: 1.0,
    warmup: 0.25,
    levels: &[1, 16],
    products: 100,
    replay_events: 5_000,
    replay_items: 2_000,
    delivery_backlog: 5_000,
};

fn config(flags: Flags) -> Result<BenchConfig, BenchError> {
    let defaults = if flags.smoke { SMOKE_RUN } else { FULL_RUN };
    // clap cannot tell a default from an explicit value, so the flags whose default depends
    // on --smoke compare against the full run's default.
    let pick = |given: f64, full: f64, smoke: f64| {
        if (given - full).abs() > f64::EPSILON {
            given
        } else {
            smoke
        }
    };
    let duration = pick(flags.duration, FULL_RUN.duration, defaults.duration);
    let warmup = pick(flags.warmup, FULL_RUN.warmup, defaults.warmup);
    let levels = if flags.levels == FULL_RUN.levels {
        defaults.levels.to_vec()
    } else {
        flags.levels
    };
    if levels.is_empty() || levels.contains(&0) {
        return Err(BenchError::Invalid(
            "--levels must be positive numbers".into(),
        ));
    }
    let seconds = |value: f64, flag: &str| {
        Duration::try_from_secs_f64(value)
            .ok()
            .filter(|duration| !duration.is_zero() || flag == "--warmup")
            .ok_or_else(|| {
                BenchError::Invalid(format!("{flag} must be a positive number of seconds"))
            })
    };
    let target = target(
        flags.target_command,
        flags.target_query,
        flags.target_metrics,
        flags.server_binary,
    )?;
    let products = flags.products.unwrap_or(defaults.products);
    if products == 0 || flags.stores == 0 {
        return Err(BenchError::Invalid(
            "--products and --stores must be positive".into(),
        ));
    }
    Ok(BenchConfig {
        scenarios: if flags.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            flags.scenarios
        },
        levels,
        warmup: seconds(warmup, "--warmup")?,
        duration: seconds(duration, "--duration")?,
        data_root: flags.data_root.unwrap_or_else(std::env::temp_dir),
        target,
        products,
        stores: flags.stores,
        lag_subscribers: flags.lag_subscribers,
        lag_command_rate: flags.lag_command_rate.filter(|rate| *rate > 0.0),
        replay_events: flags.replay_events.unwrap_or(defaults.replay_events),
        secure: flags.secure,
        replay_items: flags.replay_items.unwrap_or(defaults.replay_items).max(1),
        delivery_backlog: flags
            .delivery_backlog
            .unwrap_or(defaults.delivery_backlog)
            .max(1),
        nats_url: flags.nats_url,
    })
}

/// A running server when its addresses are given, else the `inventory` binary to start (by
/// default the one beside this executable).
fn target(
    command_addr: Option<SocketAddr>,
    query_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    server_binary: Option<PathBuf>,
) -> Result<Target, BenchError> {
    if let (Some(command_addr), Some(query_addr)) = (command_addr, query_addr) {
        return Ok(Target::Running {
            command_addr,
            query_addr,
            metrics_addr,
        });
    }
    let server_binary = match server_binary {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(BenchError::io("finding this executable"))?
            .with_file_name("inventory"),
    };
    warn_if_stale(&server_binary);
    Ok(Target::Spawn { server_binary })
}

/// `cargo run --bin inventory-bench` rebuilds only this binary: a server binary older than it
/// may be stale (built from older code), which would measure the wrong thing without a word.
fn warn_if_stale(server_binary: &std::path::Path) {
    let modified =
        |path: &std::path::Path| std::fs::metadata(path).and_then(|meta| meta.modified());
    let bench_binary = std::env::current_exe().and_then(|path| modified(&path));
    if let (Ok(server), Ok(bench)) = (modified(server_binary), bench_binary)
        && server < bench
    {
        eprintln!(
            "inventory-bench: warning: {} is older than this executable and may be stale; \
             build both with `cargo build --release --bins`",
            server_binary.display()
        );
    }
}

async fn run(flags: Flags) -> Result<(), BenchError> {
    let json_path = flags.json.clone();
    let markdown_path = flags.markdown.clone();
    let config = config(flags)?;
    let report = scenarios::run_all(&config).await?;
    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(path) = markdown_path {
        std::fs::write(&path, &markdown)
            .map_err(BenchError::io(format!("writing {}", path.display())))?;
    }
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&report.to_json())
            .map_err(|error| BenchError::Invalid(format!("cannot encode the JSON: {error}")))?;
        std::fs::write(&path, text + "\n")
            .map_err(BenchError::io(format!("writing {}", path.display())))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("inventory-bench: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("inventory-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
