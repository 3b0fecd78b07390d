//! reserve-hot: every reservation and release on one item, the worst case for the command
//! side's per-item ordering.

use super::reserve_release::{Pick, ReserveRelease};
use super::{Scenario, add_stock, run_levels, run_prefix, setup};
use crate::load::LoadResult;
use crate::pb::command_service_client::CommandServiceClient;
use crate::server_process::connect;
use crate::{BenchConfig, BenchError};

/// Stock of the hot item: enough for every reservation the run can make.
const HOT_ITEM_STOCK: i64 = 1_000_000_000_000_000;

pub async fn run(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let setup = setup(config, Scenario::ReserveHot).await?;
    let prefix = run_prefix(config);
    let (product, store) = (format!("{prefix}hot"), format!("{prefix}hot-store"));
    let mut commands = CommandServiceClient::new(connect(setup.command_addr).await?);
    commands
        .add_stock(add_stock(product.clone(), store.clone(), HOT_ITEM_STOCK))
        .await
        .map_err(BenchError::rpc("stocking the hot item"))?;
    run_levels(
        config,
        Scenario::ReserveHot,
        [setup.command_addr],
        setup.probe,
        |_, [channel]| ReserveRelease::unpaced(channel, Pick::One(product.clone(), store.clone())),
    )
    .await
}
