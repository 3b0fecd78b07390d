//! Commands of a transfer between two stores: ship (all lines or none), receive (in part, or
//! closing it with the rest lost in transit), and cancel before anything arrived.

use std::collections::HashMap;

use super::{Decide, PickRefused, pick_seen};
use crate::dense_map::FastHash;
use crate::domain::error::{DomainError, LineRule, LineViolation};
use crate::domain::event::{StockEvent, TransferEvent};
use crate::domain::ids::{ProductId, StoreId, StreamKey, TransferId};
use crate::domain::inventory::{Decision, Inventory};
use crate::domain::transfer::{Transfer, TransferStatus};
use crate::domain::values::{MAX_ON_HAND, Quantity, Reason, Timestamp};

/// Goods leave `from_store` for `to_store`: each line's quantity leaves the source's on-hand
/// (its unreserved good units) and joins the destination's `incoming`. All or nothing.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ShipTransfer {
    pub transfer_id: TransferId,
    pub from_store: StoreId,
    pub to_store: StoreId,
    pub lines: Vec<TransferLine>,
    pub reason: Reason,
}

/// What of a transfer arrived: each line moves from the destination's `incoming` to its
/// on-hand. `close` (or everything arrived) closes the transfer, and what is still missing is
/// recorded as lost in transit.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReceiveTransfer {
    pub transfer_id: TransferId,
    /// The transfer's source store: needed only when the id names transfers from several
    /// stores (ids are unique per source store). See [`Decide::narrow`].
    pub from_store: Option<StoreId>,
    pub lines: Vec<TransferLine>,
    pub close: bool,
}

/// Before anything arrived: the goods go back to the source's on-hand.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CancelTransfer {
    pub transfer_id: TransferId,
    /// As [`ReceiveTransfer::from_store`].
    pub from_store: Option<StoreId>,
    pub reason: Reason,
}

/// One product of a transfer and its units.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TransferLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

impl Decide for ShipTransfer {
    /// Per line: the source's `TransferShipped` (from its unreserved good units, never what is
    /// reserved) and the destination's `TransferIncoming`. All or nothing.
    fn decide(&self, inventory: &Inventory, _now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        if inventory
            .find_transfer(&self.transfer_id, Some(&self.from_store))?
            .is_some()
        {
            return Err(DomainError::TransferAlreadyExists {
                transfer_id: self.transfer_id.clone(),
            });
        }
        let mut first_line: HashMap<&ProductId, usize, FastHash> = HashMap::default();
        let mut violations = Vec::new();
        let mut decisions = Vec::with_capacity(2 * self.lines.len());
        for (line, shipped) in self.lines.iter().enumerate() {
            let source = StreamKey::new(shipped.product_id.clone(), self.from_store.clone());
            let destination = StreamKey::new(shipped.product_id.clone(), self.to_store.clone());
            if let Some(first) = first_line.get(&shipped.product_id) {
                violations.push(LineViolation::new(
                    line,
                    &source,
                    LineRule::DuplicateItem { first_line: *first },
                ));
                continue;
            }
            first_line.insert(&shipped.product_id, line);
            let unreserved = inventory.item_or_empty(&source).level().unreserved();
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
            let incoming = inventory.item_or_empty(&destination).level().incoming();
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
                event: StockEvent::Transfer(TransferEvent::TransferShipped {
                    transfer_id: self.transfer_id.clone(),
                    to_store: self.to_store.clone(),
                    quantity: shipped.quantity,
                    reason: self.reason.clone(),
                }),
            });
            decisions.push(Decision {
                stream: destination,
                event: StockEvent::Transfer(TransferEvent::TransferIncoming {
                    transfer_id: self.transfer_id.clone(),
                    from_store: self.from_store.clone(),
                    quantity: shipped.quantity,
                }),
            });
        }
        DomainError::unless_lines_broke(decisions, violations)
    }

    fn find_store<'a>(
        &'a self,
        _inventory: &'a Inventory,
        refused: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Option<&'a StoreId> {
        refused(&self.from_store).then_some(&self.from_store)
    }

    fn item_bound(&self, _inventory: &Inventory) -> usize {
        2 * self.lines.len()
    }

    fn lines(&self) -> usize {
        self.lines.len()
    }
}

