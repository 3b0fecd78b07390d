//! Wiring: opens the log, starts the command side, the read model and the tonic servers, and
//! stops them all on one shutdown signal. The binary and the tests both start servers through
//! these functions, on listeners they bind themselves (tests use `127.0.0.1:0`).
//!
//! Over 600 lines: the wiring of the three modes (combined, command, query with its two
//! sources) and the layers and limits every server shares.

mod snapshots;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::{Endpoint, Server};
use tonic_health::server::HealthReporter;

use crate::app::access::Authenticator;
use crate::app::command::CommandState;
use crate::app::query::Queries;
use crate::app::snapshot::SnapshotPolicy;
use crate::app::{BreakerState, Clock, CommandSide, ReadModel, Shutdown};
use crate::delivery::postgres::PgClaims;
use crate::delivery::{Claims, Deliveries, FileCursors, SinkConfig};
use crate::grpc::auth::AuthLayer;
use crate::grpc::command_service::CommandApi;
pub use crate::grpc::connection_guard::ConnectionTimeouts;
use crate::grpc::delivery_service::DeliveryApi;
use crate::grpc::event_service::EventApi;
use crate::grpc::follower::{self, FollowerState};
use crate::grpc::observe::ObserveLayer;
use crate::grpc::overload;
use crate::grpc::query_service::QueryApi;
use crate::grpc::tls::{self, ServerTls};
use crate::grpc::{FILE_DESCRIPTOR_SET, pb};
use crate::grpc::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, oversized_request_as_invalid_argument};
use crate::log::{EventLog, LogError, OpenReport, PostgresLog, TailCache};

type CommandServiceServer = pb::command_service_server::CommandServiceServer<CommandApi>;
type QueryServiceServer = pb::query_service_server::QueryServiceServer<QueryApi>;
type EventServiceServer = pb::event_service_server::EventServiceServer<EventApi>;
type DeliveryServiceServer = pb::delivery_service_server::DeliveryServiceServer<DeliveryApi>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the event log: {0}")]
    Log(#[from] LogError),
    #[error("grpc transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot start delivery: {0}")]
    Delivery(String),
    #[error("invalid upstream address {address:?}: {problem}")]
    Upstream { address: String, problem: String },
}

/// Where a server takes connections and whom it serves: a bound listener; with `tls` each
/// connection is TLS (mutual TLS when its configuration has a client CA); with `auth` every
/// request but health checks needs a credential it accepts.
pub struct ServerListener {
    pub tcp: TcpListener,
    pub tls: Option<ServerTls>,
    pub auth: Option<Arc<Authenticator>>,
}

impl From<TcpListener> for ServerListener {
    fn from(tcp: TcpListener) -> ServerListener {
        ServerListener {
            tcp,
            tls: None,
            auth: None,
        }
    }
}

/// Where the event log lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogConfig {
    /// The embedded log in a local directory (the default): one process writes it.
    Embedded { data_dir: PathBuf },
    /// A PostgreSQL database shared by any number of command and query servers.
    Postgres { url: String, schema: String },
}

impl LogConfig {
    /// A `postgres://` or `postgresql://` URL selects PostgreSQL; anything else is a directory.
    pub fn parse(text: &str, postgres_schema: &str) -> LogConfig {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            LogConfig::Postgres {
                url: text.to_owned(),
                schema: postgres_schema.to_owned(),
            }
        } else {
            LogConfig::Embedded {
                data_dir: PathBuf::from(text),
            }
        }
    }
}

/// Where the command side keeps its log, its clock and its limits.
#[derive(Clone)]
pub struct CommandConfig {
    pub log: LogConfig,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    /// The outbound sinks this command server delivers (`[[webhook]]`).
    pub sinks: Vec<SinkConfig>,
    /// When the embedded log's state is written as a snapshot (`[snapshots]`).
    pub snapshots: SnapshotPolicy,
}

/// How often a server pings a connection (HTTP/2 keep-alive), and how long it waits for the
/// answer before closing it.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Per-server limits that operators may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests worked on at once; more are refused with `RESOURCE_EXHAUSTED`.
    pub max_in_flight_requests: usize,
    /// Client connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A subscriber that takes nothing for this long while events wait is cut off
    /// ([`crate::app::STALLED_AFTER`] by default).
    pub subscription_stalled_after: std::time::Duration,
    /// How long a connection may wait for its first authenticated request, and idle after.
    pub connection_timeouts: ConnectionTimeouts,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_in_flight_requests: overload::MAX_IN_FLIGHT_REQUESTS,
            max_connections: overload::MAX_CONNECTIONS,
            subscription_stalled_after: crate::app::STALLED_AFTER,
            connection_timeouts: ConnectionTimeouts::DEFAULT,
        }
    }
}

