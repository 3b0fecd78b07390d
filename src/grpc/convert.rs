//! Wire → domain conversions for requests. Each checks every field once, here at the edge, and
//! reports every invalid field by name; past this point the types carry the guarantees.

use crate::log::codec::timestamp_from_pb;

use super::pb;
use crate::app::EventFilter;
use crate::app::command::{
    AddStock, AdjustStock, CommandRequest, CommitReservation, ReleaseReservation, ReserveStock,
};
use crate::app::query::{AsOf, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE};
use crate::app::subscription::MAX_FILTER_IDS;
use crate::domain::{
    CommandId, CustomerId, EventKind, LogPosition, MAX_ON_HAND, OrderId, ProductId, Quantity,
    Reason, ReservationId, StoreId, StreamKey, StreamVersion, TimeToLive,
};

use super::status::{FieldViolation, invalid_argument};

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
        field: &'static str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.violations.push(FieldViolation::new(field, error));
                None
            }
        }
    }

    pub fn product_id(&mut self, field: &'static str, text: &str) -> Option<ProductId> {
        self.check(field, ProductId::parse(text))
    }

    pub fn store_id(&mut self, field: &'static str, text: &str) -> Option<StoreId> {
        self.check(field, StoreId::parse(text))
    }

    pub fn stream(&mut self, product_id: &str, store_id: &str) -> Option<StreamKey> {
        let product_id = self.product_id("product_id", product_id);
        let store_id = self.store_id("store_id", store_id);
        Some(StreamKey::new(product_id?, store_id?))
    }

    pub fn quantity(&mut self, field: &'static str, value: i64) -> Option<Quantity> {
        self.check(field, Quantity::from_signed(value))
    }

    pub fn reason(&mut self, field: &'static str, text: &str) -> Option<Reason> {
        self.check(field, Reason::parse(text))
    }

    pub fn reservation_id(&mut self, field: &'static str, text: &str) -> Option<ReservationId> {
        self.check(field, ReservationId::parse(text))
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
    let on_hand = fields.check(
        "on_hand",
        u64::try_from(request.on_hand)
            .map_err(|_| format!("must not be negative, got {}", request.on_hand))
            .and_then(|value| {
                if value > MAX_ON_HAND {
                    Err(format!("must be at most {MAX_ON_HAND}"))
                } else {
                    Ok(value)
                }
            }),
    );
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

pub fn reserve_stock(
    request: &pb::ReserveStockRequest,
) -> Result<CommandRequest<ReserveStock>, tonic::Status> {
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let quantity = fields.quantity("quantity", request.quantity);
    let customer_id = fields.check("customer_id", CustomerId::parse(&request.customer_id));
    let ttl = match &request.ttl {
        None => Some(TimeToLive::DEFAULT),
        Some(duration) => fields.check("ttl", ttl_from_pb(duration)),
    };
    // Empty: the server makes one.
    let reservation_id = if request.reservation_id.is_empty() {
        Some(None)
    } else {
        fields
            .reservation_id("reservation_id", &request.reservation_id)
            .map(Some)
    };
    let command = (|| {
        Some(ReserveStock {
            stream: stream?,
            reservation_id: reservation_id?,
            quantity: quantity?,
            customer_id: customer_id?,
            ttl: ttl?,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
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
    let command = (|| {
        Some(CommitReservation {
            reservation_id: reservation_id?,
            order_id: order_id?,
        })
    })();
    fields.finish_command(command, &request.command_id, request.expected_version)
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

pub fn get_history(request: &pb::GetHistoryRequest) -> Result<HistoryQuery, tonic::Status> {
    let mut fields = Fields::new();
    let stream = fields.stream(&request.product_id, &request.store_id);
    let page_size = match request.page_size {
        0 => Some(DEFAULT_HISTORY_PAGE),
        size if size <= MAX_HISTORY_PAGE => Some(size),
        size => fields.check(
            "page_size",
            Err(format!("must be at most {MAX_HISTORY_PAGE}, got {size}")),
        ),
    };
    let after = if request.page_token.is_empty() {
        Some(StreamVersion::INITIAL)
    } else {
        fields.check(
            "page_token",
            request
                .page_token
                .parse::<u64>()
                .map(StreamVersion)
                .map_err(|_| "not a token from a previous response".to_owned()),
        )
    };
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
