//! `CommandService`: converts each request, hands it to the command side and answers once the
//! event is durable.

use tonic::{Request, Response, Status};

use crate::app::CommandHandle;
use crate::app::access::Principal;
use crate::app::command::{CommandKind, CommandRequest, StockChange, StockChanges};
use crate::domain::{StockAlert, TransferStatus};
use crate::log::codec::{stock_level_to_pb, timestamp_to_pb};

use super::auth::{budget_of, principal_of};
use super::budget::OverBudget;
use super::convert;
use super::pb;
use super::status::{Lines, command_error};

pub struct CommandApi {
    commands: CommandHandle,
}

impl CommandApi {
    pub fn new(commands: CommandHandle) -> CommandApi {
        CommandApi { commands }
    }

    /// The one call into the command side per command, on behalf of `principal`; `lines` says
    /// how the request names its items, for errors about them.
    async fn run<C: CommandKind, T>(
        &self,
        caller: &Request<T>,
        request: Result<CommandRequest<C>, Status>,
        lines: Lines,
    ) -> Result<C::Outcome, Status> {
        let request = request?;
        charge_lines(caller, request.command.lines())?;
        self.commands
            .execute_as(request, principal_of(caller)?)
            .await
            .map_err(|error| command_error(error, lines))
    }
}

/// Counts a command's lines against its principal's `lines_per_second`.
fn charge_lines<T>(caller: &Request<T>, lines: usize) -> Result<(), Status> {
    match budget_of(caller) {
        Some(budget) => budget.charge_lines(lines).map_err(OverBudget::status),
        None => Ok(()),
    }
}

fn results(changes: &StockChanges, principal: &Principal) -> Vec<pb::CommandResult> {
    changes
        .changes
        .iter()
        .filter_map(|change| result(change, principal))
        .collect()
}

/// One item after a command, as far as `principal` may read it: of a store outside its scope
/// (a transfer's destination, the source of a transfer it received or cancelled) it learns
/// only that the item changed, not its stock, version or alerts.
fn result(change: &StockChange, principal: &Principal) -> Option<pb::CommandResult> {
    if !principal.stores.allows(&change.stream.store_id) {
        return Some(pb::CommandResult {
            product_id: change.stream.product_id.to_string(),
            store_id: change.stream.store_id.to_string(),
            position: change.position.0,
            replayed: change.replayed,
            withheld: true,
            ..pb::CommandResult::default()
        });
    }
    Some(pb::CommandResult {
        product_id: change.stream.product_id.to_string(),
        store_id: change.stream.store_id.to_string(),
        withheld: false,
        version: change.version.0,
        position: change.position.0,
        stock: Some(stock_level_to_pb(change.stock)),
        replayed: change.replayed,
        alerts: change
            .alerts
            .iter()
            .map(|alert| alert_event_type(*alert) as i32)
            .collect(),
    })
}

pub fn transfer_status_to_pb(status: TransferStatus) -> pb::TransferStatus {
    match status {
        TransferStatus::InTransit => pb::TransferStatus::InTransit,
        TransferStatus::PartiallyReceived => pb::TransferStatus::PartiallyReceived,
        TransferStatus::Received => pb::TransferStatus::Received,
        TransferStatus::Cancelled => pb::TransferStatus::Cancelled,
    }
}

fn alert_event_type(alert: StockAlert) -> pb::EventType {
    match alert {
        StockAlert::StockLow => pb::EventType::StockLow,
        StockAlert::OutOfStock => pb::EventType::OutOfStock,
        StockAlert::BackInStock => pb::EventType::BackInStock,
        StockAlert::StockShort => pb::EventType::StockShort,
    }
}

