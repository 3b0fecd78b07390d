//! The load generator behind `inventory-bench`: drives the real gRPC API over loopback, with
//! the tonic clients of this crate, and measures what the issue "Benchmark tool and
//! performance targets" asks for (see BENCHMARKS.md for a run and how to read it).
//!
//! It sits beside the service, not inside it: nothing here is used by the servers. It starts
//! the `inventory` binary as a separate process (so server CPU and RSS can be read from
//! `/proc`) or targets a running server, runs each scenario at each concurrency level, and
//! reports a markdown table and a JSON document.

pub mod load;
pub mod machine;
pub mod report;
pub mod scenarios;
pub mod server_process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use report::Report;
pub use scenarios::Scenario;

/// Everything a bench run needs to know, parsed from the command line by the binary.
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
    /// Distinct stock items (and then active reservations) loaded to measure RSS per item.
    pub replay_items: u64,
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

/// Runs every configured scenario and returns the report (also printed as it goes).
pub async fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    scenarios::run_all(config).await
}
