//! Conversions of `CommandService` requests.

use crate::log::codec::timestamp_from_pb;

use crate::app::command::{
    CommandRequest, CountSheet, Opening, new_reservation_id, new_transfer_id,
};
use crate::domain::{
    AddStock, AdjustStock, ApplyStockChanges, CancelTransfer, CommitLine, CommitReservation,
    CustomerId, ExtendReservation, MoveStock, OrderId, ReceiveTransfer, ReleaseReservation,
    RemoveStock, ReservationLine, ReserveStock, SetItemPolicy, ShipTransfer, StateMove,
    StockChangeKind, StockChangeLine, StockState, StreamKey, StreamVersion, TimeToLive, TransferId,
    TransferLine,
};
use crate::grpc::pb;

use super::{FieldName, Fields};

pub fn add_stock(request: &pb::AddStockRequest) -> Result<CommandRequest<AddStock>, tonic::Status> {
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let quantity = fields.quantity("quantity", request.quantity);
    let reason = fields.reason("reason", &request.reason);
    let command = (|| {
        Some(AddStock {
            stream: stream?,
            quantity: quantity?,
            reason: reason?,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
}

pub fn adjust_stock(
    request: &pb::AdjustStockRequest,
) -> Result<CommandRequest<AdjustStock>, tonic::Status> {
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let on_hand = fields.on_hand("on_hand", request.on_hand);
    let reason = fields.reason("reason", &request.reason);
    let command = (|| {
        Some(AdjustStock {
            stream: stream?,
            on_hand: on_hand?,
            reason: reason?,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
}

/// `ReserveStock`, in its single-item form or with `lines` (never both).
pub fn reserve_stock(
    request: &pb::ReserveStockRequest,
) -> Result<CommandRequest<Opening<ReserveStock>>, tonic::Status> {
    let mut fields = Fields::new();
    let lines = if request.lines.is_empty() {
        let stream = fields.stream(&request.product_id, &request.store_id);
        let quantity = fields.quantity("quantity", request.quantity);
        (|| {
            Some(vec![ReservationLine {
                stream: stream?,
                quantity: quantity?,
                // The envelope's expected_version applies to the one item.
                expected_version: None,
            }])
        })()
    } else {
        let single = [
            ("product_id", !request.product_id.is_empty()),
            ("store_id", !request.store_id.is_empty()),
            ("quantity", request.quantity != 0),
            ("expected_version", request.expected_version.is_some()),
        ];
        for (field, set) in single {
            if set {
                fields.refuse(
                    field,
                    "a request with lines names its items in the lines only (one form or the other)",
                );
            }
        }
        reservation_lines(&mut fields, &request.lines)
    };
    let customer_id = fields.check("customer_id", CustomerId::parse(&request.customer_id));
    let ttl = fields.ttl("ttl", request.ttl.as_ref());
    // Empty: the server makes one.
    let id_made_by_server = request.reservation_id.is_empty();
    let reservation_id = if id_made_by_server {
        Some(new_reservation_id())
    } else {
        fields.reservation_id("reservation_id", &request.reservation_id)
    };
    let command = (|| {
        Some(Opening {
            command: ReserveStock {
                lines: lines?,
                reservation_id: reservation_id?,
                customer_id: customer_id?,
                ttl: ttl?,
            },
            id_made_by_server,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
}

fn reservation_lines(
    fields: &mut Fields,
    lines: &[pb::ReservationLine],
) -> Option<Vec<ReservationLine>> {
    fields.line_count("lines", lines.len())?;
    let mut valid = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let stream = fields.line_stream("lines", index, &line.product_id, &line.store_id);
        let quantity = fields.quantity(FieldName::line("lines", index, "quantity"), line.quantity);
        if let (Some(stream), Some(quantity)) = (stream, quantity) {
            valid.push(ReservationLine {
                stream,
                quantity,
                expected_version: line.expected_version.map(StreamVersion),
            });
        }
    }
    (valid.len() == lines.len()).then_some(valid)
}

pub(super) fn ttl_from_pb(duration: &prost_types::Duration) -> Result<TimeToLive, String> {
    if duration.seconds < 0 || duration.nanos < 0 {
        return Err("must not be negative".to_owned());
    }
    if !(0..1_000_000_000).contains(&duration.nanos) {
        return Err("nanos out of range".to_owned());
    }
    let millis = (duration.seconds as u64)
        .saturating_mul(1000)
        .saturating_add(duration.nanos as u64 / 1_000_000);
    TimeToLive::from_millis(millis).map_err(|error| error.to_string())
}

pub fn commit_reservation(
    request: &pb::CommitReservationRequest,
) -> Result<CommandRequest<CommitReservation>, tonic::Status> {
    let mut fields = Fields::new();
    let reservation_id = fields.reservation_id("reservation_id", &request.reservation_id);
    let order_id = fields.check("order_id", OrderId::parse(&request.order_id));
    let store_id = fields.optional_store_id("store_id", &request.store_id);
    let lines = if request.lines.is_empty() {
        Some(None)
    } else {
        commit_lines(&mut fields, &request.lines).map(Some)
    };
    let command = (|| {
        Some(CommitReservation {
            reservation_id: reservation_id?,
            store_id: store_id?,
            order_id: order_id?,
            lines: lines?,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
}

fn commit_lines(fields: &mut Fields, lines: &[pb::CommitLine]) -> Option<Vec<CommitLine>> {
    fields.line_count("lines", lines.len())?;
    let mut valid = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let stream = fields.line_stream("lines", index, &line.product_id, &line.store_id);
        let quantity = fields.on_hand(FieldName::line("lines", index, "quantity"), line.quantity);
        if let (Some(stream), Some(quantity)) = (stream, quantity) {
            valid.push(CommitLine { stream, quantity });
        }
    }
    if valid.len() != lines.len() {
        return None;
    }
    if valid.iter().all(|line| line.quantity == 0) {
        fields.refuse(
            "lines",
            "commit at least one unit; to ship nothing, use ReleaseReservation",
        );
        return None;
    }
    Some(valid)
}

/// `ExtendReservation`.
pub fn extend_reservation(
    request: &pb::ExtendReservationRequest,
) -> Result<CommandRequest<ExtendReservation>, tonic::Status> {
    let mut fields = Fields::new();
    let reservation_id = fields.reservation_id("reservation_id", &request.reservation_id);
    let ttl = fields.ttl("ttl", request.ttl.as_ref());
    let store_id = fields.optional_store_id("store_id", &request.store_id);
    let command = (|| {
        Some(ExtendReservation {
            reservation_id: reservation_id?,
            store_id: store_id?,
            ttl: ttl?,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
}

/// `RemoveStock`.
pub fn remove_stock(
    request: &pb::RemoveStockRequest,
) -> Result<CommandRequest<RemoveStock>, tonic::Status> {
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let quantity = fields.quantity("quantity", request.quantity);
    let from = fields.state("from", request.from, Some(StockState::Available));
    let reason = fields.reason("reason", &request.reason);
    let command = (|| {
        Some(RemoveStock {
            stream: stream?,
            quantity: quantity?,
            from: from?,
            reason: reason?,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
}

/// `MoveStock`: a quantity and two different states.
pub fn move_stock(
    request: &pb::MoveStockRequest,
) -> Result<CommandRequest<MoveStock>, tonic::Status> {
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let quantity = fields.quantity("quantity", request.quantity);
    let from = fields.state("from", request.from, None);
    let to = fields.state("to", request.to, None);
    let states = match (from, to) {
        (Some(from), Some(to)) => fields.check("to", StateMove::new(from, to)),
        _ => None,
    };
    let reason = fields.reason("reason", &request.reason);
    let command = (|| {
        Some(MoveStock {
            stream: stream?,
            quantity: quantity?,
            states: states?,
            reason: reason?,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
}

/// The lines of a transfer command: each product once, each quantity above 0. `required`:
/// whether at least one line is needed.
fn transfer_lines(
    fields: &mut Fields,
    lines: &[pb::TransferLine],
    required: bool,
) -> Option<Vec<TransferLine>> {
    if required || !lines.is_empty() {
        fields.line_count("lines", lines.len())?;
    }
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut valid = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let product_id = fields.product_id(
            FieldName::line("lines", index, "product_id"),
            &line.product_id,
        );
        let quantity = fields.quantity(FieldName::line("lines", index, "quantity"), line.quantity);
        if !fields.first_naming(&mut first, index, &line.product_id) {
            continue;
        }
        if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
            valid.push(TransferLine {
                product_id,
                quantity,
            });
        }
    }
    (valid.len() == lines.len()).then_some(valid)
}

pub(super) fn transfer_id(fields: &mut Fields, text: &str) -> Option<TransferId> {
    fields.check("transfer_id", TransferId::parse(text))
}

/// `ShipTransfer`: two different stores and 1 to 1,000 lines.
pub fn ship_transfer(
    request: &pb::ShipTransferRequest,
) -> Result<CommandRequest<Opening<ShipTransfer>>, tonic::Status> {
    let mut fields = Fields::new();
    // Empty: the server makes one.
    let id_made_by_server = request.transfer_id.is_empty();
    let transfer_id = if id_made_by_server {
        Some(new_transfer_id())
    } else {
        transfer_id(&mut fields, &request.transfer_id)
    };
    let from_store = fields.store_id("from_store_id", &request.from_store_id);
    let to_store = fields.store_id("to_store_id", &request.to_store_id);
    if let (Some(from), Some(to)) = (&from_store, &to_store)
        && from == to
    {
        fields.refuse(
            FieldName::Plain("to_store_id"),
            "is from_store_id: a transfer goes to another store",
        );
    }
    let lines = transfer_lines(&mut fields, &request.lines, true);
    let reason = fields.reason("reason", &request.reason);
    let command = (|| {
        Some(Opening {
            command: ShipTransfer {
                transfer_id: transfer_id?,
                from_store: from_store?,
                to_store: to_store?,
                lines: lines?,
                reason: reason?,
            },
            id_made_by_server,
        })
    })();
    fields.finish_command(command, &request.command_id, None)
}

/// `ReceiveTransfer`: up to 1,000 lines, at least one unless it closes.
pub fn receive_transfer(
    request: &pb::ReceiveTransferRequest,
) -> Result<CommandRequest<ReceiveTransfer>, tonic::Status> {
    let mut fields = Fields::new();
    let transfer_id = transfer_id(&mut fields, &request.transfer_id);
    let lines = transfer_lines(&mut fields, &request.lines, !request.close);
    let from_store = fields.optional_store_id("from_store_id", &request.from_store_id);
    let command = (|| {
        Some(ReceiveTransfer {
            transfer_id: transfer_id?,
            from_store: from_store?,
            lines: lines?,
            close: request.close,
        })
    })();
    fields.finish_command(command, &request.command_id, None)
}

pub fn cancel_transfer(
    request: &pb::CancelTransferRequest,
) -> Result<CommandRequest<CancelTransfer>, tonic::Status> {
    let mut fields = Fields::new();
    let transfer_id = transfer_id(&mut fields, &request.transfer_id);
    let reason = fields.reason("reason", &request.reason);
    let from_store = fields.optional_store_id("from_store_id", &request.from_store_id);
    let command = (|| {
        Some(CancelTransfer {
            transfer_id: transfer_id?,
            from_store: from_store?,
            reason: reason?,
        })
    })();
    fields.finish_command(command, &request.command_id, None)
}

/// `RecordCount`: a store, 1 to 1,000 lines each naming a different product, counts of 0 to
/// `MAX_ON_HAND`, an optional time (checked against the clock by the command side).
pub fn record_count(
    request: &pb::RecordCountRequest,
) -> Result<CommandRequest<CountSheet>, tonic::Status> {
    let mut fields = Fields::new();
    let store_id = fields.store_id("store_id", &request.store_id);
    let reason = fields.reason("reason", &request.reason);
    let counted_at = match &request.counted_at {
        None => Some(None),
        Some(time) => fields.check(
            "counted_at",
            timestamp_from_pb(time)
                .map(Some)
                .ok_or_else(|| "must be a valid time after 1970".to_owned()),
        ),
    };
    let mut lines = Vec::with_capacity(request.lines.len());
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    if fields.line_count("lines", request.lines.len()).is_some() {
        for (index, line) in request.lines.iter().enumerate() {
            let product_id = fields.product_id(
                FieldName::line("lines", index, "product_id"),
                &line.product_id,
            );
            let counted = fields.on_hand(FieldName::line("lines", index, "counted"), line.counted);
            if !fields.first_naming(&mut first, index, &line.product_id) {
                continue;
            }
            if let (Some(product_id), Some(store_id), Some(counted)) =
                (product_id, store_id.clone(), counted)
            {
                lines.push((StreamKey::new(product_id, store_id), counted));
            }
        }
    }
    let complete = lines.len() == request.lines.len();
    let command = (|| {
        Some(CountSheet {
            lines: complete.then_some(lines)?,
            counted_at: counted_at?,
            reason: reason?,
        })
    })();
    fields.finish_command(command, &request.command_id, None)
}

/// `SetItemPolicy`: each quantity unset (unchanged) or 0 to `MAX_ON_HAND`; at least one set.
pub fn set_item_policy(
    request: &pb::SetItemPolicyRequest,
) -> Result<CommandRequest<SetItemPolicy>, tonic::Status> {
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let safety_stock = fields.policy("safety_stock", request.safety_stock);
    let low_stock_threshold = fields.policy("low_stock_threshold", request.low_stock_threshold);
    if request.safety_stock.is_none() && request.low_stock_threshold.is_none() {
        fields.check::<(), _>(
            "safety_stock",
            Err("set safety_stock, low_stock_threshold or both"),
        );
    }
    let command = (|| {
        Some(SetItemPolicy {
            stream: stream?,
            safety_stock: safety_stock?,
            low_stock_threshold: low_stock_threshold?,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
}

/// The changes of `ApplyStockChanges`, each field checked and each item named once: a second
/// change naming an item is refused with the first one's index.
fn stock_changes(fields: &mut Fields, changes: &[pb::StockChange]) -> Option<Vec<StockChangeLine>> {
    use pb::stock_change::Change;
    let mut first: std::collections::HashMap<StreamKey, usize> =
        std::collections::HashMap::with_capacity(changes.len());
    let mut valid = Vec::with_capacity(changes.len());
    for (index, change) in changes.iter().enumerate() {
        let stream = fields.line_stream("changes", index, &change.product_id, &change.store_id);
        let kind = match change.change {
            Some(Change::Add(quantity)) => fields
                .quantity(FieldName::line("changes", index, "add"), quantity)
                .map(StockChangeKind::Add),
            Some(Change::Remove(quantity)) => {
                let quantity =
                    fields.quantity(FieldName::line("changes", index, "remove"), quantity);
                let from = fields.state(
                    FieldName::line("changes", index, "from"),
                    change.from,
                    Some(StockState::Available),
                );
                quantity
                    .zip(from)
                    .map(|(quantity, from)| StockChangeKind::Remove(quantity, from))
            }
            Some(Change::SetOnHand(on_hand)) => fields
                .on_hand(FieldName::line("changes", index, "set_on_hand"), on_hand)
                .map(StockChangeKind::SetOnHand),
            None => {
                fields.refuse(
                    FieldName::line("changes", index, "change"),
                    "set one of add, remove or set_on_hand",
                );
                None
            }
        };
        if change.from != 0 && !matches!(change.change, Some(Change::Remove(_))) {
            fields.refuse(
                FieldName::line("changes", index, "from"),
                "only a remove takes units from a state",
            );
        }
        let Some(stream) = stream else { continue };
        if let Some(earlier) = first.get(&stream) {
            fields.refuse(
                FieldName::Line {
                    list: "changes",
                    index,
                    field: None,
                },
                format!("names the same item as changes[{earlier}]: one change per item"),
            );
            continue;
        }
        first.insert(stream.clone(), index);
        if let Some(kind) = kind {
            valid.push(StockChangeLine {
                stream,
                change: kind,
                expected_version: change.expected_version.map(StreamVersion),
            });
        }
    }
    (valid.len() == changes.len()).then_some(valid)
}

/// `ApplyStockChanges`: 1 to 1,000 changes; every invalid one is named by its index.
pub fn apply_stock_changes(
    request: &pb::ApplyStockChangesRequest,
) -> Result<CommandRequest<ApplyStockChanges>, tonic::Status> {
    let mut fields = Fields::new();
    let reason = fields.reason("reason", &request.reason);
    let changes = fields
        .line_count("changes", request.changes.len())
        .and_then(|()| stock_changes(&mut fields, &request.changes));
    let command = (|| {
        Some(ApplyStockChanges {
            changes: changes?,
            reason: reason?,
        })
    })();
    fields.finish_command(command, &request.command_id, None)
}

pub fn release_reservation(
    request: &pb::ReleaseReservationRequest,
) -> Result<CommandRequest<ReleaseReservation>, tonic::Status> {
    let mut fields = Fields::new();
    let reservation_id = fields.reservation_id("reservation_id", &request.reservation_id);
    let reason = fields.reason("reason", &request.reason);
    let store_id = fields.optional_store_id("store_id", &request.store_id);
    let command = (|| {
        Some(ReleaseReservation {
            reservation_id: reservation_id?,
            store_id: store_id?,
            reason: reason?,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
}
