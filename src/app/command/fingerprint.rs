//! The fingerprint of a command's request: how a retry is told from a different request that
//! reuses its command id.

use crate::domain::{
    AddStock, AdjustStock, ApplyStockChanges, CancelTransfer, Command, CommitReservation,
    ExpireReservation, ExtendReservation, MoveStock, ReceiveTransfer, RecordCount,
    ReleaseReservation, RemoveStock, ReserveStock, SetItemPolicy, ShipTransfer, StockChangeKind,
    StockState, StoreId, StreamKey, StreamVersion,
};

/// A state's number in the fingerprint's encoding: never to change.
fn state_number(state: StockState) -> u64 {
    match state {
        StockState::Available => 1,
        StockState::Damaged => 2,
        StockState::QualityControl => 3,
    }
}

/// A hash of a command's request fields, stable across versions and restarts (FNV-1a 64 over
/// a length-prefixed canonical encoding). `generated_id` leaves out a reservation or transfer
/// id the server made, so a retry (which gets another generated id) matches the original.
///
/// The log stores it with each event (`command_fingerprint`), so that a command id reused
/// for a different request is told from a retry after a restart: the encoding must never
/// change.
/// Over 70 lines: one arm per command kind, and the encoding reads best as one table.
pub(super) fn fingerprint(
    command: &Command,
    expected_version: Option<StreamVersion>,
    generated_id: bool,
) -> u64 {
    let mut hasher = Fnv64::new();
    let stream = |hasher: &mut Fnv64, stream: &StreamKey| {
        hasher.text(stream.product_id.as_str());
        hasher.text(stream.store_id.as_str());
    };
    match command {
        Command::AddStock(AddStock {
            stream: key,
            quantity,
            reason,
        }) => {
            hasher.text("AddStock");
            stream(&mut hasher, key);
            hasher.number(quantity.get());
            hasher.text(reason.as_str());
        }
        Command::AdjustStock(AdjustStock {
            stream: key,
            on_hand,
            reason,
        }) => {
            hasher.text("AdjustStock");
            stream(&mut hasher, key);
            hasher.number(*on_hand);
            hasher.text(reason.as_str());
        }
        Command::RemoveStock(RemoveStock {
            stream: key,
            quantity,
            from,
            reason,
        }) => {
            hasher.text("RemoveStock");
            stream(&mut hasher, key);
            hasher.number(quantity.get());
            hasher.text(reason.as_str());
            // Left out for the available units, as before states existed: a retry across the
            // upgrade matches.
            if *from != StockState::Available {
                hasher.number(state_number(*from));
            }
        }
        Command::MoveStock(MoveStock {
            stream: key,
            quantity,
            states,
            reason,
        }) => {
            hasher.text("MoveStock");
            stream(&mut hasher, key);
            hasher.number(quantity.get());
            hasher.number(state_number(states.from()));
            hasher.number(state_number(states.to()));
            hasher.text(reason.as_str());
        }
        Command::SetItemPolicy(SetItemPolicy {
            stream: key,
            safety_stock,
            low_stock_threshold,
        }) => {
            hasher.text("SetItemPolicy");
            stream(&mut hasher, key);
            for part in [safety_stock, low_stock_threshold] {
                match part {
                    None => hasher.number(0),
                    Some(value) => {
                        hasher.number(1);
                        hasher.number(*value);
                    }
                }
            }
        }
        Command::ShipTransfer(ShipTransfer {
            transfer_id,
            from_store,
            to_store,
            lines,
            reason,
        }) => {
            hasher.text("ShipTransfer");
            hasher.text(if generated_id {
                ""
            } else {
                transfer_id.as_str()
            });
            hasher.text(from_store.as_str());
            hasher.text(to_store.as_str());
            hasher.text(reason.as_str());
            hasher.number(lines.len() as u64);
            for line in lines {
                hasher.text(line.product_id.as_str());
                hasher.number(line.quantity.get());
            }
        }
        Command::ReceiveTransfer(ReceiveTransfer {
            transfer_id,
            from_store,
            lines,
            close,
        }) => {
            store_hint(&mut hasher, from_store);
            hasher.text("ReceiveTransfer");
            hasher.text(transfer_id.as_str());
            hasher.number(u64::from(*close));
            hasher.number(lines.len() as u64);
            for line in lines {
                hasher.text(line.product_id.as_str());
                hasher.number(line.quantity.get());
            }
        }
        Command::CancelTransfer(CancelTransfer {
            transfer_id,
            from_store,
            reason,
        }) => {
            store_hint(&mut hasher, from_store);
            hasher.text("CancelTransfer");
            hasher.text(transfer_id.as_str());
            hasher.text(reason.as_str());
        }
        Command::RecordCount(RecordCount {
            lines,
            counted_at,
            reason,
        }) => {
            // What the request says; each line's on-hand at the count is worked out from the
            // log, the same for a retry.
            hasher.text("RecordCount");
            hasher.text(reason.as_str());
            match counted_at {
                None => hasher.number(0),
                Some(counted_at) => {
                    hasher.number(1);
                    hasher.number(counted_at.unix_millis());
                }
            }
            hasher.number(lines.len() as u64);
            for line in lines {
                stream(&mut hasher, &line.stream);
                hasher.number(line.counted);
            }
        }
        Command::ApplyStockChanges(ApplyStockChanges { changes, reason }) => {
            hasher.text("ApplyStockChanges");
            hasher.text(reason.as_str());
            hasher.number(changes.len() as u64);
            for change in changes {
                stream(&mut hasher, &change.stream);
                let (kind, value) = match change.change {
                    StockChangeKind::Add(quantity) => (1, quantity.get()),
                    StockChangeKind::Remove(quantity, StockState::Available) => (2, quantity.get()),
                    StockChangeKind::Remove(quantity, from) => {
                        (3 + state_number(from), quantity.get())
                    }
                    StockChangeKind::SetOnHand(on_hand) => (3, on_hand),
                };
                hasher.number(kind);
                hasher.number(value);
                hasher.version(change.expected_version);
            }
        }
        Command::ReserveStock(ReserveStock {
            reservation_id,
            lines,
            customer_id,
            ttl,
        }) => {
            let reservation_id = reservation_id.as_str();
            let reservation_id = if generated_id { "" } else { &reservation_id };
            match lines.as_slice() {
                // One line, as before multi-line reservations: the same fingerprint, so a retry
                // across the upgrade matches.
                [line] if line.expected_version.is_none() => {
                    hasher.text("ReserveStock");
                    stream(&mut hasher, &line.stream);
                    hasher.text(reservation_id);
                    hasher.number(line.quantity.get());
                    hasher.text(customer_id.as_str());
                    hasher.number(ttl.millis());
                }
                lines => {
                    hasher.text("ReserveStockLines");
                    hasher.text(reservation_id);
                    hasher.text(customer_id.as_str());
                    hasher.number(ttl.millis());
                    hasher.number(lines.len() as u64);
                    for line in lines {
                        stream(&mut hasher, &line.stream);
                        hasher.number(line.quantity.get());
                        hasher.version(line.expected_version);
                    }
                }
            }
        }
        Command::CommitReservation(CommitReservation {
            reservation_id,
            store_id,
            order_id,
            lines,
        }) => {
            store_hint(&mut hasher, store_id);
            match lines {
                None => {
                    hasher.text("CommitReservation");
                    hasher.text(&reservation_id.as_str());
                    hasher.text(order_id.as_str());
                }
                Some(lines) => {
                    hasher.text("CommitReservationLines");
                    hasher.text(&reservation_id.as_str());
                    hasher.text(order_id.as_str());
                    hasher.number(lines.len() as u64);
                    for line in lines {
                        stream(&mut hasher, &line.stream);
                        hasher.number(line.quantity);
                    }
                }
            }
        }
        Command::ExtendReservation(ExtendReservation {
            reservation_id,
            store_id,
            ttl,
        }) => {
            store_hint(&mut hasher, store_id);
            hasher.text("ExtendReservation");
            hasher.text(&reservation_id.as_str());
            hasher.number(ttl.millis());
        }
        Command::ReleaseReservation(ReleaseReservation {
            reservation_id,
            store_id,
            reason,
        }) => {
            store_hint(&mut hasher, store_id);
            hasher.text("ReleaseReservation");
            hasher.text(&reservation_id.as_str());
            hasher.text(reason.as_str());
        }
        Command::ExpireReservation(ExpireReservation {
            reservation_id,
            store_id,
        }) => {
            store_hint(&mut hasher, store_id);
            hasher.text("ExpireReservation");
            hasher.text(&reservation_id.as_str());
        }
    }
    hasher.version(expected_version);
    hasher.finish()
}

/// The store a command on a reservation or a transfer names, when it names one: hashed first, and only then,
/// so that a request without one hashes as it did before requests could name one.
fn store_hint(hasher: &mut Fnv64, store_id: &Option<StoreId>) {
    if let Some(store_id) = store_id {
        hasher.text("store");
        hasher.text(store_id.as_str());
    }
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

    fn version(&mut self, version: Option<StreamVersion>) {
        match version {
            Some(version) => {
                self.number(1);
                self.number(version.0);
            }
            None => self.number(0),
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
