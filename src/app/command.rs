//! The command side: one writer thread owns the inventory and the log's write end.
//!
//! Commands arrive on a bounded queue. The writer takes every command waiting (up to
//! [`MAX_BATCH_COMMANDS`]), decides each against the inventory with the batch's earlier events
//! already applied, appends all resulting events in one write and one fsync (group commit),
//! and only then answers. Because one task decides everything in order, two clients can never
//! both take the last unit, and no command fails because another ran at the same moment.
//!
//! An adapter enters the command side once per command, through [`CommandHandle::execute`]
//! with a [`CommandRequest`] of one of the command kinds below; it gets back that kind's
//! outcome. Everything else a command needs (its fingerprint, a reservation id the server
//! chooses, the trace it belongs to) is worked out here.

mod count;
mod fingerprint;
mod state;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::access::{AccessError, Principal, StoreScope};
use super::breaker::BreakerState;
use super::clock::Clock;
use crate::domain::{
    Actor, AddStock, AdjustStock, ApplyStockChanges, CancelTransfer, Command, CommandId,
    CommandKey, CommitReservation, Decide, DomainError, EventKind, ExtendReservation, LogPosition,
    MoveStock, QuantityEvent, ReceiveTransfer, RecordedEvent, ReleaseReservation, RemoveStock,
    ReservationEvent, ReservationId, ReserveStock, SetItemPolicy, ShipTransfer, StockAlert,
    StockEvent, StockLevel, StreamKey, StreamVersion, Timestamp, TransferId, TransferStatus,
};
use crate::log::{EventLog, MAX_APPEND_EVENTS};
use crate::telemetry;

pub use count::{CountRecorded, CountSheet, CountedAtError, MAX_COUNT_AGE_MILLIS};
pub use state::CommandState;

/// How many commands may wait for the writer. Past this, callers wait for room (back-pressure)
/// instead of growing a queue without bound.
pub const COMMAND_QUEUE_CAPACITY: usize = 8192;

/// The most commands decided and made durable together.
pub const MAX_BATCH_COMMANDS: usize = 2048;

/// The most reservations expired with one batch; the rest follow in the next.
pub const MAX_EXPIRIES_PER_BATCH: usize = 1024;

/// The most expiry events appended with one batch (a reservation of many lines expires with
/// one event per line), unless one reservation alone has more.
pub const MAX_EXPIRY_EVENTS_PER_BATCH: usize = 4096;

// One batch holds the expiries and at least one command of the most events.
const _: () =
    assert!(MAX_EXPIRY_EVENTS_PER_BATCH + crate::domain::MAX_COMMAND_EVENTS <= MAX_APPEND_EVENTS);

/// How long a command id is remembered after its command was accepted: a retry within this
/// window gets the original answer.
pub const IDEMPOTENCY_WINDOW_MILLIS: u64 = 24 * 60 * 60 * 1000;

/// The most command ids remembered at once; past it the oldest are forgotten early.
pub const MAX_REMEMBERED_COMMANDS: usize = 10_000_000;

/// How often the writer looks for reservations whose time is up when no command arrives.
pub const EXPIRY_TICK: Duration = Duration::from_millis(200);

/// How many times one batch is decided again after the log's head moved under it (another
/// command server appended first) before its commands fail with `LogUnavailable`.
pub const MAX_APPEND_ATTEMPTS: usize = 32;

/// One command as a client asked for it: the command (one of the kinds below) and its
/// envelope.
#[derive(Clone, Debug)]
pub struct CommandRequest<C> {
    pub command: C,
    /// The idempotency key: a retry with the same id gets the original answer.
    pub command_id: Option<CommandId>,
    /// Refuse the command unless its item is at this version (optimistic concurrency).
    pub expected_version: Option<StreamVersion>,
}

/// What an accepted transfer command returns: the changes, the transfer's id and its status
/// after the command.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TransferChanged {
    pub changes: StockChanges,
    pub transfer_id: TransferId,
    pub status: TransferStatus,
}

