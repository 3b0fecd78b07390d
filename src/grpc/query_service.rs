//! `QueryService`: answers from the read model, and from the log for history and temporal
//! queries. Every query may wait for `min_position` first (read-your-writes).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb;
use crate::app::ReadModel;
use crate::domain::{LogPosition, StockItem, StockLevel, StreamKey, StreamVersion, Timestamp};
use crate::log::EventLog;
use crate::log::codec::{event_to_pb, stock_level_to_pb, timestamp_from_pb, timestamp_to_pb};

use super::convert::Fields;
use super::status::log_error;
use super::{MAX_MIN_POSITION_WAIT, request_deadline};

/// The default and largest page of `GetHistory`.
pub const DEFAULT_HISTORY_PAGE: u32 = 100;
pub const MAX_HISTORY_PAGE: u32 = 1000;

pub struct QueryApi {
    model: Arc<ReadModel>,
    /// The log the model follows: the history and temporal queries read it.
    log: Arc<dyn EventLog>,
}

impl QueryApi {
    pub fn new(model: Arc<ReadModel>, log: Arc<dyn EventLog>) -> QueryApi {
        QueryApi { model, log }
    }

    fn upstream_unreachable_since(&self) -> Option<prost_types::Timestamp> {
        let since = self.model.upstream_unreachable_since()?;
        let millis = since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        Some(timestamp_to_pb(Timestamp::from_unix_millis(millis)))
    }

    /// Waits until the read model has applied `min_position`, within the client's deadline.
    async fn wait_for<T>(
        &self,
        request: &Request<T>,
        min_position: LogPosition,
    ) -> Result<LogPosition, Status> {
        let applied = self.model.position();
        if applied >= min_position {
            return Ok(applied);
        }
        // Answer a little before the client's deadline, so the client gets DEADLINE_EXCEEDED
        // with the position reached instead of a bare timeout of its own.
        let deadline = request_deadline(request.metadata())
            .map_or(MAX_MIN_POSITION_WAIT, |deadline| deadline.mul_f64(0.9))
            .min(MAX_MIN_POSITION_WAIT);
        if self.model.wait_for(min_position, deadline).await {
            Ok(self.model.position())
        } else {
            Err(Status::deadline_exceeded(format!(
                "the read model had applied position {} when the deadline passed, \
                 min_position is {min_position}",
                self.model.position()
            )))
        }
    }
}

fn stock_item(
    stream: &StreamKey,
    level: StockLevel,
    version: StreamVersion,
    position: LogPosition,
) -> pb::StockItem {
    pb::StockItem {
        product_id: stream.product_id.to_string(),
        store_id: stream.store_id.to_string(),
        stock: Some(stock_level_to_pb(level)),
        version: version.0,
        position: position.0,
    }
}

