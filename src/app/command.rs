//! The command side: one writer task owns the inventory and the log's write end.
//!
//! Commands arrive on a bounded queue. The writer takes every command waiting (up to
//! [`MAX_BATCH_COMMANDS`]), decides each against the inventory with the batch's earlier events
//! already applied, appends all resulting events in one write and one fsync (group commit),
//! and only then answers. Because one task decides everything in order, two clients can never
//! both take the last unit, and no command fails because another ran at the same moment.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::clock::Clock;
use crate::domain::{
    Command, CommandId, DomainError, EventId, Inventory, LogPosition, RecordedEvent, ReservationId,
    StockEvent, StockLevel, StreamKey, StreamVersion, Timestamp,
};
use crate::log::{EventLog, LogError, MAX_APPEND_EVENTS, MAX_READ_EVENTS};

/// How many commands may wait for the writer. Past this, callers wait for room (back-pressure)
/// instead of growing a queue without bound.
pub const COMMAND_QUEUE_CAPACITY: usize = 8192;

/// The most commands decided and made durable together.
pub const MAX_BATCH_COMMANDS: usize = 2048;

/// The most expiries appended with one batch; the rest follow in the next.
pub const MAX_EXPIRIES_PER_BATCH: usize = 1024;

const _: () = assert!(MAX_BATCH_COMMANDS + MAX_EXPIRIES_PER_BATCH <= MAX_APPEND_EVENTS);

/// How long a command id is remembered after its command was accepted: a retry within this
/// window gets the original answer.
pub const IDEMPOTENCY_WINDOW_MILLIS: u64 = 24 * 60 * 60 * 1000;

/// The most command ids remembered at once; past it the oldest are forgotten early.
pub const MAX_REMEMBERED_COMMANDS: usize = 10_000_000;

/// How often the writer looks for reservations whose time is up when no command arrives.
pub const EXPIRY_TICK: Duration = Duration::from_millis(200);

/// One command as the command side receives it: the domain command and its envelope.
#[derive(Clone, Debug)]
pub struct CommandRequest {
    pub command: Command,
    pub command_id: Option<CommandId>,
    pub expected_version: Option<StreamVersion>,
    /// A hash of the client's request (see [`fingerprint`]), to tell a retry from a different
    /// request that reuses a command id.
    pub fingerprint: u64,
}

/// What an accepted command returns.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CommandOutcome {
    pub stream: StreamKey,
    pub version: StreamVersion,
    pub position: LogPosition,
    pub stock: StockLevel,
    /// For a reservation: its id and when it expires.
    pub reservation: Option<(ReservationId, Timestamp)>,
    /// True when this is the remembered answer to an earlier command with the same id.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("stream {stream} is at version {current}, the command expected {expected}")]
    WrongExpectedVersion {
        stream: StreamKey,
        expected: StreamVersion,
        current: StreamVersion,
    },
    #[error("command id {command_id} was already used for a different request")]
    CommandIdReused { command_id: CommandId },
    /// The log could not store the command: nothing was written.
    #[error("the event log is unavailable: {0}")]
    LogUnavailable(String),
    #[error("the command side is shutting down")]
    ShuttingDown,
}

/// A hash of a command's request fields, stable across versions and restarts (FNV-1a 64 over
/// a length-prefixed canonical encoding). `generated_reservation_id` leaves out a reservation
/// id the server made, so a retry (which gets another generated id) matches the original.
pub fn fingerprint(
    command: &Command,
    expected_version: Option<StreamVersion>,
    generated_reservation_id: bool,
) -> u64 {
    let mut hasher = Fnv64::new();
    let stream = |hasher: &mut Fnv64, stream: &StreamKey| {
        hasher.text(stream.product_id.as_str());
        hasher.text(stream.store_id.as_str());
    };
    match command {
        Command::AddStock {
            stream: key,
            quantity,
            reason,
        } => {
            hasher.text("AddStock");
            stream(&mut hasher, key);
            hasher.number(quantity.get());
            hasher.text(reason.as_str());
        }
        Command::AdjustStock {
            stream: key,
            on_hand,
            reason,
        } => {
            hasher.text("AdjustStock");
            stream(&mut hasher, key);
            hasher.number(*on_hand);
            hasher.text(reason.as_str());
        }
        Command::ReserveStock {
            stream: key,
            reservation_id,
            quantity,
            customer_id,
            ttl,
        } => {
            hasher.text("ReserveStock");
            stream(&mut hasher, key);
            hasher.text(if generated_reservation_id {
                ""
            } else {
                reservation_id.as_str()
            });
            hasher.number(quantity.get());
            hasher.text(customer_id.as_str());
            hasher.number(ttl.millis());
        }
        Command::CommitReservation {
            reservation_id,
            order_id,
        } => {
            hasher.text("CommitReservation");
            hasher.text(reservation_id.as_str());
            hasher.text(order_id.as_str());
        }
        Command::ReleaseReservation {
            reservation_id,
            reason,
        } => {
            hasher.text("ReleaseReservation");
            hasher.text(reservation_id.as_str());
            hasher.text(reason.as_str());
        }
        Command::ExpireReservation { reservation_id } => {
            hasher.text("ExpireReservation");
            hasher.text(reservation_id.as_str());
        }
    }
    match expected_version {
        Some(version) => {
            hasher.number(1);
            hasher.number(version.0);
        }
        None => hasher.number(0),
    }
    hasher.finish()
}

struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn number(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    fn text(&mut self, text: &str) {
        self.number(text.len() as u64);
        self.bytes(text.as_bytes());
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

struct RememberedCommand {
    fingerprint: u64,
    outcome: CommandOutcome,
}

/// The command side's state: the inventory and the remembered command ids, both folds of the
/// log.
pub struct CommandState {
    inventory: Inventory,
    head: LogPosition,
    remembered: HashMap<CommandId, RememberedCommand>,
    /// Remembered ids in the order they were accepted, to forget the oldest first.
    remembered_order: VecDeque<(Timestamp, CommandId)>,
}

impl CommandState {
    pub fn new() -> CommandState {
        CommandState {
            inventory: Inventory::new(),
            head: LogPosition::START,
            remembered: HashMap::new(),
            remembered_order: VecDeque::new(),
        }
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn head(&self) -> LogPosition {
        self.head
    }

    /// Applies one event from the log, checking it against the fold: its position follows the
    /// head, its version follows its stream, and its recorded stock is what the fold computes.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), LogError> {
        let corrupt = |problem: String| LogError::Corrupt {
            offset: 0,
            problem: format!("event at position {}: {problem}", event.position),
        };
        if event.position != self.head.next() {
            return Err(corrupt(format!("expected position {}", self.head.next())));
        }
        let expected_version = self.inventory.version(&event.stream).next();
        if event.version != expected_version {
            return Err(corrupt(format!(
                "version {} where {expected_version} was expected",
                event.version
            )));
        }
        let (_, stock) = self.inventory.evolve(&event.stream, &event.event);
        if stock != event.stock_after {
            return Err(corrupt(format!(
                "recorded stock {:?} but the events fold into {stock:?}",
                event.stock_after
            )));
        }
        self.head = event.position;
        if let Some(command_id) = &event.command_id {
            self.remember(command_id.clone(), event.command_fingerprint, event);
        }
        Ok(())
    }

    fn remember(&mut self, command_id: CommandId, fingerprint: u64, event: &RecordedEvent) {
        let reservation = match &event.event {
            StockEvent::StockReserved {
                reservation_id,
                expires_at,
                ..
            } => Some((reservation_id.clone(), *expires_at)),
            _ => None,
        };
        let outcome = CommandOutcome {
            stream: event.stream.clone(),
            version: event.version,
            position: event.position,
            stock: event.stock_after,
            reservation,
            replayed: true,
        };
        self.remembered_order
            .push_back((event.occurred_at, command_id.clone()));
        self.remembered.insert(
            command_id,
            RememberedCommand {
                fingerprint,
                outcome,
            },
        );
    }

    /// Forgets command ids older than the idempotency window, or past the count limit.
    pub fn forget_old_commands(&mut self, now: Timestamp) {
        let oldest_kept = now.saturating_sub_millis(IDEMPOTENCY_WINDOW_MILLIS);
        while let Some((accepted_at, _)) = self.remembered_order.front() {
            if *accepted_at >= oldest_kept && self.remembered_order.len() <= MAX_REMEMBERED_COMMANDS
            {
                break;
            }
            let (_, command_id) = self.remembered_order.pop_front().expect("front exists");
            self.remembered.remove(&command_id);
        }
    }

    /// Decides one command; if accepted, applies its event and adds it to `events`.
    fn execute(
        &mut self,
        request: &CommandRequest,
        now: Timestamp,
        events: &mut Vec<RecordedEvent>,
    ) -> Result<CommandOutcome, CommandError> {
        if let Some(command_id) = &request.command_id
            && let Some(remembered) = self.remembered.get(command_id)
        {
            if remembered.fingerprint != request.fingerprint {
                return Err(CommandError::CommandIdReused {
                    command_id: command_id.clone(),
                });
            }
            return Ok(remembered.outcome.clone());
        }
        let decision = self.inventory.decide(&request.command, now)?;
        if let Some(expected) = request.expected_version {
            let current = self.inventory.version(&decision.stream);
            if current != expected {
                return Err(CommandError::WrongExpectedVersion {
                    stream: decision.stream,
                    expected,
                    current,
                });
            }
        }
        let event = self.record(
            decision.stream,
            decision.event,
            now,
            request.command_id.clone(),
            request.fingerprint,
        );
        let mut outcome = CommandOutcome {
            stream: event.stream.clone(),
            version: event.version,
            position: event.position,
            stock: event.stock_after,
            reservation: None,
            replayed: false,
        };
        if let StockEvent::StockReserved {
            reservation_id,
            expires_at,
            ..
        } = &event.event
        {
            outcome.reservation = Some((reservation_id.clone(), *expires_at));
        }
        events.push(event);
        Ok(outcome)
    }

    /// Appends `ReservationExpired` for reservations whose time is up.
    fn expire_due(&mut self, now: Timestamp, events: &mut Vec<RecordedEvent>) {
        for reservation_id in self.inventory.due_reservations(now, MAX_EXPIRIES_PER_BATCH) {
            let command = Command::ExpireReservation { reservation_id };
            match self.inventory.decide(&command, now) {
                Ok(decision) => {
                    let event = self.record(decision.stream, decision.event, now, None, 0);
                    events.push(event);
                }
                Err(error) => {
                    unreachable!("a due reservation is active, yet expiring it failed: {error}")
                }
            }
        }
    }

    /// Applies a newly decided event and returns it as it will be stored.
    fn record(
        &mut self,
        stream: StreamKey,
        event: StockEvent,
        now: Timestamp,
        command_id: Option<CommandId>,
        command_fingerprint: u64,
    ) -> RecordedEvent {
        let (version, stock_after) = self.inventory.evolve(&stream, &event);
        self.head = self.head.next();
        let recorded = RecordedEvent {
            position: self.head,
            event_id: EventId(uuid::Uuid::now_v7().as_u128()),
            stream,
            version,
            occurred_at: now,
            stock_after,
            command_id,
            command_fingerprint,
            event,
        };
        if let Some(command_id) = recorded.command_id.clone() {
            self.remember(command_id, command_fingerprint, &recorded);
        }
        recorded
    }

    /// Rebuilds the state from the whole log.
    pub async fn load(log: &dyn EventLog, now: Timestamp) -> Result<CommandState, LogError> {
        let mut state = CommandState::new();
        loop {
            let events = log.read_all(state.head, MAX_READ_EVENTS).await?;
            if events.is_empty() {
                break;
            }
            for event in &events {
                state.apply(event)?;
            }
        }
        state.forget_old_commands(now);
        Ok(state)
    }
}

impl Default for CommandState {
    fn default() -> CommandState {
        CommandState::new()
    }
}

enum Job {
    Execute {
        request: CommandRequest,
        reply: oneshot::Sender<Result<CommandOutcome, CommandError>>,
    },
    /// Wakes the writer to expire reservations when no command arrives.
    Tick,
}

/// A cheap, cloneable way to send commands to the writer.
#[derive(Clone)]
pub struct CommandHandle {
    jobs: mpsc::Sender<Job>,
}

impl CommandHandle {
    /// Executes one command; returns once its event is durable (or it was refused).
    pub async fn execute(&self, request: CommandRequest) -> Result<CommandOutcome, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Execute { request, reply })
            .await
            .map_err(|_| CommandError::ShuttingDown)?;
        answer.await.map_err(|_| CommandError::ShuttingDown)?
    }
}

