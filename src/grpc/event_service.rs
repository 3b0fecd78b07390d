//! `EventService`: streams the log's events to subscribers, at most
//! [`MAX_SUBSCRIPTIONS`] at once per server.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::pb;
use crate::app::{Shutdown, SubscriptionItem, subscribe};
use crate::domain::LogPosition;
use crate::log::EventLog;

use super::auth::principal_of;
use super::convert;
use super::query_service::event_for;
use super::status::{access_error, log_error};

/// The most concurrent subscriptions one server serves; past it, `RESOURCE_EXHAUSTED`.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

pub struct EventApi {
    log: Arc<dyn EventLog>,
    shutdown: Shutdown,
    subscriptions: Arc<Semaphore>,
    subscriptions_limit: usize,
}

impl EventApi {
    pub fn new(log: Arc<dyn EventLog>, shutdown: Shutdown) -> EventApi {
        EventApi::with_limit(log, shutdown, MAX_SUBSCRIPTIONS)
    }

    pub fn with_limit(log: Arc<dyn EventLog>, shutdown: Shutdown, limit: usize) -> EventApi {
        EventApi {
            log,
            shutdown,
            subscriptions: Arc::new(Semaphore::new(limit)),
            subscriptions_limit: limit,
        }
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
        let permit = self
            .subscriptions
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "this server already serves its limit of {} subscriptions; \
                     retry later or subscribe to another server",
                    self.subscriptions_limit
                ))
            })?;
        let items = subscribe(self.log.clone(), from, filter, self.shutdown.clone());
        let stream = ReceiverStream::new(items).map(move |item| {
            // The permit lives as long as the stream: it is released when the subscriber
            // disconnects or the stream ends.
            let _permit = &permit;
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
