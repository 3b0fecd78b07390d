//! `QueryService`: converts each request, asks the application's queries and converts the
//! answer. Every query may wait for `min_position` first (read-your-writes), within the
//! client's deadline.

use tonic::{Request, Response, Status};

use crate::app::query::{Answer, ItemStock, Queries, QueryError};
use crate::domain::{
    Actor, RecordedEvent, ReservationStatus, StockLevel, StreamKey, Timestamp, Transfer,
};

use super::command_service::transfer_status_to_pb;
use crate::log::codec::{event_to_pb, stock_level_to_pb, timestamp_to_pb};

use super::auth::principal_of;
use super::convert;
use super::pb;
use super::status::{access_error, query_error};
use super::{MAX_MIN_POSITION_WAIT, request_deadline};
use crate::app::access::{Principal, StoreScope};

pub struct QueryApi {
    queries: Queries,
}

impl QueryApi {
    pub fn new(queries: Queries) -> QueryApi {
        QueryApi { queries }
    }
}

/// How long a query may wait for `min_position`: a little less than the client's deadline, so
/// the client gets DEADLINE_EXCEEDED with the position reached instead of a bare timeout of
/// its own; at most [`MAX_MIN_POSITION_WAIT`].
fn wait<T>(request: &Request<T>) -> std::time::Duration {
    request_deadline(request.metadata())
        .map_or(MAX_MIN_POSITION_WAIT, |deadline| deadline.mul_f64(0.9))
        .min(MAX_MIN_POSITION_WAIT)
}

/// The stores the request's principal may see.
fn scope<T>(request: &Request<T>) -> Result<&StoreScope, Status> {
    Ok(&principal_of(request)?.stores)
}

/// `PERMISSION_DENIED` naming `store` when the request's principal may not see it.
fn may_see<T>(request: &Request<T>, store: &crate::domain::StoreId) -> Result<(), Status> {
    scope(request)?
        .check(store)
        .map_err(|error| access_error(&error))
}

/// An event as `principal` may read it. A caller scoped to some stores sees every event of
/// them, but not who else acted there: another principal's name, command id and trace are left
/// out (its own are kept, and `system` for what the server did by itself).
pub(super) fn event_for(event: &RecordedEvent, principal: &Principal) -> pb::InventoryEvent {
    let mut message = event_to_pb(event);
    if let StoreScope::Only(_) = principal.stores
        && message.actor != *principal.name
        && message.actor != Actor::SYSTEM
    {
        message.actor.clear();
        message.command_id.clear();
        message.trace_parent.clear();
    }
    message
}

fn unreachable_since<T>(answer: &Answer<T>) -> Option<prost_types::Timestamp> {
    let since = answer.upstream_unreachable_since?;
    let millis = since
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    Some(timestamp_to_pb(Timestamp::from_unix_millis(millis)))
}

fn stock_item(stream: &StreamKey, stock: &ItemStock) -> pb::StockItem {
    pb::StockItem {
        product_id: stream.product_id.to_string(),
        store_id: stream.store_id.to_string(),
        stock: Some(stock_level_to_pb(stock.level)),
        version: stock.version.0,
        position: stock.position.0,
    }
}

fn transfer_to_pb(transfer: &Transfer) -> pb::Transfer {
    pb::Transfer {
        transfer_id: transfer.transfer_id.to_string(),
        from_store_id: transfer.from_store.to_string(),
        to_store_id: transfer.to_store.to_string(),
        status: transfer_status_to_pb(transfer.status) as i32,
        lines: transfer
            .lines
            .iter()
            .map(|line| pb::TransferLineState {
                product_id: line.product_id.to_string(),
                shipped: line.shipped as i64,
                received: line.received as i64,
                missing: (line.shipped - line.received.min(line.shipped)) as i64,
                lost: line.lost as i64,
            })
            .collect(),
        event_positions: transfer
            .positions
            .iter()
            .map(|position| position.0)
            .collect(),
    }
}

