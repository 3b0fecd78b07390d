//! The command side's state: the inventory and the remembered command ids, both folds of the
//! log, and how one command is decided against them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::StockChange;
use super::{
    Accepted, CommandError, IDEMPOTENCY_WINDOW_MILLIS, MAX_EXPIRIES_PER_BATCH,
    MAX_EXPIRY_EVENTS_PER_BATCH, MAX_REMEMBERED_COMMANDS, PreparedCommand,
};
use crate::dense_map::FastHash;
use crate::domain::state_codec::{Decode, DecodeError, Decoder, Encode, Encoder};
use crate::domain::{
    Actor, Command, CommandId, CommandKey, Decision, EventId, ExpireReservation, FoldMismatch,
    Inventory, LogPosition, MAX_ALERTS_PER_ITEM, QuantityEvent, RecordedEvent, StockEvent,
    Timestamp,
};
use crate::log::{EventLog, LogError, MAX_READ_EVENTS};

struct RememberedCommand {
    fingerprint: u64,
    outcome: Accepted,
}

/// The command side's state: the inventory and the remembered command ids, both folds of the
/// log.
pub struct CommandState {
    inventory: Inventory,
    head: LogPosition,
    /// By sender and id: see [`CommandKey`].
    remembered: HashMap<CommandKey, RememberedCommand, FastHash>,
    /// Remembered ids in the order they were accepted, to forget the oldest first.
    remembered_order: VecDeque<(Timestamp, CommandKey)>,
    /// Whether an id of an event without an actor (written before actors were recorded) was
    /// ever remembered: such an id answers a retry by any sender.
    remembers_unsent: bool,
    /// While a batch is open: the head before it, and how many ids it remembered.
    open_batch: Option<(LogPosition, usize)>,
    /// The index and count of the last event applied from the log while its command has more
    /// events to come.
    open_command: Option<(u32, u32)>,
}

impl CommandState {
    pub fn new() -> CommandState {
        CommandState {
            inventory: Inventory::new(),
            head: LogPosition::START,
            remembered: HashMap::default(),
            remembered_order: VecDeque::new(),
            remembers_unsent: false,
            open_batch: None,
            open_command: None,
        }
    }

    /// Starts a batch whose changes can be rolled back if the log refuses its events.
    pub(super) fn begin_batch(&mut self) {
        assert!(self.open_batch.is_none(), "a batch is already open");
        self.inventory.begin_batch();
        self.open_batch = Some((self.head, self.remembered_order.len()));
    }

    pub(super) fn commit_batch(&mut self) {
        self.open_batch.take().expect("no batch is open");
        self.inventory.commit_batch();
    }

    /// Forgets everything the open batch did.
    pub(super) fn rollback_batch(&mut self) {
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
    /// It also checks that the event is where its command needs it (see
    /// [`FoldMismatch::CommandEvents`]).
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), LogError> {
        let expected_index = self.open_command.map_or(0, |(index, _)| index + 1);
        let continues = match self.open_command {
            Some((index, count)) => {
                event.command_event_index == index + 1 && event.command_event_count == count
            }
            None => event.command_event_index == 0,
        };
        if !continues {
            let mismatch = FoldMismatch::CommandEvents {
                expected_index,
                got_index: event.command_event_index,
                got_count: event.command_event_count,
            };
            return Err(LogError::fold_mismatch(event, mismatch));
        }
        if event.command_event_index == 0 {
            self.inventory.begin_command();
        }
        let version = self.inventory.version(&event.stream);
        let shortfall_before = self
            .inventory
            .item(&event.stream)
            .map_or(0, |item| item.level().shortfall());
        event
            .apply_checked(self.head, version, || {
                self.inventory.evolve(&event.stream, &event.event).1
            })
            .map_err(|mismatch| LogError::fold_mismatch(event, mismatch))?;
        // Only a physical count may find fewer units than are reserved or held.
        if event.stock_after.shortfall() > shortfall_before
            && !matches!(
                event.event,
                StockEvent::Quantity(QuantityEvent::StockCounted { .. })
            )
        {
            let mismatch = FoldMismatch::Shortfall {
                before: shortfall_before,
                after: event.stock_after.shortfall(),
            };
            return Err(LogError::fold_mismatch(event, mismatch));
        }
        self.head = event.position;
        self.open_command = (!event.ends_command())
            .then_some((event.command_event_index, event.command_event_count));
        self.remember(event);
        Ok(())
    }

