//! The rules: how each command is decided against the inventory. Pure: the inventory does not
//! change until the caller applies the events with [`Inventory::evolve`].
//!
//! A multi-line command is checked whole before any event is made: every line that breaks a
//! rule is reported, and a refused command yields no event at all.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::{Decision, Inventory, ReservationEntry, ReservationStatus};
use crate::dense_map::FastHash;
use crate::domain::ids::{ProductId, StoreId, TransferId};
use crate::domain::ids::{ReservationId, StreamKey};
use crate::domain::stock::{
    ActiveReservation, Command, CommitLine, CountLine, DomainError, LineRule, LineViolation,
    ReservationLine, StockAlert, StockChangeKind, StockChangeLine, StockEvent, StockItem,
    TransferLine, level_after,
};
use crate::domain::transfer::{Transfer, TransferStatus};
use crate::domain::values::{MAX_ON_HAND, Quantity, Reason, StockLevel, StockState, Timestamp};

/// The state of an item that has no event yet.
static EMPTY_ITEM: std::sync::LazyLock<StockItem> = std::sync::LazyLock::new(StockItem::default);

impl Inventory {
    /// Decides whether a command is accepted, and if so which events it becomes: one per item
    /// it touches, in the order of its lines, each followed by the alerts of the thresholds
    /// its item crosses. Pure: the inventory does not change until the caller applies the
    /// events with [`Inventory::evolve`].
    pub fn decide(&self, command: &Command, now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let decisions = self.decide_lines(command, now)?;
        Ok(self.with_alerts(decisions))
    }

    /// The decisions with the alerts of each item after its last event in the command: what
    /// the item crossed between its state now (before the command) and after all its events.
    fn with_alerts(&self, mut decisions: Vec<Decision>) -> Vec<Decision> {
        // A command of one event (most are) needs no map: its item's alerts follow it.
        if let [decision] = decisions.as_slice() {
            let item = self.item_or_empty(&decision.stream);
            let before = item.level();
            let after = level_after(before, &decision.event);
            let stream = decision.stream.clone();
            decisions.extend(
                StockAlert::crossed(before, after, item.version().0 > 0).map(|alert| Decision {
                    stream: stream.clone(),
                    event: StockEvent::StockAlertRaised { alert },
                }),
            );
            return decisions;
        }
        // Each item: its level now, after the command's events, whether it had events, and
        // the index of its last decision. A command touches few items: a vector searched
        // linearly would be quadratic for a delivery of 1,000, so a map.
        let mut items: HashMap<&StreamKey, (StockLevel, StockLevel, bool, usize), FastHash> =
            HashMap::default();
        for (index, decision) in decisions.iter().enumerate() {
            let entry = items.entry(&decision.stream).or_insert_with(|| {
                let item = self.item_or_empty(&decision.stream);
                (item.level(), item.level(), item.version().0 > 0, index)
            });
            entry.1 = level_after(entry.1, &decision.event);
            entry.3 = index;
        }
        let mut alerts_after: Vec<(usize, StockAlert)> = items
            .values()
            .flat_map(|(before, after, had_events, last)| {
                StockAlert::crossed(*before, *after, *had_events).map(|alert| (*last, alert))
            })
            .collect();
        // Most commands cross nothing: their decisions are returned as they are.
        if alerts_after.is_empty() {
            return decisions;
        }
        // By the decision they follow; `crossed` gives one item's alerts in their order, and
        // the sort is stable.
        alerts_after.sort_by_key(|(last, _)| *last);
        let mut alerts_after = alerts_after.into_iter().peekable();
        let mut with_alerts = Vec::with_capacity(decisions.len() + alerts_after.len());
        for (index, decision) in decisions.into_iter().enumerate() {
            let stream = decision.stream.clone();
            with_alerts.push(decision);
            while let Some((_, alert)) = alerts_after.next_if(|(last, _)| *last == index) {
                with_alerts.push(Decision {
                    stream: stream.clone(),
                    event: StockEvent::StockAlertRaised { alert },
                });
            }
        }
        with_alerts
    }