/// What a query server builds its read model from.
#[derive(Clone, Debug)]
pub enum QuerySource {
    /// Follow a command server through `EventService.Subscribe`, keeping a copy of its log in
    /// `data_dir`. An `https://` upstream is reached over TLS, trusting the PEM certificates
    /// in `upstream_ca`.
    Follow {
        upstream: String,
        data_dir: PathBuf,
        upstream_ca: Option<PathBuf>,
        /// An API token the upstream accepts (a `replica` role suffices).
        upstream_token: Option<String>,
        /// When the copy's state is written as a snapshot (as a command server's).
        snapshots: SnapshotPolicy,
    },
    /// Read a shared PostgreSQL log directly.
    Postgres { url: String, schema: String },
}

/// Runs the command server and the query server in one process, sharing the log, until
/// `shutdown`. In-flight commands finish and are durable before it returns.
pub async fn run_combined(
    config: CommandConfig,
    command_listener: impl Into<ServerListener>,
    query_listener: impl Into<ServerListener>,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let model = Arc::new(ReadModel::new());
    let (log, state) = open_command_log(&config, Some(&model)).await?;
    let command_side = CommandSide::start(state, log.clone(), config.clock.clone());
    let snapshots = snapshots::periodic(&config, log.clone(), shutdown.clone());
    report_reachability(model.clone(), log.reachable());
    let projection = tokio::spawn(model.clone().follow(log.clone(), shutdown.clone()));
    let deliveries = start_deliveries(&config, log.clone(), shutdown.clone())?;
    let command_server = serve_command(
        command_listener.into(),
        CommandApi::new(command_side.handle.clone()),
        deliveries.clone(),
        log.clone(),
        command_side.breaker.clone(),
        config.limits,
        shutdown.clone(),
    );
    let log_for_snapshot = log.clone();
    let query_server = serve_query(
        query_listener.into(),
        model,
        log,
        None,
        config.limits,
        shutdown.clone(),
    );
    let CommandSide { handle, writer, .. } = command_side;
    drop(handle);
    let (command_result, query_result) = tokio::join!(command_server, query_server);
    // The servers are gone, and with them every command handle: the writer answers what it
    // accepted and stops.
    writer.await.expect("command writer panicked");
    deliveries.stopped().await;
    projection_result(projection.await);
    snapshots::at_shutdown(&config, snapshots, log_for_snapshot).await;
    command_result?;
    query_result?;
    Ok(())
}

/// Runs only the command server (with `EventService`) until `shutdown`.
pub async fn run_command_server(
    config: CommandConfig,
    listener: impl Into<ServerListener>,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let (log, state) = open_command_log(&config, None).await?;
    let CommandSide {
        handle,
        writer,
        breaker,
    } = CommandSide::start(state, log.clone(), config.clock.clone());
    let snapshots = snapshots::periodic(&config, log.clone(), shutdown.clone());
    let deliveries = start_deliveries(&config, log.clone(), shutdown.clone())?;
    let result = serve_command(
        listener.into(),
        CommandApi::new(handle),
        deliveries.clone(),
        log.clone(),
        breaker,
        config.limits,
        shutdown,
    )
    .await;
    writer.await.expect("command writer panicked");
    deliveries.stopped().await;
    snapshots::at_shutdown(&config, snapshots, log).await;
    result
}

