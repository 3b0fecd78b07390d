//! The `inventory` command line: parses flags and the configuration file, sets up logging and
//! signals, binds the listeners and runs the servers or a tool. The binary (`src/main.rs`)
//! only calls [`main`]; tests can use the parsing (`config_file`) directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;

use crate::app::access::{Authenticator, Role};
use crate::app::command::MAX_BATCH_COMMANDS;
use crate::app::{ShutdownSignal, SystemClock};
use crate::delivery::SinkConfig;
use crate::grpc::tls::ServerTls;
use crate::server::{self, CommandConfig, LogConfig, QuerySource};
use crate::telemetry::{self, LogFormat};

mod args;
pub mod config_file;
mod metrics_endpoint;
mod tool;

use args::{LimitArgs, LogArgs, MetricsAddr, SnapshotArgs, TlsArgs, listener, parse_metrics_addr};
use tool::run_tool;

/// Buckets of the `inventory_command_batch_size` histogram: powers of two up to the largest
/// batch, so a scrape shows how much group commit is grouping.
const COMMAND_BATCH_SIZE_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

const _: () = assert!(COMMAND_BATCH_SIZE_BUCKETS[11] as usize == MAX_BATCH_COMMANDS);

/// A distributed inventory service for multi-store retail (gRPC, event-sourced, CQRS).
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Without a mode, `serve` runs. Each mode lists its own flags: \
                  `inventory serve --help` shows the servers' (--command-addr, --query-addr, \
                  --log, --tls-cert, ...)."
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Log lines on stderr: `human` (readable lines) or `json` (one object per line). What is
    /// logged is set by INVENTORY_LOG_LEVEL (default `info`), e.g. `inventory=debug`.
    #[arg(
        long,
        global = true,
        env = "INVENTORY_LOG_FORMAT",
        default_value = "human"
    )]
    log_format: LogFormat,
    /// Export traces over OTLP/gRPC to this collector, e.g. http://127.0.0.1:4317. Off when
    /// absent. The service name is OTEL_SERVICE_NAME, or inventory / inventory-command /
    /// inventory-query.
    #[arg(
        long,
        global = true,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        hide_env_values = true
    )]
    otlp_endpoint: Option<String>,
    /// A TOML file whose keys are these flags' names (`command_addr = "0.0.0.0:50051"`); a
    /// flag or environment variable given as well wins over the file. See docs/configuration.md.
    #[arg(long, global = true, env = "INVENTORY_CONFIG")]
    config: Option<PathBuf>,
}

/// The flags, with the configuration file's values as their defaults. Without a mode, the
/// flags are `serve`'s.
fn parse_cli(
    mut arguments: Vec<std::ffi::OsString>,
) -> Result<(Cli, config_file::ConfigFile), String> {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let mut file = config_file::ConfigFile::default();
    if let Some(path) = config_file::path_from(&arguments) {
        file = config_file::ConfigFile::read(&path)?;
        command = file.apply(command);
    }
    let modes: Vec<String> = command
        .get_subcommands()
        .map(|mode| mode.get_name().to_owned())
        .collect();
    let asks_for_help = arguments.iter().skip(1).any(|argument| {
        matches!(
            argument.to_str(),
            Some("-h" | "--help" | "-V" | "--version")
        )
    });
    // `help` is clap's own subcommand (`inventory help serve`).
    let names_a_mode = arguments.iter().skip(1).any(|argument| {
        argument
            .to_str()
            .is_some_and(|text| text == "help" || modes.iter().any(|mode| mode == text))
    });
    if !names_a_mode && !asks_for_help {
        arguments.insert(1.min(arguments.len()), "serve".into());
    }
    let matches = command
        .try_get_matches_from(arguments)
        .unwrap_or_else(|error| error.exit());
    let cli = Cli::from_arg_matches(&matches).map_err(|error| error.to_string())?;
    Ok((cli, file))
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Run the command server and the query server in one process (the default).
    Serve {
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        snapshots: SnapshotArgs,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        tls: TlsArgs,
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
        /// Address of the Prometheus metrics endpoint (`/metrics`), or `off`.
        #[arg(long, env = "INVENTORY_METRICS_ADDR", default_value = "127.0.0.1:9464", value_parser = parse_metrics_addr)]
        metrics_addr: MetricsAddr,
    },
    /// Run only the command server.
    Command {
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        snapshots: SnapshotArgs,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        tls: TlsArgs,
        #[arg(
            long,
            env = "INVENTORY_COMMAND_ADDR",
            default_value = "127.0.0.1:50051"
        )]
        command_addr: SocketAddr,
        /// Address of the Prometheus metrics endpoint (`/metrics`), or `off`.
        #[arg(long, env = "INVENTORY_METRICS_ADDR", default_value = "127.0.0.1:9464", value_parser = parse_metrics_addr)]
        metrics_addr: MetricsAddr,
    },
    /// Run only a query server: following a command server (--follow), or reading a shared
    /// PostgreSQL log (--log postgres://…).
    Query {
        /// The command server to follow, e.g. http://127.0.0.1:50051, or https://… over TLS
        /// (with --upstream-ca).
        #[arg(
            long,
            env = "INVENTORY_FOLLOW",
            hide_env_values = true,
            conflicts_with = "log"
        )]
        follow: Option<String>,
        /// PEM certificate(s) of the CA that issued the followed server's certificate.
        #[arg(long, env = "INVENTORY_UPSTREAM_CA", requires = "follow")]
        upstream_ca: Option<PathBuf>,
        /// An API token the followed server accepts (the replica role suffices). Prefer the
        /// environment variable: a flag's value is visible to every user of the host.
        #[arg(
            long,
            env = "INVENTORY_UPSTREAM_TOKEN",
            hide_env_values = true,
            requires = "follow"
        )]
        upstream_token: Option<String>,
        /// A PostgreSQL log to read directly, e.g. postgres://inventory@db/inventory.
        #[arg(long, env = "INVENTORY_EVENT_LOG", hide_env_values = true)]
        log: Option<String>,
        /// Schema of the PostgreSQL log.
        #[arg(long, env = "INVENTORY_PG_SCHEMA", default_value = "inventory")]
        pg_schema: String,
        /// Where a following query server keeps its copy of the log.
        #[arg(long, env = "INVENTORY_DATA", default_value = "./data-replica")]
        data: PathBuf,
        #[arg(long, env = "INVENTORY_QUERY_ADDR", default_value = "127.0.0.1:50052")]
        query_addr: SocketAddr,
        /// Address of the Prometheus metrics endpoint (`/metrics`), or `off`. Not the command
        /// server's default, so both can run on one host.
        #[arg(long, env = "INVENTORY_METRICS_ADDR", default_value = "127.0.0.1:9465", value_parser = parse_metrics_addr)]
        metrics_addr: MetricsAddr,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        snapshots: SnapshotArgs,
    },
    #[command(flatten)]
    Tool(Tool),
}