    fn decide_lines(
        &self,
        command: &Command,
        now: Timestamp,
    ) -> Result<Vec<Decision>, DomainError> {
        match command {
            Command::AddStock {
                stream,
                quantity,
                reason,
            } => self.decide_one_change(stream, StockChangeKind::Add(*quantity), reason),
            Command::AdjustStock {
                stream,
                on_hand,
                reason,
            } => self.decide_one_change(stream, StockChangeKind::SetOnHand(*on_hand), reason),
            Command::RemoveStock {
                stream,
                quantity,
                from,
                reason,
            } => self.decide_one_change(stream, StockChangeKind::Remove(*quantity, *from), reason),
            Command::MoveStock {
                stream,
                quantity,
                states,
                reason,
            } => {
                let held = self.item_or_empty(stream).level().in_state(states.from());
                if quantity.get() > held {
                    return Err(DomainError::LinesRefused {
                        violations: vec![LineViolation::new(
                            0,
                            stream,
                            LineRule::StateHoldsLess {
                                state: states.from(),
                                requested: quantity.get(),
                                held,
                            },
                        )],
                    });
                }
                Ok(vec![Decision {
                    stream: stream.clone(),
                    event: StockEvent::StockMoved {
                        quantity: *quantity,
                        from: states.from(),
                        to: states.to(),
                        reason: reason.clone(),
                    },
                }])
            }
            Command::SetItemPolicy {
                stream,
                safety_stock,
                low_stock_threshold,
            } => {
                let level = self.item_or_empty(stream).level();
                Ok(vec![Decision {
                    stream: stream.clone(),
                    event: StockEvent::ItemPolicyChanged {
                        safety_stock: safety_stock.unwrap_or(level.safety_stock()),
                        low_stock_threshold: low_stock_threshold
                            .unwrap_or(level.low_stock_threshold()),
                    },
                }])
            }
            Command::ApplyStockChanges { changes, reason } => self.decide_changes(changes, reason),
            Command::ReserveStock {
                reservation_id,
                lines,
                customer_id,
                ttl,
            } => {
                if self.reservations.contains_key(reservation_id) {
                    return Err(DomainError::ReservationAlreadyExists {
                        reservation_id: reservation_id.clone(),
                    });
                }
                let expires_at = now.saturating_add(*ttl);
                self.decide_reservation(lines, |quantity| StockEvent::StockReserved {
                    reservation_id: reservation_id.clone(),
                    quantity,
                    customer_id: customer_id.clone(),
                    expires_at,
                })
            }
            Command::CommitReservation {
                reservation_id,
                order_id,
                lines,
            } => {
                let held = self.unexpired_reservation(reservation_id, now)?;
                let shipped = match lines {
                    None => held
                        .iter()
                        .map(|(_, reservation)| reservation.quantity.get())
                        .collect(),
                    Some(lines) => shipped_quantities(&held, lines)?,
                };
                // The goods must be there: after a count found fewer units than reserved, a
                // commit ships at most the good units on hand.
                let short: Vec<LineViolation> = held
                    .iter()
                    .zip(&shipped)
                    .enumerate()
                    .filter_map(|(line, ((stream, _), shipped))| {
                        let level = self.item_or_empty(stream).level();
                        let good = level
                            .on_hand()
                            .saturating_sub(level.damaged() + level.quality_control());
                        (*shipped > good).then(|| {
                            LineViolation::new(
                                line,
                                stream,
                                LineRule::StockShort {
                                    requested: *shipped,
                                    on_hand: good,
                                },
                            )
                        })
                    })
                    .collect();
                if !short.is_empty() {
                    return Err(DomainError::LinesRefused { violations: short });
                }
                Ok(held
                    .iter()
                    .zip(shipped)
                    .map(|((stream, reservation), shipped)| Decision {
                        stream: (*stream).clone(),
                        event: StockEvent::ReservationCommitted {
                            reservation_id: reservation_id.clone(),
                            quantity: shipped,
                            order_id: order_id.clone(),
                            released_quantity: reservation.quantity.get() - shipped,
                        },
                    })
                    .collect())
            }
            Command::ReleaseReservation {
                reservation_id,
                reason,
            } => Ok(self.each_line(
                &self.unexpired_reservation(reservation_id, now)?,
                |reservation| StockEvent::ReservationReleased {
                    reservation_id: reservation_id.clone(),
                    quantity: reservation.quantity,
                    reason: reason.clone(),
                },
            )),
            Command::ExtendReservation {
                reservation_id,
                ttl,
            } => {
                let expires_at = now.saturating_add(*ttl);
                Ok(
                    self.each_line(&self.unexpired_reservation(reservation_id, now)?, |_| {
                        StockEvent::ReservationExtended {
                            reservation_id: reservation_id.clone(),
                            expires_at,
                        }
                    }),
                )
            }
            Command::RecordCount {
                lines,
                counted_at,
                reason,
            } => self.decide_count(lines, counted_at.unwrap_or(now), reason),
            Command::ShipTransfer {
                transfer_id,
                from_store,
                to_store,
                lines,
                reason,
            } => self.decide_shipment(transfer_id, from_store, to_store, lines, reason),
            Command::ReceiveTransfer {
                transfer_id,
                lines,
                close,
            } => self.decide_receipt(transfer_id, lines, *close),
            Command::CancelTransfer {
                transfer_id,
                reason,
            } => {
                let transfer = self.open_transfer(transfer_id)?;
                if transfer.status != TransferStatus::InTransit {
                    return Err(DomainError::TransferNotOpen {
                        transfer_id: transfer_id.clone(),
                        status: transfer.status,
                    });
                }
                let mut decisions = Vec::with_capacity(2 * transfer.lines.len());
                for line in &transfer.lines {
                    let Ok(quantity) = Quantity::new(line.shipped) else {
                        continue;
                    };
                    decisions.push(Decision {
                        stream: StreamKey::new(line.product_id.clone(), transfer.to_store.clone()),
                        event: StockEvent::TransferCancelled {
                            transfer_id: transfer_id.clone(),
                            quantity,
                            reason: reason.clone(),
                        },
                    });
                    decisions.push(Decision {
                        stream: StreamKey::new(
                            line.product_id.clone(),
                            transfer.from_store.clone(),
                        ),
                        event: StockEvent::TransferReturned {
                            transfer_id: transfer_id.clone(),
                            quantity,
                        },
                    });
                }
                Ok(decisions)
            }
            Command::ExpireReservation { reservation_id } => Ok(self.each_line(
                &self.active_reservation(reservation_id)?,
                |reservation| StockEvent::ReservationExpired {
                    reservation_id: reservation_id.clone(),
                    quantity: reservation.quantity,
                },
            )),
        }
    }

