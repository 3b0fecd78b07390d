//! Shared test harness: real servers started in-process on `127.0.0.1:0`, real gRPC clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use inventory::app::{Clock, ShutdownSignal, SystemClock};
use inventory::delivery::SinkConfig;
use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::delivery_service_client::DeliveryServiceClient;
use inventory::grpc::pb::event_service_client::EventServiceClient;
use inventory::grpc::pb::query_service_client::QueryServiceClient;
use inventory::server::{self, CommandConfig, Limits, LogConfig, QuerySource, ServerError};

pub mod delivery;
pub mod events;
pub mod proxy;
pub mod secured;
pub mod webhook;

/// Both servers in one process on one data directory, as `cargo run` starts them.
pub struct Combined {
    pub command_addr: SocketAddr,
    pub query_addr: SocketAddr,
    pub data_dir: PathBuf,
    signal: ShutdownSignal,
    task: JoinHandle<Result<(), ServerError>>,
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    (listener, address)
}

pub async fn channel(address: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

impl Combined {
    pub async fn start(data_dir: &Path) -> Combined {
        Combined::start_with_clock(data_dir, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(data_dir: &Path, clock: Arc<dyn Clock>) -> Combined {
        Combined::start_with(data_dir, clock, Limits::default()).await
    }

    pub async fn start_with(data_dir: &Path, clock: Arc<dyn Clock>, limits: Limits) -> Combined {
        Combined::start_configured(data_dir, clock, limits, Vec::new()).await
    }

    /// Both servers, the command server delivering `sinks`.
    pub async fn start_with_sinks(data_dir: &Path, sinks: Vec<SinkConfig>) -> Combined {
        Combined::start_configured(data_dir, Arc::new(SystemClock), Limits::default(), sinks).await
    }

    async fn start_configured(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        limits: Limits,
        sinks: Vec<SinkConfig>,
    ) -> Combined {
        let (command_listener, command_addr) = listener().await;
        let (query_listener, query_addr) = listener().await;
        let (signal, shutdown) = ShutdownSignal::new();
        let config = CommandConfig {
            log: LogConfig::Embedded {
                data_dir: data_dir.to_owned(),
            },
            clock,
            limits,
            sinks,
            snapshots: inventory::app::snapshot::SnapshotPolicy::DEFAULT,
        };
        let task = tokio::spawn(server::run_combined(
            config,
            command_listener,
            query_listener,
            shutdown,
        ));
        Combined {
            command_addr,
            query_addr,
            data_dir: data_dir.to_owned(),
            signal,
            task,
        }
    }

    pub async fn commands(&self) -> CommandServiceClient<Channel> {
        CommandServiceClient::new(channel(self.command_addr).await)
    }

    pub async fn queries(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::new(channel(self.query_addr).await)
    }

    pub async fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(channel(self.command_addr).await)
    }

    pub async fn deliveries(&self) -> DeliveryServiceClient<Channel> {
        DeliveryServiceClient::new(channel(self.command_addr).await)
    }

    /// Graceful shutdown; returns once every in-flight command is durable.
    pub async fn stop(self) {
        self.signal.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within 10 s")
            .expect("server task")
            .expect("server ran without error");
    }
}

/// A server that runs until `stop`: for the split-mode pieces.
pub struct Running {
    pub address: SocketAddr,
    signal: ShutdownSignal,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    pub async fn command(data_dir: &Path) -> Running {
        Running::command_on(LogConfig::Embedded {
            data_dir: data_dir.to_owned(),
        })
        .await
    }

    /// A command server on any log.
    pub async fn command_on(log: LogConfig) -> Running {
        let (listener, address) = listener().await;
        let (signal, shutdown) = ShutdownSignal::new();
        let config = CommandConfig {
            log,
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            sinks: Vec::new(),
            snapshots: inventory::app::snapshot::SnapshotPolicy::DEFAULT,
        };
        let task = tokio::spawn(server::run_command_server(config, listener, shutdown));
        Running {
            address,
            signal,
            task,
        }
    }

    /// A query server reading from `source`.
    pub async fn query_from(source: QuerySource) -> Running {
        let (listener, address) = listener().await;
        let (signal, shutdown) = ShutdownSignal::new();
        let task = tokio::spawn(server::run_query_server(
            source,
            Limits::default(),
            listener,
            shutdown,
        ));
        Running {
            address,
            signal,
            task,
        }
    }

    pub async fn query(data_dir: &Path, upstream: SocketAddr) -> Running {
        let (listener, address) = listener().await;
        let (signal, shutdown) = ShutdownSignal::new();
        let source = QuerySource::Follow {
            upstream: format!("http://{upstream}"),
            data_dir: data_dir.to_owned(),
            upstream_ca: None,
            upstream_token: None,
            snapshots: inventory::app::snapshot::SnapshotPolicy::DEFAULT,
        };
        let task = tokio::spawn(server::run_query_server(
            source,
            Limits::default(),
            listener,
            shutdown,
        ));
        Running {
            address,
            signal,
            task,
        }
    }

    pub async fn stop(self) {
        self.signal.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within 10 s")
            .expect("server task")
            .expect("server ran without error");
    }
}

/// The field names of a status's BadRequest details.
pub fn bad_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The reason of a status's ErrorInfo details; empty without them.
pub fn error_reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

pub fn add_stock(product: &str, store: &str, quantity: i64) -> pb::AddStockRequest {
    pb::AddStockRequest {
        product_id: product.to_owned(),
        store_id: store.to_owned(),
        quantity,
        reason: "delivery".to_owned(),
        command_id: String::new(),
        expected_version: None,
    }
}

/// A receipt of `quantity` units, as a line of `ApplyStockChanges`.
pub fn add_change(product: &str, store: &str, quantity: i64) -> pb::StockChange {
    pb::StockChange {
        product_id: product.to_owned(),
        store_id: store.to_owned(),
        change: Some(pb::stock_change::Change::Add(quantity)),
        expected_version: None,
        from: 0,
    }
}

pub fn reserve_stock(product: &str, store: &str, quantity: i64) -> pb::ReserveStockRequest {
    pb::ReserveStockRequest {
        product_id: product.to_owned(),
        store_id: store.to_owned(),
        quantity,
        customer_id: "customer-1".to_owned(),
        ttl: None,
        reservation_id: String::new(),
        lines: Vec::new(),
        command_id: String::new(),
        expected_version: None,
    }
}

pub fn get_stock(product: &str, store: &str, min_position: u64) -> pb::GetStockRequest {
    pb::GetStockRequest {
        product_id: product.to_owned(),
        store_id: store.to_owned(),
        min_position: Some(min_position),
    }
}

/// (on_hand, reserved, available) of a response's stock level.
pub fn level(stock: Option<pb::StockLevel>) -> (i64, i64, i64) {
    let stock = stock.expect("stock level present");
    (stock.on_hand, stock.reserved, stock.available)
}

/// `GET /metrics` over plain HTTP/1.0; returns each sample line's series (name and labels)
/// with its value.
pub async fn scrape(address: SocketAddr) -> std::collections::HashMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// The real `inventory` binary, run as a child process.
pub struct Process {
    pub child: tokio::process::Child,
    /// The addresses it printed, by role ("command", "query", and "metrics" when it serves
    /// them).
    pub addresses: std::collections::HashMap<String, SocketAddr>,
}

impl Process {
    /// Starts the binary with `arguments` and waits until it has printed a listening line for
    /// each of `roles`.
    pub async fn start(arguments: &[&str], roles: &[&str]) -> Process {
        Process::start_with_env(arguments, &[], roles).await
    }

    /// [`Process::start`] with extra environment variables.
    pub async fn start_with_env(
        arguments: &[&str],
        environment: &[(&str, &str)],
        roles: &[&str],
    ) -> Process {
        use tokio::io::AsyncBufReadExt;
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_inventory"));
        command.args(arguments);
        command.envs(environment.iter().copied());
        // The metrics endpoint's default port is fixed; tests must not depend on it being free.
        if !arguments.contains(&"--metrics-addr") {
            command.args(["--metrics-addr", "off"]);
        }
        let mut child = command
            .env("INVENTORY_LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the inventory binary starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addresses = std::collections::HashMap::new();
        while roles.iter().any(|role| !addresses.contains_key(*role)) {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("the binary prints its addresses within 30 s")
                .unwrap()
                .expect("the binary is still running");
            if let Some((role, address)) = line.split_once(" server listening on ") {
                addresses.insert(role.to_owned(), address.parse().unwrap());
            }
            if let Some(address) = line.strip_prefix("metrics listening on ") {
                addresses.insert("metrics".to_owned(), address.parse().unwrap());
            }
        }
        // Keep reading stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Process { child, addresses }
    }

    pub fn address(&self, role: &str) -> SocketAddr {
        self.addresses[role]
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// `count` StockAdded events spread over `streams` products in store `s1`, continuing the
/// positions after `head` and the versions in `inventory`.
pub fn added_events(
    inventory: &mut inventory::domain::Inventory,
    head: inventory::domain::LogPosition,
    count: u64,
    streams: u64,
) -> Vec<inventory::domain::RecordedEvent> {
    use inventory::domain::*;
    (1..=count)
        .map(|i| {
            let key = StreamKey::new(
                ProductId::parse(&format!("p{}", (head.0 + i) % streams)).unwrap(),
                StoreId::parse("s1").unwrap(),
            );
            let command = Command::AddStock(AddStock {
                stream: key.clone(),
                quantity: Quantity::new(i).unwrap(),
                reason: Reason::parse("delivery").unwrap(),
            });
            let decision = inventory
                .decide(&command, Timestamp(1_000))
                .unwrap()
                .remove(0);
            let (version, stock_after) = inventory.evolve(&decision.stream, &decision.event);
            RecordedEvent {
                position: LogPosition(head.0 + i),
                event_id: EventId(u128::from(head.0 + i)),
                stream: key,
                version,
                occurred_at: Timestamp(1_000 + i),
                stock_after,
                command_id: None,
                command_fingerprint: 0,
                trace_parent: None,
                command_event_index: 0,
                command_event_count: 1,
                actor: Some(Actor::from("test")),
                event: decision.event,
            }
        })
        .collect()
}

/// The PostgreSQL server the tests use, from `INVENTORY_TEST_POSTGRES_URL`; `None` (and a
/// printed notice) when it is not set, so `cargo test` passes on a machine without one.
///
/// Under CI (the `CI` variable, which CI services set and `.ci/run` exports) a missing URL is a
/// failure, not a skip: a CI run whose PostgreSQL tests quietly skipped would report green for
/// code it never ran.
pub fn postgres_url() -> Option<String> {
    match std::env::var("INVENTORY_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if running_in_ci() => panic!(
            "CI is set but INVENTORY_TEST_POSTGRES_URL is not: the PostgreSQL tests must run in \
             CI, so set it (for example postgres://postgres@127.0.0.1:5432/test)"
        ),
        _ => {
            eprintln!(
                "skipped: INVENTORY_TEST_POSTGRES_URL is not set, PostgreSQL tests did not run"
            );
            None
        }
    }
}

/// The Redis server of the delivery tests, from `INVENTORY_TEST_REDIS_URL` (`.ci/run` sets
/// it); `None` and a notice without it, a failure under CI, as [`postgres_url`].
pub fn redis_url() -> Option<String> {
    service_url(
        "INVENTORY_TEST_REDIS_URL",
        "redis://127.0.0.1:6379",
        "Redis",
    )
}

/// The NATS server (with JetStream) of the delivery tests, from `INVENTORY_TEST_NATS_URL`.
pub fn nats_url() -> Option<String> {
    service_url("INVENTORY_TEST_NATS_URL", "nats://127.0.0.1:4222", "NATS")
}

fn service_url(variable: &str, example: &str, service: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if running_in_ci() => panic!(
            "CI is set but {variable} is not: the {service} tests must run in CI, so set it \
             (for example {example})"
        ),
        _ => {
            eprintln!("skipped: {variable} is not set, {service} tests did not run");
            None
        }
    }
}

/// Whether the tests run under CI: `CI` set to anything but empty, `0` or `false`.
fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.as_str(), "" | "0" | "false"))
}

