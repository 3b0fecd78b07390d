//! The writer: one thread that takes every command waiting, decides the batch under the log's
//! append lock, appends its events in one append and answers each caller.

use std::sync::Arc;

use metrics::{Counter, Histogram};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{
    Accepted, COMMAND_QUEUE_CAPACITY, CommandError, CommandState, EXPIRY_TICK, MAX_APPEND_ATTEMPTS,
    MAX_BATCH_COMMANDS, PreparedCommand,
};
use crate::app::access::CommandRefusal;
use crate::app::breaker::{BreakerState, CircuitBreaker};
use crate::app::clock::Clock;
use crate::domain::{CommandKey, RecordedEvent};
use crate::log::{AppendLock, EventLog, LogError, MAX_APPEND_EVENTS};

// Almost every job is a command: boxing it would cost an allocation per command to save
// bytes on the rare tick.
#[allow(clippy::large_enum_variant)]
pub(super) enum Job {
    Execute {
        request: PreparedCommand,
        reply: oneshot::Sender<Result<Accepted, CommandError>>,
    },
    /// Wakes the writer to expire reservations when no command arrives.
    Tick,
}

/// Starts the writer thread over `state` and the ticker that wakes it for expiries; returns
/// the queue to send it commands, the thread, and the circuit breaker's state.
pub(super) fn start(
    state: CommandState,
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
) -> (
    mpsc::Sender<Job>,
    JoinHandle<()>,
    watch::Receiver<BreakerState>,
) {
    let (jobs, receiver) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
    let ticker_jobs = jobs.downgrade();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(EXPIRY_TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            // A weak sender: the ticker does not keep the writer alive once the servers have
            // dropped their handles.
            let Some(jobs) = ticker_jobs.upgrade() else {
                break;
            };
            // A full queue means the writer is busy, and it expires due reservations with
            // every batch anyway.
            let _ = jobs.try_send(Job::Tick);
        }
    });
    let (breaker, breaker_state) = CircuitBreaker::new();
    // The writer has a thread of its own (from the blocking pool, for its whole life), so that
    // it can write and fsync the embedded log where it decides, without handing each append
    // to another thread and waiting to be woken again.
    let writer = tokio::task::spawn_blocking(move || {
        run_writer(state, &*log, &*clock, breaker, receiver);
    });
    (jobs, writer, breaker_state)
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
    fn count(&self, result: &Result<Accepted, CommandError>) {
        let counter = match result {
            Ok(outcome) if outcome.replayed() => &self.replayed,
            Ok(_) => &self.accepted,
            // The command was decided but could not be stored (or never reached a decision).
            Err(
                CommandError::LogUnavailable(_)
                | CommandError::CircuitOpen { .. }
                | CommandError::ShuttingDown,
            ) => &self.failed,
            Err(CommandError::Abandoned) => &self.abandoned,
            Err(
                CommandError::Domain(_)
                | CommandError::WrongExpectedVersion { .. }
                | CommandError::ExpectedVersionOfSeveralItems { .. }
                | CommandError::CommandIdReused { .. }
                | CommandError::CountedAt(_)
                | CommandError::Access(_),
            ) => &self.refused,
        };
        counter.increment(1);
    }
}

/// The writer's loop, on a thread that may block: it waits for commands, decides them and
/// appends their events there. Over 70 lines: one pass of the loop (take, decide and append,
/// answer) reads best whole. Asynchronous log operations (every operation of a database
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
                // A batch appends at most MAX_APPEND_EVENTS: the commands that do not fit wait
                // for the next append, decided against the state after this one. A batch
                // without commands (a tick) still expires what is due.
                let mut results = Vec::with_capacity(requests.len());
                loop {
                    let done = results.len();
                    let rest = &requests[done..];
                    // A caller may give up while its command waits for the append lock.
                    let gone = |index: usize| replies[done + index].is_closed();
                    results.extend(execute_batch(&runtime, &mut state, log, clock, rest, &gone));
                    if results.len() >= requests.len() {
                        break;
                    }
                }
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
    requests: &[PreparedCommand],
    gone: &dyn Fn(usize) -> bool,
) -> Vec<Result<Accepted, CommandError>> {
    let mut attempt = 0;
    // Command ids the log already holds from before the idempotency window: refused.
    let mut taken: Vec<CommandKey> = Vec::new();
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
        state.begin_batch();
        let (results, events) = decide_batch(state, requests, &taken, clock.now(), gone);
        if events.is_empty() {
            // Refusals and replays only: decided under the lock, so current. Dropping the
            // lock releases it.
            state.commit_batch();
            return results;
        }
        let count = events.len();
        let error = match append_traced(lock, events, requests, attempt) {
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
            taken.extend(command_ids.iter().cloned());
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

/// Decides the commands of a batch (after expiring what is due) against the open batch's
/// state, in order, while the events fit one append; returns the result of each command it
/// decided (at least the first) and the events to append.
fn decide_batch(
    state: &mut CommandState,
    requests: &[PreparedCommand],
    taken: &[CommandKey],
    now: crate::domain::Timestamp,
    gone: &dyn Fn(usize) -> bool,
) -> (Vec<Result<Accepted, CommandError>>, Vec<RecordedEvent>) {
    let mut events = Vec::with_capacity(requests.len() + 1);
    state.expire_due(now, &mut events);
    let mut results = Vec::with_capacity(requests.len());
    for (index, request) in requests.iter().enumerate() {
        if !results.is_empty()
            && events.len() + state.event_bound(&request.command) > MAX_APPEND_EVENTS
        {
            break;
        }
        // Checked again under the lock, right before the decision: a caller that gave up
        // while the batch waited for the lock learns nothing, so its command is not executed.
        if gone(index) {
            results.push(Err(CommandError::Abandoned));
            continue;
        }
        // Which reservation a command means, where its id names several (ids are unique per
        // store): the one the caller may see.
        let narrowed = match request.narrowed(state.inventory()) {
            Ok(narrowed) => narrowed,
            Err(refused) => {
                results.push(Err(CommandError::Domain(refused)));
                continue;
            }
        };
        let command = narrowed.as_ref().unwrap_or(&request.command);
        // The scope first: a retry by a credential that may not touch the stores gets no
        // remembered answer either.
        if let Some(refusal) = request.scope.refusal(command, state.inventory()) {
            results.push(Err(match refusal {
                CommandRefusal::Store(refused) => CommandError::Access(refused),
                CommandRefusal::Unseen(not_found) => CommandError::Domain(not_found),
            }));
            continue;
        }
        results.push(match request.command_key() {
            Some(key) if taken.contains(&key) => Err(CommandError::CommandIdReused {
                command_id: key.command_id,
            }),
            _ => state.execute(request, command, now, &mut events),
        });
    }
    (results, events)
}

/// Appends a batch's events under `lock`, with one span per traced command, under the
/// command's own span, for the time of the append its event is part of.
fn append_traced(
    lock: Box<dyn AppendLock>,
    events: Vec<RecordedEvent>,
    requests: &[PreparedCommand],
    attempt: usize,
) -> Result<(), LogError> {
    let count = events.len();
    let _append_spans: Vec<tracing::Span> = requests
        .iter()
        .filter_map(|request| request.trace.as_ref())
        .map(
            |trace| tracing::info_span!(parent: &trace.span, "log.append", events = count, attempt),
        )
        .collect();
    lock.append_blocking(events)
}

fn failed(count: usize, error: &LogError) -> Vec<Result<Accepted, CommandError>> {
    (0..count)
        .map(|_| Err(CommandError::LogUnavailable(error.to_string())))
        .collect()
}