fn not_found(stream: &StreamKey) -> Status {
    Status::not_found(format!(
        "no stock item for product_id {} in store_id {}",
        stream.product_id, stream.store_id
    ))
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for QueryApi {
    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        let body = request.get_ref();
        let mut fields = Fields::new();
        let stream = fields.stream(&body.product_id, &body.store_id);
        let min_position = fields.min_position(body.min_position);
        let (stream, min_position) = fields.finish(stream.zip(min_position))?;
        let read_position = self.wait_for(&request, min_position).await?;
        let (level, version, position) = self
            .model
            .stock(&stream)
            .ok_or_else(|| not_found(&stream))?;
        Ok(Response::new(pb::GetStockResponse {
            item: Some(stock_item(&stream, level, version, position)),
            read_position: read_position.0,
            upstream_unreachable_since: self.upstream_unreachable_since(),
        }))
    }

    async fn get_product_stock(
        &self,
        request: Request<pb::GetProductStockRequest>,
    ) -> Result<Response<pb::GetProductStockResponse>, Status> {
        let body = request.get_ref();
        let mut fields = Fields::new();
        let product_id = fields.product_id("product_id", &body.product_id);
        let min_position = fields.min_position(body.min_position);
        let (product_id, min_position) = fields.finish(product_id.zip(min_position))?;
        let read_position = self.wait_for(&request, min_position).await?;
        let stores = self.model.product(&product_id);
        let (mut on_hand, mut reserved) = (0u64, 0u64);
        let stores = stores
            .into_iter()
            .map(|(store_id, level, version, position)| {
                on_hand = on_hand.saturating_add(level.on_hand());
                reserved = reserved.saturating_add(level.reserved());
                let stream = StreamKey::new(product_id.clone(), store_id);
                stock_item(&stream, level, version, position)
            })
            .collect();
        // Totals over many stores can exceed one item's limit; they saturate at i64::MAX.
        let total = pb::StockLevel {
            on_hand: i64::try_from(on_hand).unwrap_or(i64::MAX),
            reserved: i64::try_from(reserved).unwrap_or(i64::MAX),
            available: i64::try_from(on_hand - reserved).unwrap_or(i64::MAX),
        };
        Ok(Response::new(pb::GetProductStockResponse {
            product_id: product_id.to_string(),
            stores,
            total: Some(total),
            read_position: read_position.0,
            upstream_unreachable_since: self.upstream_unreachable_since(),
        }))
    }

    async fn check_availability(
        &self,
        request: Request<pb::CheckAvailabilityRequest>,
    ) -> Result<Response<pb::CheckAvailabilityResponse>, Status> {
        let body = request.get_ref();
        let mut fields = Fields::new();
        let stream = fields.stream(&body.product_id, &body.store_id);
        let quantity = fields.quantity("quantity", body.quantity);
        let min_position = fields.min_position(body.min_position);
        let ((stream, quantity), min_position) =
            fields.finish(stream.zip(quantity).zip(min_position))?;
        let read_position = self.wait_for(&request, min_position).await?;
        let available = self
            .model
            .stock(&stream)
            .map_or(0, |(level, _, _)| level.available());
        Ok(Response::new(pb::CheckAvailabilityResponse {
            available: available >= quantity.get(),
            available_quantity: available as i64,
            read_position: read_position.0,
            upstream_unreachable_since: self.upstream_unreachable_since(),
        }))
    }

    async fn list_reservations(
        &self,
        request: Request<pb::ListReservationsRequest>,
    ) -> Result<Response<pb::ListReservationsResponse>, Status> {
        let body = request.get_ref();
        let mut fields = Fields::new();
        let stream = fields.stream(&body.product_id, &body.store_id);
        let min_position = fields.min_position(body.min_position);
        let (stream, min_position) = fields.finish(stream.zip(min_position))?;
        let read_position = self.wait_for(&request, min_position).await?;
        let reservations = self
            .model
            .reservations(&stream)
            .into_iter()
            .map(|(reservation_id, reservation)| pb::Reservation {
                reservation_id: reservation_id.to_string(),
                customer_id: reservation.customer_id.to_string(),
                quantity: reservation.quantity.get() as i64,
                expires_at: Some(timestamp_to_pb(reservation.expires_at)),
            })
            .collect();
        Ok(Response::new(pb::ListReservationsResponse {
            reservations,
            read_position: read_position.0,
            upstream_unreachable_since: self.upstream_unreachable_since(),
        }))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let body = request.get_ref();
        let mut fields = Fields::new();
        let stream = fields.stream(&body.product_id, &body.store_id);
        let page_size = match body.page_size {
            0 => Some(DEFAULT_HISTORY_PAGE),
            size if size <= MAX_HISTORY_PAGE => Some(size),
            size => fields.check(
                "page_size",
                Err(format!("must be at most {MAX_HISTORY_PAGE}, got {size}")),
            ),
        };
        let after = if body.page_token.is_empty() {
            Some(StreamVersion::INITIAL)
        } else {
            fields.check(
                "page_token",
                body.page_token
                    .parse::<u64>()
                    .map(StreamVersion)
                    .map_err(|_| "not a token from a previous response".to_owned()),
            )
        };
        let min_position = fields.min_position(body.min_position);
        let (((stream, page_size), after), min_position) =
            fields.finish(stream.zip(page_size).zip(after).zip(min_position))?;
        let read_position = self.wait_for(&request, min_position).await?;
        // Read one more than the page to know whether another page follows.
        let mut events = self
            .log
            .read_stream(stream, after, page_size as usize + 1)
            .await
            .map_err(|error| log_error(&error))?;
        // Answer as of the read model's position, like every other query.
        events.retain(|event| event.position <= read_position);
        let more = events.len() > page_size as usize;
        events.truncate(page_size as usize);
        let next_page_token = match (more, events.last()) {
            (true, Some(last)) => last.version.0.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::GetHistoryResponse {
            events: events.iter().map(event_to_pb).collect(),
            next_page_token,
            read_position: read_position.0,
            upstream_unreachable_since: self.upstream_unreachable_since(),
        }))
    }

    async fn get_stock_at(
        &self,
        request: Request<pb::GetStockAtRequest>,
    ) -> Result<Response<pb::GetStockAtResponse>, Status> {
        use pb::get_stock_at_request::AsOf;
        let body = request.get_ref();
        let mut fields = Fields::new();
        let stream = fields.stream(&body.product_id, &body.store_id);
        let as_of = match &body.as_of {
            None => fields.check::<AsOfPoint, String>(
                "as_of",
                Err("set as_of_position or as_of_time".to_owned()),
            ),
            Some(AsOf::AsOfPosition(position)) => Some(AsOfPoint::Position(LogPosition(*position))),
            Some(AsOf::AsOfTime(time)) => fields.check(
                "as_of_time",
                timestamp_from_pb(time)
                    .map(AsOfPoint::Time)
                    .ok_or_else(|| "must be a valid time after 1970".to_owned()),
            ),
        };
        let min_position = fields.min_position(body.min_position);
        let ((stream, as_of), min_position) = fields.finish(stream.zip(as_of).zip(min_position))?;
        let read_position = self.wait_for(&request, min_position).await?;
        let mut item = StockItem::default();
        let mut position = LogPosition::START;
        let mut after = StreamVersion::INITIAL;
        'pages: loop {
            let events = self
                .log
                .read_stream(stream.clone(), after, crate::log::MAX_READ_EVENTS)
                .await
                .map_err(|error| log_error(&error))?;
            if events.is_empty() {
                break;
            }
            for event in &events {
                let included = event.position <= read_position
                    && match as_of {
                        AsOfPoint::Position(as_of) => event.position <= as_of,
                        AsOfPoint::Time(as_of) => event.occurred_at <= as_of,
                    };
                if !included {
                    break 'pages;
                }
                item.evolve(&event.event);
                position = event.position;
                after = event.version;
            }
        }
        Ok(Response::new(pb::GetStockAtResponse {
            item: Some(stock_item(&stream, item.level(), item.version(), position)),
            read_position: read_position.0,
            upstream_unreachable_since: self.upstream_unreachable_since(),
        }))
    }
}

#[derive(Clone, Copy)]
enum AsOfPoint {
    Position(LogPosition),
    Time(Timestamp),
}
