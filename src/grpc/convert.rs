//! Wire → domain conversions for requests. Each checks every field once, here at the edge, and
//! reports every invalid field by name; past this point the types carry the guarantees.

use crate::log::codec::{stock_state_from_pb, timestamp_from_pb};

use super::pb;
use crate::app::EventFilter;
use crate::app::command::{
    CommandRequest, CountSheet, Opening, new_reservation_id, new_transfer_id,
};
use crate::app::query::{AsOf, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE};
use crate::app::subscription::MAX_FILTER_IDS;
use crate::domain::{
    AddStock, AdjustStock, ApplyStockChanges, CancelTransfer, CommandId, CommitLine,
    CommitReservation, CustomerId, EventKind, ExtendReservation, LogPosition, MAX_COMMAND_LINES,
    MAX_ON_HAND, MoveStock, OrderId, ProductId, Quantity, Reason, ReceiveTransfer,
    ReleaseReservation, RemoveStock, ReservationId, ReservationLine, ReserveStock, SetItemPolicy,
    ShipTransfer, StateMove, StockChangeKind, StockChangeLine, StockState, StoreId, StreamKey,
    StreamVersion, TimeToLive, TransferId, TransferLine, TransferStatus,
};

use super::status::{FieldViolation, invalid_argument};

/// The name of a request's field in a violation: a plain field, or a field of one line of a
/// repeated field (`lines[3].quantity`), rendered only when a violation is reported.
#[derive(Clone, Copy, Debug)]
pub enum FieldName {
    Plain(&'static str),
    Line {
        list: &'static str,
        index: usize,
        field: Option<&'static str>,
    },
}

impl FieldName {
    fn line(list: &'static str, index: usize, field: &'static str) -> FieldName {
        FieldName::Line {
            list,
            index,
            field: Some(field),
        }
    }
}

impl From<&'static str> for FieldName {
    fn from(field: &'static str) -> FieldName {
        FieldName::Plain(field)
    }
}

impl std::fmt::Display for FieldName {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldName::Plain(field) => formatter.write_str(field),
            FieldName::Line {
                list,
                index,
                field: None,
            } => write!(formatter, "{list}[{index}]"),
            FieldName::Line {
                list,
                index,
                field: Some(field),
            } => write!(formatter, "{list}[{index}].{field}"),
        }
    }
}

/// Collects field violations while a request is converted.
#[derive(Default)]
pub struct Fields {
    violations: Vec<FieldViolation>,
}

impl Fields {
    pub fn new() -> Fields {
        Fields::default()
    }