/// What an accepted command changed of one item: its version and stock after it, and where
/// its last event is in the log (an alert the change raised, if any).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StockChange {
    pub stream: StreamKey,
    pub version: StreamVersion,
    pub position: LogPosition,
    pub stock: StockLevel,
    /// The alerts the change raised, in order.
    pub alerts: Vec<StockAlert>,
    /// True when this is the remembered answer to an earlier command with the same id.
    pub replayed: bool,
}

/// What an accepted command changed: one entry per item, in the order of its events (at
/// contiguous positions; the last is the command's last position).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StockChanges {
    pub changes: Vec<StockChange>,
}

impl StockChanges {
    /// The change of the command's last event: its position is the command's last.
    pub fn last(&self) -> &StockChange {
        self.changes
            .last()
            .expect("an accepted command has an event")
    }
}

/// What an accepted reservation (or its extension) returns: the changes, and the
/// reservation's id and expiry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReservationMade {
    pub changes: StockChanges,
    pub reservation_id: ReservationId,
    pub expires_at: Timestamp,
}

/// A command kind: how it becomes a domain command, and what its outcome is.
pub trait CommandKind: Send + 'static {
    /// What the command returns when accepted.
    type Outcome;

    /// The domain command, and whether the server chose its reservation or transfer id (which
    /// the fingerprint then leaves out, so that a retry matches the original).
    fn into_command(self) -> (Command, bool);

    /// How many lines the client sent (see [`Decide::lines`]).
    fn lines(&self) -> usize;

    /// The outcome, from what the writer answered. `None` when the answer is of another kind:
    /// a remembered answer to a command id that was used for a different kind of command.
    fn outcome(answer: Accepted) -> Option<Self::Outcome>;
}

/// A command that opens a reservation or a transfer under a new id: the client's, or one the
/// server made ([`new_reservation_id`], [`new_transfer_id`]) because the client left it out.
/// The fingerprint leaves a server-made id out, so a retry, which gets another, still matches.
#[derive(Clone, Debug)]
pub struct Opening<C> {
    pub command: C,
    pub id_made_by_server: bool,
}

impl<C: CommandKind> CommandKind for Opening<C> {
    type Outcome = C::Outcome;

    fn into_command(self) -> (Command, bool) {
        (self.command.into_command().0, self.id_made_by_server)
    }

    fn lines(&self) -> usize {
        self.command.lines()
    }

    fn outcome(answer: Accepted) -> Option<C::Outcome> {
        C::outcome(answer)
    }
}

/// A new reservation id, for a reservation whose client left it to the server (a UUID v7).
pub fn new_reservation_id() -> ReservationId {
    ReservationId::from_uuid(uuid::Uuid::now_v7().as_u128())
}

/// A new transfer id, for a transfer whose client left it to the server (a UUID v7).
pub fn new_transfer_id() -> TransferId {
    TransferId::parse(&uuid::Uuid::now_v7().to_string()).expect("a UUID is an identifier")
}

/// `CommandKind` for domain commands whose outcome `$outcome` makes from the writer's answer.
macro_rules! command_kind {
    ($($command:ty => $outcome:ty, $make:expr;)*) => {
        $(impl CommandKind for $command {
            type Outcome = $outcome;

            fn into_command(self) -> (Command, bool) {
                (self.into(), false)
            }

            fn lines(&self) -> usize {
                Decide::lines(self)
            }

            fn outcome(answer: Accepted) -> Option<$outcome> {
                let make: fn(Accepted) -> Option<$outcome> = $make;
                make(answer)
            }
        })*
    };
}

