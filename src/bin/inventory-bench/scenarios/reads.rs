//! reads: GetStock and CheckAvailability over the data set's items, from the read model.

use std::sync::Arc;
use std::time::Instant;

use crate::server_process::BenchChannel as Channel;

use super::{Scenario, Setup, run_levels, stocked_data_set};
use crate::load::{self, ItemSpace, LoadResult, Operation, Outcome, SplitMix64, Tally};
use crate::pb;
use crate::pb::query_service_client::QueryServiceClient;
use crate::server_process::connect;
use crate::{BenchConfig, BenchError};

/// GetStock and CheckAvailability, alternating, each one operation.
pub(super) struct Read {
    client: QueryServiceClient<Channel>,
    items: Arc<ItemSpace>,
    random: SplitMix64,
    /// Flipped before each read: the read is a CheckAvailability when it is then true.
    check_next: bool,
}

impl Read {
    /// A reader of random items (seeded with `seed`) whose first read is a CheckAvailability
    /// when `starts_with_check`, a GetStock otherwise.
    pub(super) fn new(
        channel: Channel,
        items: Arc<ItemSpace>,
        seed: u64,
        starts_with_check: bool,
    ) -> Read {
        Read {
            client: QueryServiceClient::new(channel),
            items,
            random: SplitMix64::new(seed),
            check_next: !starts_with_check,
        }
    }

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
    let (setup, items) = readable_data_set(config, Scenario::Reads).await?;
    run_levels(
        config,
        Scenario::Reads,
        [setup.query_addr],
        setup.probe,
        // Half the workers start with each kind of read, so both are always in flight.
        |worker, [channel]| Read::new(channel, items.clone(), worker as u64, worker % 2 == 1),
    )
    .await
}

/// The uniform data set, stocked, on a server of its own for `scenario`, once the read model
/// has applied all of it.
pub(super) async fn readable_data_set(
    config: &BenchConfig,
    scenario: Scenario,
) -> Result<(Setup, Arc<ItemSpace>), BenchError> {
    let (setup, items, position) = stocked_data_set(config, scenario).await?;
    wait_until_readable(setup.query_addr, &items, position).await?;
    Ok((setup, items))
}

/// Waits until the read model has applied `position` (the end of the data set), so reads
/// never measure the projection catching up.
async fn wait_until_readable(
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
