//! `CommandService`: validates each request, hands it to the command side's writer and answers
//! once the event is durable.

use tonic::{Request, Response, Status};

use super::pb;
use crate::app::command::CommandTrace;
use crate::app::{CommandHandle, CommandOutcome};
use crate::log::codec::{stock_level_to_pb, timestamp_to_pb};
use crate::telemetry;

use super::convert;
use super::status::command_error;

pub struct CommandApi {
    commands: CommandHandle,
}

impl CommandApi {
    pub fn new(commands: CommandHandle) -> CommandApi {
        CommandApi { commands }
    }

    async fn run(
        &self,
        request: Result<crate::app::CommandRequest, Status>,
    ) -> Result<CommandOutcome, Status> {
        let mut request = request?;
        if telemetry::enabled() {
            // The RPC layer's server span, which continues the client's trace.
            let span = tracing::Span::current();
            request.trace = telemetry::traceparent(&span)
                .map(|trace_parent| CommandTrace { span, trace_parent });
        }
        self.commands.execute(request).await.map_err(command_error)
    }
}

fn result(outcome: &CommandOutcome) -> Option<pb::CommandResult> {
    Some(pb::CommandResult {
        product_id: outcome.stream.product_id.to_string(),
        store_id: outcome.stream.store_id.to_string(),
        version: outcome.version.0,
        position: outcome.position.0,
        stock: Some(stock_level_to_pb(outcome.stock)),
        replayed: outcome.replayed,
    })
}

#[tonic::async_trait]
impl pb::command_service_server::CommandService for CommandApi {
    async fn add_stock(
        &self,
        request: Request<pb::AddStockRequest>,
    ) -> Result<Response<pb::AddStockResponse>, Status> {
        let outcome = self.run(convert::add_stock(request.get_ref())).await?;
        Ok(Response::new(pb::AddStockResponse {
            result: result(&outcome),
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        let outcome = self.run(convert::adjust_stock(request.get_ref())).await?;
        Ok(Response::new(pb::AdjustStockResponse {
            result: result(&outcome),
        }))
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        let outcome = self.run(convert::reserve_stock(request.get_ref())).await?;
        let (reservation_id, expires_at) = outcome
            .reservation
            .clone()
            .ok_or_else(|| Status::internal("command id was used for another kind of command"))?;
        Ok(Response::new(pb::ReserveStockResponse {
            result: result(&outcome),
            reservation_id: reservation_id.to_string(),
            expires_at: Some(timestamp_to_pb(expires_at)),
        }))
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        let outcome = self
            .run(convert::commit_reservation(request.get_ref()))
            .await?;
        Ok(Response::new(pb::CommitReservationResponse {
            result: result(&outcome),
        }))
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        let outcome = self
            .run(convert::release_reservation(request.get_ref()))
            .await?;
        Ok(Response::new(pb::ReleaseReservationResponse {
            result: result(&outcome),
        }))
    }
}
