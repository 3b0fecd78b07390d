//! Outbound delivery: the log's events pushed to systems that cannot hold a gRPC stream (an
//! ERP's webhook, a message bus, a cache), each from a durable cursor of its own.
//!
//! A *sink* is one configured destination. Its deliverer (one task, [`engine`]) reads the log
//! after the sink's cursor, keeps the events its filter matches, sends them in batches of at
//! most `batch_max`, one batch in flight, and moves the cursor past a batch only once the sink
//! acknowledged it (an HTTP 2xx). The cursor is stored durably ([`cursor`]) before the next
//! batch is sent, so a crash re-sends at most the batch that was in flight, and an endpoint
//! that was down gets every event it missed, in log order. A sink whose destination keeps the
//! order of what it is sent and drops resends itself (JetStream) has a window of several
//! batches in flight ([`Sink::window`]); the cursor still moves past one batch at a time, once
//! it is acknowledged, and a failure sends it and every later batch again. A failing sink is
//! retried with exponential backoff and jitter; after [`RetryPolicy::park_after`] of failures
//! it is *parked*: it keeps its cursor and stops trying until an operator resumes it.
//!
//! This is an adapter at the edge, like `grpc`: it reads the log through [`EventLog`] and
//! knows nothing of the servers. Adding a destination (Kafka, say) is one module implementing
//! [`Sink`].
//!
//! Over 600 lines: the sinks' configuration, the `Sink` trait and `Deliveries` (starting the
//! deliverers and the operator's resume and rewind) share their types; the loop itself is in
//! `engine.rs` and each destination in its own module.

pub mod cursor;
mod engine;
pub mod nats;
pub mod postgres;
pub mod redis;
pub mod webhook;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::app::{Clock, EventFilter, Shutdown};
use crate::domain::{LogPosition, RecordedEvent, Timestamp};
use crate::log::{BoxFuture, EventLog};

pub use cursor::{Claim, Claims, FileCursors, SinkCursor};

/// A failed retry waits this long first, then twice as long each time.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);

/// The longest wait between two tries of a failing sink.
pub const RETRY_MAX: Duration = Duration::from_secs(10 * 60);

/// A sink that has failed for this long without a success is parked.
pub const PARK_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The most events in one batch when a sink's configuration names no `batch_max`.
pub const DEFAULT_BATCH_MAX: usize = 100;

/// The largest `batch_max` a sink may set.
pub const MAX_BATCH_MAX: usize = 10_000;

/// How long one delivery may take (connect, send, answer) when the sink names no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a deliverer asks a destination that keeps its own record of what it holds (the
/// Redis cache) whether it still holds it, also while idle: a flushed cache is rebuilt within
/// this.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The most events in one batch of a NATS or Redis sink that names no `batch_max`: each
/// event is its own message (or hash) there, and larger batches amortise the round trip.
pub const DEFAULT_STREAM_BATCH_MAX: usize = 1000;

/// How often a cursor that moved only past events the filter dropped is stored: such moves
/// lose nothing if a crash undoes them (the events are examined again and dropped again).
pub const FILTERED_CURSOR_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// How often the cursor of a sink with a window (JetStream) is stored while batches keep
/// being acknowledged: what a crash undoes is sent again and dropped by the destination as a
/// resend (JetStream's duplicate window is 2 minutes). It is stored at once whenever nothing
/// is in flight, and at shutdown.
pub const WINDOWED_CURSOR_SAVE_INTERVAL: Duration = Duration::from_millis(100);

/// How a failing sink is retried, and when it gives up until resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub park_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial: RETRY_INITIAL,
            max: RETRY_MAX,
            park_after: PARK_AFTER,
        }
    }
}

impl RetryPolicy {
    /// The wait before try number `failures + 1` (after `failures` failures in a row, at
    /// least 1): `initial` doubled per failure up to `max`, then a random 50 % to 100 % of it,
    /// so that sinks failing together do not retry together.
    pub fn backoff(&self, failures: u32, random: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        let full = self
            .initial
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max);
        let fraction = 0.5 + 0.5 * (f64::from(random) / f64::from(u32::MAX));
        full.mul_f64(fraction)
    }
}

