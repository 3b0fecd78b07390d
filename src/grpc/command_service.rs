//! `CommandService`: converts each request, hands it to the command side and answers once the
//! event is durable.

use tonic::{Request, Response, Status};

use crate::app::CommandHandle;
use crate::app::access::Principal;
use crate::app::command::{CommandKind, CommandRequest, StockChange, StockChanges};
use crate::domain::{StockAlert, TransferStatus};
use crate::log::codec::{stock_level_to_pb, timestamp_to_pb};

use super::auth::principal_of;
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
    async fn run<C: CommandKind>(
        &self,
        principal: &Principal,
        request: Result<CommandRequest<C>, Status>,
        lines: Lines,
    ) -> Result<C::Outcome, Status> {
        self.commands
            .execute_as(request?, principal)
            .await
            .map_err(|error| command_error(error, lines))
    }
}

fn results(changes: &StockChanges) -> Vec<pb::CommandResult> {
    changes.changes.iter().filter_map(result).collect()
}

fn result(change: &StockChange) -> Option<pb::CommandResult> {
    Some(pb::CommandResult {
        product_id: change.stream.product_id.to_string(),
        store_id: change.stream.store_id.to_string(),
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
        let change = self
            .run(
                principal_of(&request)?,
                convert::add_stock(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::AddStockResponse {
            result: result(&change),
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        let change = self
            .run(
                principal_of(&request)?,
                convert::adjust_stock(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::AdjustStockResponse {
            result: result(&change),
        }))
    }

    async fn remove_stock(
        &self,
        request: Request<pb::RemoveStockRequest>,
    ) -> Result<Response<pb::RemoveStockResponse>, Status> {
        let change = self
            .run(
                principal_of(&request)?,
                convert::remove_stock(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::RemoveStockResponse {
            result: result(&change),
        }))
    }

    async fn move_stock(
        &self,
        request: Request<pb::MoveStockRequest>,
    ) -> Result<Response<pb::MoveStockResponse>, Status> {
        let change = self
            .run(
                principal_of(&request)?,
                convert::move_stock(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::MoveStockResponse {
            result: result(&change),
        }))
    }

    async fn set_item_policy(
        &self,
        request: Request<pb::SetItemPolicyRequest>,
    ) -> Result<Response<pb::SetItemPolicyResponse>, Status> {
        let change = self
            .run(
                principal_of(&request)?,
                convert::set_item_policy(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::SetItemPolicyResponse {
            result: result(&change),
        }))
    }

    async fn ship_transfer(
        &self,
        request: Request<pb::ShipTransferRequest>,
    ) -> Result<Response<pb::ShipTransferResponse>, Status> {
        let shipped = self
            .run(
                principal_of(&request)?,
                convert::ship_transfer(request.get_ref()),
                Lines::Repeated("lines"),
            )
            .await?;
        Ok(Response::new(pb::ShipTransferResponse {
            transfer_id: shipped.transfer_id.to_string(),
            lines: results(&shipped.changes),
            position: shipped.changes.last().position.0,
        }))
    }

    async fn receive_transfer(
        &self,
        request: Request<pb::ReceiveTransferRequest>,
    ) -> Result<Response<pb::ReceiveTransferResponse>, Status> {
        let received = self
            .run(
                principal_of(&request)?,
                convert::receive_transfer(request.get_ref()),
                Lines::Repeated("lines"),
            )
            .await?;
        Ok(Response::new(pb::ReceiveTransferResponse {
            transfer_id: received.transfer_id.to_string(),
            status: transfer_status_to_pb(received.status) as i32,
            lines: results(&received.changes),
            position: received.changes.last().position.0,
        }))
    }

    async fn cancel_transfer(
        &self,
        request: Request<pb::CancelTransferRequest>,
    ) -> Result<Response<pb::CancelTransferResponse>, Status> {
        let cancelled = self
            .run(
                principal_of(&request)?,
                convert::cancel_transfer(request.get_ref()),
                Lines::Repeated("lines"),
            )
            .await?;
        Ok(Response::new(pb::CancelTransferResponse {
            transfer_id: cancelled.transfer_id.to_string(),
            lines: results(&cancelled.changes),
            position: cancelled.changes.last().position.0,
        }))
    }

    async fn record_count(
        &self,
        request: Request<pb::RecordCountRequest>,
    ) -> Result<Response<pb::RecordCountResponse>, Status> {
        let principal = principal_of(&request)?;
        let counted = self
            .commands
            .record_count_as(convert::record_count(request.get_ref())?, principal)
            .await
            .map_err(|error| command_error(error, Lines::Repeated("lines")))?;
        Ok(Response::new(pb::RecordCountResponse {
            lines: counted
                .changes
                .changes
                .iter()
                .zip(&counted.references)
                .map(|(change, (on_hand_at_count, variance))| pb::CountResult {
                    result: result(change),
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
        let changes = self
            .run(
                principal_of(&request)?,
                convert::apply_stock_changes(request.get_ref()),
                Lines::Repeated("changes"),
            )
            .await?;
        Ok(Response::new(pb::ApplyStockChangesResponse {
            changes: results(&changes),
            position: changes.last().position.0,
        }))
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        let principal = principal_of(&request)?;
        let request = request.get_ref();
        let lines = if request.lines.is_empty() {
            Lines::Single
        } else {
            Lines::Repeated("lines")
        };
        let reservation = self
            .run(principal, convert::reserve_stock(request), lines)
            .await?;
        Ok(Response::new(pb::ReserveStockResponse {
            result: result(reservation.changes.last()),
            reservation_id: reservation.reservation_id.to_string(),
            expires_at: Some(timestamp_to_pb(reservation.expires_at)),
            lines: results(&reservation.changes),
        }))
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        let changes = self
            .run(
                principal_of(&request)?,
                convert::commit_reservation(request.get_ref()),
                Lines::Repeated("lines"),
            )
            .await?;
        Ok(Response::new(pb::CommitReservationResponse {
            result: result(changes.last()),
            lines: results(&changes),
        }))
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        let changes = self
            .run(
                principal_of(&request)?,
                convert::release_reservation(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::ReleaseReservationResponse {
            result: result(changes.last()),
            lines: results(&changes),
        }))
    }

    async fn extend_reservation(
        &self,
        request: Request<pb::ExtendReservationRequest>,
    ) -> Result<Response<pb::ExtendReservationResponse>, Status> {
        let extended = self
            .run(
                principal_of(&request)?,
                convert::extend_reservation(request.get_ref()),
                Lines::Single,
            )
            .await?;
        Ok(Response::new(pb::ExtendReservationResponse {
            result: result(extended.changes.last()),
            expires_at: Some(timestamp_to_pb(extended.expires_at)),
            lines: results(&extended.changes),
        }))
    }
}