    fn item_or_empty(&self, stream: &StreamKey) -> &StockItem {
        self.items.get(stream).unwrap_or(&EMPTY_ITEM)
    }

    fn decide_one_change(
        &self,
        stream: &StreamKey,
        change: StockChangeKind,
        reason: &Reason,
    ) -> Result<Vec<Decision>, DomainError> {
        match decide_change(self.item_or_empty(stream), change, reason) {
            Ok(event) => Ok(vec![Decision {
                stream: stream.clone(),
                event,
            }]),
            Err(rule) => Err(DomainError::LinesRefused {
                violations: vec![LineViolation::new(0, stream, rule)],
            }),
        }
    }

    fn decide_changes(
        &self,
        changes: &[StockChangeLine],
        reason: &Reason,
    ) -> Result<Vec<Decision>, DomainError> {
        let mut first_line: HashMap<&StreamKey, usize, FastHash> = HashMap::default();
        let mut violations = Vec::new();
        let mut decisions = Vec::with_capacity(changes.len());
        for (line, change) in changes.iter().enumerate() {
            let violation = |rule| LineViolation::new(line, &change.stream, rule);
            match first_line.entry(&change.stream) {
                Entry::Occupied(first) => {
                    violations.push(violation(LineRule::DuplicateItem {
                        first_line: *first.get(),
                    }));
                    continue;
                }
                Entry::Vacant(vacant) => {
                    vacant.insert(line);
                }
            }
            let item = self.item_or_empty(&change.stream);
            if let Some(expected) = change.expected_version
                && expected != item.version()
            {
                violations.push(violation(LineRule::WrongExpectedVersion {
                    expected,
                    current: item.version(),
                }));
                continue;
            }
            match decide_change(item, change.change, reason) {
                Ok(event) => decisions.push(Decision {
                    stream: change.stream.clone(),
                    event,
                }),
                Err(rule) => violations.push(violation(rule)),
            }
        }
        if violations.is_empty() {
            Ok(decisions)
        } else {
            Err(DomainError::LinesRefused { violations })
        }
    }

