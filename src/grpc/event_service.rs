//! `EventService`: streams the log's events to subscribers, at most
//! [`MAX_SUBSCRIPTIONS`] at once per server.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::pb;
use crate::app::access::{Principal, Role};
use crate::app::{STALLED_AFTER, Shutdown, Subscription, SubscriptionItem, subscribe_with_stall};
use crate::domain::LogPosition;
use crate::log::EventLog;

use super::auth::{budget_of, principal_of};
use super::budget::OverBudget;
use super::convert;
use super::query_service::event_for;
use super::status::{access_error, log_error};

/// The most concurrent subscriptions one server serves; past it, `RESOURCE_EXHAUSTED`.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// Of [`MAX_SUBSCRIPTIONS`], how many only `admin` and `replica` principals may take: however
/// many streams other credentials open, a following query server and an operator still get
/// theirs.
pub const RESERVED_SUBSCRIPTIONS: usize = 64;

pub struct EventApi {
    log: Arc<dyn EventLog>,
    shutdown: Shutdown,
    /// Slots any principal may take.
    open: Arc<Semaphore>,
    /// Slots only `admin` and `replica` take, once the open ones are gone.
    reserved: Arc<Semaphore>,
    subscriptions_limit: usize,
    stalled_after: Duration,
}

impl EventApi {
    pub fn new(log: Arc<dyn EventLog>, shutdown: Shutdown) -> EventApi {
        EventApi::with_limit(log, shutdown, MAX_SUBSCRIPTIONS)
    }

    pub fn with_limit(log: Arc<dyn EventLog>, shutdown: Shutdown, limit: usize) -> EventApi {
        let reserved = RESERVED_SUBSCRIPTIONS.min(limit / 8);
        EventApi {
            log,
            shutdown,
            open: Arc::new(Semaphore::new(limit - reserved)),
            reserved: Arc::new(Semaphore::new(reserved)),
            subscriptions_limit: limit,
            stalled_after: STALLED_AFTER,
        }
    }

    /// Cuts a consumer that takes nothing off after `stalled_after` rather than
    /// [`STALLED_AFTER`] (for tests).
    pub fn with_stall(mut self, stalled_after: Duration) -> EventApi {
        self.stalled_after = stalled_after;
        self
    }

    /// A server slot for a subscription of `principal`, held as long as the stream.
    fn slot(&self, principal: &Principal) -> Result<OwnedSemaphorePermit, Status> {
        self.open
            .clone()
            .try_acquire_owned()
            .or_else(|error| match principal.role {
                Role::Admin | Role::Replica => self.reserved.clone().try_acquire_owned(),
                Role::Operator | Role::Sales | Role::Reader => Err(error),
            })
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "this server already serves its limit of {} subscriptions; \
                     retry later or subscribe to another server",
                    self.subscriptions_limit
                ))
            })
    }
}

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::event_service_server::EventService for EventApi {
    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let body = request.get_ref();
        let mut filter = convert::event_filter(body.filter.as_ref())?;
        let principal = principal_of(&request)?.clone();
        principal
            .stores
            .restrict(&mut filter)
            .map_err(|error| access_error(&error))?;
        let from = LogPosition(body.from_position);
        // The principal's own budget first, then a server slot: both held by the stream.
        let own = budget_of(&request)
            .map(|budget| budget.open_subscription())
            .transpose()
            .map_err(OverBudget::status)?
            .flatten();
        let permit = self.slot(&principal)?;
        let Subscription { items, stalled } = subscribe_with_stall(
            self.log.clone(),
            from,
            filter,
            self.shutdown.clone(),
            self.stalled_after,
        );
        let stalled_after = self.stalled_after;
        let stream = ReceiverStream::new(items).map(move |item| {
            // The permits live as long as the stream: they are released when the subscriber
            // disconnects or the stream ends.
            let _permits = (&permit, &own);
            // tonic ends the stream with the first error it is given.
            if stalled.load(Ordering::Acquire) {
                return Err(Status::resource_exhausted(format!(
                    "this subscription took nothing for {}s while events waited, and was cut \
                     off; subscribe again from the last position you processed",
                    stalled_after.as_secs()
                )));
            }
            use pb::subscribe_response::Message;
            let message = match item {
                Ok(SubscriptionItem::Event(event)) => Message::Event(event_for(&event, &principal)),
                Ok(SubscriptionItem::CaughtUp(position)) => Message::CaughtUp(pb::CaughtUp {
                    position: position.0,
                }),
                Ok(SubscriptionItem::Checkpoint(position)) => Message::Checkpoint(pb::Checkpoint {
                    position: position.0,
                }),
                Err(error) => return Err(log_error(&error)),
            };
            Ok(pb::SubscribeResponse {
                message: Some(message),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