/// The running command side: the handle to send commands and the writer task. The writer
/// stops once every handle is dropped, after answering every command it accepted.
pub struct CommandSide {
    pub handle: CommandHandle,
    pub writer: JoinHandle<()>,
}

impl CommandSide {
    /// Starts the writer over `state` (already loaded from `log`).
    pub fn start(
        state: CommandState,
        log: Arc<dyn EventLog>,
        clock: Arc<dyn Clock>,
    ) -> CommandSide {
        let (jobs, receiver) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let ticker_jobs = jobs.downgrade();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(EXPIRY_TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                // A weak sender: the ticker does not keep the writer alive once the servers
                // have dropped their handles.
                let Some(jobs) = ticker_jobs.upgrade() else {
                    break;
                };
                // A full queue means the writer is busy, and it expires due reservations with
                // every batch anyway.
                let _ = jobs.try_send(Job::Tick);
            }
        });
        let writer = tokio::spawn(run_writer(state, log, clock, receiver));
        CommandSide {
            handle: CommandHandle { jobs },
            writer,
        }
    }
}

/// The writer's Prometheus metrics, looked up once when the writer starts so that counting a
/// command only adds to an atomic (no-ops when no recorder is installed).
struct WriterMetrics {
    accepted: Counter,
    refused: Counter,
    replayed: Counter,
    failed: Counter,
    batch_size: Histogram,
}