    /// A transfer that exists and is neither closed nor cancelled.
    fn open_transfer(&self, transfer_id: &TransferId) -> Result<&Transfer, DomainError> {
        let Some(transfer) = self.transfers.get(transfer_id) else {
            return Err(DomainError::TransferNotFound {
                transfer_id: transfer_id.clone(),
            });
        };
        if matches!(
            transfer.status,
            TransferStatus::Received | TransferStatus::Cancelled
        ) {
            return Err(DomainError::TransferNotOpen {
                transfer_id: transfer_id.clone(),
                status: transfer.status,
            });
        }
        Ok(transfer)
    }

    /// Per line: the source's `TransferShipped` (from its unreserved good units, never what
    /// is reserved) and the destination's `TransferIncoming`. All or nothing.
    fn decide_shipment(
        &self,
        transfer_id: &TransferId,
        from_store: &StoreId,
        to_store: &StoreId,
        lines: &[TransferLine],
        reason: &Reason,
    ) -> Result<Vec<Decision>, DomainError> {
        if self.transfers.contains_key(transfer_id) {
            return Err(DomainError::TransferAlreadyExists {
                transfer_id: transfer_id.clone(),
            });
        }
        let mut first_line: HashMap<&ProductId, usize, FastHash> = HashMap::default();
        let mut violations = Vec::new();
        let mut decisions = Vec::with_capacity(2 * lines.len());
        for (line, shipped) in lines.iter().enumerate() {
            let source = StreamKey::new(shipped.product_id.clone(), from_store.clone());
            let destination = StreamKey::new(shipped.product_id.clone(), to_store.clone());
            if let Some(first) = first_line.get(&shipped.product_id) {
                violations.push(LineViolation::new(
                    line,
                    &source,
                    LineRule::DuplicateItem { first_line: *first },
                ));
                continue;
            }
            first_line.insert(&shipped.product_id, line);
            let unreserved = self.item_or_empty(&source).level().unreserved();
            if shipped.quantity.get() > unreserved {
                violations.push(LineViolation::new(
                    line,
                    &source,
                    LineRule::InsufficientStock {
                        requested: shipped.quantity.get(),
                        available: unreserved,
                    },
                ));
                continue;
            }
            let incoming = self.item_or_empty(&destination).level().incoming();
            if incoming.saturating_add(shipped.quantity.get()) > MAX_ON_HAND {
                violations.push(LineViolation::new(
                    line,
                    &destination,
                    LineRule::OnHandOverflow {
                        on_hand: incoming,
                        quantity: shipped.quantity.get(),
                    },
                ));
                continue;
            }
            decisions.push(Decision {
                stream: source,
                event: StockEvent::TransferShipped {
                    transfer_id: transfer_id.clone(),
                    to_store: to_store.clone(),
                    quantity: shipped.quantity,
                    reason: reason.clone(),
                },
            });
            decisions.push(Decision {
                stream: destination,
                event: StockEvent::TransferIncoming {
                    transfer_id: transfer_id.clone(),
                    from_store: from_store.clone(),
                    quantity: shipped.quantity,
                },
            });
        }
        if violations.is_empty() {
            Ok(decisions)
        } else {
            Err(DomainError::LinesRefused { violations })
        }
    }