/// `url` with every credential in it replaced by `***`: the password of its userinfo
/// (`redis://:secret@host` → `redis://:***@host`; a user alone, as NATS takes a token, is
/// hidden whole) and the value of every query parameter whose name says it holds one
/// (`?apikey=…`, `access_token`, `sig`…). For what is shown and logged.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let hidden = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            format!("{hidden}@{host}")
        }
        None => authority.to_owned(),
    };
    let path = match path.split_once('?') {
        None => path.to_owned(),
        Some((path, query)) => {
            let (query, fragment) = query.split_at(query.find('#').unwrap_or(query.len()));
            let parameters: Vec<String> = query
                .split('&')
                .map(|parameter| match parameter.split_once('=') {
                    Some((name, _)) if names_a_secret(name) => format!("{name}=***"),
                    _ => parameter.to_owned(),
                })
                .collect();
            format!("{path}?{}{fragment}", parameters.join("&"))
        }
    };
    format!("{scheme}://{authority}{path}")
}

/// Whether a query parameter called `name` carries a credential.
fn names_a_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "pass",
        "pwd",
        "sig",
        "auth",
        "credential",
        "session",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// A sink's name: what the configuration, the metrics, `DeliveryService` and the cursor's file
/// call it. 1 to 64 letters, digits, `-` and `_`.
pub fn check_sink_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    {
        return Err(format!(
            "{name:?}: only letters, digits, '-' and '_' (it names a file and a metric label)"
        ));
    }
    Ok(())
}

/// A sink as the configuration file describes it (`[[webhook]]`), checked.
#[derive(Clone)]
pub struct SinkConfig {
    pub name: String,
    pub filter: EventFilter,
    pub batch_max: usize,
    pub retry: RetryPolicy,
    pub target: SinkTarget,
}

/// Where a sink delivers.
#[derive(Clone)]
pub enum SinkTarget {
    Webhook {
        endpoint: webhook::Endpoint,
        /// The HMAC key of the signatures. Never logged nor shown.
        secret: Vec<u8>,
        timeout: Duration,
        /// The CA of an `https://` endpoint's certificate; the system's CAs when absent.
        ca: Option<PathBuf>,
    },
    Nats {
        url: String,
        stream: String,
        subject_prefix: String,
        timeout: Duration,
    },
    Redis {
        url: String,
        key_prefix: String,
        timeout: Duration,
    },
}

impl SinkConfig {
    /// A webhook sink with every other setting at its default: all events, batches of
    /// [`DEFAULT_BATCH_MAX`], the default retry policy and timeout.
    pub fn webhook(name: &str, url: &str, secret: &[u8]) -> Result<SinkConfig, String> {
        check_sink_name(name)?;
        Ok(SinkConfig {
            name: name.to_owned(),
            filter: EventFilter::default(),
            batch_max: DEFAULT_BATCH_MAX,
            retry: RetryPolicy::default(),
            target: SinkTarget::Webhook {
                endpoint: webhook::Endpoint::parse(url)?,
                secret: secret.to_vec(),
                timeout: DEFAULT_TIMEOUT,
                ca: None,
            },
        })
    }

    /// A NATS JetStream sink named `nats`, every event, with the defaults.
    pub fn nats(url: &str, stream: &str, subject_prefix: &str) -> Result<SinkConfig, String> {
        nats::check_stream_name(stream)?;
        nats::check_subject_prefix(subject_prefix)?;
        Ok(SinkConfig {
            name: "nats".into(),
            filter: EventFilter::default(),
            batch_max: DEFAULT_STREAM_BATCH_MAX,
            retry: RetryPolicy::default(),
            target: SinkTarget::Nats {
                url: url.to_owned(),
                stream: stream.to_owned(),
                subject_prefix: subject_prefix.to_owned(),
                timeout: DEFAULT_TIMEOUT,
            },
        })
    }