    /// Records a violation for `field` when `result` is an error.
    pub fn check<T, E: ToString>(
        &mut self,
        field: impl Into<FieldName>,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.violations
                    .push(FieldViolation::new(field.into().to_string(), error));
                None
            }
        }
    }

    pub fn product_id(&mut self, field: impl Into<FieldName>, text: &str) -> Option<ProductId> {
        self.check(field, ProductId::parse(text))
    }

    pub fn store_id(&mut self, field: impl Into<FieldName>, text: &str) -> Option<StoreId> {
        self.check(field, StoreId::parse(text))
    }

    pub fn stream(&mut self, product_id: &str, store_id: &str) -> Option<StreamKey> {
        let product_id = self.product_id("product_id", product_id);
        let store_id = self.store_id("store_id", store_id);
        Some(StreamKey::new(product_id?, store_id?))
    }

    /// The item of line `index` of the repeated field `list`.
    fn line_stream(
        &mut self,
        list: &'static str,
        index: usize,
        product_id: &str,
        store_id: &str,
    ) -> Option<StreamKey> {
        let product_id = self.product_id(FieldName::line(list, index, "product_id"), product_id);
        let store_id = self.store_id(FieldName::line(list, index, "store_id"), store_id);
        Some(StreamKey::new(product_id?, store_id?))
    }

    pub fn quantity(&mut self, field: impl Into<FieldName>, value: i64) -> Option<Quantity> {
        self.check(field, Quantity::from_signed(value))
    }

    fn on_hand(&mut self, field: impl Into<FieldName>, value: i64) -> Option<u64> {
        self.check(
            field,
            u64::try_from(value)
                .map_err(|_| format!("must not be negative, got {value}"))
                .and_then(|value| {
                    if value > MAX_ON_HAND {
                        Err(format!("must be at most {MAX_ON_HAND}"))
                    } else {
                        Ok(value)
                    }
                }),
        )
    }

    /// A state; `unset` is what `STOCK_STATE_UNSPECIFIED` means here (`None`: required).
    fn state(
        &mut self,
        field: impl Into<FieldName>,
        value: i32,
        unset: Option<StockState>,
    ) -> Option<StockState> {
        let result = match (value, unset) {
            (0, Some(state)) => Ok(state),
            (0, None) => Err("set AVAILABLE, DAMAGED or QUALITY_CONTROL".to_owned()),
            (value, _) => stock_state_from_pb(value).ok_or_else(|| {
                format!("{value} is not a state: AVAILABLE, DAMAGED or QUALITY_CONTROL")
            }),
        };
        self.check(field, result)
    }

    /// A policy quantity: unset stays unset; set, 0 to [`MAX_ON_HAND`].
    fn policy(&mut self, field: &'static str, value: Option<i64>) -> Option<Option<u64>> {
        match value {
            None => Some(None),
            Some(value) => self.on_hand(field, value).map(Some),
        }
    }

    pub fn reason(&mut self, field: impl Into<FieldName>, text: &str) -> Option<Reason> {
        self.check(field, Reason::parse(text))
    }

    /// Whether line `index` of `lines` is the first to name `product_id`; a later one is
    /// refused with the first one's index (`seen` holds the lines so far).
    fn first_naming<'a>(
        &mut self,
        seen: &mut std::collections::HashMap<&'a str, usize>,
        index: usize,
        product_id: &'a str,
    ) -> bool {
        match seen.entry(product_id) {
            std::collections::hash_map::Entry::Occupied(earlier) => {
                let earlier = *earlier.get();
                self.refuse(
                    FieldName::Line {
                        list: "lines",
                        index,
                        field: None,
                    },
                    format!("names the same product as lines[{earlier}]: one line per product"),
                );
                false
            }
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(index);
                true
            }
        }
    }

    /// Where a page starts, from a previous response's `page_token`: `None` for the first
    /// page (an empty token).
    fn page_token<T, E>(
        &mut self,
        token: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<Option<T>> {
        if token.is_empty() {
            return Some(None);
        }
        self.check(
            "page_token",
            parse(token)
                .map(Some)
                .map_err(|_| "not a token from a previous response".to_owned()),
        )
    }

    /// A page size: 1 to [`MAX_HISTORY_PAGE`], [`DEFAULT_HISTORY_PAGE`] when 0.
    fn page_size(&mut self, size: u32) -> Option<u32> {
        match size {
            0 => Some(DEFAULT_HISTORY_PAGE),
            size if size <= MAX_HISTORY_PAGE => Some(size),
            size => self.check(
                "page_size",
                Err(format!("must be at most {MAX_HISTORY_PAGE}, got {size}")),
            ),
        }
    }

    pub fn reservation_id(
        &mut self,
        field: impl Into<FieldName>,
        text: &str,
    ) -> Option<ReservationId> {
        self.check(field, ReservationId::parse(text))
    }

    /// The number of lines of the repeated field `list`: 1 to [`MAX_COMMAND_LINES`].
    fn line_count(&mut self, list: &'static str, count: usize) -> Option<()> {
        let result = match count {
            0 => Err("must hold at least 1 line".to_owned()),
            count if count > MAX_COMMAND_LINES => Err(format!(
                "must hold at most {MAX_COMMAND_LINES} lines, got {count}"
            )),
            _ => Ok(()),
        };
        self.check(list, result)
    }

    /// A violation for `field` that no single value check found.
    fn refuse(&mut self, field: impl Into<FieldName>, problem: impl ToString) {
        self.check::<(), _>(field, Err(problem.to_string()));
    }

    /// A reservation's time to live; [`TimeToLive::DEFAULT`] when unset.
    fn ttl(
        &mut self,
        field: &'static str,
        duration: Option<&prost_types::Duration>,
    ) -> Option<TimeToLive> {
        match duration {
            None => Some(TimeToLive::DEFAULT),
            Some(duration) => self.check(field, ttl_from_pb(duration)),
        }
    }

    fn optional_command_id(&mut self, text: &str) -> Option<Option<CommandId>> {
        if text.is_empty() {
            return Some(None);
        }
        self.check("command_id", CommandId::parse(text)).map(Some)
    }

    pub fn min_position(&mut self, value: Option<u64>) -> Option<LogPosition> {
        Some(LogPosition(value.unwrap_or(0)))
    }

    /// The command with its envelope (`command_id`, `expected_version`) when every field of
    /// the request was valid, else `INVALID_ARGUMENT` naming each invalid field.
    fn finish_command<C>(
        mut self,
        command: Option<C>,
        command_id: &str,
        expected_version: Option<u64>,
    ) -> Result<CommandRequest<C>, tonic::Status> {
        let command_id = self.optional_command_id(command_id);
        let request = (|| {
            Some(CommandRequest {
                command: command?,
                command_id: command_id?,
                expected_version: expected_version.map(StreamVersion),
            })
        })();
        self.finish(request)
    }

    /// `Ok` with the value when every field was valid, else `INVALID_ARGUMENT` naming each
    /// invalid field.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, tonic::Status> {
        match value {
            Some(value) if self.violations.is_empty() => Ok(value),
            _ => Err(invalid_argument(&self.violations)),
        }
    }
}

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