    /// Per line, the destination's `TransferReceived` (at most what is still in transit);
    /// then, when the transfer closes (`close`, or nothing left in transit), a `TransferLost`
    /// for what each product still misses.
    fn decide_receipt(
        &self,
        transfer_id: &TransferId,
        lines: &[TransferLine],
        close: bool,
    ) -> Result<Vec<Decision>, DomainError> {
        let transfer = self.open_transfer(transfer_id)?;
        if lines.is_empty() && !close {
            return Err(DomainError::NothingReceived {
                transfer_id: transfer_id.clone(),
            });
        }
        let destination =
            |product_id: &ProductId| StreamKey::new(product_id.clone(), transfer.to_store.clone());
        let mut received: HashMap<&ProductId, u64, FastHash> = HashMap::default();
        let mut first_line: HashMap<&ProductId, usize, FastHash> = HashMap::default();
        let mut violations = Vec::new();
        let mut decisions = Vec::with_capacity(lines.len() + transfer.lines.len());
        for (line, arrived) in lines.iter().enumerate() {
            let stream = destination(&arrived.product_id);
            if let Some(first) = first_line.get(&arrived.product_id) {
                violations.push(LineViolation::new(
                    line,
                    &stream,
                    LineRule::DuplicateItem { first_line: *first },
                ));
                continue;
            }
            first_line.insert(&arrived.product_id, line);
            let Some(state) = transfer.line(&arrived.product_id) else {
                violations.push(LineViolation::new(line, &stream, LineRule::NotInTransfer));
                continue;
            };
            if arrived.quantity.get() > state.in_transit() {
                violations.push(LineViolation::new(
                    line,
                    &stream,
                    LineRule::ReceiveExceedsInTransit {
                        requested: arrived.quantity.get(),
                        in_transit: state.in_transit(),
                    },
                ));
                continue;
            }
            received.insert(&arrived.product_id, arrived.quantity.get());
            decisions.push(Decision {
                stream,
                event: StockEvent::TransferReceived {
                    transfer_id: transfer_id.clone(),
                    quantity: arrived.quantity,
                },
            });
        }
        if !violations.is_empty() {
            return Err(DomainError::LinesRefused { violations });
        }
        // What each product still misses after this receipt.
        let missing: Vec<(&ProductId, u64)> = transfer
            .lines
            .iter()
            .map(|line| {
                let now = received.get(&line.product_id).copied().unwrap_or(0);
                (&line.product_id, line.in_transit() - now)
            })
            .collect();
        if close {
            for (product_id, missing) in missing {
                if let Ok(quantity) = Quantity::new(missing) {
                    decisions.push(Decision {
                        stream: destination(product_id),
                        event: StockEvent::TransferLost {
                            transfer_id: transfer_id.clone(),
                            quantity,
                        },
                    });
                }
            }
        }
        Ok(decisions)
    }

    /// One `StockCounted` per line: the new on-hand keeps what was recorded after the count.
    /// Refused only for an item named twice or an on-hand past [`MAX_ON_HAND`]; never because
    /// of reservations.
    fn decide_count(
        &self,
        lines: &[CountLine],
        counted_at: Timestamp,
        reason: &Reason,
    ) -> Result<Vec<Decision>, DomainError> {
        let mut first_line: HashMap<&StreamKey, usize, FastHash> = HashMap::default();
        let mut violations = Vec::new();
        let mut decisions = Vec::with_capacity(lines.len());
        for (line, count) in lines.iter().enumerate() {
            match first_line.entry(&count.stream) {
                Entry::Occupied(first) => {
                    violations.push(LineViolation::new(
                        line,
                        &count.stream,
                        LineRule::DuplicateItem {
                            first_line: *first.get(),
                        },
                    ));
                    continue;
                }
                Entry::Vacant(vacant) => {
                    vacant.insert(line);
                }
            }
            let level = self.item_or_empty(&count.stream).level();
            let current = level.on_hand();
            let at_count = count.on_hand_at_count.unwrap_or(current);
            // Sales after the count larger than what it found leave nothing, not less.
            let on_hand = (i128::from(count.counted) + i128::from(current) - i128::from(at_count))
                .clamp(0, i128::from(u64::MAX)) as u64;
            if on_hand > MAX_ON_HAND {
                violations.push(LineViolation::new(
                    line,
                    &count.stream,
                    LineRule::OnHandOverflow {
                        on_hand: current,
                        quantity: count.counted,
                    },
                ));
                continue;
            }
            // What the count found is all there is: no state keeps more units than that,
            // damaged ones first.
            let damaged = level.damaged().min(on_hand);
            let quality_control = level.quality_control().min(on_hand - damaged);
            decisions.push(Decision {
                stream: count.stream.clone(),
                event: StockEvent::StockCounted {
                    counted: count.counted,
                    counted_at,
                    on_hand_at_count: at_count,
                    previous_on_hand: current,
                    on_hand,
                    damaged_not_found: level.damaged() - damaged,
                    quality_control_not_found: level.quality_control() - quality_control,
                    reason: reason.clone(),
                },
            });
        }
        if violations.is_empty() {
            Ok(decisions)
        } else {
            Err(DomainError::LinesRefused { violations })
        }
    }

