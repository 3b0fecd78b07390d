//! bulk: `ApplyStockChanges` of 1,000 changes (a delivery note adding one unit to each of
//! 1,000 consecutive items of the uniform data set), 4 in flight. Each change is a line.

use std::sync::Arc;
use std::time::Instant;

use crate::server_process::BenchChannel as Channel;

use super::{Scenario, run_levels_at, stocked_data_set};
use crate::load::{self, ItemSpace, LoadResult, Operation, Outcome, SplitMix64, Tally};
use crate::pb;
use crate::pb::command_service_client::CommandServiceClient;
use crate::{BenchConfig, BenchError};

/// Changes of every request (fewer when the data set has fewer items).
pub const BULK_CHANGES: u64 = 1_000;

/// Requests in flight.
pub const BULK_IN_FLIGHT: usize = 4;

pub async fn run(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let (setup, items, _) = stocked_data_set(config, Scenario::Bulk).await?;
    run_levels_at(
        config,
        &[BULK_IN_FLIGHT],
        Scenario::Bulk,
        [setup.command_addr],
        setup.probe,
        |worker, [channel]| DeliveryNote {
            client: CommandServiceClient::new(channel),
            items: items.clone(),
            random: SplitMix64::new(worker as u64),
        },
    )
    .await
}

struct DeliveryNote {
    client: CommandServiceClient<Channel>,
    items: Arc<ItemSpace>,
    random: SplitMix64,
}

impl Operation for DeliveryNote {
    async fn run_once(&mut self, tally: &mut Tally) {
        let count = BULK_CHANGES.min(self.items.len());
        let first = self.random.below(self.items.len());
        let changes: Vec<pb::StockChange> = (0..count)
            .map(|offset| self.items.receipt((first + offset) % self.items.len()))
            .collect();
        let sent_at = Instant::now();
        let applied = self
            .client
            .apply_stock_changes(pb::ApplyStockChangesRequest {
                changes,
                reason: "bench delivery".to_owned(),
                command_id: String::new(),
            })
            .await;
        match applied {
            Ok(_) => tally.record_lines(sent_at, Outcome::Done, count),
            Err(status) => tally.record(sent_at, load::classify(&status)),
        }
    }
}
