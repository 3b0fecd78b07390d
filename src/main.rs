//! The `inventory` binary: parses flags, sets up logging and signals, binds the listeners and
//! runs the servers from the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;

use inventory::app::access::{Authenticator, Role};
use inventory::app::command::MAX_BATCH_COMMANDS;
use inventory::app::{ShutdownSignal, SystemClock};
use inventory::domain::LogPosition;
use inventory::grpc::tls::{ServerTls, TlsFiles};
use inventory::log::PostgresLog;
use inventory::server::{self, CommandConfig, Limits, LogConfig, QuerySource, ServerListener};
use inventory::telemetry::{self, LogFormat};
use inventory::tools;

mod config_file;
mod metrics_endpoint;

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
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
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
        #[arg(long, env = "INVENTORY_FOLLOW", conflicts_with = "log")]
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
        #[arg(long, env = "INVENTORY_EVENT_LOG")]
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

impl Mode {
    fn metrics_addr(&self) -> MetricsAddr {
        match self {
            Mode::Serve { metrics_addr, .. }
            | Mode::Command { metrics_addr, .. }
            | Mode::Query { metrics_addr, .. } => *metrics_addr,
            Mode::Tool(_) => MetricsAddr::Off,
        }
    }
}

/// Where the Prometheus metrics endpoint listens, if anywhere.
#[derive(Clone, Copy, Debug)]
enum MetricsAddr {
    Off,
    On(SocketAddr),
}

fn parse_metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    if text == "off" {
        return Ok(MetricsAddr::Off);
    }
    text.parse()
        .map(MetricsAddr::On)
        .map_err(|error| format!("{error} (expected an address such as 127.0.0.1:9464, or off)"))
}

#[derive(clap::Args, Debug)]
struct LogArgs {
    /// The event log: a directory for the embedded log (created if missing), or a
    /// postgres:// URL for a log shared by several servers.
    #[arg(
        long = "log",
        visible_alias = "data",
        env = "INVENTORY_EVENT_LOG",
        default_value = "./data"
    )]
    target: String,
    /// Schema of the PostgreSQL log (several logs can share one database).
    #[arg(long, env = "INVENTORY_PG_SCHEMA", default_value = "inventory")]
    pg_schema: String,
}

#[derive(clap::Args, Debug, Clone, Copy)]
struct LimitArgs {
    /// Requests a server works on at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "INVENTORY_MAX_IN_FLIGHT", default_value_t = inventory::grpc::overload::MAX_IN_FLIGHT_REQUESTS)]
    max_in_flight: usize,
    /// Client connections a server keeps open at once; more are closed when accepted.
    #[arg(long, env = "INVENTORY_MAX_CONNECTIONS", default_value_t = inventory::grpc::overload::MAX_CONNECTIONS)]
    max_connections: usize,
}