/// Runs a query server until `shutdown`: it follows a command server (keeping a copy of its
/// log) or reads a shared PostgreSQL log, and serves queries and subscriptions from that.
/// Over 70 lines: the two sources (a followed command server, a shared log) set up side by
/// side, then one server for both.
pub async fn run_query_server(
    source: QuerySource,
    limits: Limits,
    listener: impl Into<ServerListener>,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let listener = listener.into();
    let model = Arc::new(ReadModel::new());
    let (follower_state, follower_watch) = watch::channel(FollowerState::Connecting);
    let mut replica_snapshots = None;
    let (log, background): (Arc<dyn EventLog>, tokio::task::JoinHandle<()>) = match source {
        QuerySource::Follow {
            upstream,
            data_dir,
            upstream_ca,
            upstream_token,
            snapshots: policy,
        } => {
            let endpoint = upstream_endpoint(&upstream, upstream_ca.as_deref())?;
            let credential = upstream_token.map(|token| bearer(&token)).transpose()?;
            let directory = data_dir.clone();
            let opened_model = model.clone();
            let (log, report) = tokio::task::spawn_blocking(move || {
                crate::app::replay::open_replica(&directory, &opened_model, policy)
            })
            .await
            .expect("opening the log panicked")?;
            report_open(&data_dir.display().to_string(), &report);
            // The follower is the copy's only writer.
            let log: Arc<dyn EventLog> = Arc::new(TailCache::new(Arc::new(log)));
            // The read model tells queries since when the command server is unreachable.
            let mut upstream = follower_state.subscribe();
            let upstream_model = model.clone();
            tokio::spawn(async move {
                loop {
                    let state = *upstream.borrow_and_update();
                    upstream_model.set_upstream_reachable(state != FollowerState::Connecting);
                    if upstream.changed().await.is_err() {
                        return;
                    }
                }
            });
            let follower = tokio::spawn(follower::follow(
                endpoint,
                credential,
                log.clone(),
                follower_state,
                shutdown.clone(),
            ));
            replica_snapshots = Some((
                data_dir.clone(),
                policy,
                snapshots::every(&data_dir, policy, log.clone(), shutdown.clone()),
            ));
            (log, follower)
        }
        QuerySource::Postgres { url, schema } => {
            let log: Arc<dyn EventLog> = Arc::new(PostgresLog::connect(&url, &schema).await?);
            tracing::info!(schema, head = log.head().0, "reading the PostgreSQL log");
            // Answers say since when the database is unreachable, also while nothing is read.
            report_reachability(model.clone(), log.reachable());
            // Serving once the read model has applied what the log held at start-up.
            let start_head = log.head();
            let caught_up_model = model.clone();
            let reporter = tokio::spawn(async move {
                while !caught_up_model
                    .wait_for(start_head, std::time::Duration::from_secs(3600))
                    .await
                {}
                follower_state.send_replace(FollowerState::CaughtUp);
            });
            (log, reporter)
        }
    };
    let projection = tokio::spawn(model.clone().follow(log.clone(), shutdown.clone()));
    let result = serve_query(
        listener,
        model,
        log.clone(),
        Some(follower_watch),
        limits,
        shutdown,
    )
    .await;
    background.abort();
    let _ = background.await;
    projection_result(projection.await);
    // The follower, the copy's only writer, has stopped: a snapshot at its head.
    if let Some((data_dir, policy, periodic)) = replica_snapshots {
        snapshots::finish(&data_dir, policy, periodic, log).await;
    }
    result
}

/// The endpoint a follower connects to: over TLS for `https://`, trusting `ca` (required
/// then, and refused for a plain `http://` upstream, where it would be silently unused).
pub fn upstream_endpoint(
    upstream: &str,
    ca: Option<&std::path::Path>,
) -> Result<Endpoint, ServerError> {
    let invalid = |problem: String| ServerError::Upstream {
        address: upstream.to_owned(),
        problem,
    };
    let endpoint =
        Endpoint::from_shared(upstream.to_owned()).map_err(|error| invalid(error.to_string()))?;
    let https = upstream.starts_with("https://");
    match (https, ca) {
        (false, None) => Ok(endpoint),
        (false, Some(_)) => Err(invalid(
            "an upstream CA is given but the address is not https://".to_owned(),
        )),
        (true, None) => Err(invalid(
            "an https:// upstream needs the CA that issued its certificate (--upstream-ca)"
                .to_owned(),
        )),
        (true, Some(ca)) => {
            let pem = std::fs::read(ca)
                .map_err(|error| invalid(format!("cannot read {}: {error}", ca.display())))?;
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem));
            endpoint
                .tls_config(tls)
                .map_err(|error| invalid(error.to_string()))
        }
    }
}