    /// One event per item the lines name, with the lines naming it summed; refused whole when
    /// any item has less available than its lines ask for together.
    fn decide_reservation(
        &self,
        lines: &[ReservationLine],
        event: impl Fn(Quantity) -> StockEvent,
    ) -> Result<Vec<Decision>, DomainError> {
        // Each item once, in the order of its first line: (its stream, that line, the sum).
        let mut items: Vec<(&StreamKey, usize, u64)> = Vec::with_capacity(lines.len());
        let mut index_of: HashMap<&StreamKey, usize, FastHash> = HashMap::default();
        let mut violations = Vec::new();
        for (line, requested) in lines.iter().enumerate() {
            if let Some(expected) = requested.expected_version {
                let current = self.item_or_empty(&requested.stream).version();
                if expected != current {
                    violations.push(LineViolation::new(
                        line,
                        &requested.stream,
                        LineRule::WrongExpectedVersion { expected, current },
                    ));
                }
            }
            let quantity = requested.quantity.get();
            if lines.len() == 1 {
                items.push((&requested.stream, line, quantity));
                continue;
            }
            match index_of.entry(&requested.stream) {
                Entry::Occupied(at) => {
                    let sum = &mut items[*at.get()].2;
                    *sum = sum.saturating_add(quantity);
                }
                Entry::Vacant(vacant) => {
                    vacant.insert(items.len());
                    items.push((&requested.stream, line, quantity));
                }
            }
        }
        let mut decisions = Vec::with_capacity(items.len());
        for (stream, line, requested) in items {
            let available = self.item_or_empty(stream).level().available();
            match Quantity::new(requested) {
                Ok(quantity) if requested <= available => decisions.push(Decision {
                    stream: stream.clone(),
                    event: event(quantity),
                }),
                _ => violations.push(LineViolation::new(
                    line,
                    stream,
                    LineRule::InsufficientStock {
                        requested,
                        available,
                    },
                )),
            }
        }
        if violations.is_empty() {
            Ok(decisions)
        } else {
            violations.sort_by_key(|violation| violation.line);
            Err(DomainError::LinesRefused { violations })
        }
    }

    fn each_line(
        &self,
        held: &[(&StreamKey, &ActiveReservation)],
        event: impl Fn(&ActiveReservation) -> StockEvent,
    ) -> Vec<Decision> {
        held.iter()
            .map(|(stream, reservation)| Decision {
                stream: (*stream).clone(),
                event: event(reservation),
            })
            .collect()
    }

    /// An active reservation's entry, or why there is none.
    fn active_entry(
        &self,
        reservation_id: &ReservationId,
    ) -> Result<&ReservationEntry, DomainError> {
        let Some(entry) = self.reservations.get(reservation_id) else {
            return Err(DomainError::ReservationNotFound {
                reservation_id: reservation_id.clone(),
            });
        };
        if entry.status != ReservationStatus::Active {
            return Err(DomainError::ReservationNotActive {
                reservation_id: reservation_id.clone(),
                status: entry.status,
            });
        }
        Ok(entry)
    }

    /// An active reservation's lines: each item and what it holds of it, in line order.
    fn active_reservation(
        &self,
        reservation_id: &ReservationId,
    ) -> Result<Vec<(&StreamKey, &ActiveReservation)>, DomainError> {
        let entry = self.active_entry(reservation_id)?;
        Ok(self
            .entry_items(reservation_id, entry)
            .map(|index| {
                let (stream, item) = self
                    .items
                    .get_index(index as usize)
                    .expect("a reservation's item exists");
                let reservation = item
                    .reservation(reservation_id)
                    .expect("an active reservation is held by each of its items");
                (stream, reservation)
            })
            .collect())
    }

