//! The command load of the reserve, mixed and subscription-lag scenarios: a reservation of one
//! unit and its release.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::server_process::BenchChannel as Channel;
use tokio::sync::Semaphore;

use super::reserve_stock;
use crate::load::{self, ItemSpace, Operation, Outcome, SplitMix64, Tally, Window};
use crate::pb;
use crate::pb::command_service_client::CommandServiceClient;

/// Which item a reservation worker picks.
pub(super) enum Pick {
    Uniform(Arc<ItemSpace>, SplitMix64),
    One(String, String),
}

impl Pick {
    fn next(&mut self) -> (String, String) {
        match self {
            Pick::Uniform(items, random) => items.key(random.below(items.len())),
            Pick::One(product, store) => (product.clone(), store.clone()),
        }
    }
}

/// Where a paced worker reports the position and time of each acknowledged command.
pub(super) struct Acknowledgements {
    pub(super) epoch: Instant,
    /// (log position, microseconds since `epoch` when the answer arrived)
    pub(super) positions: Arc<Mutex<Vec<(u64, u64)>>>,
}

/// How a worker is paced: waits for a permit of the semaphore before each request, and
/// reports each acknowledgement.
pub(super) struct Pacing {
    pub(super) pace: Arc<Semaphore>,
    pub(super) acknowledgements: Acknowledgements,
}

/// ReserveStock of one unit, then ReleaseReservation of it: two operations, each timed on its
/// own. Optionally paced by a semaphore (one permit per request) and reporting positions.
pub(super) struct ReserveRelease {
    client: CommandServiceClient<Channel>,
    pick: Pick,
    pace: Option<Arc<Semaphore>>,
    acknowledgements: Option<Acknowledgements>,
}

impl ReserveRelease {
    /// A worker that sends its next request as soon as the last one is answered.
    pub(super) fn unpaced(channel: Channel, pick: Pick) -> ReserveRelease {
        ReserveRelease {
            client: CommandServiceClient::new(channel),
            pick,
            pace: None,
            acknowledgements: None,
        }
    }

    /// The same worker, waiting for a permit before each request and reporting each
    /// acknowledgement.
    pub(super) fn paced(self, pacing: Pacing) -> ReserveRelease {
        ReserveRelease {
            pace: Some(pacing.pace),
            acknowledgements: Some(pacing.acknowledgements),
            ..self
        }
    }

    /// Waits for a permit when paced; false when the window ended first.
    async fn permitted(&self, window: Window) -> bool {
        let Some(pace) = &self.pace else {
            return true;
        };
        tokio::select! {
            permit = pace.acquire() => match permit {
                Ok(permit) => {
                    permit.forget();
                    true
                }
                Err(_) => false,
            },
            () = tokio::time::sleep_until(window.end.into()) => false,
        }
    }

    fn acknowledged(&self, position: u64) {
        if let Some(acknowledgements) = &self.acknowledgements {
            let micros = acknowledgements.epoch.elapsed().as_micros() as u64;
            if let Ok(mut positions) = acknowledgements.positions.lock() {
                positions.push((position, micros));
            }
        }
    }
}

fn position_of(result: Option<&pb::CommandResult>) -> u64 {
    result.map_or(0, |result| result.position)
}

impl Operation for ReserveRelease {
    async fn run_once(&mut self, tally: &mut Tally) {
        let window = tally.window();
        if !self.permitted(window).await {
            return;
        }
        let (product, store) = self.pick.next();
        let sent_at = Instant::now();
        let reserved = self
            .client
            .reserve_stock(reserve_stock(product, store, None))
            .await;
        let reservation_id = match reserved {
            Ok(response) => {
                let response = response.into_inner();
                self.acknowledged(position_of(response.result.as_ref()));
                tally.record(sent_at, Outcome::Done);
                response.reservation_id
            }
            Err(status) => {
                tally.record(sent_at, load::classify(&status));
                return;
            }
        };
        if !self.permitted(window).await {
            // The window ended between the two halves: release anyway, untimed, so no
            // reservation is left behind.
            let _ = self
                .client
                .release_reservation(release(reservation_id))
                .await;
            return;
        }
        let sent_at = Instant::now();
        match self
            .client
            .release_reservation(release(reservation_id))
            .await
        {
            Ok(response) => {
                self.acknowledged(position_of(response.into_inner().result.as_ref()));
                tally.record(sent_at, Outcome::Done);
            }
            Err(status) => tally.record(sent_at, load::classify(&status)),
        }
    }
}

fn release(reservation_id: String) -> pb::ReleaseReservationRequest {
    pb::ReleaseReservationRequest {
        reservation_id,
        reason: "bench".to_owned(),
        ..Default::default()
    }
}
