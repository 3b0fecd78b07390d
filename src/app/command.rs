//! The command side: one writer thread owns the inventory and the log's write end.
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
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::breaker::{BreakerState, CircuitBreaker};
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
    /// The trace the command belongs to, when traces are exported.
    pub trace: Option<CommandTrace>,
}

/// A traced command's server span and its W3C `traceparent`: the append is traced under the
/// span, and the event stores the `traceparent` for whoever applies it later.
#[derive(Clone, Debug)]
pub struct CommandTrace {
    pub span: tracing::Span,
    pub trace_parent: Arc<str>,
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
    /// The log's storage kept failing; commands are refused at once until `retry_after`.
    #[error("the event log's storage is failing; retry in {retry_after:?}")]
    CircuitOpen { retry_after: Duration },
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
            let reservation_id = reservation_id.as_str();
            hasher.text(if generated_reservation_id {
                ""
            } else {
                &reservation_id
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
            hasher.text(&reservation_id.as_str());
            hasher.text(order_id.as_str());
        }
        Command::ReleaseReservation {
            reservation_id,
            reason,
        } => {
            hasher.text("ReleaseReservation");
            hasher.text(&reservation_id.as_str());
            hasher.text(reason.as_str());
        }
        Command::ExpireReservation { reservation_id } => {
            hasher.text("ExpireReservation");
            hasher.text(&reservation_id.as_str());
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
    remembered: HashMap<CommandId, RememberedCommand, foldhash::fast::RandomState>,
    /// Remembered ids in the order they were accepted, to forget the oldest first.
    remembered_order: VecDeque<(Timestamp, CommandId)>,
    /// While a batch is open: the head before it, and how many ids it remembered.
    open_batch: Option<(LogPosition, usize)>,
}

impl CommandState {
    pub fn new() -> CommandState {
        CommandState {
            inventory: Inventory::new(),
            head: LogPosition::START,
            remembered: HashMap::default(),
            remembered_order: VecDeque::new(),
            open_batch: None,
        }
    }

    /// Starts a batch whose changes can be rolled back if the log refuses its events.
    fn begin_batch(&mut self) {
        assert!(self.open_batch.is_none(), "a batch is already open");
        self.inventory.begin_batch();
        self.open_batch = Some((self.head, self.remembered_order.len()));
    }

    fn commit_batch(&mut self) {
        self.open_batch.take().expect("no batch is open");
        self.inventory.commit_batch();
    }

    /// Forgets everything the open batch did.
    fn rollback_batch(&mut self) {
        let (head, remembered) = self.open_batch.take().expect("no batch is open");
        self.inventory.rollback_batch();
        self.head = head;
        while self.remembered_order.len() > remembered {
            let (_, command_id) = self
                .remembered_order
                .pop_back()
                .expect("longer than before");
            self.remembered.remove(&command_id);
        }
    }

    /// Applies every event the log has past this state's head (written by another command
    /// server sharing the log, or left by an append that failed after it wrote).
    pub async fn catch_up(&mut self, log: &dyn EventLog) -> Result<(), LogError> {
        loop {
            let events = log.read_all(self.head, MAX_READ_EVENTS).await?;
            if events.is_empty() {
                return Ok(());
            }
            for event in &events {
                self.apply(event)?;
            }
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
            request
                .trace
                .as_ref()
                .map(|trace| trace.trace_parent.clone()),
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
                    let event = self.record(decision.stream, decision.event, now, None, 0, None);
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
        trace_parent: Option<Arc<str>>,
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
            trace_parent,
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
        state.catch_up(log).await?;
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

/// How many times one batch is decided again after the log's head moved under it (another
/// command server appended first) before its commands fail with `LogUnavailable`.
pub const MAX_APPEND_ATTEMPTS: usize = 32;

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

/// The running command side: the handle to send commands, the writer thread, and the state of
/// its circuit breaker. The writer stops once every handle is dropped, after answering every
/// command it accepted.
pub struct CommandSide {
    pub handle: CommandHandle,
    pub writer: JoinHandle<()>,
    pub breaker: watch::Receiver<BreakerState>,
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
        let (breaker, breaker_state) = CircuitBreaker::new();
        // The writer has a thread of its own (from the blocking pool, for its whole life), so
        // that it can write and fsync the embedded log where it decides, without handing each
        // append to another thread and waiting to be woken again.
        let writer = tokio::task::spawn_blocking(move || {
            run_writer(state, &*log, &*clock, breaker, receiver);
        });
        CommandSide {
            handle: CommandHandle { jobs },
            writer,
            breaker: breaker_state,
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
    abandoned: Counter,
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
            abandoned: commands("abandoned"),
            batch_size: metrics::histogram!("inventory_command_batch_size"),
        }
    }

    /// Counts the answer one command is about to get.
    fn count(&self, result: &Result<CommandOutcome, CommandError>) {
        let counter = match result {
            Ok(outcome) if outcome.replayed => &self.replayed,
            Ok(_) => &self.accepted,
            // The command was decided but could not be stored (or never reached a decision).
            Err(
                CommandError::LogUnavailable(_)
                | CommandError::CircuitOpen { .. }
                | CommandError::ShuttingDown,
            ) => &self.failed,
            Err(
                CommandError::Domain(_)
                | CommandError::WrongExpectedVersion { .. }
                | CommandError::CommandIdReused { .. },
            ) => &self.refused,
        };
        counter.increment(1);
    }
}

/// The writer's loop, on a thread that may block: it waits for commands, decides them and
/// appends their events there. Asynchronous log operations (every operation of a database
/// log) are driven to completion on this thread by the runtime's handle.
fn run_writer(
    mut state: CommandState,
    log: &dyn EventLog,
    clock: &dyn Clock,
    mut breaker: CircuitBreaker,
    mut jobs: mpsc::Receiver<Job>,
) {
    let runtime = tokio::runtime::Handle::current();
    let metrics = WriterMetrics::register();
    let mut batch = Vec::with_capacity(MAX_BATCH_COMMANDS);
    let mut requests = Vec::with_capacity(MAX_BATCH_COMMANDS);
    let mut replies = Vec::with_capacity(MAX_BATCH_COMMANDS);
    while runtime.block_on(jobs.recv_many(&mut batch, MAX_BATCH_COMMANDS)) > 0 {
        for job in batch.drain(..) {
            if let Job::Execute { request, reply } = job {
                if reply.is_closed() {
                    // The caller is gone (its deadline passed, or it disconnected) before the
                    // command was decided: nobody would learn the outcome, so it is not
                    // executed, and an overloaded writer does no work for abandoned calls. A
                    // retry with the same command_id executes it.
                    metrics.abandoned.increment(1);
                    continue;
                }
                requests.push(request);
                replies.push(reply);
            }
        }
        if !requests.is_empty() {
            metrics.batch_size.record(requests.len() as f64);
        }
        let results = match breaker.admit(Instant::now()) {
            Err(retry_after) => requests
                .iter()
                .map(|_| Err(CommandError::CircuitOpen { retry_after }))
                .collect(),
            Ok(()) => {
                let results = execute_batch(&runtime, &mut state, log, clock, &requests);
                // Only storage failures count; refusals and conflicts mean it works.
                if results
                    .iter()
                    .any(|result| matches!(result, Err(CommandError::LogUnavailable(_))))
                {
                    breaker.record_failure(Instant::now());
                } else {
                    breaker.record_success();
                }
                results
            }
        };
        for (reply, result) in replies.drain(..).zip(results) {
            metrics.count(&result);
            // A caller that went away still had its command executed; nothing to undo.
            let _ = reply.send(result);
        }
        requests.clear();
        state.forget_old_commands(clock.now());
    }
    tracing::debug!(head = state.head().0, "command writer stopped");
}

/// Decides a batch, appends its events in one append, and returns each command's result.
///
/// The batch is decided while holding the log's append lock, after catching up with whatever
/// the log holds: on a log shared by several command servers no other server can append
/// between the decision and the write, so a batch is decided once and its refusals are as
/// current as its acceptances. If the append still fails because the head moved (it should
/// not), the batch is rolled back, the state catches up and the batch is decided again, up to
/// [`MAX_APPEND_ATTEMPTS`].
fn execute_batch(
    runtime: &tokio::runtime::Handle,
    state: &mut CommandState,
    log: &dyn EventLog,
    clock: &dyn Clock,
    requests: &[CommandRequest],
) -> Vec<Result<CommandOutcome, CommandError>> {
    let mut attempt = 0;
    // Command ids the log already holds from before the idempotency window: refused.
    let mut taken: Vec<CommandId> = Vec::new();
    loop {
        attempt += 1;
        let lock = match runtime.block_on(log.lock()) {
            Ok(lock) => lock,
            Err(error) => {
                tracing::error!(%error, "cannot lock the log for an append");
                return failed(requests.len(), &error);
            }
        };
        // Another server may have appended since our last batch; nobody can now.
        if lock.head() != state.head()
            && let Err(error) = runtime.block_on(state.catch_up(log))
        {
            tracing::error!(%error, "catching up with the log failed");
            return failed(requests.len(), &error);
        }
        let now = clock.now();
        let mut events = Vec::with_capacity(requests.len() + 1);
        state.begin_batch();
        state.expire_due(now, &mut events);
        let results: Vec<_> = requests
            .iter()
            .map(|request| match &request.command_id {
                Some(command_id) if taken.contains(command_id) => {
                    Err(CommandError::CommandIdReused {
                        command_id: command_id.clone(),
                    })
                }
                _ => state.execute(request, now, &mut events),
            })
            .collect();
        if events.is_empty() {
            // Refusals and replays only: decided under the lock, so current. Dropping the
            // lock releases it.
            state.commit_batch();
            return results;
        }
        let count = events.len();
        // One span per traced command, under the command's own span, for the time of the
        // append its event is part of.
        let append_spans: Vec<tracing::Span> = requests
            .iter()
            .filter_map(|request| request.trace.as_ref())
            .map(|trace| tracing::info_span!(parent: &trace.span, "log.append", events = count, attempt))
            .collect();
        let appended = lock.append_blocking(events);
        drop(append_spans);
        let error = match appended {
            Ok(()) => {
                state.commit_batch();
                return results;
            }
            Err(error) => error,
        };
        state.rollback_batch();
        if let LogError::CommandIdsTaken { command_ids } = &error
            && attempt < MAX_APPEND_ATTEMPTS
        {
            taken.extend(
                command_ids
                    .iter()
                    .filter_map(|text| CommandId::parse(text).ok()),
            );
            continue;
        }
        let head_moved = matches!(error, LogError::HeadMoved { .. });
        if head_moved && attempt < MAX_APPEND_ATTEMPTS {
            tracing::debug!(attempt, %error, "the log moved on; catching up and deciding again");
        } else {
            tracing::error!(%error, events = count, attempt, "append failed; no command of the batch was stored");
        }
        // Whatever happened, the log may hold events this state has not seen (ours, if the
        // append failed after writing): catch up before deciding again.
        if let Err(catch_up_error) = runtime.block_on(state.catch_up(log)) {
            tracing::error!(error = %catch_up_error, "catching up with the log failed");
            return failed(requests.len(), &catch_up_error);
        }
        if !head_moved || attempt >= MAX_APPEND_ATTEMPTS {
            return failed(requests.len(), &error);
        }
    }
}

fn failed(count: usize, error: &LogError) -> Vec<Result<CommandOutcome, CommandError>> {
    (0..count)
        .map(|_| Err(CommandError::LogUnavailable(error.to_string())))
        .collect()
}