impl LimitArgs {
    fn limits(self) -> Limits {
        Limits {
            max_in_flight_requests: self.max_in_flight.max(1),
            max_connections: self.max_connections.max(1),
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
struct TlsArgs {
    /// TLS: the server's PEM certificate chain (with --tls-key). Reloaded when the file
    /// changes or on SIGHUP.
    #[arg(long, env = "INVENTORY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the PEM private key of --tls-cert.
    #[arg(long, env = "INVENTORY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate issued by a CA in this PEM file.
    #[arg(long, env = "INVENTORY_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Listen beyond loopback without TLS and authentication anyway (a warning is logged at
    /// start and every hour). Without it such a server refuses to start.
    #[arg(long, env = "INVENTORY_INSECURE")]
    insecure: bool,
}

/// How often a server listening beyond loopback without TLS and authentication says so.
const INSECURE_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

impl TlsArgs {
    /// Refuses to serve `addresses` beyond loopback without both TLS and authentication,
    /// unless `--insecure` was given; then warns now and every hour.
    fn check_exposure(
        &self,
        addresses: &[SocketAddr],
        auth: &Option<Arc<Authenticator>>,
    ) -> Result<(), String> {
        let tls = self.tls_cert.is_some() && self.tls_key.is_some();
        if auth.as_ref().is_some_and(|auth| auth.names_certificates())
            && self.tls_client_ca.is_none()
        {
            return Err(
                "[[auth.certificates]] names clients by their certificate: it needs mutual TLS \
                 ([tls] client_ca, or --tls-client-ca)"
                    .into(),
            );
        }
        let exposed: Vec<String> = addresses
            .iter()
            .filter(|address| !address.ip().is_loopback())
            .map(ToString::to_string)
            .collect();
        if exposed.is_empty() || (tls && auth.is_some()) {
            return Ok(());
        }
        let missing = match (tls, auth.is_some()) {
            (false, false) => {
                "TLS ([tls] cert and key) and authentication ([[auth.tokens]] or [auth.jwt])"
            }
            (false, true) => "TLS ([tls] cert and key, or --tls-cert and --tls-key)",
            _ => {
                "authentication ([[auth.tokens]], [auth.jwt] or [[auth.certificates]] in the config file)"
            }
        };
        let exposed = exposed.join(", ");
        if !self.insecure {
            return Err(format!(
                "refusing to listen on {exposed} without {missing}: anyone who reaches it could \
                 change any store's stock. Configure them (docs/security.md: TLS, tokens and \
                 roles), listen on 127.0.0.1 only, or pass --insecure (INVENTORY_INSECURE=true) \
                 to serve anyway"
            ));
        }
        let warn = move || {
            tracing::warn!(
                addresses = %exposed,
                "--insecure: serving beyond loopback without {missing}; anyone who reaches these addresses can change any store's stock"
            );
        };
        warn();
        tokio::spawn(async move {
            let mut every_hour = tokio::time::interval(INSECURE_WARNING_INTERVAL);
            every_hour.tick().await;
            loop {
                every_hour.tick().await;
                warn();
            }
        });
        Ok(())
    }

    /// The servers' TLS configuration, or `None` for plain text.
    fn load(&self) -> Result<Option<ServerTls>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
        };
        let tls = ServerTls::start(files).map_err(|error| format!("TLS: {error}"))?;
        tracing::info!(
            cert = %cert.display(),
            mutual = tls.mutual(),
            "TLS on"
        );
        Ok(Some(tls))
    }
}

fn listener(
    tcp: TcpListener,
    tls: &Option<ServerTls>,
    auth: &Option<Arc<Authenticator>>,
) -> ServerListener {
    ServerListener {
        tcp,
        tls: tls.clone(),
        auth: auth.clone(),
    }
}

impl LogArgs {
    fn config(&self) -> LogConfig {
        LogConfig::parse(&self.target, &self.pg_schema)
    }
}

fn main() -> ExitCode {
    let (cli, file) = match parse_cli(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("inventory: {message}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    // No mode given means `serve` (`parse_cli` put it in); `--help` alone shows every mode.
    let Some(mode) = cli.mode else {
        unreachable!("clap prints the help and exits when no mode is given");
    };
    let service_name = match &mode {
        Mode::Command { .. } => "inventory-command",
        Mode::Query { .. } => "inventory-query",
        _ => "inventory",
    };
    // PostgreSQL's notices ("relation already exists, skipping" at every start) are not news:
    // by default only its warnings are logged.
    let filter = std::env::var("INVENTORY_LOG_LEVEL")
        .unwrap_or_else(|_| "info,tokio_postgres=warn".to_owned());
    // Tools export no traces.
    let otlp_endpoint = cli
        .otlp_endpoint
        .as_deref()
        .filter(|endpoint| !endpoint.is_empty() && !matches!(mode, Mode::Tool(_)));
    // The OTLP exporter's channel lives on the runtime.
    let telemetry = {
        let _runtime = runtime.enter();
        telemetry::init(cli.log_format, &filter, otlp_endpoint, service_name)
    };
    let telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("inventory: {message}");
            return ExitCode::FAILURE;
        }
    };
    if let Mode::Tool(Tool::Config(ConfigCommand::Check)) = &mode {
        return match &cli.config {
            Some(path) => {
                print!("{}", file.summary(path));
                ExitCode::SUCCESS
            }
            None => {
                eprintln!(
                    "inventory: config check: no configuration file; give --config FILE or set INVENTORY_CONFIG"
                );
                ExitCode::FAILURE
            }
        };
    }
    let sinks = match file.sinks() {
        Ok(sinks) => sinks,
        Err((key, problem)) => {
            eprintln!("inventory: config file: key `{key}`: {problem}");
            return ExitCode::FAILURE;
        }
    };
    // Checked when the file was read; read again here, a key file may have gone since.
    let auth = match file.authenticator() {
        Ok(auth) => auth.map(Arc::new),
        Err((key, problem)) => {
            eprintln!("inventory: config file: key `{key}`: {problem}");
            return ExitCode::FAILURE;
        }
    };
    if file.takes_unsigned_jwts() {
        tracing::warn!(
            "[auth.jwt] algorithms lists \"none\": unsigned tokens are accepted, so anyone who \
             can reach the servers can claim any role; use it only for a test set-up"
        );
    }
    let result = runtime.block_on(run(mode, auth, sinks));
    // Flushes the spans not yet exported, while the runtime still runs.
    drop(telemetry);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("inventory: {message}");
            ExitCode::FAILURE
        }
    }
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
async fn install_metrics(requested: SocketAddr) -> Result<SocketAddr, String> {
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
                &inventory::grpc::observe::DURATION_BUCKETS,
            )
        })
        .and_then(|builder| builder.install_recorder())
        .map_err(|error| cannot(&error))?;
    tokio::spawn(metrics_endpoint::serve(listener, handle));
    // A machine-readable line on stdout, like the servers' own.
    println!("metrics listening on {address}");
    tracing::info!(%address, "metrics listening");
    Ok(address)
}

