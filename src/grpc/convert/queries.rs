//! Conversions of `QueryService` requests and of subscription filters.

use crate::log::codec::timestamp_from_pb;

use crate::app::EventFilter;
use crate::app::query::AsOf;
use crate::app::subscription::MAX_FILTER_IDS;
use crate::domain::{
    EventKind, LogPosition, ProductId, Quantity, ReservationId, StoreId, StreamKey, StreamVersion,
    TransferId, TransferStatus,
};
use crate::grpc::pb;

use super::Fields;
use super::commands::transfer_id;

pub fn get_transfer(
    request: &pb::GetTransferRequest,
) -> Result<(TransferId, Option<StoreId>, LogPosition), tonic::Status> {
    let mut fields = Fields::new();
    let transfer_id = transfer_id(&mut fields, &request.transfer_id);
    let from_store = fields.optional_store_id("from_store_id", &request.from_store_id);
    let min_position = fields.min_position(request.min_position);
    let query = (|| Some((transfer_id?, from_store?, min_position?)))();
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
) -> Result<(ReservationId, Option<StoreId>, LogPosition), tonic::Status> {
    let mut fields = Fields::new();
    let reservation_id = fields.reservation_id("reservation_id", &request.reservation_id);
    let store_id = fields.optional_store_id("store_id", &request.store_id);
    let min_position = fields.min_position(request.min_position);
    let parsed = (|| Some((reservation_id?, store_id?, min_position?)))();
    fields.finish(parsed)
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
