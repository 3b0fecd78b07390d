//! `CommandService`: converts each request, hands it to the command side and answers once the
//! event is durable.

use tonic::{Request, Response, Status};

use crate::app::CommandHandle;
use crate::app::command::{CommandKind, CommandRequest, StockChange};
use crate::log::codec::{stock_level_to_pb, timestamp_to_pb};

use super::convert;
use super::pb;
use super::status::command_error;

pub struct CommandApi {
    commands: CommandHandle,
}

impl CommandApi {
    pub fn new(commands: CommandHandle) -> CommandApi {
        CommandApi { commands }
    }

    /// The one call into the command side per command.
    async fn run<C: CommandKind>(
        &self,
        request: Result<CommandRequest<C>, Status>,
    ) -> Result<C::Outcome, Status> {
        self.commands.execute(request?).await.map_err(command_error)
    }
}

fn result(change: &StockChange) -> Option<pb::CommandResult> {
    Some(pb::CommandResult {
        product_id: change.stream.product_id.to_string(),
        store_id: change.stream.store_id.to_string(),
        version: change.version.0,
        position: change.position.0,
        stock: Some(stock_level_to_pb(change.stock)),
        replayed: change.replayed,
    })
}

#[tonic::async_trait]
impl pb::command_service_server::CommandService for CommandApi {
    async fn add_stock(
        &self,
        request: Request<pb::AddStockRequest>,
    ) -> Result<Response<pb::AddStockResponse>, Status> {
        let change = self.run(convert::add_stock(request.get_ref())).await?;
        Ok(Response::new(pb::AddStockResponse {
            result: result(&change),
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        let change = self.run(convert::adjust_stock(request.get_ref())).await?;
        Ok(Response::new(pb::AdjustStockResponse {
            result: result(&change),
        }))
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        let reservation = self.run(convert::reserve_stock(request.get_ref())).await?;
        Ok(Response::new(pb::ReserveStockResponse {
            result: result(&reservation.change),
            reservation_id: reservation.reservation_id.to_string(),
            expires_at: Some(timestamp_to_pb(reservation.expires_at)),
        }))
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        let change = self
            .run(convert::commit_reservation(request.get_ref()))
            .await?;
        Ok(Response::new(pb::CommitReservationResponse {
            result: result(&change),
        }))
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        let change = self
            .run(convert::release_reservation(request.get_ref()))
            .await?;
        Ok(Response::new(pb::ReleaseReservationResponse {
            result: result(&change),
        }))
    }
}
