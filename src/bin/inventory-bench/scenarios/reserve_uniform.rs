//! reserve-uniform: reservations and releases spread uniformly over the data set's items.

use super::reserve_release::{Pick, ReserveRelease};
use super::{STOCK_PER_ITEM, Scenario, run_levels, setup, stock_items, uniform_items};
use crate::load::{LoadResult, SplitMix64};
use crate::pb::command_service_client::CommandServiceClient;
use crate::{BenchConfig, BenchError};

pub async fn run(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let setup = setup(config, Scenario::ReserveUniform).await?;
    let items = uniform_items(config);
    stock_items(setup.command_addr, &items, STOCK_PER_ITEM).await?;
    run_levels(
        config,
        Scenario::ReserveUniform,
        setup.command_addr,
        setup.probe,
        |worker, channel| ReserveRelease {
            client: CommandServiceClient::new(channel),
            pick: Pick::Uniform(items.clone(), SplitMix64::new(worker as u64)),
            pace: None,
            acknowledgements: None,
        },
    )
    .await
}
