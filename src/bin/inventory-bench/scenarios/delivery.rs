//! delivery: outbound sinks. Lag: with commands paced at half the best reserve-uniform rate,
//! the time from a command's acknowledgement at its client to its event reaching a webhook
//! receiver the bench serves (plain HTTP/1.1 on loopback) and a NATS subscriber of the
//! JetStream subjects. Catch-up: a log of `--delivery-backlog` events, then a server restarted
//! with one new sink, timed from ready until the sink's cursor is at the head.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

use super::subscription_lag::{measure_reserve_uniform, paced_commands};
use super::{Setup, stock_items, uniform_items};
use crate::load::{self, ItemSpace, LatencySummary};
use crate::pb;
use crate::pb::command_service_client::CommandServiceClient;
use crate::pb::delivery_service_client::DeliveryServiceClient;
use crate::server_process::{DataDir, ServerProbe, ServerProcess, connect};
use crate::{BenchConfig, BenchError};

/// The signing secret of the bench's webhook (the receiver does not check it).
const SECRET: &str = "inventory-bench-webhook-secret";

/// Events per batch of the catch-up sinks.
pub const CATCH_UP_BATCH: usize = 1000;

/// Changes per `ApplyStockChanges` when the backlog is written.
const BACKLOG_CHANGES: u64 = 1000;

/// How long the sinks may take to deliver the paced load's last event, or to catch up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// What the delivery scenario measured for one sink.
#[derive(Clone, Debug)]
pub struct DeliveryResult {
    /// `webhook` or `nats`.
    pub sink: &'static str,
    pub command_rate_target: f64,
    pub command_rate: f64,
    /// From a command's acknowledgement to its event arriving, one sample per event.
    pub lag_micros: LatencySummary,
    /// Events acknowledged in the window that never arrived.
    pub missing: u64,
    pub backlog_events: u64,
    /// From the restarted server being ready to the sink's cursor at the head.
    pub catch_up_seconds: f64,
    /// The same run's bare client on the same destination (JetStream only): messages of the
    /// catch-up's size and subjects, published by async-nats with a PubAck each.
    pub bare_events_per_second: Option<f64>,
}

impl DeliveryResult {
    pub fn catch_up_events_per_second(&self) -> f64 {
        self.backlog_events as f64 / self.catch_up_seconds.max(f64::EPSILON)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "sink": self.sink,
            "command_rate_target_per_second": self.command_rate_target,
            "command_rate_per_second": self.command_rate,
            "lag_micros": self.lag_micros.to_json(),
            "missing": self.missing,
            "backlog_events": self.backlog_events,
            "catch_up_seconds": self.catch_up_seconds,
            "catch_up_events_per_second": self.catch_up_events_per_second(),
            "bare_client_events_per_second": self.bare_events_per_second,
        })
    }
}

/// When each event arrived: `at[i]` is 1 + microseconds since the epoch for the event at
/// position `after + 1 + i`, or 0.
struct Arrivals {
    after: u64,
    epoch: Instant,
    at: Mutex<Vec<u64>>,
}

impl Arrivals {
    fn record(&self, position: u64) {
        if position <= self.after {
            return;
        }
        let micros = self.epoch.elapsed().as_micros() as u64;
        let index = (position - self.after - 1) as usize;
        let mut at = self.at.lock().expect("arrivals poisoned");
        if at.len() <= index {
            at.resize(index + 1, 0);
        }
        if at[index] == 0 {
            at[index] = micros + 1;
        }
    }

    fn has_through(&self, position: u64) -> bool {
        let at = self.at.lock().expect("arrivals poisoned");
        position <= self.after
            || at
                .get(..(position - self.after) as usize)
                .is_some_and(|slots| slots.iter().all(|slot| *slot > 0))
    }
}

fn positions(body: &[u8]) -> Vec<u64> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let events = value.get("events").and_then(Value::as_array);
    let one = std::slice::from_ref(&value);
    events
        .map_or(one, Vec::as_slice)
        .iter()
        .filter_map(|event| event.get("position")?.as_str()?.parse().ok())
        .collect()
}