#[tonic::async_trait]
impl pb::command_service_server::CommandService for CommandApi {
    async fn add_stock(
        &self,
        request: Request<pb::AddStockRequest>,
    ) -> Result<Response<pb::AddStockResponse>, Status> {
        let principal = principal_of(&request)?;
        let change = self
            .run(
                &request,
                convert::add_stock(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::AddStockResponse {
            result: result(&change, principal),
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        let principal = principal_of(&request)?;
        let change = self
            .run(
                &request,
                convert::adjust_stock(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::AdjustStockResponse {
            result: result(&change, principal),
        }))
    }

    async fn remove_stock(
        &self,
        request: Request<pb::RemoveStockRequest>,
    ) -> Result<Response<pb::RemoveStockResponse>, Status> {
        let principal = principal_of(&request)?;
        let change = self
            .run(
                &request,
                convert::remove_stock(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::RemoveStockResponse {
            result: result(&change, principal),
        }))
    }

    async fn move_stock(
        &self,
        request: Request<pb::MoveStockRequest>,
    ) -> Result<Response<pb::MoveStockResponse>, Status> {
        let principal = principal_of(&request)?;
        let change = self
            .run(
                &request,
                convert::move_stock(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::MoveStockResponse {
            result: result(&change, principal),
        }))
    }

    async fn set_item_policy(
        &self,
        request: Request<pb::SetItemPolicyRequest>,
    ) -> Result<Response<pb::SetItemPolicyResponse>, Status> {
        let principal = principal_of(&request)?;
        let change = self
            .run(
                &request,
                convert::set_item_policy(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::SetItemPolicyResponse {
            result: result(&change, principal),
        }))
    }

    async fn ship_transfer(
        &self,
        request: Request<pb::ShipTransferRequest>,
    ) -> Result<Response<pb::ShipTransferResponse>, Status> {
        let principal = principal_of(&request)?;
        let shipped = self
            .run(
                &request,
                convert::ship_transfer(request.get_ref()),
                Lines::Repeated("lines"),
            )
            .await?;
        Ok(Response::new(pb::ShipTransferResponse {
            transfer_id: shipped.transfer_id.to_string(),
            lines: results(&shipped.changes, principal),
            position: shipped.changes.last().position.0,
        }))
    }

    async fn receive_transfer(
        &self,
        request: Request<pb::ReceiveTransferRequest>,
    ) -> Result<Response<pb::ReceiveTransferResponse>, Status> {
        let principal = principal_of(&request)?;
        let received = self
            .run(
                &request,
                convert::receive_transfer(request.get_ref()),
                Lines::Repeated("lines"),
            )
            .await?;
        Ok(Response::new(pb::ReceiveTransferResponse {
            transfer_id: received.transfer_id.to_string(),
            status: transfer_status_to_pb(received.status) as i32,
            lines: results(&received.changes, principal),
            position: received.changes.last().position.0,
        }))
    }

    async fn cancel_transfer(
        &self,
        request: Request<pb::CancelTransferRequest>,
    ) -> Result<Response<pb::CancelTransferResponse>, Status> {
        let principal = principal_of(&request)?;
        let cancelled = self
            .run(
                &request,
                convert::cancel_transfer(request.get_ref()),
                Lines::Repeated("lines"),
            )
            .await?;
        Ok(Response::new(pb::CancelTransferResponse {
            transfer_id: cancelled.transfer_id.to_string(),
            lines: results(&cancelled.changes, principal),
            position: cancelled.changes.last().position.0,
        }))
    }

    async fn record_count(
        &self,
        request: Request<pb::RecordCountRequest>,
    ) -> Result<Response<pb::RecordCountResponse>, Status> {
        let principal = principal_of(&request)?;
        let sheet = convert::record_count(request.get_ref())?;
        charge_lines(&request, request.get_ref().lines.len())?;
        let counted = self
            .commands
            .record_count_as(sheet, principal)
            .await
            .map_err(|error| command_error(error, Lines::Repeated("lines")))?;
        Ok(Response::new(pb::RecordCountResponse {
            lines: counted
                .changes
                .changes
                .iter()
                .zip(&counted.references)
                .map(|(change, (on_hand_at_count, variance))| pb::CountResult {
                    result: result(change, principal),
                    on_hand_at_count: *on_hand_at_count as i64,
                    variance: *variance,
                })
                .collect(),
            position: counted.changes.last().position.0,
        }))
    }

    async fn apply_stock_changes(
        &self,
        request: Request<pb::ApplyStockChangesRequest>,
    ) -> Result<Response<pb::ApplyStockChangesResponse>, Status> {
        let principal = principal_of(&request)?;
        let changes = self
            .run(
                &request,
                convert::apply_stock_changes(request.get_ref()),
                Lines::Repeated("changes"),
            )
            .await?;
        Ok(Response::new(pb::ApplyStockChangesResponse {
            changes: results(&changes, principal),
            position: changes.last().position.0,
        }))
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        let principal = principal_of(&request)?;
        let body = request.get_ref();
        let lines = if body.lines.is_empty() {
            Lines::Single
        } else {
            Lines::Repeated("lines")
        };
        let reservation = self
            .run(&request, convert::reserve_stock(body), lines)
            .await?;
        Ok(Response::new(pb::ReserveStockResponse {
            result: result(reservation.changes.last(), principal),
            reservation_id: reservation.reservation_id.to_string(),
            expires_at: Some(timestamp_to_pb(reservation.expires_at)),
            lines: results(&reservation.changes, principal),
        }))
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        let principal = principal_of(&request)?;
        let changes = self
            .run(
                &request,
                convert::commit_reservation(request.get_ref()),
                Lines::Repeated("lines"),
            )
            .await?;
        Ok(Response::new(pb::CommitReservationResponse {
            result: result(changes.last(), principal),
            lines: results(&changes, principal),
        }))
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        let principal = principal_of(&request)?;
        let changes = self
            .run(
                &request,
                convert::release_reservation(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::ReleaseReservationResponse {
            result: result(changes.last(), principal),
            lines: results(&changes, principal),
        }))
    }

    async fn extend_reservation(
        &self,
        request: Request<pb::ExtendReservationRequest>,
    ) -> Result<Response<pb::ExtendReservationResponse>, Status> {
        let principal = principal_of(&request)?;
        let extended = self
            .run(
                &request,
                convert::extend_reservation(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::ExtendReservationResponse {
            result: result(extended.changes.last(), principal),
            expires_at: Some(timestamp_to_pb(extended.expires_at)),
            lines: results(&extended.changes, principal),
        }))
    }
}