command_kind! {
    AddStock => StockChange, |answer| single_change(answer, EventKind::StockAdded);
    AdjustStock => StockChange, |answer| single_change(answer, EventKind::StockAdjusted);
    RemoveStock => StockChange, |answer| single_change(answer, EventKind::StockRemoved);
    MoveStock => StockChange, |answer| single_change(answer, EventKind::StockMoved);
    SetItemPolicy => StockChange, |answer| single_change(answer, EventKind::ItemPolicyChanged);
    ApplyStockChanges => StockChanges, |answer| changes_outcome(
        answer,
        &[EventKind::StockAdded, EventKind::StockAdjusted, EventKind::StockRemoved],
    );
    ReserveStock => ReservationMade, |answer| reservation_outcome(answer, EventKind::StockReserved);
    CommitReservation => StockChanges, |answer| changes_outcome(
        answer,
        &[EventKind::ReservationCommitted],
    );
    ReleaseReservation => StockChanges, |answer| changes_outcome(
        answer,
        &[EventKind::ReservationReleased],
    );
    ExtendReservation => ReservationMade, |answer| reservation_outcome(
        answer,
        EventKind::ReservationExtended,
    );
    ShipTransfer => TransferChanged, |answer| transfer_outcome(answer, &[EventKind::TransferShipped]);
    // Closing without a receipt starts with what was lost.
    ReceiveTransfer => TransferChanged, |answer| transfer_outcome(
        answer,
        &[EventKind::TransferReceived, EventKind::TransferLost],
    );
    CancelTransfer => TransferChanged, |answer| transfer_outcome(
        answer,
        &[EventKind::TransferCancelled],
    );
}

/// The one change of a single-item stock command whose event is of kind `kind`.
fn single_change(answer: Accepted, kind: EventKind) -> Option<StockChange> {
    (answer.kind == kind && answer.changes.len() == 1)
        .then(|| answer.changes.into_iter().next())
        .flatten()
}

/// The changes of a command whose first event is of one of `kinds`.
fn changes_outcome(answer: Accepted, kinds: &[EventKind]) -> Option<StockChanges> {
    kinds.contains(&answer.kind).then_some(StockChanges {
        changes: answer.changes,
    })
}

fn transfer_outcome(answer: Accepted, kinds: &[EventKind]) -> Option<TransferChanged> {
    if !kinds.contains(&answer.kind) {
        return None;
    }
    Some(TransferChanged {
        status: answer.transfer_status?,
        transfer_id: answer.transfer_id?,
        changes: StockChanges {
            changes: answer.changes,
        },
    })
}

fn reservation_outcome(answer: Accepted, kind: EventKind) -> Option<ReservationMade> {
    if answer.kind != kind {
        return None;
    }
    let (reservation_id, expires_at) = answer.reservation?;
    Some(ReservationMade {
        changes: StockChanges {
            changes: answer.changes,
        },
        reservation_id,
        expires_at,
    })
}

/// The writer's answer to one accepted command, before [`CommandKind::outcome`] types it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Accepted {
    /// One change per item of the command, in order: its line's event and the alerts after it.
    changes: Vec<StockChange>,
    /// The kind of the command's first event: tells the command's kind.
    kind: EventKind,
    /// For a reservation or its extension: its id and when it expires.
    reservation: Option<(ReservationId, Timestamp)>,
    /// For a count: per line, the on-hand at the count and the variance.
    counts: Vec<(u64, i64)>,
    /// For a transfer's command: the transfer, and its status after the command.
    transfer_id: Option<TransferId>,
    transfer_status: Option<TransferStatus>,
}

impl Accepted {
    /// The answer that `event`, the command's first event, starts (as given the first time;
    /// [`Accepted::as_replayed`] makes the one a retry gets).
    fn of(event: &RecordedEvent) -> Accepted {
        let reservation = match &event.event {
            StockEvent::Reservation(ReservationEvent::StockReserved {
                reservation_id,
                expires_at,
                ..
            })
            | StockEvent::Reservation(ReservationEvent::ReservationExtended {
                reservation_id,
                expires_at,
            }) => Some((reservation_id.clone(), *expires_at)),
            _ => None,
        };
        let mut changes = Vec::with_capacity(event.command_event_count as usize);
        changes.push(Accepted::change(event));
        let mut accepted = Accepted {
            changes,
            kind: event.event.kind(),
            reservation,
            counts: Vec::new(),
            transfer_id: event.event.transfer_id().cloned(),
            transfer_status: None,
        };
        accepted.add_count(event);
        accepted
    }

