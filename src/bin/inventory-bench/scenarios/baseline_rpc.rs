//! baseline-rpc: a health check, the cheapest call the server answers, as the bound the
//! other scenarios are compared with.

use std::time::Instant;

use crate::server_process::BenchChannel as Channel;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::{Scenario, run_levels, setup};
use crate::InventoryCodec;
use crate::load::{self, LoadResult, Operation, Outcome, Tally};
use crate::{BenchConfig, BenchError};

/// `grpc.health.v1.Health/Check`, sent the way the generated clients of this crate send their
/// calls: with [`InventoryCodec`], so that the baseline's client side costs what the
/// scenarios' client side costs and only the server's work differs.
struct HealthCheck {
    grpc: tonic::client::Grpc<Channel>,
}

impl HealthCheck {
    async fn check(&mut self) -> Result<(), tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|error| tonic::Status::unknown(format!("Service was not ready: {error}")))?;
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        // As the generated clients do.
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new("grpc.health.v1.Health", "Check"));
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let codec = InventoryCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        self.grpc.unary(request, path, codec).await.map(|_| ())
    }
}

impl Operation for HealthCheck {
    async fn run_once(&mut self, tally: &mut Tally) {
        let sent_at = Instant::now();
        let outcome = match self.check().await {
            Ok(()) => Outcome::Done,
            Err(status) => load::classify(&status),
        };
        tally.record(sent_at, outcome);
    }
}

pub async fn run(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let setup = setup(config, Scenario::BaselineRpc).await?;
    run_levels(
        config,
        Scenario::BaselineRpc,
        [setup.command_addr],
        setup.probe,
        |_, [channel]| HealthCheck {
            grpc: tonic::client::Grpc::new(channel),
        },
    )
    .await
}