    /// The Redis stock cache, named `redis`, with the defaults.
    pub fn redis(url: &str, key_prefix: &str) -> Result<SinkConfig, String> {
        if key_prefix.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(SinkConfig {
            name: "redis".into(),
            filter: EventFilter::default(),
            batch_max: DEFAULT_STREAM_BATCH_MAX,
            retry: RetryPolicy::default(),
            target: SinkTarget::Redis {
                url: url.to_owned(),
                key_prefix: key_prefix.to_owned(),
                timeout: DEFAULT_TIMEOUT,
            },
        })
    }

    pub fn kind(&self) -> &'static str {
        match self.target {
            SinkTarget::Webhook { .. } => "webhook",
            SinkTarget::Nats { .. } => "nats",
            SinkTarget::Redis { .. } => "redis",
        }
    }

    /// Where the sink delivers, for `inventory config check` (no secret in it).
    pub fn destination(&self) -> String {
        match &self.target {
            SinkTarget::Webhook { endpoint, .. } => redacted(&endpoint.uri.to_string()),
            SinkTarget::Nats {
                url,
                stream,
                subject_prefix,
                ..
            } => format!(
                "{} stream {stream}, subjects {subject_prefix}.<store>.<product>.<type>",
                redacted(url)
            ),
            SinkTarget::Redis {
                url, key_prefix, ..
            } => format!("{} keys {key_prefix}:<store>:<product>", redacted(url)),
        }
    }

    /// The running sink: its TLS client made, its key files read.
    pub fn build(&self, clock: Arc<dyn Clock>) -> Result<SinkSpec, String> {
        let sink: Box<dyn Sink> = match &self.target {
            SinkTarget::Webhook {
                endpoint,
                secret,
                timeout,
                ca,
            } => {
                let tls = if endpoint.is_https() {
                    Some(
                        webhook::tls_connector(ca.as_deref())
                            .map_err(|problem| format!("sink {}: {problem}", self.name))?,
                    )
                } else {
                    None
                };
                Box::new(webhook::WebhookSink::new(
                    &self.name,
                    endpoint.clone(),
                    secret.clone(),
                    *timeout,
                    tls,
                    clock,
                ))
            }
            SinkTarget::Nats {
                url,
                stream,
                subject_prefix,
                timeout,
            } => Box::new(Timed {
                sink: nats::NatsSink::new(url, stream, subject_prefix),
                timeout: *timeout,
            }),
            SinkTarget::Redis {
                url,
                key_prefix,
                timeout,
            } => Box::new(Timed {
                sink: redis::RedisSink::new(url, key_prefix),
                timeout: *timeout,
            }),
        };
        Ok(SinkSpec {
            name: self.name.clone(),
            filter: self.filter.clone(),
            batch_max: self.batch_max,
            retry: self.retry,
            sink,
        })
    }
}

/// One running destination.
pub struct SinkSpec {
    pub name: String,
    pub filter: EventFilter,
    pub batch_max: usize,
    pub retry: RetryPolicy,
    pub sink: Box<dyn Sink>,
}

/// The events of one delivery, in log order.
pub struct Batch {
    /// `<sink>-<first position>-<last position>`: the same for every try of the batch.
    pub delivery_id: String,
    pub events: Vec<RecordedEvent>,
    /// Where the cursor goes once the batch is acknowledged: its last event, or past it when
    /// the filter dropped the events after it.
    pub through: LogPosition,
}

impl Batch {
    /// The batch of `events` (not empty) of sink `sink`, moving the cursor to `through`.
    pub fn new(sink: &str, events: Vec<RecordedEvent>, through: LogPosition) -> Batch {
        Batch {
            delivery_id: format!(
                "{sink}-{}-{}",
                events[0].position.0,
                events[events.len() - 1].position.0
            ),
            events,
            through,
        }
    }
}

/// Why a delivery was not acknowledged: shown as the sink's `last_error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub message: String,
    /// Whether the batch may have reached the destination (it was sent, and the answer was
    /// not a success or did not come): re-sending it may then make duplicates.
    pub sent: bool,
}

impl DeliveryError {
    /// Nothing reached the destination (a refused connection, a failed handshake).
    pub fn unsent(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            message: message.into(),
            sent: false,
        }
    }

    /// The batch was sent; the destination may have it.
    pub fn sent(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            message: message.into(),
            sent: true,
        }
    }
}

