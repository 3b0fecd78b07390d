//! mixed: nine reads to one command, as a shop front would send them.

use super::reads::{Read, readable_data_set};
use super::reserve_release::{Pick, ReserveRelease};
use super::{Scenario, run_levels};
use crate::load::{LoadResult, Operation, SplitMix64, Tally};
use crate::{BenchConfig, BenchError};

/// 90 % reads, 10 % commands: each run is two requests, a reservation and its release one
/// time in ten, two reads otherwise.
struct Mixed {
    reads: Read,
    commands: ReserveRelease,
    round: u64,
}

impl Operation for Mixed {
    async fn run_once(&mut self, tally: &mut Tally) {
        self.round += 1;
        if self.round.is_multiple_of(10) {
            self.commands.run_once(tally).await;
        } else {
            self.reads.read_one(tally).await;
            self.reads.read_one(tally).await;
        }
    }
}

pub async fn run(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let (setup, items) = readable_data_set(config, Scenario::Mixed).await?;
    run_levels(
        config,
        Scenario::Mixed,
        [setup.command_addr, setup.query_addr],
        setup.probe,
        |worker, [command_channel, query_channel]| Mixed {
            reads: Read::new(query_channel, items.clone(), worker as u64, true),
            commands: ReserveRelease::unpaced(
                command_channel,
                Pick::Uniform(items.clone(), SplitMix64::new(!(worker as u64))),
            ),
            // Spread the workers' command rounds out instead of all at once.
            round: worker as u64,
        },
    )
    .await
}