/// `url` with `application_name` set to `name`, so a test can find that client's connections
/// in `pg_stat_activity` (to see them wait for a lock, or to kill them) without touching the
/// connections of tests running beside it.
pub fn with_application_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// A fresh PostgreSQL schema name, so tests run in parallel without seeing each other.
pub fn fresh_schema() -> String {
    format!("test_{}", uuid::Uuid::now_v7().simple())
}

/// Drops a test's schema (best effort).
pub async fn drop_schema(url: &str, schema: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
}

/// Whether the server at `address` reports `service` as SERVING on its health service.
pub async fn serving(address: SocketAddr, service: &str) -> bool {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(address).await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
}

/// How often [`wait_for`] and [`wait_until`] check their condition.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Waits until `condition` returns a value, checking it every few milliseconds, and returns
/// that value. Panics naming `awaited` when `timeout` passes first, including while a check is
/// still running, so a check that hangs cannot hang the test.
///
/// Tests wait for what proves the thing happened instead of sleeping: a fixed sleep is either
/// longer than needed or, on a busy machine, too short, and then the test checks too early.
pub async fn wait_for<T>(
    timeout: Duration,
    awaited: &str,
    mut condition: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, condition()).await {
            Ok(Some(value)) => return value,
            Ok(None) if tokio::time::Instant::now() < deadline => {}
            Ok(None) | Err(_) => panic!("waited {timeout:?} for {awaited}, in vain"),
        }
        tokio::time::sleep(WAIT_POLL_INTERVAL).await;
    }
}

/// Waits until `condition` holds; see [`wait_for`].
pub async fn wait_until(
    timeout: Duration,
    awaited: &str,
    mut condition: impl AsyncFnMut() -> bool,
) {
    wait_for(timeout, awaited, async || condition().await.then_some(())).await
}

/// Runs the `inventory` binary with `arguments` to completion.
pub fn inventory(arguments: &[&str]) -> std::process::Output {
    inventory_with_env(arguments, &[])
}

/// [`inventory`] with these environment variables set.
pub fn inventory_with_env(arguments: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_inventory"))
        .args(arguments)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

/// Copies the committed log fixture in `fixture` (a folder under `tests/fixtures/`) into
/// `target`, so a test can open and append to it without changing the fixture.
pub fn copy_fixture(fixture: &str, target: &Path) {
    for entry in std::fs::read_dir(fixture).unwrap() {
        let entry = entry.unwrap();
        // Its files; a folder in it (a fixture's snapshots) is copied by who needs it.
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
    }
}

/// The request was refused as INVALID_ARGUMENT naming exactly `fields`, in order.
pub fn assert_invalid(status: tonic::Status, fields: &[&str]) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_fields(&status), fields, "{status:?}");
}
