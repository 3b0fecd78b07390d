//! Physical counts: what was on the shelf, the truth that a count sets against the log.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::{Decide, one_item_per_line};
use crate::dense_map::FastHash;
use crate::domain::error::{DomainError, LineRule, LineViolation};
use crate::domain::event::{QuantityEvent, StockEvent};
use crate::domain::ids::{StoreId, StreamKey};
use crate::domain::inventory::{Decision, Inventory};
use crate::domain::values::{MAX_ON_HAND, Reason, Timestamp};

/// A physical count: what was on the shelf of each item at `counted_at` (`None`: now). Never
/// refused because of reservations: it is the physical truth.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecordCount {
    pub lines: Vec<CountLine>,
    pub counted_at: Option<Timestamp>,
    pub reason: Reason,
}

/// One line of [`RecordCount`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CountLine {
    pub stream: StreamKey,
    pub counted: u64,
    /// The item's on-hand at the count's `counted_at`, as the log says (the stock after its
    /// last event at or before then; 0 before its first); `None` for a count of now, whose
    /// reference is the item's on-hand when the command is decided. Sales and receipts
    /// recorded after `counted_at` still happened: the new on-hand is
    /// `counted + (on-hand now − on_hand_at_count)`.
    pub on_hand_at_count: Option<u64>,
}

impl Decide for RecordCount {
    /// One `StockCounted` per line: the new on-hand keeps what was recorded after the count.
    /// Refused only for an item named twice or an on-hand past [`MAX_ON_HAND`]; never because
    /// of reservations.
    fn decide(&self, inventory: &Inventory, now: Timestamp) -> Result<Vec<Decision>, DomainError> {
        let counted_at = self.counted_at.unwrap_or(now);
        let mut first_line: HashMap<&StreamKey, usize, FastHash> = HashMap::default();
        let mut violations = Vec::new();
        let mut decisions = Vec::with_capacity(self.lines.len());
        for (line, count) in self.lines.iter().enumerate() {
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
            let level = inventory.item_or_empty(&count.stream).level();
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
                event: StockEvent::Quantity(QuantityEvent::StockCounted {
                    counted: count.counted,
                    counted_at,
                    on_hand_at_count: at_count,
                    previous_on_hand: current,
                    on_hand,
                    damaged_not_found: level.damaged() - damaged,
                    quality_control_not_found: level.quality_control() - quality_control,
                    reason: self.reason.clone(),
                }),
            });
        }
        DomainError::unless_lines_broke(decisions, violations)
    }

    one_item_per_line!(lines);
}