    fn add_count(&mut self, event: &RecordedEvent) {
        if let StockEvent::Quantity(QuantityEvent::StockCounted {
            counted,
            on_hand_at_count,
            ..
        }) = event.event
        {
            self.counts.push((
                on_hand_at_count,
                crate::log::codec::count_variance(counted, on_hand_at_count),
            ));
        }
    }

    /// Adds a later event of the same command: an alert belongs to the change before it.
    fn add(&mut self, event: &RecordedEvent) {
        if let StockEvent::Alert(alert) = event.event
            && let Some(change) = self.changes.last_mut()
        {
            debug_assert_eq!(
                change.stream, event.stream,
                "an alert follows its item's event"
            );
            change.version = event.version;
            change.position = event.position;
            change.alerts.push(alert);
            return;
        }
        self.add_count(event);
        self.changes.push(Accepted::change(event));
    }

    fn change(event: &RecordedEvent) -> StockChange {
        StockChange {
            stream: event.stream.clone(),
            version: event.version,
            position: event.position,
            stock: event.stock_after,
            alerts: Vec::new(),
            replayed: false,
        }
    }

    /// True when this is a remembered answer.
    fn replayed(&self) -> bool {
        self.changes.first().is_some_and(|change| change.replayed)
    }

    /// The same answer, as given to a retry.
    fn as_replayed(&self) -> Accepted {
        let mut answer = self.clone();
        for change in &mut answer.changes {
            change.replayed = true;
        }
        answer
    }
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
    /// `expected_version` names one item's version, and the command touches several items.
    #[error(
        "expected_version names one item's version, but the command touches {items} items; \
         a multi-line command takes an expected_version on each line"
    )]
    ExpectedVersionOfSeveralItems { items: usize },
    /// The log could not store the command: nothing was written.
    #[error("the event log is unavailable: {0}")]
    LogUnavailable(String),
    /// A count's `counted_at` is in the future or older than the history it is read against.
    #[error("counted_at {0}")]
    CountedAt(#[from] count::CountedAtError),
    /// The log's storage kept failing; commands are refused at once until `retry_after`.
    #[error("the event log's storage is failing; retry in {retry_after:?}")]
    CircuitOpen { retry_after: Duration },
    #[error("the command side is shutting down")]
    ShuttingDown,
    /// The caller gave up (its deadline passed, or it disconnected) before the command was
    /// decided: it was not executed. Nobody receives this answer; it is counted.
    #[error("the caller gave up before the command was decided")]
    Abandoned,
    /// The sender may not act on a store the command touches, or not send it at all.
    #[error(transparent)]
    Access(#[from] AccessError),
}

/// A traced command's server span and its W3C `traceparent`: the append is traced under the
/// span, and the event stores the `traceparent` for whoever applies it later.
#[derive(Clone, Debug)]
struct CommandTrace {
    span: tracing::Span,
    trace_parent: Arc<str>,
}

/// A command as the writer takes it: the domain command with everything worked out.
#[derive(Clone, Debug)]
struct PreparedCommand {
    command: Command,
    command_id: Option<CommandId>,
    expected_version: Option<StreamVersion>,
    /// See [`fingerprint::fingerprint`].
    fingerprint: u64,
    trace: Option<CommandTrace>,
    /// The stores the sender may act on: a command touching another is refused whole.
    scope: StoreScope,
    /// The sender's name, recorded on every event of the command (not on its alerts).
    actor: Actor,
}

impl PreparedCommand {
    /// The command with the reservation it means picked, when its id names reservations in
    /// several stores and it named none (see [`Command::narrow`]); `None` when it needs no
    /// picking.
    fn narrowed(
        &self,
        inventory: &crate::domain::Inventory,
    ) -> Result<Option<Command>, DomainError> {
        let mut command = self.command.clone();
        command.narrow(inventory, &mut |store| self.scope.allows(store))?;
        Ok((command != self.command).then_some(command))
    }

    /// The command's idempotency key: its id within its sender's (see [`CommandKey`]).
    fn command_key(&self) -> Option<CommandKey> {
        self.command_id.as_ref().map(|command_id| CommandKey {
            actor: Some(self.actor.clone()),
            command_id: command_id.clone(),
        })
    }
}

/// A cheap, cloneable way to send commands to the writer.
#[derive(Clone)]
pub struct CommandHandle {
    jobs: mpsc::Sender<writer::Job>,
    /// What a count of the past reads its items' on-hand at that time from.
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
}

impl CommandHandle {
    /// Records a physical count: a count of the past first reads each item's on-hand at its
    /// `counted_at` from the log, then goes to the writer like any command.
    pub async fn record_count(
        &self,
        request: CommandRequest<CountSheet>,
    ) -> Result<CountRecorded, CommandError> {
        self.record_count_as(request, &Principal::anonymous()).await
    }

    /// [`CommandHandle::record_count`] on behalf of `principal`.
    pub async fn record_count_as(
        &self,
        request: CommandRequest<CountSheet>,
        principal: &Principal,
    ) -> Result<CountRecorded, CommandError> {
        let CommandRequest {
            command,
            command_id,
            expected_version,
        } = request;
        // The stores are checked before the log is read for the count's reference.
        for (stream, _) in &command.lines {
            principal.stores.check(&stream.store_id)?;
        }
        let command = count::resolve(command, self.clock.now(), self.log.as_ref()).await?;
        self.execute_as(
            CommandRequest {
                command,
                command_id,
                expected_version,
            },
            principal,
        )
        .await
    }

    /// Executes one command; returns once its event is durable (or it was refused). When
    /// traces are exported, the command joins the trace of the caller's current span.
    pub async fn execute<C: CommandKind>(
        &self,
        request: CommandRequest<C>,
    ) -> Result<C::Outcome, CommandError> {
        self.execute_as(request, &Principal::anonymous()).await
    }

    /// [`CommandHandle::execute`] on behalf of `principal`: refused whole, with nothing
    /// stored, when it touches a store outside the principal's scope.
    pub async fn execute_as<C: CommandKind>(
        &self,
        request: CommandRequest<C>,
        principal: &Principal,
    ) -> Result<C::Outcome, CommandError> {
        let CommandRequest {
            command,
            command_id,
            expected_version,
        } = request;
        let (command, generated_id) = command.into_command();
        let fingerprint = fingerprint::fingerprint(&command, expected_version, generated_id);
        let trace = if telemetry::enabled() {
            let span = tracing::Span::current();
            telemetry::traceparent(&span).map(|trace_parent| CommandTrace { span, trace_parent })
        } else {
            None
        };
        let prepared = PreparedCommand {
            command,
            command_id: command_id.clone(),
            expected_version,
            fingerprint,
            trace,
            scope: principal.stores.clone(),
            actor: Actor::from(principal.name.clone()),
        };
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(writer::Job::Execute {
                request: prepared,
                reply,
            })
            .await
            .map_err(|_| CommandError::ShuttingDown)?;
        let accepted = answer.await.map_err(|_| CommandError::ShuttingDown)??;
        match (C::outcome(accepted), command_id) {
            (Some(outcome), _) => Ok(outcome),
            // The remembered answer of this command id is of another kind of command.
            (None, Some(command_id)) => Err(CommandError::CommandIdReused { command_id }),
            (None, None) => unreachable!("a command decided now has its own kind's answer"),
        }
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
        let (log_for_counts, clock_for_counts) = (log.clone(), clock.clone());
        let (jobs, writer, breaker) = writer::start(state, log, clock);
        CommandSide {
            handle: CommandHandle {
                jobs,
                log: log_for_counts,
                clock: clock_for_counts,
            },
            writer,
            breaker,
        }
    }
}