#[derive(Subcommand, Debug)]
enum Tool {
    /// Check a log: checksums, gapless positions, contiguous versions, and every domain
    /// invariant replayed. Changes nothing. Exit code 0 when the log is sound, 1 when not.
    Verify {
        #[command(flatten)]
        log: LogArgs,
    },
    /// Write a log's events as JSON lines (one object per event), for audits and migrations.
    Export {
        #[command(flatten)]
        log: LogArgs,
        /// Only events after this position.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Output file; standard output when absent.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Take a snapshot of an embedded log's state at its head (as a server does every
    /// --snapshot-every-events events), so that the next start folds only what follows.
    Snapshot {
        #[command(flatten)]
        log: LogArgs,
        /// Snapshots kept (the newest).
        #[arg(long, default_value_t = crate::app::snapshot::SnapshotPolicy::DEFAULT.keep)]
        keep: usize,
    },
    /// Copy an embedded log into a PostgreSQL log (empty, or holding a prefix of it from an
    /// interrupted migration). Stop the command server first.
    Migrate {
        /// The embedded log's directory.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL URL.
        #[arg(long)]
        to: String,
        #[arg(long, env = "INVENTORY_PG_SCHEMA", default_value = "inventory")]
        pg_schema: String,
    },
    /// Make an API token: prints a fresh random token once, and the [[auth.tokens]] block
    /// (its SHA-256, not the token) to paste into the configuration file.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make TLS certificates: a CA, a server certificate and client certificates, as PEM
    /// files in a new or empty folder (private keys readable by their owner only).
    #[command(subcommand)]
    Cert(CertCommand),
    /// Check the configuration file (--config or INVENTORY_CONFIG) and print what it sets up:
    /// credentials and outbound sinks. Exit code 0 when it is valid, 1 (naming the key) when
    /// not.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Read and check every key; start nothing.
    Check,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// A new token for a client.
    New {
        /// The credential's name: what the audit trail and the logs call it.
        #[arg(long)]
        name: String,
        /// admin, operator, sales, reader or replica.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The stores it may act on, comma-separated; all stores when absent.
        #[arg(long, value_delimiter = ',')]
        stores: Vec<String>,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| {
        let roles: Vec<&str> = Role::ALL.iter().map(|role| role.name()).collect();
        format!("expected one of {}", roles.join(", "))
    })
}

#[derive(Subcommand, Debug)]
enum CertCommand {
    /// A new CA (ca.pem, ca.key), a server certificate signed by it (server.pem, server.key)
    /// and, for each --client NAME, a client certificate (NAME.pem, NAME.key).
    Generate {
        /// The folder to write into; no file in it is overwritten.
        #[arg(long)]
        out: PathBuf,
        /// A DNS name or IP address the server certificate is valid for (repeatable).
        #[arg(long = "host", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        hosts: Vec<String>,
        /// A client certificate for mutual TLS whose common name is NAME (repeatable).
        #[arg(long = "client")]
        clients: Vec<String>,
    },
}

/// Runs the `inventory` command with `arguments` (the program's name first).
pub fn main(arguments: Vec<std::ffi::OsString>) -> ExitCode {
    let (cli, file) = match parse_cli(arguments) {
        Ok(parsed) => parsed,
        Err(message) => return failure(&message),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    // No mode given means `serve` (`parse_cli` put it in); `--help` alone shows every mode.
    let Some(mode) = cli.mode else {
        unreachable!("clap prints the help and exits when no mode is given");
    };
    let telemetry = {
        // The OTLP exporter's channel lives on the runtime.
        let _runtime = runtime.enter();
        start_telemetry(cli.log_format, cli.otlp_endpoint.as_deref(), &mode)
    };
    let telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(message) => return failure(&message),
    };
    if let Mode::Tool(Tool::Config(ConfigCommand::Check)) = &mode {
        return match &cli.config {
            Some(path) => {
                print!("{}", file.summary(path));
                ExitCode::SUCCESS
            }
            None => failure(
                "config check: no configuration file; give --config FILE or set INVENTORY_CONFIG",
            ),
        };
    }
    let (sinks, auth) = match sinks_and_credentials(&file) {
        Ok(found) => found,
        Err(message) => return failure(&message),
    };
    let result = runtime.block_on(run(mode, auth, sinks));
    // Flushes the spans not yet exported, while the runtime still runs.
    drop(telemetry);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            failure(&message)
        }
    }
}