impl Decide for ReceiveTransfer {
    /// Per line, the destination's `TransferReceived` (at most what is still in transit);
    /// then, when the transfer closes (`close`, or nothing left in transit), a `TransferLost`
    /// for what each product still misses.
    /// Over 70 lines: the checks of each line, then the losses of a close, read best whole.
    fn decide(&self, inventory: &Inventory, _now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let transfer_id = &self.transfer_id;
        let transfer = inventory.open_transfer(transfer_id, self.from_store.as_ref())?;
        let source = Some(transfer.from_store.clone());
        if self.lines.is_empty() && !self.close {
            return Err(DomainError::NothingReceived {
                transfer_id: transfer_id.clone(),
            });
        }
        let destination =
            |product_id: &ProductId| StreamKey::new(product_id.clone(), transfer.to_store.clone());
        let mut received: HashMap<&ProductId, u64, FastHash> = HashMap::default();
        let mut first_line: HashMap<&ProductId, usize, FastHash> = HashMap::default();
        let mut violations = Vec::new();
        let mut decisions = Vec::with_capacity(self.lines.len() + transfer.lines.len());
        for (line, arrived) in self.lines.iter().enumerate() {
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
                event: StockEvent::Transfer(TransferEvent::TransferReceived {
                    transfer_id: transfer_id.clone(),
                    quantity: arrived.quantity,
                    from_store: source.clone(),
                }),
            });
        }
        DomainError::unless_lines_broke((), violations)?;
        if self.close {
            // What each product still misses after this receipt is lost.
            for line in &transfer.lines {
                let now = received.get(&line.product_id).copied().unwrap_or(0);
                if let Ok(quantity) = Quantity::new(line.in_transit() - now) {
                    decisions.push(Decision {
                        stream: destination(&line.product_id),
                        event: StockEvent::Transfer(TransferEvent::TransferLost {
                            transfer_id: transfer_id.clone(),
                            quantity,
                            from_store: source.clone(),
                        }),
                    });
                }
            }
        }
        Ok(decisions)
    }

    fn find_store<'a>(
        &'a self,
        inventory: &'a Inventory,
        refused: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Option<&'a StoreId> {
        let transfer = self.named(inventory)?;
        refused(&transfer.to_store).then_some(&transfer.to_store)
    }

    fn lines(&self) -> usize {
        self.lines.len().max(1)
    }

    fn item_bound(&self, inventory: &Inventory) -> usize {
        self.lines.len()
            + self
                .named(inventory)
                .map_or(0, |transfer| transfer.lines.len())
    }

    fn unseen(
        &self,
        inventory: &Inventory,
        sees: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Option<DomainError> {
        unseen_transfer(self.named(inventory), &self.transfer_id, sees)
    }

    fn narrow(
        &mut self,
        inventory: &Inventory,
        sees: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Result<(), DomainError> {
        narrow_transfer(&self.transfer_id, &mut self.from_store, inventory, sees)
    }
}

impl Decide for CancelTransfer {
    fn decide(&self, inventory: &Inventory, _now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let transfer_id = &self.transfer_id;
        let transfer = inventory.open_transfer(transfer_id, self.from_store.as_ref())?;
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
                event: StockEvent::Transfer(TransferEvent::TransferCancelled {
                    transfer_id: transfer_id.clone(),
                    quantity,
                    reason: self.reason.clone(),
                    from_store: Some(transfer.from_store.clone()),
                }),
            });
            decisions.push(Decision {
                stream: StreamKey::new(line.product_id.clone(), transfer.from_store.clone()),
                event: StockEvent::Transfer(TransferEvent::TransferReturned {
                    transfer_id: transfer_id.clone(),
                    quantity,
                }),
            });
        }
        Ok(decisions)
    }

    fn find_store<'a>(
        &'a self,
        inventory: &'a Inventory,
        refused: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Option<&'a StoreId> {
        let transfer = self.named(inventory)?;
        refused(&transfer.from_store).then_some(&transfer.from_store)
    }

    fn item_bound(&self, inventory: &Inventory) -> usize {
        2 * self
            .named(inventory)
            .map_or(1, |transfer| transfer.lines.len())
    }

    fn unseen(
        &self,
        inventory: &Inventory,
        sees: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Option<DomainError> {
        unseen_transfer(self.named(inventory), &self.transfer_id, sees)
    }

    fn narrow(
        &mut self,
        inventory: &Inventory,
        sees: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Result<(), DomainError> {
        narrow_transfer(&self.transfer_id, &mut self.from_store, inventory, sees)
    }
}

/// The transfer a command on an existing transfer names, if it names one.
macro_rules! named_transfer {
    ($($command:ident),*) => {$(
        impl $command {
            fn named<'a>(&self, inventory: &'a Inventory) -> Option<&'a Transfer> {
                inventory
                    .find_transfer(&self.transfer_id, self.from_store.as_ref())
                    .ok()
                    .flatten()
            }
        }
    )*};
}

named_transfer!(ReceiveTransfer, CancelTransfer);

/// Picks the transfer a caller means when its id names transfers from several stores and no
/// source was given: the one it may see an end of, if there is one and only one. Otherwise
/// the caller learns of none it may not see: none seen is not found, several seen must be
/// told apart by `from_store_id`.
fn narrow_transfer(
    transfer_id: &TransferId,
    from_store: &mut Option<StoreId>,
    inventory: &Inventory,
    sees: &mut dyn FnMut(&StoreId) -> bool,
) -> Result<(), DomainError> {
    pick_seen(from_store, || {
        inventory.transfer_sources_seen(transfer_id, sees)
    })
    .map_err(|refused| match refused {
        PickRefused::NoneSeen => DomainError::TransferNotFound {
            transfer_id: transfer_id.clone(),
        },
        PickRefused::Several(stores) => DomainError::TransferIdAmbiguous {
            transfer_id: transfer_id.clone(),
            stores,
        },
    })
}

/// A transfer is both stores' business: unseen only by a caller that sees neither.
fn unseen_transfer(
    transfer: Option<&Transfer>,
    transfer_id: &TransferId,
    sees: &mut dyn FnMut(&StoreId) -> bool,
) -> Option<DomainError> {
    let transfer = transfer?;
    (!sees(&transfer.from_store) && !sees(&transfer.to_store)).then(|| {
        DomainError::TransferNotFound {
            transfer_id: transfer_id.clone(),
        }
    })
}