    /// An active reservation whose time is not up. One whose time is up but whose expiry event
    /// is not written yet is already expired for every command.
    fn unexpired_reservation(
        &self,
        reservation_id: &ReservationId,
        now: Timestamp,
    ) -> Result<Vec<(&StreamKey, &ActiveReservation)>, DomainError> {
        let held = self.active_reservation(reservation_id)?;
        if held
            .iter()
            .any(|(_, reservation)| reservation.expires_at <= now)
        {
            return Err(DomainError::ReservationNotActive {
                reservation_id: reservation_id.clone(),
                status: ReservationStatus::Expired,
            });
        }
        Ok(held)
    }
}

/// The rule of one stock change on one item.
fn decide_change(
    item: &StockItem,
    change: StockChangeKind,
    reason: &Reason,
) -> Result<StockEvent, LineRule> {
    let level = item.level();
    match change {
        StockChangeKind::Add(quantity) => {
            let on_hand = level.on_hand();
            if on_hand
                .checked_add(quantity.get())
                .is_none_or(|sum| sum > MAX_ON_HAND)
            {
                return Err(LineRule::OnHandOverflow {
                    on_hand,
                    quantity: quantity.get(),
                });
            }
            Ok(StockEvent::StockAdded {
                quantity,
                reason: reason.clone(),
            })
        }
        StockChangeKind::Remove(quantity, from) => {
            // Never below what is reserved: only unreserved good units (the safety buffer
            // included: they are physically gone), or damaged or inspected ones, can go.
            let held = level.in_state(from);
            if quantity.get() > held {
                return Err(match from {
                    StockState::Available => LineRule::InsufficientStock {
                        requested: quantity.get(),
                        available: held,
                    },
                    StockState::Damaged | StockState::QualityControl => LineRule::StateHoldsLess {
                        state: from,
                        requested: quantity.get(),
                        held,
                    },
                });
            }
            Ok(StockEvent::StockRemoved {
                quantity,
                from,
                reason: reason.clone(),
            })
        }
        StockChangeKind::SetOnHand(on_hand) => {
            // What on-hand must still cover: the reserved, damaged and inspected units.
            let held = level.held();
            if on_hand < held {
                return Err(LineRule::OnHandBelowReserved {
                    requested_on_hand: on_hand,
                    reserved: held,
                });
            }
            if on_hand > MAX_ON_HAND {
                return Err(LineRule::OnHandOverflow {
                    on_hand,
                    quantity: 0,
                });
            }
            Ok(StockEvent::StockAdjusted {
                previous_on_hand: level.on_hand(),
                on_hand,
                reason: reason.clone(),
            })
        }
    }
}

/// What ships of each line of `held` (in its order), from a partial commit's lines: summed
/// per item, each at most what the item holds, and none for an item the lines do not name.
fn shipped_quantities(
    held: &[(&StreamKey, &ActiveReservation)],
    lines: &[CommitLine],
) -> Result<Vec<u64>, DomainError> {
    let mut shipped = vec![0u64; held.len()];
    // The first line naming each item, to report it.
    let mut first_line = vec![None; held.len()];
    let mut violations = Vec::new();
    for (line, commit) in lines.iter().enumerate() {
        match held
            .iter()
            .position(|(stream, _)| **stream == commit.stream)
        {
            Some(at) => {
                shipped[at] = shipped[at].saturating_add(commit.quantity);
                first_line[at].get_or_insert(line);
            }
            None => {
                if !violations
                    .iter()
                    .any(|v: &LineViolation| v.stream == commit.stream)
                {
                    violations.push(LineViolation::new(
                        line,
                        &commit.stream,
                        LineRule::NotInReservation,
                    ));
                }
            }
        }
    }
    for (at, (stream, reservation)) in held.iter().enumerate() {
        let reserved = reservation.quantity.get();
        if shipped[at] > reserved {
            violations.push(LineViolation::new(
                first_line[at].expect("an item ships only if a line names it"),
                stream,
                LineRule::CommitExceedsReserved {
                    requested: shipped[at],
                    reserved,
                },
            ));
        }
    }
    if violations.is_empty() {
        Ok(shipped)
    } else {
        violations.sort_by_key(|violation| violation.line);
        Err(DomainError::LinesRefused { violations })
    }
}