/// Says why the command failed, on stderr.
fn failure(message: &str) -> ExitCode {
    eprintln!("inventory: {message}");
    ExitCode::FAILURE
}

/// Log lines at INVENTORY_LOG_LEVEL, and traces exported to `otlp_endpoint` by a server.
fn start_telemetry(
    log_format: LogFormat,
    otlp_endpoint: Option<&str>,
    mode: &Mode,
) -> Result<telemetry::Telemetry, String> {
    let service_name = match mode {
        Mode::Command { .. } => "inventory-command",
        Mode::Query { .. } => "inventory-query",
        Mode::Serve { .. } | Mode::Tool(_) => "inventory",
    };
    // PostgreSQL's notices ("relation already exists, skipping" at every start) are not news:
    // by default only its warnings are logged.
    let filter = std::env::var("INVENTORY_LOG_LEVEL")
        .unwrap_or_else(|_| "info,tokio_postgres=warn".to_owned());
    // Tools export no traces.
    let otlp_endpoint =
        otlp_endpoint.filter(|endpoint| !endpoint.is_empty() && !matches!(mode, Mode::Tool(_)));
    telemetry::init(log_format, &filter, otlp_endpoint, service_name)
}

/// The outbound sinks and the credentials the configuration file names: checked when the
/// file was read, and read again here, since a key file may have gone since.
fn sinks_and_credentials(
    file: &config_file::ConfigFile,
) -> Result<(Vec<SinkConfig>, Option<Arc<Authenticator>>), String> {
    let in_file = |(key, problem): (String, String)| format!("config file: key `{key}`: {problem}");
    let sinks = file.sinks().map_err(in_file)?;
    let auth = file.authenticator().map_err(in_file)?.map(Arc::new);
    if file.takes_unsigned_jwts() {
        tracing::warn!(
            "[auth.jwt] algorithms lists \"none\": unsigned tokens are accepted, so anyone who \
             can reach the servers can claim any role; use it only for a test set-up"
        );
    }
    Ok((sinks, auth))
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

/// Installs the Prometheus recorder, binds the metrics listener and prints the address it
/// serves `/metrics` on. Must run before the servers start: the log, the writer and the read
/// model look their metrics up once, when they are created.
/// Serves `/metrics` when `address` is on, guarded as [`metrics_endpoint::guard`] says.
async fn serve_metrics(
    address: MetricsAddr,
    insecure: bool,
    tls: &Option<ServerTls>,
    auth: &Option<Arc<Authenticator>>,
) -> Result<(), String> {
    let MetricsAddr::On(address) = address else {
        return Ok(());
    };
    let guard = metrics_endpoint::guard(address, insecure, tls, auth)?;
    install_metrics(address, guard).await.map(|_| ())
}

async fn install_metrics(
    requested: SocketAddr,
    guard: Option<metrics_endpoint::Guard>,
) -> Result<SocketAddr, String> {
    let cannot =
        |error: &dyn std::fmt::Display| format!("cannot serve metrics on {requested}: {error}");
    // Bound here rather than by the exporter, so that port 0 gets a port nobody else can take
    // between choosing and binding, and the address printed is the one listened on.
    let listener = TcpListener::bind(requested)
        .await
        .map_err(|error| cannot(&error))?;
    let address = listener.local_addr().map_err(|error| cannot(&error))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("inventory_command_batch_size".to_owned()),
            &COMMAND_BATCH_SIZE_BUCKETS,
        )
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full("inventory_grpc_request_duration_seconds".to_owned()),
                &crate::grpc::observe::DURATION_BUCKETS,
            )
        })
        .and_then(|builder| builder.install_recorder())
        .map_err(|error| cannot(&error))?;
    tokio::spawn(metrics_endpoint::serve(listener, handle, guard));
    // A machine-readable line on stdout, like the servers' own.
    println!("metrics listening on {address}");
    tracing::info!(%address, "metrics listening");
    Ok(address)
}

