//! mixed: nine reads to one command, as a shop front would send them.

use super::reads::{Read, wait_until_readable};
use super::reserve_release::{Pick, ReserveRelease};
use super::{STOCK_PER_ITEM, Scenario, one_line, setup, stock_items, uniform_items};
use crate::load::{self, LoadResult, Operation, SplitMix64, Tally, Window};
use crate::pb::command_service_client::CommandServiceClient;
use crate::pb::query_service_client::QueryServiceClient;
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
    let setup = setup(config, Scenario::Mixed).await?;
    let items = uniform_items(config);
    let position = stock_items(setup.command_addr, &items, STOCK_PER_ITEM).await?;
    wait_until_readable(setup.query_addr, &items, position).await?;
    let mut results = Vec::new();
    for &level in &config.levels {
        let connections = load::connections_for_level(level);
        let command_channels = load::connect_all(setup.command_addr, connections).await?;
        let query_channels = load::connect_all(setup.query_addr, connections).await?;
        let operations = (0..level)
            .map(|worker| Mixed {
                reads: Read {
                    client: QueryServiceClient::new(query_channels[worker % connections].clone()),
                    items: items.clone(),
                    random: SplitMix64::new(worker as u64),
                    check_next: false,
                },
                commands: ReserveRelease {
                    client: CommandServiceClient::new(
                        command_channels[worker % connections].clone(),
                    ),
                    pick: Pick::Uniform(items.clone(), SplitMix64::new(!(worker as u64))),
                    pace: None,
                    acknowledgements: None,
                },
                // Spread the workers' command rounds out instead of all at once.
                round: worker as u64,
            })
            .collect();
        let window = Window::after_warmup(config.warmup, config.duration);
        let result = load::drive(
            Scenario::Mixed.name(),
            operations,
            connections,
            window,
            setup.probe,
        )
        .await?;
        eprintln!("  {}", one_line(&result));
        results.push(result);
    }
    Ok(results)
}
