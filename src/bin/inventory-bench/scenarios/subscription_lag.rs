//! subscription-lag: how long an acknowledged command takes to reach subscribers, with one and
//! with many, under a paced command load.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;

use super::reserve_release::{Acknowledgements, Pacing, Pick, ReserveRelease};
use super::{Scenario, Setup, add_stock, stocked_data_set};
use crate::load::{self, ItemSpace, LatencySummary, LoadResult, SplitMix64, Window};
use crate::pb;
use crate::pb::command_service_client::CommandServiceClient;
use crate::pb::event_service_client::EventServiceClient;
use crate::server_process::{ServerProbe, connect};
use crate::{BenchConfig, BenchError};

/// Requests in flight that carry the paced command load of the subscription-lag scenario:
/// enough to reach half the measured maximum without being the limit.
pub const LAG_COMMAND_IN_FLIGHT: usize = 64;

/// How long subscribers may take, after the command load stops, to receive its last event.
const LAG_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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

pub async fn run(
    config: &BenchConfig,
    reserve_uniform_max: Option<f64>,
) -> Result<Vec<LagResult>, BenchError> {
    let (setup, items, _) = stocked_data_set(config, Scenario::SubscriptionLag).await?;
    let maximum = match (config.lag_command_rate, reserve_uniform_max) {
        (Some(rate), _) => 2.0 * rate,
        (None, Some(maximum)) => maximum,
        (None, None) => measure_reserve_uniform(setup.command_addr, &items).await?,
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

/// When reserve-uniform did not run: its rate at [`LAG_COMMAND_IN_FLIGHT`] in flight,
/// measured briefly.
pub(super) async fn measure_reserve_uniform(
    command_addr: SocketAddr,
    items: &Arc<ItemSpace>,
) -> Result<f64, BenchError> {
    let (operations, connections) = command_workers(command_addr, items).await?;
    let window = Window::after_warmup(Duration::from_millis(500), Duration::from_secs(2));
    let probe = ServerProbe::default();
    let result = load::drive("probe", operations, connections, window, probe).await?;
    eprintln!(
        "  measured reserve-uniform at {LAG_COMMAND_IN_FLIGHT} in flight: {:.0} ops/s",
        result.operations_per_second
    );
    Ok(result.operations_per_second)
}

/// The command load: [`LAG_COMMAND_IN_FLIGHT`] unpaced reserve-and-release workers over the
/// uniform items, spread over the connections of that level; with the connection count.
async fn command_workers(
    command_addr: SocketAddr,
    items: &Arc<ItemSpace>,
) -> Result<(Vec<ReserveRelease>, usize), BenchError> {
    let connections = load::connections_for_level(LAG_COMMAND_IN_FLIGHT);
    let channels = load::connect_all(command_addr, connections).await?;
    let workers = (0..LAG_COMMAND_IN_FLIGHT)
        .map(|worker| {
            ReserveRelease::unpaced(
                channels[worker % connections].clone(),
                Pick::Uniform(items.clone(), SplitMix64::new(worker as u64)),
            )
        })
        .collect();
    Ok((workers, connections))
}

/// What one subscriber received: `received[i]` is 1 + the microseconds since the epoch when
/// the event at position `from + 1 + i` arrived, or 0 if it never did.
struct Received {
    received: Vec<u64>,
}

async fn subscribe(
    address: SocketAddr,
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

/// One measurement: `subscribers` subscriptions from the head, then commands paced at `rate`
/// for the window, then every subscriber drained to the last acknowledged position.
async fn lag_run(
    config: &BenchConfig,
    setup: &Setup,
    items: &Arc<ItemSpace>,
    subscribers: usize,
    rate: f64,
) -> Result<LagResult, BenchError> {
    let epoch = Instant::now();
    let subscriptions = Subscriptions::start(setup.command_addr, items, subscribers, epoch).await?;
    let commands = paced_commands(config, setup, items, rate, epoch).await?;
    let last_position = commands
        .acknowledged
        .iter()
        .map(|(position, _)| *position)
        .max()
        .unwrap_or(subscriptions.head);
    let head = subscriptions.head;
    let received = subscriptions.drain(last_position).await?;
    Ok(lag_result(
        subscribers,
        rate,
        head,
        epoch,
        &commands,
        &received,
    ))
}

/// Subscriptions started from the head of the log, each caught up.
struct Subscriptions {
    /// The position they start after.
    head: u64,
    /// Tells them where to stop: at the last position the command load wrote.
    stop_sender: watch::Sender<u64>,
    tasks: Vec<JoinHandle<Result<Received, BenchError>>>,
}

impl Subscriptions {
    async fn start(
        command_addr: SocketAddr,
        items: &ItemSpace,
        subscribers: usize,
        epoch: Instant,
    ) -> Result<Subscriptions, BenchError> {
        // The head, from a command: subscribers start right after it.
        let mut commands = CommandServiceClient::new(connect(command_addr).await?);
        let (product, store) = items.key(0);
        let head = commands
            .add_stock(add_stock(product, store, 1))
            .await
            .map_err(BenchError::rpc("reading the head"))?
            .into_inner()
            .result
            .map_or(0, |result| result.position);
        let (stop_sender, stop_at) = watch::channel(u64::MAX);
        let mut tasks = Vec::with_capacity(subscribers);
        let mut caught_up = Vec::with_capacity(subscribers);
        for _ in 0..subscribers {
            let (caught_up_sender, caught_up_receiver) = oneshot::channel();
            caught_up.push(caught_up_receiver);
            tasks.push(tokio::spawn(subscribe(
                command_addr,
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
        Ok(Subscriptions {
            head,
            stop_sender,
            tasks,
        })
    }

    /// Lets every subscription run to `last_position` and returns what each received.
    async fn drain(self, last_position: u64) -> Result<Vec<Received>, BenchError> {
        let _ = self.stop_sender.send(last_position);
        let mut received = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            match tokio::time::timeout(LAG_DRAIN_TIMEOUT, task).await {
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
        Ok(received)
    }
}

/// What the paced command load measured, and when each command was acknowledged.
pub(super) struct PacedCommands {
    pub window: Window,
    pub result: LoadResult,
    /// (log position, microseconds since the epoch when the answer arrived), of every command.
    pub acknowledged: Vec<(u64, u64)>,
}

/// Runs the command load through a window, paced at `rate` commands per second.
pub(super) async fn paced_commands(
    config: &BenchConfig,
    setup: &Setup,
    items: &Arc<ItemSpace>,
    rate: f64,
    epoch: Instant,
) -> Result<PacedCommands, BenchError> {
    let pace = Arc::new(Semaphore::new(0));
    let window = Window::after_warmup(config.warmup, config.duration);
    let pacer = tokio::spawn(pace_requests(pace.clone(), rate, window.end));
    let (workers, connections) = command_workers(setup.command_addr, items).await?;
    let mut acknowledgement_lists = Vec::with_capacity(LAG_COMMAND_IN_FLIGHT);
    let operations = workers
        .into_iter()
        .map(|worker| {
            let positions = Arc::new(Mutex::new(Vec::new()));
            acknowledgement_lists.push(positions.clone());
            worker.paced(Pacing {
                pace: pace.clone(),
                acknowledgements: Acknowledgements { epoch, positions },
            })
        })
        .collect();
    let probe = ServerProbe {
        pid: setup.probe.pid,
        metrics_addr: None,
    };
    let name = Scenario::SubscriptionLag.name();
    let result = load::drive(name, operations, connections, window, probe).await?;
    pace.close();
    pacer.abort();
    let mut acknowledged = Vec::new();
    for list in acknowledgement_lists {
        let mut list = list
            .lock()
            .map_err(|_| BenchError::Invalid("a worker panicked".into()))?;
        acknowledged.append(&mut list);
    }
    Ok(PacedCommands {
        window,
        result,
        acknowledged,
    })
}

/// The lag of every (subscriber, event) pair whose command was acknowledged inside the
/// window, and the events delivered inside it.
fn lag_result(
    subscribers: usize,
    rate: f64,
    head: u64,
    epoch: Instant,
    commands: &PacedCommands,
    received: &[Received],
) -> LagResult {
    let window_start = (commands.window.start - epoch).as_micros() as u64;
    let window_end = (commands.window.end - epoch).as_micros() as u64;
    let in_window = |micros: u64| micros >= window_start && micros < window_end;
    let mut lag = load::latency_histogram();
    let mut before_acknowledgement = 0;
    let mut missing = 0;
    for (position, acknowledged_at) in &commands.acknowledged {
        if !in_window(*acknowledged_at) || *position <= head {
            continue;
        }
        let index = (position - head - 1) as usize;
        for subscriber in received {
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
    let result = &commands.result;
    let seconds = result.duration.as_secs_f64();
    LagResult {
        subscribers,
        command_rate_target: rate,
        command_rate: result.operations_per_second,
        lag_micros: LatencySummary::of(&lag),
        received_before_acknowledgement: before_acknowledgement,
        missing,
        events_delivered_per_second: delivered as f64 / seconds,
        server_cpu_micros_per_event: result
            .server_cpu_micros_per_operation
            .map(|per_command| per_command * result.operations as f64 / delivered.max(1) as f64),
        server_rss_bytes: result.server_rss_bytes,
    }
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
