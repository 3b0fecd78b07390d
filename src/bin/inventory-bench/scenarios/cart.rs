//! cart: 5-line carts over the uniform data set, each reserved (one `ReserveStock` with five
//! lines) and then committed whole. Lines count once when reserved and once when committed,
//! as reserve-uniform counts a reservation and its release as two operations.

use std::sync::Arc;
use std::time::Instant;

use crate::server_process::BenchChannel as Channel;

use super::{Scenario, run_levels, stocked_data_set};
use crate::load::{self, ItemSpace, LoadResult, Operation, Outcome, SplitMix64, Tally};
use crate::pb;
use crate::pb::command_service_client::CommandServiceClient;
use crate::{BenchConfig, BenchError};

/// Lines of every cart.
pub const CART_LINES: usize = 5;

pub async fn run(config: &BenchConfig) -> Result<Vec<LoadResult>, BenchError> {
    let (setup, items, _) = stocked_data_set(config, Scenario::Cart).await?;
    run_levels(
        config,
        Scenario::Cart,
        [setup.command_addr],
        setup.probe,
        |worker, [channel]| ReserveCommitCart {
            client: CommandServiceClient::new(channel),
            items: items.clone(),
            random: SplitMix64::new(worker as u64),
        },
    )
    .await
}

struct ReserveCommitCart {
    client: CommandServiceClient<Channel>,
    items: Arc<ItemSpace>,
    random: SplitMix64,
}

impl Operation for ReserveCommitCart {
    async fn run_once(&mut self, tally: &mut Tally) {
        let lines = (0..CART_LINES)
            .map(|_| {
                let (product_id, store_id) = self.items.key(self.random.below(self.items.len()));
                pb::ReservationLine {
                    product_id,
                    store_id,
                    quantity: 1,
                    expected_version: None,
                }
            })
            .collect();
        let sent_at = Instant::now();
        let reserved = self
            .client
            .reserve_stock(pb::ReserveStockRequest {
                lines,
                customer_id: "bench".to_owned(),
                ..Default::default()
            })
            .await;
        let reservation_id = match reserved {
            Ok(response) => {
                tally.record_lines(sent_at, Outcome::Done, CART_LINES as u64);
                response.into_inner().reservation_id
            }
            Err(status) => {
                tally.record(sent_at, load::classify(&status));
                return;
            }
        };
        // Committed even when the window has ended, so that no cart is left reserved.
        let sent_at = Instant::now();
        let committed = self
            .client
            .commit_reservation(pb::CommitReservationRequest {
                reservation_id,
                order_id: "bench".to_owned(),
                ..Default::default()
            })
            .await;
        match committed {
            Ok(_) => tally.record_lines(sent_at, Outcome::Done, CART_LINES as u64),
            Err(status) => tally.record(sent_at, load::classify(&status)),
        }
    }
}
