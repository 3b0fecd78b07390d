//! `DeliveryService`: the outbound sinks' status, and the operator's resume and rewind.
//! Admins only (the auth layer checks the role); a store-scoped admin is refused, since a
//! sink carries every store's events.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::principal_of;
use super::pb;
use super::status::{FieldViolation, control_error, invalid_argument};
use crate::app::access::StoreScope;
use crate::delivery::{Deliveries, SinkState, SinkStatus};
use crate::domain::LogPosition;
use crate::log::EventLog;
use crate::log::codec::timestamp_to_pb;

pub struct DeliveryApi {
    deliveries: Deliveries,
    log: Arc<dyn EventLog>,
}

impl DeliveryApi {
    pub fn new(deliveries: Deliveries, log: Arc<dyn EventLog>) -> DeliveryApi {
        DeliveryApi { deliveries, log }
    }
}

fn every_store<T>(request: &Request<T>) -> Result<(), Status> {
    let principal = principal_of(request)?;
    if principal.stores != StoreScope::All {
        return Err(Status::permission_denied(format!(
            "{} may act on some stores only; a sink carries every store's events, so operating \
             sinks needs an admin credential for all stores",
            principal.name
        )));
    }
    Ok(())
}

fn status_to_pb(status: SinkStatus) -> pb::SinkStatus {
    pb::SinkStatus {
        name: status.name,
        kind: status.kind.to_owned(),
        state: match status.state {
            SinkState::Running => pb::SinkState::Running,
            SinkState::Retrying => pb::SinkState::Retrying,
            SinkState::Parked => pb::SinkState::Parked,
        } as i32,
        position: status.position.0,
        lag_events: status.lag_events,
        last_error: status.last_error.unwrap_or_default(),
        last_success: status.last_success.map(timestamp_to_pb),
        failing_since: status.failing_since.map(timestamp_to_pb),
        delivered_events: status.delivered_events,
        failures: status.failures,
        redelivered_events: status.redelivered_events,
        active: status.active,
    }
}

fn checked_name(name: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(invalid_argument(&[FieldViolation::new(
            "name",
            "missing: the sink's name, as ListSinks shows it",
        )]));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::delivery_service_server::DeliveryService for DeliveryApi {
    async fn list_sinks(
        &self,
        request: Request<pb::ListSinksRequest>,
    ) -> Result<Response<pb::ListSinksResponse>, Status> {
        every_store(&request)?;
        let head = self.log.head();
        Ok(Response::new(pb::ListSinksResponse {
            sinks: self
                .deliveries
                .list()
                .into_iter()
                .map(status_to_pb)
                .collect(),
            head: head.0,
        }))
    }

    async fn resume_sink(
        &self,
        request: Request<pb::ResumeSinkRequest>,
    ) -> Result<Response<pb::SinkStatus>, Status> {
        every_store(&request)?;
        let name = &request.get_ref().name;
        checked_name(name)?;
        let status = self.deliveries.resume(name).await.map_err(control_error)?;
        tracing::info!(sink = name, "sink resumed by an operator");
        Ok(Response::new(status_to_pb(status)))
    }

    async fn rewind_sink(
        &self,
        request: Request<pb::RewindSinkRequest>,
    ) -> Result<Response<pb::SinkStatus>, Status> {
        every_store(&request)?;
        let body = request.get_ref();
        checked_name(&body.name)?;
        let head = self
            .log
            .latest_head()
            .await
            .map_err(|error| super::status::log_error(&error))?;
        let status = self
            .deliveries
            .rewind(&body.name, LogPosition(body.position), head)
            .await
            .map_err(control_error)?;
        tracing::info!(
            sink = body.name,
            position = body.position,
            "sink rewound by an operator"
        );
        Ok(Response::new(status_to_pb(status)))
    }
}