/// A total over many stores, saturating at the wire's `int64`.
fn total(value: u128) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for QueryApi {
    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        let (stream, min_position) = convert::get_stock(request.get_ref())?;
        may_see(&request, &stream.store_id)?;
        let answer = self
            .queries
            .stock(&stream, min_position, wait(&request))
            .await
            .map_err(|error| query_error(&error))?;
        Ok(Response::new(pb::GetStockResponse {
            item: Some(stock_item(&stream, &answer.value)),
            read_position: answer.read_position.0,
            upstream_unreachable_since: unreachable_since(&answer),
        }))
    }

    async fn get_product_stock(
        &self,
        request: Request<pb::GetProductStockRequest>,
    ) -> Result<Response<pb::GetProductStockResponse>, Status> {
        let (product_id, min_position) = convert::get_product_stock(request.get_ref())?;
        let answer = self
            .queries
            .product_stock(&product_id, min_position, wait(&request))
            .await
            .map_err(|error| query_error(&error))?;
        let product = &answer.value;
        // A credential with stores sees only those, and totals over only those.
        let scope = scope(&request)?;
        let stores: Vec<_> = product
            .stores
            .iter()
            .filter(|(stream, _)| scope.allows(&stream.store_id))
            .collect();
        let sum = |part: fn(StockLevel) -> u64| {
            total(
                stores
                    .iter()
                    .map(|(_, stock)| u128::from(part(stock.level)))
                    .sum(),
            )
        };
        let (on_hand, reserved) = match scope {
            StoreScope::All => (total(product.on_hand_total), total(product.reserved_total)),
            StoreScope::Only(_) => (sum(StockLevel::on_hand), sum(StockLevel::reserved)),
        };
        // Each quantity summed over the stores; a threshold is per item, so none here.
        let total = pb::StockLevel {
            on_hand,
            reserved,
            available: sum(StockLevel::available),
            damaged: sum(StockLevel::damaged),
            quality_control: sum(StockLevel::quality_control),
            safety_stock: sum(StockLevel::safety_stock),
            incoming: sum(StockLevel::incoming),
            shortfall: sum(StockLevel::shortfall),
            low_stock_threshold: 0,
        };
        Ok(Response::new(pb::GetProductStockResponse {
            product_id: product_id.to_string(),
            stores: stores
                .iter()
                .map(|(stream, stock)| stock_item(stream, stock))
                .collect(),
            total: Some(total),
            read_position: answer.read_position.0,
            upstream_unreachable_since: unreachable_since(&answer),
        }))
    }

    async fn check_availability(
        &self,
        request: Request<pb::CheckAvailabilityRequest>,
    ) -> Result<Response<pb::CheckAvailabilityResponse>, Status> {
        let (stream, quantity, min_position) = convert::check_availability(request.get_ref())?;
        may_see(&request, &stream.store_id)?;
        let answer = self
            .queries
            .availability(&stream, quantity, min_position, wait(&request))
            .await
            .map_err(|error| query_error(&error))?;
        Ok(Response::new(pb::CheckAvailabilityResponse {
            available: answer.value.enough,
            available_quantity: answer.value.available as i64,
            read_position: answer.read_position.0,
            upstream_unreachable_since: unreachable_since(&answer),
        }))
    }

    async fn list_reservations(
        &self,
        request: Request<pb::ListReservationsRequest>,
    ) -> Result<Response<pb::ListReservationsResponse>, Status> {
        let (stream, min_position) = convert::list_reservations(request.get_ref())?;
        may_see(&request, &stream.store_id)?;
        let answer = self
            .queries
            .reservations(&stream, min_position, wait(&request))
            .await
            .map_err(|error| query_error(&error))?;
        let reservations = answer
            .value
            .iter()
            .map(|(reservation_id, reservation)| pb::Reservation {
                reservation_id: reservation_id.to_string(),
                customer_id: reservation.customer_id.to_string(),
                quantity: reservation.quantity.get() as i64,
                expires_at: Some(timestamp_to_pb(reservation.expires_at)),
            })
            .collect();
        Ok(Response::new(pb::ListReservationsResponse {
            reservations,
            read_position: answer.read_position.0,
            upstream_unreachable_since: unreachable_since(&answer),
        }))
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        let (reservation_id, store_id, min_position) = convert::get_reservation(request.get_ref())?;
        // A split cart is the business of each of its stores: any of them may read it whole.
        // A caller that sees none of them is told what an unknown id is told.
        let scope = scope(&request)?;
        let sees = |store: &crate::domain::StoreId| scope.allows(store);
        let answer = self
            .queries
            .reservation(
                &reservation_id,
                store_id.as_ref(),
                &sees,
                min_position,
                wait(&request),
            )
            .await
            .map_err(|error| query_error(&error))?;
        let view = &answer.value;
        if !view
            .lines
            .iter()
            .any(|line| scope.allows(&line.stream.store_id))
        {
            return Err(query_error(&QueryError::ReservationNotFound {
                reservation_id,
            }));
        }
        let status = match view.status {
            ReservationStatus::Active => pb::ReservationStatus::Active,
            ReservationStatus::Committed => pb::ReservationStatus::Committed,
            ReservationStatus::Released => pb::ReservationStatus::Released,
            ReservationStatus::Expired => pb::ReservationStatus::Expired,
            ReservationStatus::PartiallyCommitted => pb::ReservationStatus::PartiallyCommitted,
        };
        Ok(Response::new(pb::GetReservationResponse {
            reservation_id: view.reservation_id.to_string(),
            customer_id: view.customer_id.to_string(),
            status: status.into(),
            expires_at: Some(timestamp_to_pb(view.expires_at)),
            lines: view
                .lines
                .iter()
                .map(|line| pb::ReservationLineState {
                    product_id: line.stream.product_id.to_string(),
                    store_id: line.stream.store_id.to_string(),
                    quantity: line.quantity as i64,
                    committed: line.committed as i64,
                    released: line.released as i64,
                })
                .collect(),
            event_positions: view.positions.iter().map(|position| position.0).collect(),
            order_id: view
                .order_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            read_position: answer.read_position.0,
            upstream_unreachable_since: unreachable_since(&answer),
        }))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let query = convert::get_history(request.get_ref())?;
        may_see(&request, &query.stream.store_id)?;
        let answer = self
            .queries
            .history(
                &query.stream,
                query.after,
                query.page_size,
                query.min_position,
                wait(&request),
            )
            .await
            .map_err(|error| query_error(&error))?;
        let page = &answer.value;
        let principal = principal_of(&request)?;
        Ok(Response::new(pb::GetHistoryResponse {
            events: page
                .events
                .iter()
                .map(|event| event_for(event, principal))
                .collect(),
            next_page_token: page
                .next_after
                .map(|version| version.0.to_string())
                .unwrap_or_default(),
            read_position: answer.read_position.0,
            upstream_unreachable_since: unreachable_since(&answer),
        }))
    }

    async fn list_low_stock(
        &self,
        request: Request<pb::ListLowStockRequest>,
    ) -> Result<Response<pb::ListLowStockResponse>, Status> {
        let query = convert::list_low_stock(request.get_ref())?;
        may_see(&request, &query.store_id)?;
        let answer = self
            .queries
            .low_stock(
                &query.store_id,
                query.after.as_ref(),
                query.page_size,
                query.min_position,
                wait(&request),
            )
            .await
            .map_err(|error| query_error(&error))?;
        let page = &answer.value;
        Ok(Response::new(pb::ListLowStockResponse {
            items: page
                .items
                .iter()
                .map(|(stream, stock)| stock_item(stream, stock))
                .collect(),
            next_page_token: page
                .next_after
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            read_position: answer.read_position.0,
            upstream_unreachable_since: unreachable_since(&answer),
        }))
    }

    async fn get_transfer(
        &self,
        request: Request<pb::GetTransferRequest>,
    ) -> Result<Response<pb::GetTransferResponse>, Status> {
        let (transfer_id, from_store, min_position) = convert::get_transfer(request.get_ref())?;
        // A transfer is both stores' business: either may see it. A caller that sees neither
        // is told what an unknown id is told.
        let scope = scope(&request)?;
        let sees = |store: &crate::domain::StoreId| scope.allows(store);
        let answer = self
            .queries
            .transfer(
                &transfer_id,
                from_store.as_ref(),
                &sees,
                min_position,
                wait(&request),
            )
            .await
            .map_err(|error| query_error(&error))?;
        let transfer = &answer.value;
        if !scope.allows(&transfer.from_store) && !scope.allows(&transfer.to_store) {
            return Err(query_error(&QueryError::TransferNotFound { transfer_id }));
        }
        Ok(Response::new(pb::GetTransferResponse {
            transfer: Some(transfer_to_pb(&answer.value)),
            read_position: answer.read_position.0,
            upstream_unreachable_since: unreachable_since(&answer),
        }))
    }

    async fn list_transfers(
        &self,
        request: Request<pb::ListTransfersRequest>,
    ) -> Result<Response<pb::ListTransfersResponse>, Status> {
        let query = convert::list_transfers(request.get_ref())?;
        may_see(&request, &query.store_id)?;
        let answer = self
            .queries
            .transfers(
                &query.store_id,
                query.status,
                query.after.as_ref(),
                query.page_size,
                query.min_position,
                wait(&request),
            )
            .await
            .map_err(|error| query_error(&error))?;
        let page = &answer.value;
        Ok(Response::new(pb::ListTransfersResponse {
            transfers: page.transfers.iter().map(transfer_to_pb).collect(),
            next_page_token: page
                .next_after
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            read_position: answer.read_position.0,
            upstream_unreachable_since: unreachable_since(&answer),
        }))
    }

    async fn get_stock_at(
        &self,
        request: Request<pb::GetStockAtRequest>,
    ) -> Result<Response<pb::GetStockAtResponse>, Status> {
        let (stream, as_of, min_position) = convert::get_stock_at(request.get_ref())?;
        may_see(&request, &stream.store_id)?;
        let answer = self
            .queries
            .stock_at(&stream, as_of, min_position, wait(&request))
            .await
            .map_err(|error| query_error(&error))?;
        Ok(Response::new(pb::GetStockAtResponse {
            item: Some(stock_item(&stream, &answer.value)),
            read_position: answer.read_position.0,
            upstream_unreachable_since: unreachable_since(&answer),
        }))
    }
}
