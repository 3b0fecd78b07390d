//! reserve-uniform: reservations and releases spread uniformly over the data set's items.

use super::reserve_release::{Pick, ReserveRelease};
use super::{Scenario, run_levels, stocked_data_set};
use crate::load::{LoadResult, SplitMix64};
use crate::{BenchConfig, BenchError};

pub async fn run(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let (setup, items, _) = stocked_data_set(config, Scenario::ReserveUniform).await?;
    run_levels(
        config,
        Scenario::ReserveUniform,
        [setup.command_addr],
        setup.probe,
        |worker, [channel]| {
            ReserveRelease::unpaced(
                channel,
                Pick::Uniform(items.clone(), SplitMix64::new(worker as u64)),
            )
        },
    )
    .await
}