/// The `authorization` header's value for `token`, marked sensitive so that it is never
/// indexed by HPACK nor shown by a debug print.
pub fn bearer(token: &str) -> Result<tonic::metadata::AsciiMetadataValue, ServerError> {
    let mut value: tonic::metadata::AsciiMetadataValue = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| ServerError::Upstream {
            address: "--upstream-token".to_owned(),
            problem: "a token is printable ASCII without spaces".to_owned(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Starts the deliverers of the configured sinks; their cursors live beside the log.
fn start_deliveries(
    config: &CommandConfig,
    log: Arc<dyn EventLog>,
    shutdown: Shutdown,
) -> Result<Deliveries, ServerError> {
    if config.sinks.is_empty() {
        return Ok(Deliveries::none());
    }
    // One process owns an embedded log's directory; command servers sharing a PostgreSQL
    // log take turns on each sink.
    let claims: Arc<dyn Claims> = match &config.log {
        LogConfig::Embedded { data_dir } => Arc::new(FileCursors::new(data_dir)),
        LogConfig::Postgres { url, schema } => Arc::new(PgClaims::new(url, schema)),
    };
    let specs = config
        .sinks
        .iter()
        .map(|sink| sink.build(config.clock.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ServerError::Delivery)?;
    Ok(Deliveries::start(
        specs,
        log,
        claims,
        config.clock.clone(),
        shutdown,
    ))
}

/// Keeps the read model's `upstream_unreachable_since` in step with the log's reachability
/// (a shared database polled in the background; an embedded log is always reachable).
fn report_reachability(model: Arc<ReadModel>, mut reachable: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let now = *reachable.borrow_and_update();
            model.set_upstream_reachable(now);
            if reachable.changed().await.is_err() {
                return;
            }
        }
    });
}

fn projection_result(result: Result<Result<(), LogError>, tokio::task::JoinError>) {
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "the read model stopped following the log"),
        Err(error) => tracing::error!(%error, "the projection task failed"),
    }
}

/// Opens the log and folds it into the command state (and into `model`, if given, when the
/// log is read at opening anyway).
async fn open_command_log(
    config: &CommandConfig,
    model: Option<&Arc<ReadModel>>,
) -> Result<(Arc<dyn EventLog>, CommandState), ServerError> {
    let now = config.clock.now();
    match &config.log {
        LogConfig::Embedded { data_dir } => {
            let directory = data_dir.clone();
            let model = model.cloned();
            let snapshots = config.snapshots;
            let (log, state, report) = tokio::task::spawn_blocking(move || {
                crate::app::replay::open_embedded(&directory, model.as_ref(), now, snapshots)
            })
            .await
            .expect("opening the log panicked")?;
            report_open(&data_dir.display().to_string(), &report);
            // This process is the log's only writer: its recent events can be served from
            // memory to the read model and the subscriptions.
            Ok((Arc::new(TailCache::new(Arc::new(log))), state))
        }
        LogConfig::Postgres { url, schema } => {
            let log = PostgresLog::connect(url, schema).await?;
            let state = CommandState::load(&log, now).await?;
            tracing::info!(schema, head = state.head().0, "PostgreSQL event log loaded");
            Ok((Arc::new(log), state))
        }
    }
}

fn report_open(data_dir: &str, report: &OpenReport) {
    tracing::info!(
        data_dir,
        events = report.events,
        snapshot = report.snapshot.map(|position| position.0),
        head = report.head.0,
        created = report.created,
        truncated_bytes = report.truncated_bytes,
        "event log opened"
    );
}

/// The services every server runs: health, reflection (v1 and v1alpha, for grpcurl) and
/// `EventService`. Reflection lists only the services this server runs, `served` and those,
/// and knows the `google.rpc` messages of error details, so that grpcurl prints them.
fn routes(
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    events: EventApi,
    served: &[&str],
) -> Result<RoutesBuilder, ServerError> {
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET);
        let common = [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "inventory.v1.EventService",
        ];
        common
            .iter()
            .chain(served)
            .fold(builder, |builder, service| {
                builder.with_service_name(*service)
            })
    };
    let mut routes = Routes::builder();
    routes
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            EventServiceServer::new(events)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
        );
    Ok(routes)
}