/// A client of the NATS server, if it answers within a second.
async fn nats(url: &str) -> Option<async_nats::Client> {
    match tokio::time::timeout(Duration::from_secs(1), async_nats::connect(url)).await {
        Ok(Ok(client)) => Some(client),
        _ => None,
    }
}

fn webhook_section(name: &str, address: SocketAddr, batch_max: usize) -> String {
    format!(
        "[[webhook]]\nname = \"{name}\"\nurl = \"http://{address}/\"\nsecret = \"{SECRET}\"\n\
         batch_max = {batch_max}\n"
    )
}

fn nats_section(url: &str, stream: &str, prefix: &str, batch_max: usize) -> String {
    format!(
        "[nats]\nurl = \"{url}\"\nstream = \"{stream}\"\nsubject_prefix = \"{prefix}\"\nbatch_max = {batch_max}\n"
    )
}

/// A server on `data_dir` with the configuration file `text`.
async fn spawn_configured(
    binary: &Path,
    data_dir: &DataDir,
    text: &str,
) -> Result<ServerProcess, BenchError> {
    let path = data_dir.path.join("bench-sinks.toml");
    std::fs::write(&path, text)
        .map_err(|error| BenchError::Server(format!("cannot write {}: {error}", path.display())))?;
    let server = ServerProcess::spawn_with(
        binary,
        &data_dir.path,
        &["--config".as_ref(), path.as_os_str()],
    )
    .await?;
    server.wait_ready().await?;
    Ok(server)
}

pub async fn run(
    config: &BenchConfig,
    binary: &Path,
    reserve_uniform_max: Option<f64>,
) -> Result<Vec<DeliveryResult>, BenchError> {
    let client = nats(&config.nats_url).await;
    if client.is_none() {
        eprintln!(
            "  NATS does not answer at {}: the NATS rows are skipped",
            config.nats_url
        );
    }
    let unique = format!("bench{}", std::process::id());
    let mut results = lag(
        config,
        binary,
        reserve_uniform_max,
        client.as_ref(),
        &unique,
    )
    .await?;
    catch_up(config, binary, client.as_ref(), &unique, &mut results).await?;
    Ok(results)
}