    /// Remembers the answer a command's event gives a retry (marked replayed when it is
    /// given): its first event starts the answer, each later one adds its item.
    fn remember(&mut self, event: &RecordedEvent) {
        let Some(command_id) = &event.command_id else {
            return;
        };
        let key = CommandKey {
            actor: event.actor.clone(),
            command_id: command_id.clone(),
        };
        // A transfer's status after the events so far: after its command's last, its answer's.
        let transfer_status = event
            .event
            .transfer_id()
            .and_then(|transfer_id| self.inventory.transfer(transfer_id))
            .map(|transfer| transfer.status);
        if event.command_event_index > 0
            && let Some(remembered) = self.remembered.get_mut(&key)
        {
            remembered.outcome.add(event);
            remembered.outcome.transfer_status = transfer_status;
            return;
        }
        self.remembers_unsent |= key.actor.is_none();
        self.remembered_order
            .push_back((event.occurred_at, key.clone()));
        let mut outcome = Accepted::of(event);
        outcome.transfer_status = transfer_status;
        self.remembered.insert(
            key,
            RememberedCommand {
                fingerprint: event.command_fingerprint,
                outcome,
            },
        );
    }

    /// What is remembered of the command `key` names: its sender's, or one of an event written
    /// before actors were recorded, whoever retries it.
    fn remembered_command(&self, key: CommandKey) -> Option<&RememberedCommand> {
        if let Some(remembered) = self.remembered.get(&key) {
            return Some(remembered);
        }
        if !self.remembers_unsent {
            return None;
        }
        self.remembered.get(&CommandKey {
            actor: None,
            command_id: key.command_id,
        })
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

    /// At most how many events `command` can append: what a batch keeps room for. Each item
    /// it touches may raise alerts.
    pub(super) fn event_bound(&self, command: &Command) -> usize {
        command.event_bound(&self.inventory)
    }

    /// Decides one command; if accepted, applies its events and adds them to `events`.
    /// `command` is the request's, with the reservation it means picked (see
    /// [`PreparedCommand::narrowed`]).
    pub(super) fn execute(
        &mut self,
        request: &PreparedCommand,
        command: &Command,
        now: Timestamp,
        events: &mut Vec<RecordedEvent>,
    ) -> Result<Accepted, CommandError> {
        if let Some(key) = request.command_key()
            && let Some(remembered) = self.remembered_command(key.clone())
        {
            let command_id = &key.command_id;
            if remembered.fingerprint != request.fingerprint {
                return Err(CommandError::CommandIdReused {
                    command_id: command_id.clone(),
                });
            }
            return Ok(remembered.outcome.as_replayed());
        }
        let decisions = self.inventory.decide(command, now)?;
        if let Some(expected) = request.expected_version {
            // The item's alerts follow its event: a command of one item has only its events.
            let decision = &decisions[0];
            if decisions[1..]
                .iter()
                .any(|later| later.stream != decision.stream)
            {
                let mut items: Vec<_> = decisions.iter().map(|d| &d.stream).collect();
                items.dedup();
                return Err(CommandError::ExpectedVersionOfSeveralItems { items: items.len() });
            }
            let current = self.inventory.version(&decision.stream);
            if current != expected {
                return Err(CommandError::WrongExpectedVersion {
                    stream: decision.stream.clone(),
                    expected,
                    current,
                });
            }
        }
        let first = events.len();
        let cause = Cause {
            command_id: request.command_id.clone(),
            command_fingerprint: request.fingerprint,
            trace_parent: request
                .trace
                .as_ref()
                .map(|trace| trace.trace_parent.clone()),
            actor: request.actor.clone(),
        };
        self.record(decisions, now, &cause, events);
        let mut outcome = Accepted::of(&events[first]);
        for event in &events[first + 1..] {
            outcome.add(event);
        }
        outcome.transfer_status = outcome
            .transfer_id
            .as_ref()
            .and_then(|transfer_id| self.inventory.transfer(transfer_id))
            .map(|transfer| transfer.status);
        Ok(outcome)
    }

    /// Appends the expiries of reservations whose time is up: at most
    /// [`MAX_EXPIRY_EVENTS_PER_BATCH`] events, unless one reservation alone has more lines.
    pub(super) fn expire_due(&mut self, now: Timestamp, events: &mut Vec<RecordedEvent>) {
        let first = events.len();
        for (reservation_id, store_id) in self.inventory.due(now, MAX_EXPIRIES_PER_BATCH) {
            let bound = self
                .inventory
                .reservation_line_count(&reservation_id, Some(&store_id))
                * (1 + MAX_ALERTS_PER_ITEM);
            if events.len() > first && events.len() - first + bound > MAX_EXPIRY_EVENTS_PER_BATCH {
                break;
            }
            let command = Command::ExpireReservation(ExpireReservation {
                reservation_id,
                store_id: Some(store_id),
            });
            match self.inventory.decide(&command, now) {
                Ok(decisions) => self.record(decisions, now, &Cause::system(), events),
                Err(error) => {
                    unreachable!("a due reservation is active, yet expiring it failed: {error}")
                }
            }
        }
    }

    /// Applies a newly decided command's events and adds them to `events` as they will be
    /// stored: at the next positions, each saying where it is in its command.
    fn record(
        &mut self,
        decisions: Vec<Decision>,
        now: Timestamp,
        cause: &Cause,
        events: &mut Vec<RecordedEvent>,
    ) {
        let command_event_count =
            u32::try_from(decisions.len()).expect("a command has fewer than 2^32 events");
        self.inventory.begin_command();
        for (command_event_index, Decision { stream, event }) in (0u32..).zip(decisions) {
            let (version, stock_after) = self.inventory.evolve(&stream, &event);
            self.head = self.head.next();
            let recorded = RecordedEvent {
                position: self.head,
                event_id: EventId(uuid::Uuid::now_v7().as_u128()),
                stream,
                version,
                occurred_at: now,
                stock_after,
                command_id: cause.command_id.clone(),
                command_fingerprint: cause.command_fingerprint,
                trace_parent: cause.trace_parent.clone(),
                command_event_index,
                command_event_count,
                // An alert follows from the command's change; the server raises it.
                actor: Some(match event {
                    StockEvent::Alert(_) => Actor::system(),
                    _ => cause.actor.clone(),
                }),
                event,
            };
            self.remember(&recorded);
            events.push(recorded);
        }
    }

    /// Rebuilds the state from the whole log.
    pub async fn load(log: &dyn EventLog, now: Timestamp) -> Result<CommandState, LogError> {
        let mut state = CommandState::new();
        state.catch_up(log).await?;
        state.forget_old_commands(now);
        Ok(state)
    }
}

/// What the events of one command share: where the command came from.
struct Cause {
    command_id: Option<CommandId>,
    command_fingerprint: u64,
    trace_parent: Option<Arc<str>>,
    actor: Actor,
}

impl Cause {
    /// The server's own doing (an expiry): no command id, no trace, actor `system`.
    fn system() -> Cause {
        Cause {
            command_id: None,
            command_fingerprint: 0,
            trace_parent: None,
            actor: Actor::system(),
        }
    }
}

impl Default for CommandState {
    fn default() -> CommandState {
        CommandState::new()
    }
}

/// The answer a retry of a remembered command gets, as a snapshot holds it.
impl Encode for Accepted {
    fn encode(&self, out: &mut Encoder) {
        out.len_of(self.changes.len());
        for change in &self.changes {
            out.put(&change.stream);
            out.put(&change.version);
            out.put(&change.position);
            out.put(&change.stock);
            out.seq(change.alerts.iter());
            out.bool(change.replayed);
        }
        out.put(&self.kind);
        out.put(&self.reservation);
        out.len_of(self.counts.len());
        for (on_hand_at_count, variance) in &self.counts {
            out.u64(*on_hand_at_count);
            out.i64(*variance);
        }
        out.put(&self.transfer_id);
        out.put(&self.transfer_status);
    }
}

impl Decode for Accepted {
    fn decode(input: &mut Decoder<'_>) -> Result<Accepted, DecodeError> {
        let count = input.len()?;
        let mut changes = Vec::with_capacity(count);
        for _ in 0..count {
            changes.push(StockChange {
                stream: input.get()?,
                version: input.get()?,
                position: input.get()?,
                stock: input.get()?,
                alerts: input.seq()?,
                replayed: input.bool()?,
            });
        }
        let kind = input.get()?;
        let reservation = input.get()?;
        let count = input.len()?;
        let mut counts = Vec::with_capacity(count);
        for _ in 0..count {
            counts.push((input.u64()?, input.i64()?));
        }
        Ok(Accepted {
            changes,
            kind,
            reservation,
            counts,
            transfer_id: input.get()?,
            transfer_status: input.get()?,
        })
    }
}

/// The command side's state as a snapshot holds it: its head, the inventory, and the
/// remembered commands in the order they were accepted (the order they are forgotten in).
impl Encode for CommandState {
    fn encode(&self, out: &mut Encoder) {
        assert!(
            self.open_batch.is_none() && self.open_command.is_none(),
            "a snapshot is taken at a command boundary"
        );
        out.put(&self.head);
        out.put(&self.inventory);
        out.bool(self.remembers_unsent);
        out.len_of(self.remembered_order.len());
        for (accepted_at, key) in &self.remembered_order {
            let remembered = &self.remembered[key];
            out.put(accepted_at);
            out.put(&key.actor);
            out.put(&key.command_id);
            out.u64(remembered.fingerprint);
            out.put(&remembered.outcome);
        }
    }
}

impl Decode for CommandState {
    fn decode(input: &mut Decoder<'_>) -> Result<CommandState, DecodeError> {
        let mut state = CommandState::new();
        state.head = input.get()?;
        state.inventory = input.get()?;
        state.remembers_unsent = input.bool()?;
        for _ in 0..input.len()? {
            let accepted_at = input.get()?;
            let key = CommandKey {
                actor: input.get()?,
                command_id: input.get()?,
            };
            let remembered = RememberedCommand {
                fingerprint: input.u64()?,
                outcome: input.get()?,
            };
            if state.remembered.insert(key.clone(), remembered).is_some() {
                return Err(DecodeError::new("a remembered command twice"));
            }
            state.remembered_order.push_back((accepted_at, key));
        }
        Ok(state)
    }
}