fn ttl_from_pb(duration: &prost_types::Duration) -> Result<TimeToLive, String> {
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
    let lines = if request.lines.is_empty() {
        Some(None)
    } else {
        commit_lines(&mut fields, &request.lines).map(Some)
    };
    let command = (|| {
        Some(CommitReservation {
            reservation_id: reservation_id?,
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
    let command = (|| {
        Some(ExtendReservation {
            reservation_id: reservation_id?,
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

fn transfer_id(fields: &mut Fields, text: &str) -> Option<TransferId> {
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
    let command = (|| {
        Some(ReceiveTransfer {
            transfer_id: transfer_id?,
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
    let command = (|| {
        Some(CancelTransfer {
            transfer_id: transfer_id?,
            reason: reason?,
        })
    })();
    fields.finish_command(command, &request.command_id, None)
}

pub fn get_transfer(
    request: &pb::GetTransferRequest,
) -> Result<(TransferId, LogPosition), tonic::Status> {
    let mut fields = Fields::new();
    let transfer_id = transfer_id(&mut fields, &request.transfer_id);
    let min_position = fields.min_position(request.min_position);
    let query = (|| Some((transfer_id?, min_position?)))();
    fields.finish(query)
}

/// `ListTransfers`: the store, a status or none, the transfer id the page starts after.
pub struct TransfersQuery {
    pub store_id: StoreId,
    pub status: Option<TransferStatus>,
    pub after: Option<TransferId>,
    pub page_size: u32,
    pub min_position: LogPosition,
}

pub fn list_transfers(request: &pb::ListTransfersRequest) -> Result<TransfersQuery, tonic::Status> {
    let mut fields = Fields::new();
    let store_id = fields.store_id("store_id", &request.store_id);
    let status = match pb::TransferStatus::try_from(request.status) {
        Ok(pb::TransferStatus::Unspecified) => Some(None),
        Ok(pb::TransferStatus::InTransit) => Some(Some(TransferStatus::InTransit)),
        Ok(pb::TransferStatus::PartiallyReceived) => Some(Some(TransferStatus::PartiallyReceived)),
        Ok(pb::TransferStatus::Received) => Some(Some(TransferStatus::Received)),
        Ok(pb::TransferStatus::Cancelled) => Some(Some(TransferStatus::Cancelled)),
        Err(_) => fields.check(
            "status",
            Err(format!("{} is not a transfer status", request.status)),
        ),
    };
    let page_size = fields.page_size(request.page_size);
    let after = fields.page_token(&request.page_token, TransferId::parse);
    let min_position = fields.min_position(request.min_position);
    let query = (|| {
        Some(TransfersQuery {
            store_id: store_id?,
            status: status?,
            after: after?,
            page_size: page_size?,
            min_position: min_position?,
        })
    })();
    fields.finish(query)
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
    let command = (|| {
        Some(ReleaseReservation {
            reservation_id: reservation_id?,
            reason: reason?,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
}

/// `GetStock`: the item and `min_position`.
pub fn get_stock(request: &pb::GetStockRequest) -> Result<(StreamKey, LogPosition), tonic::Status> {
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let min_position = fields.min_position(request.min_position);
    fields.finish(stream.zip(min_position))
}

/// `GetReservation`: the reservation id and `min_position`.
pub fn get_reservation(
    request: &pb::GetReservationRequest,
) -> Result<(ReservationId, LogPosition), tonic::Status> {
    let mut fields = Fields::new();
    let reservation_id = fields.reservation_id("reservation_id", &request.reservation_id);
    let min_position = fields.min_position(request.min_position);
    fields.finish(reservation_id.zip(min_position))
}

/// `ListReservations`: the item and `min_position`.
pub fn list_reservations(
    request: &pb::ListReservationsRequest,
) -> Result<(StreamKey, LogPosition), tonic::Status> {
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let min_position = fields.min_position(request.min_position);
    fields.finish(stream.zip(min_position))
}

/// `GetProductStock`: the product and `min_position`.
pub fn get_product_stock(
    request: &pb::GetProductStockRequest,
) -> Result<(ProductId, LogPosition), tonic::Status> {
    let mut fields = Fields::new();
    let product_id = fields.product_id("product_id", &request.product_id);
    let min_position = fields.min_position(request.min_position);
    fields.finish(product_id.zip(min_position))
}

/// `CheckAvailability`: the item, the quantity asked about and `min_position`.
pub fn check_availability(
    request: &pb::CheckAvailabilityRequest,
) -> Result<(StreamKey, Quantity, LogPosition), tonic::Status> {
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let quantity = fields.quantity("quantity", request.quantity);
    let min_position = fields.min_position(request.min_position);
    let query = (|| Some((stream?, quantity?, min_position?)))();
    fields.finish(query)
}

/// A valid `GetHistory` request.
pub struct HistoryQuery {
    pub stream: StreamKey,
    /// The version the page starts after (from `page_token`).
    pub after: StreamVersion,
    pub page_size: u32,
    pub min_position: LogPosition,
}

/// `ListLowStock`: the store, the product id the page starts after, its size.
pub struct LowStockQuery {
    pub store_id: StoreId,
    pub after: Option<ProductId>,
    pub page_size: u32,
    pub min_position: LogPosition,
}

pub fn list_low_stock(request: &pb::ListLowStockRequest) -> Result<LowStockQuery, tonic::Status> {
    let mut fields = Fields::new();
    let store_id = fields.store_id("store_id", &request.store_id);
    let page_size = fields.page_size(request.page_size);
    let after = fields.page_token(&request.page_token, ProductId::parse);
    let min_position = fields.min_position(request.min_position);
    let query = (|| {
        Some(LowStockQuery {
            store_id: store_id?,
            after: after?,
            page_size: page_size?,
            min_position: min_position?,
        })
    })();
    fields.finish(query)
}

pub fn get_history(request: &pb::GetHistoryRequest) -> Result<HistoryQuery, tonic::Status> {
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let page_size = fields.page_size(request.page_size);
    let after = fields
        .page_token(&request.page_token, |token| {
            token.parse::<u64>().map(StreamVersion)
        })
        .map(|after| after.unwrap_or(StreamVersion::INITIAL));
    let min_position = fields.min_position(request.min_position);
    let query = (|| {
        Some(HistoryQuery {
            stream: stream?,
            after: after?,
            page_size: page_size?,
            min_position: min_position?,
        })
    })();
    fields.finish(query)
}

/// `GetStockAt`: the item, the point to fold up to and `min_position`.
pub fn get_stock_at(
    request: &pb::GetStockAtRequest,
) -> Result<(StreamKey, AsOf, LogPosition), tonic::Status> {
    use pb::get_stock_at_request::AsOf as WireAsOf;
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let as_of = match &request.as_of {
        None => fields
            .check::<AsOf, String>("as_of", Err("set as_of_position or as_of_time".to_owned())),
        Some(WireAsOf::AsOfPosition(position)) => Some(AsOf::Position(LogPosition(*position))),
        Some(WireAsOf::AsOfTime(time)) => fields.check(
            "as_of_time",
            timestamp_from_pb(time)
                .map(AsOf::Time)
                .ok_or_else(|| "must be a valid time after 1970".to_owned()),
        ),
    };
    let min_position = fields.min_position(request.min_position);
    let query = (|| Some((stream?, as_of?, min_position?)))();
    fields.finish(query)
}

/// A subscription's filter: every id valid, at most [`MAX_FILTER_IDS`] of each, and no
/// unspecified event type.
pub fn event_filter(filter: Option<&pb::SubscriptionFilter>) -> Result<EventFilter, tonic::Status> {
    let Some(filter) = filter else {
        return Ok(EventFilter::default());
    };
    let mut fields = Fields::new();
    let mut result = EventFilter::default();
    let lists = [
        ("filter.product_ids", filter.product_ids.len()),
        ("filter.store_ids", filter.store_ids.len()),
        ("filter.event_types", filter.event_types.len()),
    ];
    for (field, length) in lists {
        if length > MAX_FILTER_IDS {
            fields.check::<(), _>(
                field,
                Err(format!("at most {MAX_FILTER_IDS}, got {length}")),
            );
        }
    }
    for text in &filter.product_ids {
        if let Some(id) = fields.product_id("filter.product_ids", text) {
            result.product_ids.insert(id);
        }
    }
    for text in &filter.store_ids {
        if let Some(id) = fields.store_id("filter.store_ids", text) {
            result.store_ids.insert(id);
        }
    }
    for value in &filter.event_types {
        let kind = match pb::EventType::try_from(*value) {
            Ok(pb::EventType::StockAdded) => Some(EventKind::StockAdded),
            Ok(pb::EventType::StockAdjusted) => Some(EventKind::StockAdjusted),
            Ok(pb::EventType::StockReserved) => Some(EventKind::StockReserved),
            Ok(pb::EventType::ReservationCommitted) => Some(EventKind::ReservationCommitted),
            Ok(pb::EventType::ReservationReleased) => Some(EventKind::ReservationReleased),
            Ok(pb::EventType::ReservationExpired) => Some(EventKind::ReservationExpired),
            Ok(pb::EventType::StockRemoved) => Some(EventKind::StockRemoved),
            Ok(pb::EventType::ReservationExtended) => Some(EventKind::ReservationExtended),
            Ok(pb::EventType::StockMoved) => Some(EventKind::StockMoved),
            Ok(pb::EventType::ItemPolicyChanged) => Some(EventKind::ItemPolicyChanged),
            Ok(pb::EventType::StockLow) => Some(EventKind::StockLow),
            Ok(pb::EventType::OutOfStock) => Some(EventKind::OutOfStock),
            Ok(pb::EventType::BackInStock) => Some(EventKind::BackInStock),
            Ok(pb::EventType::StockShort) => Some(EventKind::StockShort),
            Ok(pb::EventType::StockCounted) => Some(EventKind::StockCounted),
            Ok(pb::EventType::TransferShipped) => Some(EventKind::TransferShipped),
            Ok(pb::EventType::TransferIncoming) => Some(EventKind::TransferIncoming),
            Ok(pb::EventType::TransferReceived) => Some(EventKind::TransferReceived),
            Ok(pb::EventType::TransferLost) => Some(EventKind::TransferLost),
            Ok(pb::EventType::TransferCancelled) => Some(EventKind::TransferCancelled),
            Ok(pb::EventType::TransferReturned) => Some(EventKind::TransferReturned),
            Ok(pb::EventType::Unspecified) | Err(_) => fields.check(
                "filter.event_types",
                Err(format!("{value} is not an event type")),
            ),
        };
        if let Some(kind) = kind {
            result.kinds.insert(kind);
        }
    }
    fields.finish(Some(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_kind_is_named_as_the_proto_names_its_event_type() {
        for kind in EventKind::ALL {
            let value = pb::EventType::from_str_name(kind.name()).expect("a proto name") as i32;
            let filter = pb::SubscriptionFilter {
                event_types: vec![value],
                ..Default::default()
            };
            let parsed = event_filter(Some(&filter)).unwrap();
            assert_eq!(parsed.kinds.into_iter().collect::<Vec<_>>(), [kind]);
            assert_eq!(EventKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(
            EventKind::ALL.len(),
            pb::EventType::TransferReturned as usize
        );
    }
}
