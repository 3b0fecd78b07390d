//! Commands that change an item's quantities directly: receipts, corrections, removals, moves
//! between states, the item's policy, and a list of changes applied whole.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::{Decide, one_item_per_line};
use crate::dense_map::FastHash;
use crate::domain::error::{DomainError, LineRule, LineViolation};
use crate::domain::event::{QuantityEvent, StockEvent};
use crate::domain::ids::{StoreId, StreamKey};
use crate::domain::inventory::{Decision, Inventory};
use crate::domain::item::StockItem;
use crate::domain::values::{MAX_ON_HAND, Quantity, Reason, StockState, StreamVersion, Timestamp};

/// Goods were received.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AddStock {
    pub stream: StreamKey,
    pub quantity: Quantity,
    pub reason: Reason,
}

/// On-hand was counted or corrected.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AdjustStock {
    pub stream: StreamKey,
    pub on_hand: u64,
    pub reason: Reason,
}

/// Shrinkage, theft, a write-off: on-hand shrinks by units of state `from`, never below what
/// is reserved.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RemoveStock {
    pub stream: StreamKey,
    pub quantity: Quantity,
    pub from: StockState,
    pub reason: Reason,
}

/// Units change state on the shelf: found damaged, sent to or released from inspection.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MoveStock {
    pub stream: StreamKey,
    pub quantity: Quantity,
    pub states: StateMove,
    pub reason: Reason,
}

/// The item's safety stock and low-stock threshold; `None` keeps what it has.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SetItemPolicy {
    pub stream: StreamKey,
    pub safety_stock: Option<u64>,
    pub low_stock_threshold: Option<u64>,
}

/// A delivery note, a recount, a write-off list: every change or none. One change per item.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ApplyStockChanges {
    pub changes: Vec<StockChangeLine>,
    pub reason: Reason,
}

/// One change of [`ApplyStockChanges`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StockChangeLine {
    pub stream: StreamKey,
    pub change: StockChangeKind,
    /// Refuse the command unless this item is at this version.
    pub expected_version: Option<StreamVersion>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StockChangeKind {
    Add(Quantity),
    Remove(Quantity, StockState),
    SetOnHand(u64),
}

/// Where a move takes units from and where it puts them: two different states.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct StateMove {
    from: StockState,
    to: StockState,
}

/// A move from a state to itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("from and to are both {0}: a move needs two different states")]
pub struct SameState(pub StockState);

impl StateMove {
    pub fn new(from: StockState, to: StockState) -> Result<StateMove, SameState> {
        if from == to {
            return Err(SameState(from));
        }
        Ok(StateMove { from, to })
    }

    pub fn from(self) -> StockState {
        self.from
    }

    pub fn to(self) -> StockState {
        self.to
    }
}

/// The stores and the size of a command of one item, `self.stream`.
macro_rules! single_item {
    () => {
        fn find_store<'a>(
            &'a self,
            _inventory: &'a Inventory,
            refused: &mut dyn FnMut(&StoreId) -> bool,
        ) -> Option<&'a StoreId> {
            let store = &self.stream.store_id;
            refused(store).then_some(store)
        }

        fn item_bound(&self, _inventory: &Inventory) -> usize {
            1
        }
    };
}

/// A single-item command's one decision, or its one line's violation.
fn one_decision(
    stream: &StreamKey,
    event: Result<StockEvent, LineRule>,
) -> Result<Vec<Decision>, DomainError> {
    match event {
        Ok(event) => Ok(vec![Decision {
            stream: stream.clone(),
            event,
        }]),
        Err(rule) => Err(DomainError::LinesRefused {
            violations: vec![LineViolation::new(0, stream, rule)],
        }),
    }
}

/// The `Decide` of a command of one item whose event comes from [`decide_change`].
macro_rules! single_change {
    ($command:ident, |$this:ident| $change:expr) => {
        impl Decide for $command {
            fn decide(
                &self,
                inventory: &Inventory,
                _now: Timestamp,
            ) -> Result<Vec<Decision>, DomainError> {
                let $this = self;
                let item = inventory.item_or_empty(&self.stream);
                one_decision(&self.stream, decide_change(item, $change, &self.reason))
            }

            single_item!();
        }
    };
}

single_change!(AddStock, |this| StockChangeKind::Add(this.quantity));
single_change!(AdjustStock, |this| StockChangeKind::SetOnHand(this.on_hand));
single_change!(RemoveStock, |this| StockChangeKind::Remove(
    this.quantity,
    this.from
));

impl Decide for MoveStock {
    fn decide(&self, inventory: &Inventory, _now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let held = inventory
            .item_or_empty(&self.stream)
            .level()
            .in_state(self.states.from());
        let event = if self.quantity.get() > held {
            Err(LineRule::StateHoldsLess {
                state: self.states.from(),
                requested: self.quantity.get(),
                held,
            })
        } else {
            Ok(StockEvent::Quantity(QuantityEvent::StockMoved {
                quantity: self.quantity,
                from: self.states.from(),
                to: self.states.to(),
                reason: self.reason.clone(),
            }))
        };
        one_decision(&self.stream, event)
    }

    single_item!();
}

impl Decide for SetItemPolicy {
    fn decide(&self, inventory: &Inventory, _now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let level = inventory.item_or_empty(&self.stream).level();
        let event = StockEvent::Quantity(QuantityEvent::ItemPolicyChanged {
            safety_stock: self.safety_stock.unwrap_or(level.safety_stock()),
            low_stock_threshold: self
                .low_stock_threshold
                .unwrap_or(level.low_stock_threshold()),
        });
        one_decision(&self.stream, Ok(event))
    }

    single_item!();
}

impl Decide for ApplyStockChanges {
    fn decide(&self, inventory: &Inventory, _now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let mut first_line: HashMap<&StreamKey, usize, FastHash> = HashMap::default();
        let mut violations = Vec::new();
        let mut decisions = Vec::with_capacity(self.changes.len());
        for (line, change) in self.changes.iter().enumerate() {
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
            let item = inventory.item_or_empty(&change.stream);
            if let Some(expected) = change.expected_version
                && expected != item.version()
            {
                violations.push(violation(LineRule::WrongExpectedVersion {
                    expected,
                    current: item.version(),
                }));
                continue;
            }
            match decide_change(item, change.change, &self.reason) {
                Ok(event) => decisions.push(Decision {
                    stream: change.stream.clone(),
                    event,
                }),
                Err(rule) => violations.push(violation(rule)),
            }
        }
        DomainError::unless_lines_broke(decisions, violations)
    }

    one_item_per_line!(changes);
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
            Ok(StockEvent::Quantity(QuantityEvent::StockAdded {
                quantity,
                reason: reason.clone(),
            }))
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
            Ok(StockEvent::Quantity(QuantityEvent::StockRemoved {
                quantity,
                from,
                reason: reason.clone(),
            }))
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
            Ok(StockEvent::Quantity(QuantityEvent::StockAdjusted {
                previous_on_hand: level.on_hand(),
                on_hand,
                reason: reason.clone(),
            }))
        }
    }
}
