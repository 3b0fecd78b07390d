//! reads: GetStock and CheckAvailability over the data set's items, from the read model.

use std::sync::Arc;
use std::time::Instant;

use tonic::transport::Channel;

use super::{STOCK_PER_ITEM, Scenario, run_levels, setup, stock_items, uniform_items};
use crate::load::{self, ItemSpace, LoadResult, Operation, Outcome, SplitMix64, Tally};
use crate::pb;
use crate::pb::query_service_client::QueryServiceClient;
use crate::server_process::connect;
use crate::{BenchConfig, BenchError};

/// GetStock and CheckAvailability, alternating, each one operation.
pub(super) struct Read {
    pub(super) client: QueryServiceClient<Channel>,
    pub(super) items: Arc<ItemSpace>,
    pub(super) random: SplitMix64,
    pub(super) check_next: bool,
}

impl Read {
    pub(super) async fn read_one(&mut self, tally: &mut Tally) {
        let (product_id, store_id) = self.items.key(self.random.below(self.items.len()));
        self.check_next = !self.check_next;
        let sent_at = Instant::now();
        let answer = if self.check_next {
            self.client
                .check_availability(pb::CheckAvailabilityRequest {
                    product_id,
                    store_id,
                    quantity: 1,
                    min_position: None,
                })
                .await
                .map(|_| ())
        } else {
            self.client
                .get_stock(pb::GetStockRequest {
                    product_id,
                    store_id,
                    min_position: None,
                })
                .await
                .map(|_| ())
        };
        let outcome = match answer {
            Ok(()) => Outcome::Done,
            Err(status) => load::classify(&status),
        };
        tally.record(sent_at, outcome);
    }
}

impl Operation for Read {
    async fn run_once(&mut self, tally: &mut Tally) {
        self.read_one(tally).await;
    }
}

pub async fn run(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let setup = setup(config, Scenario::Reads).await?;
    let items = uniform_items(config);
    let position = stock_items(setup.command_addr, &items, STOCK_PER_ITEM).await?;
    wait_until_readable(setup.query_addr, &items, position).await?;
    run_levels(
        config,
        Scenario::Reads,
        setup.query_addr,
        setup.probe,
        |worker, channel| Read {
            client: QueryServiceClient::new(channel),
            items: items.clone(),
            random: SplitMix64::new(worker as u64),
            check_next: worker % 2 == 0,
        },
    )
    .await
}

/// Waits until the read model has applied `position` (the end of the data set), so reads
/// never measure the projection catching up.
pub(super) async fn wait_until_readable(
    query_addr: std::net::SocketAddr,
    items: &ItemSpace,
    position: u64,
) -> Result<(), BenchError> {
    let mut queries = QueryServiceClient::new(connect(query_addr).await?);
    let (product_id, store_id) = items.key(0);
    queries
        .get_stock(pb::GetStockRequest {
            product_id,
            store_id,
            min_position: Some(position),
        })
        .await
        .map_err(BenchError::rpc("waiting for the read model"))?;
    Ok(())
}