/// A batch sent: resolves once the destination acknowledged all of it.
pub type Acknowledgement = BoxFuture<'static, Result<(), DeliveryError>>;

/// A destination. The deliverer calls [`Sink::deliver`] with one batch at a time, in log
/// order, and calls it again with the same batch until it succeeds. A sink with a
/// [`Sink::window`] over 1 is given up to that many batches at once instead, through
/// [`Sink::send`], still in log order; after a failure, the batch that failed and every one
/// sent after it are sent again.
pub trait Sink: Send + 'static {
    /// `webhook`, `nats`, `redis`: what `ListSinks` shows.
    fn kind(&self) -> &'static str;

    /// Sends `batch`; `Ok` once the destination acknowledged all of it.
    fn deliver<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// How many batches may wait for their acknowledgement at once. More than 1 only for a
    /// destination that keeps the order of what it is sent and drops a resend by itself
    /// (JetStream, by message id): a later batch may reach it before an earlier one fails.
    fn window(&self) -> usize {
        1
    }

    /// Sends `batch` and returns without waiting for its acknowledgement, so the next batch
    /// can be sent meanwhile (for a sink with a [`Sink::window`] over 1).
    fn send<'a>(
        &'a mut self,
        batch: &'a Batch,
    ) -> BoxFuture<'a, Result<Acknowledgement, DeliveryError>> {
        Box::pin(async move {
            self.deliver(batch).await?;
            Ok(Box::pin(async { Ok(()) }) as Acknowledgement)
        })
    }

    /// How far the destination itself says it holds the log, for one that keeps that record
    /// beside its data (the Redis cache): when it is behind the cursor (the cache was
    /// flushed), the deliverer goes back to it. `None`: the cursor store is the only record.
    fn recorded_position(&mut self) -> BoxFuture<'_, Result<Option<LogPosition>, DeliveryError>> {
        Box::pin(async { Ok(None) })
    }
}

fn no_acknowledgement(timeout: Duration) -> DeliveryError {
    DeliveryError::sent(format!(
        "no acknowledgement within {} ms",
        timeout.as_millis()
    ))
}

/// A sink whose every delivery is bounded by `timeout`.
struct Timed<S> {
    sink: S,
    timeout: Duration,
}

impl<S: Sink> Sink for Timed<S> {
    fn kind(&self) -> &'static str {
        self.sink.kind()
    }

    fn deliver<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, self.sink.deliver(batch))
                .await
                .unwrap_or_else(|_| Err(no_acknowledgement(timeout)))
        })
    }

    fn window(&self) -> usize {
        self.sink.window()
    }

    /// The sending and then the acknowledgement each bounded by `timeout`.
    fn send<'a>(
        &'a mut self,
        batch: &'a Batch,
    ) -> BoxFuture<'a, Result<Acknowledgement, DeliveryError>> {
        let timeout = self.timeout;
        Box::pin(async move {
            let acknowledgement = tokio::time::timeout(timeout, self.sink.send(batch))
                .await
                .unwrap_or_else(|_| Err(no_acknowledgement(timeout)))?;
            Ok(Box::pin(async move {
                tokio::time::timeout(timeout, acknowledgement)
                    .await
                    .unwrap_or_else(|_| Err(no_acknowledgement(timeout)))
            }) as Acknowledgement)
        })
    }

    fn recorded_position(&mut self) -> BoxFuture<'_, Result<Option<LogPosition>, DeliveryError>> {
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, self.sink.recorded_position())
                .await
                .unwrap_or_else(|_| Err(DeliveryError::unsent("no answer in time")))
        })
    }
}

/// What a sink is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkState {
    /// Delivering, or caught up and waiting for events.
    Running,
    /// The last try failed; the next one is waiting out its backoff.
    Retrying,
    /// Failed for longer than `park_after`: not trying until resumed. Nothing is lost.
    Parked,
}