async fn run(
    mode: Mode,
    auth: Option<Arc<Authenticator>>,
    sinks: Vec<inventory::delivery::SinkConfig>,
) -> Result<(), String> {
    if let MetricsAddr::On(address) = mode.metrics_addr() {
        install_metrics(address).await?;
    }
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
            limits,
            tls,
            command_addr,
            query_addr,
            metrics_addr: _,
        } => {
            tls.check_exposure(&[command_addr, query_addr], &auth)?;
            let tls = tls.load()?;
            let command_listener = listener(bind("command", command_addr).await?, &tls, &auth);
            let query_listener = listener(bind("query", query_addr).await?, &tls, &auth);
            let config = CommandConfig {
                log: log.config(),
                clock,
                limits: limits.limits(),
                sinks,
            };
            server::run_combined(config, command_listener, query_listener, shutdown).await
        }
        Mode::Command {
            log,
            limits,
            tls,
            command_addr,
            metrics_addr: _,
        } => {
            tls.check_exposure(&[command_addr], &auth)?;
            let tls = tls.load()?;
            let listener = listener(bind("command", command_addr).await?, &tls, &auth);
            let config = CommandConfig {
                log: log.config(),
                clock,
                limits: limits.limits(),
                sinks,
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
            metrics_addr: _,
        } => {
            let source =
                query_source(follow, (upstream_ca, upstream_token), log, &pg_schema, data)?;
            tls.check_exposure(&[query_addr], &auth)?;
            let tls = tls.load()?;
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
    data: PathBuf,
) -> Result<QuerySource, String> {
    match (follow, log) {
        (Some(upstream), None) => Ok(QuerySource::Follow {
            upstream,
            data_dir: data,
            upstream_ca,
            upstream_token,
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

async fn run_tool(tool: Tool) -> Result<(), String> {
    match tool {
        Tool::Verify { log } => {
            let report = tools::verify(&log.config())
                .await
                .map_err(|error| format!("verify failed: {error}"))?;
            println!(
                "ok: {} events, head {}, {} stock items; every checksum, position, version and stock invariant holds",
                report.events, report.head, report.streams
            );
            if report.torn_tail_bytes > 0 {
                println!(
                    "note: a torn tail of {} bytes (a write never acknowledged) will be cut off at the next start",
                    report.torn_tail_bytes
                );
            }
            Ok(())
        }
        Tool::Export { log, from, output } => {
            let mut writer: Box<dyn std::io::Write + Send> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .map_err(|error| format!("cannot create {}: {error}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let count = tools::export(&log.config(), LogPosition(from), &mut *writer)
                .await
                .map_err(|error| format!("export failed: {error}"))?;
            eprintln!("exported {count} events");
            Ok(())
        }
        Tool::Migrate {
            from,
            to,
            pg_schema,
        } => {
            let LogConfig::Postgres { url, schema } = LogConfig::parse(&to, &pg_schema) else {
                return Err(format!("--to {to}: expected a postgres:// URL"));
            };
            let target = PostgresLog::connect(&url, &schema)
                .await
                .map_err(|error| format!("cannot open the target: {error}"))?;
            let copied = tools::migrate(&from, &target)
                .await
                .map_err(|error| format!("migrate failed: {error}"))?;
            println!("migrated {copied} events into schema {schema}");
            Ok(())
        }
        Tool::Token(TokenCommand::New { name, role, stores }) => new_token(&name, role, &stores),
        Tool::Config(ConfigCommand::Check) => unreachable!("`config check` is answered in main"),
        Tool::Cert(CertCommand::Generate {
            out,
            hosts,
            clients,
        }) => generate_certificates(&out, &hosts, &clients),
    }
}

/// `inventory token new`: the token on stdout's first line, then the block to configure.
fn new_token(name: &str, role: Role, stores: &[String]) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("token new: --name must not be empty".into());
    }
    if inventory::app::access::Principal::RESERVED_NAMES.contains(&name) {
        return Err(format!(
            "token new: --name {name:?} is what events record for the server itself or for a \
             server without authentication: choose another name"
        ));
    }
    for store in stores {
        inventory::domain::StoreId::parse(store)
            .map_err(|error| format!("token new: --stores {store:?}: {error}"))?;
    }
    if role == Role::Replica && !stores.is_empty() {
        return Err("token new: a replica copies the whole log: it takes no --stores".into());
    }
    let (token, sha256) = inventory::app::access::new_token()
        .map_err(|_| "token new: the system's random generator failed".to_owned())?;
    let quoted: Vec<String> = stores
        .iter()
        .map(|store| serde_json::to_string(store).expect("a string serializes"))
        .collect();
    println!("{token}");
    println!();
    println!(
        "# The token above is shown once; the server stores only its SHA-256. Add to the config file:"
    );
    println!("[[auth.tokens]]");
    println!(
        "name = {}",
        serde_json::to_string(name).expect("a string serializes")
    );
    println!("sha256 = \"{sha256}\"");
    println!("role = \"{role}\"");
    println!("stores = [{}]", quoted.join(", "));
    Ok(())
}

/// `inventory cert generate`: a CA, a server certificate and client certificates in `out`.
fn generate_certificates(
    out: &std::path::Path,
    hosts: &[String],
    clients: &[String],
) -> Result<(), String> {
    use inventory::certificates::CertificateAuthority;
    let failed = |error: &dyn std::fmt::Display| format!("cert generate: {error}");
    for name in clients {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.')
            && !matches!(name.as_str(), "ca" | "server");
        if !valid {
            return Err(format!(
                "cert generate: --client {name:?}: a client name is letters, digits, '-', '_' and '.',                  not starting with '.', and not ca or server (it names the files NAME.pem, NAME.key)"
            ));
        }
    }
    std::fs::create_dir_all(out)
        .map_err(|error| failed(&format!("cannot create {}: {error}", out.display())))?;
    let authority = CertificateAuthority::new("inventory CA").map_err(|error| failed(&error))?;
    let server = authority.server(hosts).map_err(|error| failed(&error))?;
    let mut files = vec![
        (
            "ca.pem".to_owned(),
            authority.certificate_pem().to_owned(),
            false,
        ),
        ("ca.key".to_owned(), authority.key_pem().to_owned(), true),
        ("server.pem".to_owned(), server.certificate_pem, false),
        ("server.key".to_owned(), server.key_pem, true),
    ];
    for name in clients {
        let client = authority.client(name).map_err(|error| failed(&error))?;
        files.push((format!("{name}.pem"), client.certificate_pem, false));
        files.push((format!("{name}.key"), client.key_pem, true));
    }
    // Nothing is written if any file exists already: no half-replaced set of certificates.
    for (name, _, _) in &files {
        let path = out.join(name);
        if path.exists() {
            return Err(format!(
                "cert generate: {} exists; nothing was written (choose an empty folder)",
                path.display()
            ));
        }
    }
    for (name, contents, private) in &files {
        write_new(&out.join(name), contents, *private).map_err(|error| failed(&error))?;
        println!("wrote {}", out.join(name).display());
    }
    Ok(())
}

/// Writes a file that must not exist yet; a private one is readable by its owner only.
fn write_new(path: &std::path::Path, contents: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
