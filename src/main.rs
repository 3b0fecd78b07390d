//! The `inventory` binary: parses flags, sets up logging and signals, binds the listeners and
//! runs the servers from the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use inventory::app::{ShutdownSignal, SystemClock};
use inventory::server::{self, CommandConfig};

/// A distributed inventory service for multi-store retail (gRPC, event-sourced, CQRS).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Run the command server and the query server in one process (the default).
    Serve {
        #[command(flatten)]
        data: DataDir,
        /// Address of the command server (CommandService, EventService).
        #[arg(
            long,
            env = "INVENTORY_COMMAND_ADDR",
            default_value = "127.0.0.1:50051"
        )]
        command_addr: SocketAddr,
        /// Address of the query server (QueryService, EventService).
        #[arg(long, env = "INVENTORY_QUERY_ADDR", default_value = "127.0.0.1:50052")]
        query_addr: SocketAddr,
    },
    /// Run only the command server.
    Command {
        #[command(flatten)]
        data: DataDir,
        #[arg(
            long,
            env = "INVENTORY_COMMAND_ADDR",
            default_value = "127.0.0.1:50051"
        )]
        command_addr: SocketAddr,
    },
    /// Run only a query server that follows a command server in another process.
    Query {
        /// The command server to follow, e.g. http://127.0.0.1:50051.
        #[arg(long, env = "INVENTORY_FOLLOW")]
        follow: String,
        /// Where this query server keeps its copy of the log.
        #[arg(long, env = "INVENTORY_DATA", default_value = "./data-replica")]
        data: PathBuf,
        #[arg(long, env = "INVENTORY_QUERY_ADDR", default_value = "127.0.0.1:50052")]
        query_addr: SocketAddr,
    },
}

#[derive(clap::Args, Debug)]
struct DataDir {
    /// Directory of the embedded event log; created if missing.
    #[arg(long = "data", env = "INVENTORY_DATA", default_value = "./data")]
    path: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INVENTORY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    match runtime.block_on(run(cli.mode.unwrap_or(Mode::Serve {
        data: DataDir {
            path: std::env::var_os("INVENTORY_DATA")
                .map_or_else(|| PathBuf::from("./data"), PathBuf::from),
        },
        command_addr: env_addr("INVENTORY_COMMAND_ADDR", "127.0.0.1:50051"),
        query_addr: env_addr("INVENTORY_QUERY_ADDR", "127.0.0.1:50052"),
    }))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("inventory: {message}");
            ExitCode::FAILURE
        }
    }
}

fn env_addr(variable: &str, default: &str) -> SocketAddr {
    let text = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    text.parse().unwrap_or_else(|error| {
        eprintln!("inventory: {variable}={text:?} is not an address: {error}");
        std::process::exit(2);
    })
}

async fn bind(role: &str, address: SocketAddr) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|error| format!("cannot listen on {address} for the {role} server: {error}"))?;
    let local = listener.local_addr().map_err(|error| error.to_string())?;
    // A machine-readable line on stdout, so scripts and tests can find ports chosen with :0.
    println!("{role} server listening on {local}");
    tracing::info!(%local, "{role} server listening");
    Ok(listener)
}

async fn run(mode: Mode) -> Result<(), String> {
    let (signal, shutdown) = ShutdownSignal::new();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        signal.trigger();
        // Keep the trigger alive: dropping it must not look like a second signal.
        std::future::pending::<()>().await;
    });
    let clock = Arc::new(SystemClock);
    let result = match mode {
        Mode::Serve {
            data,
            command_addr,
            query_addr,
        } => {
            let command_listener = bind("command", command_addr).await?;
            let query_listener = bind("query", query_addr).await?;
            let config = CommandConfig {
                data_dir: data.path,
                clock,
            };
            server::run_combined(config, command_listener, query_listener, shutdown).await
        }
        Mode::Command { data, command_addr } => {
            let listener = bind("command", command_addr).await?;
            let config = CommandConfig {
                data_dir: data.path,
                clock,
            };
            server::run_command_server(config, listener, shutdown).await
        }
        Mode::Query {
            follow,
            data,
            query_addr,
        } => {
            let listener = bind("query", query_addr).await?;
            server::run_query_server(&data, &follow, listener, shutdown).await
        }
    };
    result.map_err(|error| error.to_string())
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