impl SinkState {
    pub fn name(self) -> &'static str {
        match self {
            SinkState::Running => "RUNNING",
            SinkState::Retrying => "RETRYING",
            SinkState::Parked => "PARKED",
        }
    }

    /// The value of the `inventory_delivery_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            SinkState::Running => 0.0,
            SinkState::Retrying => 1.0,
            SinkState::Parked => 2.0,
        }
    }
}

/// A sink as `ListSinks` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkStatus {
    pub name: String,
    pub kind: &'static str,
    pub state: SinkState,
    /// The cursor: every event up to here was delivered (or dropped by the filter).
    pub position: LogPosition,
    /// Log positions after the cursor, up to the log's head.
    pub lag_events: u64,
    pub last_error: Option<String>,
    pub last_success: Option<Timestamp>,
    /// Since when the sink has failed without a success; `None` while it succeeds.
    pub failing_since: Option<Timestamp>,
    /// Events acknowledged since the server started, counting re-sends.
    pub delivered_events: u64,
    /// Tries that failed since the server started.
    pub failures: u64,
    /// Events of acknowledged batches that had also reached the destination in tries that
    /// failed (an error answer, a timeout): the duplicates a receiver saw.
    pub redelivered_events: u64,
    /// Whether this server delivers the sink (with a shared PostgreSQL log, one server does).
    pub active: bool,
}

/// What an operator asks of a sink.
enum Control {
    Resume,
    Rewind(LogPosition),
}

/// The running sinks of a server: their status, and the handles to resume and rewind them.
#[derive(Clone)]
pub struct Deliveries {
    sinks: Arc<Vec<SinkHandle>>,
    log: Option<Arc<dyn EventLog>>,
    /// Whether another server may hold a sink (then a request for a sink this server does
    /// not deliver is refused; otherwise it waits for the deliverer to start).
    shared: bool,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

#[derive(Clone)]
struct SinkHandle {
    name: String,
    status: Arc<Mutex<SinkStatus>>,
    control: mpsc::UnboundedSender<(Control, oneshot::Sender<()>)>,
}

/// Why `ResumeSink` or `RewindSink` was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no sink is named {0:?}")]
    UnknownSink(String),
    #[error("position {position} is past the log's head {head}")]
    PastHead { position: u64, head: u64 },
    #[error("the sink's deliverer has stopped (the server is shutting down)")]
    Stopped,
    #[error(
        "this server does not deliver sink {0:?}: another command server of the shared log holds it (ListSinks shows `active` on the one that does)"
    )]
    NotHere(String),
}

impl Deliveries {
    /// Starts a deliverer for each sink, reading `log`, claiming the sink and keeping its
    /// cursor through `claims`, until `shutdown`.
    pub fn start(
        specs: Vec<SinkSpec>,
        log: Arc<dyn EventLog>,
        claims: Arc<dyn Claims>,
        clock: Arc<dyn Clock>,
        shutdown: Shutdown,
    ) -> Deliveries {
        let mut sinks = Vec::with_capacity(specs.len());
        let mut tasks = Vec::with_capacity(specs.len());
        for spec in specs {
            let status = Arc::new(Mutex::new(SinkStatus {
                name: spec.name.clone(),
                kind: spec.sink.kind(),
                state: SinkState::Running,
                position: LogPosition::START,
                lag_events: log.head().0,
                last_error: None,
                last_success: None,
                failing_since: None,
                delivered_events: 0,
                failures: 0,
                redelivered_events: 0,
                active: false,
            }));
            let (control, requests) = mpsc::unbounded_channel();
            sinks.push(SinkHandle {
                name: spec.name.clone(),
                status: status.clone(),
                control,
            });
            tasks.push(tokio::spawn(engine::run(engine::Deliverer::new(
                spec,
                log.clone(),
                claims.clone(),
                clock.clone(),
                status,
                requests,
                shutdown.clone(),
            ))));
        }
        Deliveries {
            sinks: Arc::new(sinks),
            log: Some(log),
            shared: claims.shared(),
            tasks: Arc::new(Mutex::new(tasks)),
        }
    }

    /// A server without sinks.
    pub fn none() -> Deliveries {
        Deliveries {
            sinks: Arc::new(Vec::new()),
            log: None,
            shared: false,
            tasks: Arc::default(),
        }
    }