/// The lag of each sink under the paced command load.
/// Over 70 lines: the sinks, the paced load and the subscriber that timestamps each event,
/// started and stopped together.
async fn lag(
    config: &BenchConfig,
    binary: &Path,
    reserve_uniform_max: Option<f64>,
    client: Option<&async_nats::Client>,
    unique: &str,
) -> Result<Vec<DeliveryResult>, BenchError> {
    let data_dir = DataDir::create(&config.data_root, "delivery")?;
    let epoch = Instant::now();
    // The arrivals are made once the head is known; the receivers record into them.
    let webhook_arrivals = ArrivalSlot::default();
    let receiver = webhook_receiver(webhook_arrivals.clone()).await?;
    let mut text = webhook_section("bench-lag", receiver, 100);
    let stream = format!("BENCH_LAG_{unique}");
    let prefix = format!("benchlag{unique}");
    if client.is_some() {
        text.push_str(&nats_section(&config.nats_url, &stream, &prefix, 100));
    }
    let server = spawn_configured(binary, &data_dir, &text).await?;
    let items = uniform_items(config);
    let head = stock_items(server.command_addr, &items, super::STOCK_PER_ITEM).await?;
    let setup = Setup {
        command_addr: server.command_addr,
        query_addr: server.query_addr,
        probe: ServerProbe {
            pid: Some(server.pid()),
            metrics_addr: Some(server.metrics_addr),
        },
        _server: None,
        _data_dir: None,
    };
    wait_for_sinks(server.command_addr, head).await?;
    let webhook = Arc::new(Arrivals {
        after: head,
        epoch,
        at: Mutex::default(),
    });
    *webhook_arrivals.lock().expect("arrivals poisoned") = Some(webhook.clone());
    let nats = Arc::new(Arrivals {
        after: head,
        epoch,
        at: Mutex::default(),
    });
    let subscriber = match client {
        Some(client) => {
            let mut subscription = client
                .subscribe(format!("{prefix}.>"))
                .await
                .map_err(|error| BenchError::Server(format!("NATS subscribe: {error}")))?;
            let arrivals = nats.clone();
            Some(tokio::spawn(async move {
                while let Some(message) = subscription.next().await {
                    for position in positions(&message.payload) {
                        arrivals.record(position);
                    }
                }
            }))
        }
        None => None,
    };
    let maximum = match (config.lag_command_rate, reserve_uniform_max) {
        (Some(rate), _) => 2.0 * rate,
        (None, Some(maximum)) => maximum,
        (None, None) => measure_reserve_uniform(setup.command_addr, &items).await?,
    };
    let rate = maximum / 2.0;
    let commands = paced_commands(config, &setup, &items, rate, epoch).await?;
    let last = commands
        .acknowledged
        .iter()
        .map(|(position, _)| *position)
        .max()
        .unwrap_or(head);
    let mut sinks = vec![("webhook", webhook)];
    if client.is_some() {
        sinks.push(("nats", nats));
    }
    let started = Instant::now();
    for (_, arrivals) in &sinks {
        while !arrivals.has_through(last) {
            if started.elapsed() > DRAIN_TIMEOUT {
                return Err(BenchError::Server(
                    "did not deliver the paced load to its sinks in time".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if let Some(subscriber) = subscriber {
        subscriber.abort();
    }
    let window_start = (commands.window.start - epoch).as_micros() as u64;
    let window_end = (commands.window.end - epoch).as_micros() as u64;
    let mut results = Vec::new();
    for (sink, arrivals) in sinks {
        let at = arrivals.at.lock().expect("arrivals poisoned").clone();
        let mut lag = load::latency_histogram();
        let mut missing = 0;
        for (position, acknowledged_at) in &commands.acknowledged {
            if *acknowledged_at < window_start
                || *acknowledged_at >= window_end
                || *position <= head
            {
                continue;
            }
            match at.get((position - head - 1) as usize).copied().unwrap_or(0) {
                0 => missing += 1,
                stamp => {
                    lag.saturating_record((stamp - 1).saturating_sub(*acknowledged_at).max(1));
                }
            }
        }
        let result = DeliveryResult {
            sink,
            command_rate_target: rate,
            command_rate: commands.result.operations_per_second,
            lag_micros: LatencySummary::of(&lag),
            missing,
            backlog_events: 0,
            catch_up_seconds: 0.0,
            bare_events_per_second: None,
        };
        eprintln!(
            "  {sink} at {:.0} commands/s: lag p50 {} µs, p99 {} µs, {} missing",
            result.command_rate, result.lag_micros.p50, result.lag_micros.p99, missing
        );
        results.push(result);
    }
    if let Some(client) = client {
        let _ = async_nats::jetstream::new(client.clone())
            .delete_stream(&stream)
            .await;
    }
    drop(server);
    drop(data_dir);
    Ok(results)
}

/// Where a webhook receiver records arrivals: nowhere until set.
type ArrivalSlot = Arc<Mutex<Option<Arc<Arrivals>>>>;

/// A webhook receiver: plain HTTP/1.1 keep-alive, every POST answered 204; the events'
/// positions are recorded into what `slot` holds when the POST arrives (nothing is parsed
/// while it holds nothing).
async fn webhook_receiver(slot: ArrivalSlot) -> Result<SocketAddr, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|error| {
        BenchError::Server(format!("cannot bind the webhook receiver: {error}"))
    })?;
    let address = listener
        .local_addr()
        .map_err(|error| BenchError::Server(error.to_string()))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let slot = slot.clone();
            tokio::spawn(serve_connection(stream, move |body: &[u8]| {
                let target = slot.lock().expect("arrivals poisoned").clone();
                if let Some(arrivals) = target {
                    for position in positions(body) {
                        arrivals.record(position);
                    }
                }
            }));
        }
    });
    Ok(address)
}