/// Serves `routes` on `listener` until `shutdown`, with what every server has: per-RPC
/// metrics and traces, the in-flight and connection limits, the request size limit and the
/// longest request duration.
async fn serve(
    server: &'static str,
    listener: ServerListener,
    routes: RoutesBuilder,
    limits: Limits,
    mut shutdown: Shutdown,
) -> Result<(), ServerError> {
    Server::builder()
        .timeout(overload::MAX_REQUEST_DURATION)
        // Dead peers: a connection that does not answer a ping within the timeout is closed.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(overload::MAX_CONCURRENT_STREAMS_PER_CONNECTION)
        // Outermost, so that refusals by the layers below are counted too.
        .layer(ObserveLayer::new(server))
        // Before the in-flight limit: a request without a valid credential takes no slot.
        .layer(AuthLayer::new(listener.auth, server))
        .layer(overload::InFlightLimitLayer::new(
            limits.max_in_flight_requests,
        ))
        .layer(tower::util::MapResponseLayer::new(
            oversized_request_as_invalid_argument,
        ))
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(
            tls::secured(
                server,
                overload::incoming(
                    server,
                    listener.tcp,
                    limits.max_connections,
                    limits.connection_timeouts,
                ),
                listener.tls,
            ),
            async move {
                shutdown.wait().await;
            },
        )
        .await?;
    Ok(())
}

async fn serve_command(
    listener: ServerListener,
    api: CommandApi,
    deliveries: Deliveries,
    log: Arc<dyn EventLog>,
    breaker: watch::Receiver<BreakerState>,
    limits: Limits,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CommandServiceServer>().await;
    health.set_serving::<EventServiceServer>().await;
    let breaker_health = tokio::spawn(report_breaker(health.clone(), breaker));
    let events =
        EventApi::new(log.clone(), shutdown.clone()).with_stall(limits.subscription_stalled_after);
    let mut routes = routes(
        health_service,
        events,
        &[
            "inventory.v1.CommandService",
            "inventory.v1.DeliveryService",
        ],
    )?;
    routes
        .add_service(
            CommandServiceServer::new(api)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
        )
        .add_service(DeliveryServiceServer::new(DeliveryApi::new(
            deliveries, log,
        )));
    serve("command", listener, routes, limits, shutdown).await?;
    breaker_health.abort();
    tracing::info!("command server stopped");
    Ok(())
}

/// `CommandService` is `NOT_SERVING` while the circuit breaker is open.
async fn report_breaker(health: HealthReporter, mut breaker: watch::Receiver<BreakerState>) {
    loop {
        let state = *breaker.borrow_and_update();
        if state == BreakerState::Open {
            health.set_not_serving::<CommandServiceServer>().await;
        } else {
            health.set_serving::<CommandServiceServer>().await;
        }
        if breaker.changed().await.is_err() {
            return;
        }
    }
}

async fn serve_query(
    listener: ServerListener,
    model: Arc<ReadModel>,
    log: Arc<dyn EventLog>,
    follower: Option<watch::Receiver<FollowerState>>,
    limits: Limits,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    match follower {
        None => {
            health.set_serving::<QueryServiceServer>().await;
            health.set_serving::<EventServiceServer>().await;
        }
        Some(follower) => {
            health.set_not_serving::<QueryServiceServer>().await;
            health.set_not_serving::<EventServiceServer>().await;
            tokio::spawn(report_when_caught_up(health, follower));
        }
    }
    let events =
        EventApi::new(log.clone(), shutdown.clone()).with_stall(limits.subscription_stalled_after);
    let mut routes = routes(health_service, events, &["inventory.v1.QueryService"])?;
    routes.add_service(
        QueryServiceServer::new(QueryApi::new(Queries::new(model, log)))
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
    );
    serve("query", listener, routes, limits, shutdown).await?;
    tracing::info!("query server stopped");
    Ok(())
}

/// A replica is `NOT_SERVING` until it has caught up with its upstream once, and again for
/// good if its follower stops on a permanent error.
async fn report_when_caught_up(
    health: HealthReporter,
    mut follower: watch::Receiver<FollowerState>,
) {
    let Ok(state) = follower
        .wait_for(|state| matches!(state, FollowerState::CaughtUp | FollowerState::Failed))
        .await
        .map(|state| *state)
    else {
        return;
    };
    if state == FollowerState::CaughtUp {
        health.set_serving::<QueryServiceServer>().await;
        health.set_serving::<EventServiceServer>().await;
        if follower
            .wait_for(|state| *state == FollowerState::Failed)
            .await
            .is_err()
        {
            return;
        }
    }
    health.set_not_serving::<QueryServiceServer>().await;
    health.set_not_serving::<EventServiceServer>().await;
}