    /// Returns once every deliverer has stopped (after the shutdown): a batch in flight is
    /// answered or times out, and its cursor is stored, first.
    pub async fn stopped(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("delivery tasks poisoned"));
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "a deliverer failed");
            }
        }
    }

    /// Every sink's status, in configuration order, its lag against the log's head now.
    pub fn list(&self) -> Vec<SinkStatus> {
        self.sinks.iter().map(|sink| self.snapshot(sink)).collect()
    }

    fn snapshot(&self, sink: &SinkHandle) -> SinkStatus {
        let mut status = sink.status.lock().expect("sink status poisoned").clone();
        if let Some(log) = &self.log {
            status.lag_events = log.head().0.saturating_sub(status.position.0);
        }
        status
    }

    /// Un-parks a sink (and cuts a retry's wait short): it tries again now.
    pub async fn resume(&self, name: &str) -> Result<SinkStatus, ControlError> {
        self.control(name, Control::Resume).await
    }

    /// Moves a sink's cursor to `position` (back to replay, or forward to skip) and resumes
    /// it: the next delivery holds the first matching event after `position`.
    pub async fn rewind(
        &self,
        name: &str,
        position: LogPosition,
        head: LogPosition,
    ) -> Result<SinkStatus, ControlError> {
        if position > head {
            return Err(ControlError::PastHead {
                position: position.0,
                head: head.0,
            });
        }
        self.control(name, Control::Rewind(position)).await
    }

    async fn control(&self, name: &str, control: Control) -> Result<SinkStatus, ControlError> {
        let sink = self
            .sinks
            .iter()
            .find(|sink| sink.name == name)
            .ok_or_else(|| ControlError::UnknownSink(name.to_owned()))?;
        if self.shared && !sink.status.lock().expect("sink status poisoned").active {
            return Err(ControlError::NotHere(name.to_owned()));
        }
        let (done, applied) = oneshot::channel();
        sink.control
            .send((control, done))
            .map_err(|_| ControlError::Stopped)?;
        applied.await.map_err(|_| ControlError::Stopped)?;
        Ok(self.snapshot(sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_initial_wait_up_to_the_limit_with_jitter() {
        let policy = RetryPolicy::default();
        let top = u32::MAX;
        assert_eq!(policy.backoff(1, top), Duration::from_secs(1));
        assert_eq!(policy.backoff(2, top), Duration::from_secs(2));
        assert_eq!(policy.backoff(4, top), Duration::from_secs(8));
        assert_eq!(policy.backoff(10, top), Duration::from_secs(512));
        assert_eq!(policy.backoff(11, top), RETRY_MAX);
        assert_eq!(policy.backoff(1000, top), RETRY_MAX);
        assert_eq!(policy.backoff(1, 0), Duration::from_millis(500));
        assert_eq!(policy.backoff(1000, 0), RETRY_MAX / 2);
    }

    #[test]
    fn a_password_in_a_url_is_never_shown() {
        assert_eq!(
            redacted("redis://:hunter2@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(
            redacted("nats://app:hunter2@bus:4222"),
            "nats://app:***@bus:4222"
        );
        assert_eq!(redacted("nats://token@bus"), "nats://***@bus");
        assert_eq!(redacted("redis://cache:6379/0"), "redis://cache:6379/0");
        assert_eq!(
            redacted("https://u:p@hooks.example.com/in?apikey=s3cret&store=a&X-Amz-Signature=x#f"),
            "https://u:***@hooks.example.com/in?apikey=***&store=a&X-Amz-Signature=***#f"
        );
        assert_eq!(
            redacted("postgres://app:pw@db/inventory?sslmode=verify-full&password=pw"),
            "postgres://app:***@db/inventory?sslmode=verify-full&password=***"
        );
        assert_eq!(
            redacted("http://h?access_token=t"),
            "http://h?access_token=***"
        );
    }

    #[test]
    fn sink_names_are_file_and_label_safe() {
        assert!(check_sink_name("erp-low_stock1").is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(65), ".."] {
            assert!(check_sink_name(bad).is_err(), "{bad:?}");
        }
    }
}