impl WriterMetrics {
    fn register() -> WriterMetrics {
        let commands = |outcome: &'static str| metrics::counter!("inventory_commands_total", "outcome" => outcome);
        WriterMetrics {
            accepted: commands("accepted"),
            refused: commands("refused"),
            replayed: commands("replayed"),
            failed: commands("failed"),
            batch_size: metrics::histogram!("inventory_command_batch_size"),
        }
    }

    /// Counts the answer one command is about to get.
    fn count(&self, result: &Result<CommandOutcome, CommandError>) {
        let counter = match result {
            Ok(outcome) if outcome.replayed => &self.replayed,
            Ok(_) => &self.accepted,
            // The command was decided but could not be stored (or never reached a decision).
            Err(CommandError::LogUnavailable(_) | CommandError::ShuttingDown) => &self.failed,
            Err(
                CommandError::Domain(_)
                | CommandError::WrongExpectedVersion { .. }
                | CommandError::CommandIdReused { .. },
            ) => &self.refused,
        };
        counter.increment(1);
    }
}

async fn run_writer(
    mut state: CommandState,
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    mut jobs: mpsc::Receiver<Job>,
) {
    let metrics = WriterMetrics::register();
    let mut batch = Vec::with_capacity(MAX_BATCH_COMMANDS);
    let mut replies = Vec::with_capacity(MAX_BATCH_COMMANDS);
    let mut events = Vec::with_capacity(MAX_APPEND_EVENTS);
    while jobs.recv_many(&mut batch, MAX_BATCH_COMMANDS).await > 0 {
        let now = clock.now();
        let head_before = state.head();
        state.expire_due(now, &mut events);
        for job in batch.drain(..) {
            match job {
                Job::Execute { request, reply } => {
                    let result = state.execute(&request, now, &mut events);
                    replies.push((reply, result));
                }
                Job::Tick => {}
            }
        }
        if !replies.is_empty() {
            metrics.batch_size.record(replies.len() as f64);
        }
        if !events.is_empty() {
            let count = events.len();
            let appended = log.append(std::mem::take(&mut events)).await;
            if let Err(error) = appended {
                tracing::error!(%error, events = count, "append failed; no command of the batch was stored");
                for (_, result) in &mut replies {
                    if result.is_ok() {
                        *result = Err(CommandError::LogUnavailable(error.to_string()));
                    }
                }
                // The state already holds the batch's events: rebuild it from what the log
                // really holds.
                state = reload_after_failure(&*log, &*clock, head_before).await;
            }
        }
        for (reply, result) in replies.drain(..) {
            metrics.count(&result);
            // A caller that went away still had its command executed; nothing to undo.
            let _ = reply.send(result);
        }
        state.forget_old_commands(now);
    }
    tracing::debug!(head = state.head().0, "command writer stopped");
}

async fn reload_after_failure(
    log: &dyn EventLog,
    clock: &dyn Clock,
    head_before: LogPosition,
) -> CommandState {
    let mut delay = Duration::from_millis(10);
    loop {
        match CommandState::load(log, clock.now()).await {
            Ok(state) => {
                assert_eq!(
                    state.head(),
                    head_before,
                    "the log changed under the single writer"
                );
                return state;
            }
            Err(error) => {
                tracing::error!(%error, "reloading the command state failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