/// Runs one mode. Over 70 lines: one arm per mode, each binding its listeners and starting
/// its servers, which read best side by side.
async fn run(
    mode: Mode,
    auth: Option<Arc<Authenticator>>,
    sinks: Vec<SinkConfig>,
) -> Result<(), String> {
    let (signal, shutdown) = ShutdownSignal::new();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        signal.trigger();
        // Keep the trigger alive: dropping it must not look like a second signal.
        std::future::pending::<()>().await;
    });
    let clock = Arc::new(SystemClock);
    let mode = match mode {
        Mode::Tool(tool) => return run_tool(tool).await,
        mode => mode,
    };
    let result = match mode {
        Mode::Serve {
            log,
            snapshots,
            limits,
            tls,
            command_addr,
            query_addr,
            metrics_addr,
        } => {
            tls.check_exposure(&[command_addr, query_addr], &auth)?;
            let insecure = tls.insecure;
            let tls = tls.load()?;
            serve_metrics(metrics_addr, insecure, &tls, &auth).await?;
            let command_listener = listener(bind("command", command_addr).await?, &tls, &auth);
            let query_listener = listener(bind("query", query_addr).await?, &tls, &auth);
            let config = CommandConfig {
                log: log.config(),
                clock,
                limits: limits.limits(),
                sinks,
                snapshots: snapshots.policy(),
            };
            server::run_combined(config, command_listener, query_listener, shutdown).await
        }
        Mode::Command {
            log,
            snapshots,
            limits,
            tls,
            command_addr,
            metrics_addr,
        } => {
            tls.check_exposure(&[command_addr], &auth)?;
            let insecure = tls.insecure;
            let tls = tls.load()?;
            serve_metrics(metrics_addr, insecure, &tls, &auth).await?;
            let listener = listener(bind("command", command_addr).await?, &tls, &auth);
            let config = CommandConfig {
                log: log.config(),
                clock,
                limits: limits.limits(),
                sinks,
                snapshots: snapshots.policy(),
            };
            server::run_command_server(config, listener, shutdown).await
        }
        Mode::Query {
            follow,
            upstream_ca,
            upstream_token,
            log,
            pg_schema,
            data,
            query_addr,
            limits,
            tls,
            metrics_addr,
            snapshots,
        } => {
            let upstream = (upstream_ca, upstream_token);
            let source = query_source(follow, upstream, log, &pg_schema, (data, snapshots))?;
            tls.check_exposure(&[query_addr], &auth)?;
            let insecure = tls.insecure;
            let tls = tls.load()?;
            serve_metrics(metrics_addr, insecure, &tls, &auth).await?;
            let listener = listener(bind("query", query_addr).await?, &tls, &auth);
            server::run_query_server(source, limits.limits(), listener, shutdown).await
        }
        Mode::Tool(_) => unreachable!("tools return above"),
    };
    result.map_err(|error| error.to_string())
}

/// Where a query server on its own reads from: `--follow URL` or a PostgreSQL `--log`.
fn query_source(
    follow: Option<String>,
    (upstream_ca, upstream_token): (Option<PathBuf>, Option<String>),
    log: Option<String>,
    pg_schema: &str,
    (data, snapshots): (PathBuf, SnapshotArgs),
) -> Result<QuerySource, String> {
    match (follow, log) {
        (Some(upstream), None) => Ok(QuerySource::Follow {
            upstream,
            data_dir: data,
            upstream_ca,
            upstream_token,
            snapshots: snapshots.policy(),
        }),
        (None, Some(log)) => match LogConfig::parse(&log, pg_schema) {
            LogConfig::Postgres { url, schema } => Ok(QuerySource::Postgres { url, schema }),
            LogConfig::Embedded { .. } => Err(format!(
                "--log {log}: a query server on its own reads only a PostgreSQL log; \
                 to follow a command server's embedded log use --follow URL"
            )),
        },
        _ => Err("a query server needs --follow URL or --log postgres://…".into()),
    }
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