/// One keep-alive HTTP/1.1 connection: each request's body handed to `on_body`, then 204.
async fn serve_connection(stream: tokio::net::TcpStream, on_body: impl Fn(&[u8])) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        on_body(&body);
        if write
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Waits until every sink's cursor is at `position` (the data set's events delivered).
async fn wait_for_sinks(command_addr: SocketAddr, position: u64) -> Result<f64, BenchError> {
    let mut deliveries = DeliveryServiceClient::new(connect(command_addr).await?);
    let started = Instant::now();
    loop {
        let sinks = deliveries
            .list_sinks(pb::ListSinksRequest {})
            .await
            .map_err(BenchError::rpc("ListSinks"))?
            .into_inner()
            .sinks;
        if sinks.iter().all(|sink| sink.position >= position) {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            return Err(BenchError::Server(format!(
                "sinks not at position {position} within {DRAIN_TIMEOUT:?}: {sinks:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes the backlog once, then for each sink restarts the server with only that sink and
/// times its catch-up.
async fn catch_up(
    config: &BenchConfig,
    binary: &Path,
    client: Option<&async_nats::Client>,
    unique: &str,
    results: &mut [DeliveryResult],
) -> Result<(), BenchError> {
    let data_dir = DataDir::create(&config.data_root, "delivery-backlog")?;
    let head = {
        let server = spawn_configured(binary, &data_dir, "").await?;
        let head = write_backlog(server.command_addr, config.delivery_backlog).await?;
        eprintln!("  wrote a backlog of {head} events");
        head
    };
    let receiver = webhook_receiver(ArrivalSlot::default()).await?;
    let stream = format!("BENCH_CATCH_UP_{unique}");
    let prefix = format!("benchcatchup{unique}");
    for result in results.iter_mut() {
        let text = match result.sink {
            "webhook" => webhook_section("bench-catch-up", receiver, CATCH_UP_BATCH),
            _ => {
                let Some(client) = client else { continue };
                // In memory: the backlog's messages need not reach the NATS server's disk.
                async_nats::jetstream::new(client.clone())
                    .get_or_create_stream(async_nats::jetstream::stream::Config {
                        name: stream.clone(),
                        subjects: vec![format!("{prefix}.>")],
                        storage: async_nats::jetstream::stream::StorageType::Memory,
                        ..Default::default()
                    })
                    .await
                    .map_err(|error| BenchError::Server(format!("JetStream stream: {error}")))?;
                nats_section(&config.nats_url, &stream, &prefix, CATCH_UP_BATCH)
            }
        };
        let server = spawn_configured(binary, &data_dir, &text).await?;
        let seconds = wait_for_sinks(server.command_addr, head).await?;
        result.backlog_events = head;
        result.catch_up_seconds = seconds;
        eprintln!(
            "  {} caught up on {head} events in {seconds:.2} s ({:.0} events/s)",
            result.sink,
            result.catch_up_events_per_second()
        );
        drop(server);
        if let (Some(client), "nats") = (client, result.sink) {
            let rate =
                bare_jetstream_rate(client, &stream, unique, head.min(BARE_MESSAGES)).await?;
            eprintln!("  a bare async-nats publisher: {rate:.0} messages/s");
            result.bare_events_per_second = Some(rate);
        }
        // Next time, a sink of another name: it starts from position 0 again.
        let _ = std::fs::remove_dir_all(data_dir.path.join("sinks"));
    }
    if let Some(client) = client {
        let _ = async_nats::jetstream::new(client.clone())
            .delete_stream(&stream)
            .await;
    }
    Ok(())
}

/// Messages the bare JetStream publisher sends.
const BARE_MESSAGES: u64 = 300_000;

/// The baseline of the JetStream catch-up: `count` messages like the first of `stream` (its
/// payload, its subject's shape, a `Nats-Msg-Id` each) published by async-nats's JetStream
/// API to an in-memory stream of their own, 1000 at a time with 4 such batches waiting for
/// their PubAcks: what a bare client gets from this NATS server in this run.
async fn bare_jetstream_rate(
    client: &async_nats::Client,
    stream: &str,
    unique: &str,
    count: u64,
) -> Result<f64, BenchError> {
    use async_nats::jetstream::{self, stream::Config, stream::StorageType};
    let failed = |error: &dyn std::fmt::Display| {
        BenchError::Server(format!("bare JetStream publisher: {error}"))
    };
    let context = jetstream::new(client.clone());
    let sample = context
        .get_stream(stream)
        .await
        .map_err(|error| failed(&error))?
        .get_raw_message(1)
        .await
        .map_err(|error| failed(&error))?;
    let bare = format!("BENCH_BARE_{unique}");
    let prefix = format!("benchbare{unique}");
    context
        .get_or_create_stream(Config {
            name: bare.clone(),
            subjects: vec![format!("{prefix}.>")],
            storage: StorageType::Memory,
            ..Default::default()
        })
        .await
        .map_err(|error| failed(&error))?;
    // `<prefix>.<store>.<product>.<TYPE>`, with the sample's store and type.
    let tokens: Vec<&str> = sample.subject.split('.').collect();
    let (store, kind) = (tokens[tokens.len() - 3], tokens[tokens.len() - 1]);
    let payload = sample.payload.clone();
    let started = Instant::now();
    let mut waiting = std::collections::VecDeque::new();
    let mut sent = 0u64;
    while sent < count {
        let mut acks = Vec::with_capacity(1000);
        for index in sent..(sent + 1000).min(count) {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{unique}-{index}").as_str());
            let subject = format!(
                "{prefix}.{store}.product-{}.{kind}",
                index % BACKLOG_CHANGES
            );
            acks.push(
                context
                    .publish_with_headers(subject, headers, payload.clone())
                    .await
                    .map_err(|error| failed(&error))?,
            );
        }
        sent = (sent + 1000).min(count);
        waiting.push_back(acks);
        while waiting.len() >= 4 || (sent == count && !waiting.is_empty()) {
            for ack in waiting.pop_front().expect("a batch waits") {
                ack.await.map_err(|error| failed(&error))?;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = context.delete_stream(&bare).await;
    Ok(count as f64 / seconds.max(f64::EPSILON))
}

/// `ApplyStockChanges` of [`BACKLOG_CHANGES`] lines, 4 in flight, until `events` events are in
/// the log; returns the head.
async fn write_backlog(command_addr: SocketAddr, events: u64) -> Result<u64, BenchError> {
    let items = Arc::new(ItemSpace {
        prefix: "backlog-".to_owned(),
        products: BACKLOG_CHANGES,
        stores: 1,
    });
    let commands = events.div_ceil(BACKLOG_CHANGES);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut client = CommandServiceClient::new(connect(command_addr).await?);
        let items = items.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut head = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < commands {
                let count = BACKLOG_CHANGES.min(events);
                let changes = (0..count).map(|index| items.receipt(index)).collect();
                let answer = client
                    .apply_stock_changes(pb::ApplyStockChangesRequest {
                        changes,
                        reason: "backlog".to_owned(),
                        ..Default::default()
                    })
                    .await
                    .map_err(BenchError::rpc("ApplyStockChanges"))?
                    .into_inner();
                head = head.max(answer.position);
            }
            Ok::<u64, BenchError>(head)
        }));
    }
    let mut head = 0;
    for task in tasks {
        head = head.max(
            task.await
                .map_err(|error| BenchError::Invalid(format!("a writer failed: {error}")))??,
        );
    }
    Ok(head)
}
