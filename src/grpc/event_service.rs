//! `EventService`: streams the log's events to subscribers.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::app::{Shutdown, SubscriptionItem, subscribe};
use crate::domain::LogPosition;
use crate::log::EventLog;
use crate::proto::{event_to_pb, pb};

use super::status::log_error;

pub struct EventApi {
    log: Arc<dyn EventLog>,
    shutdown: Shutdown,
}

impl EventApi {
    pub fn new(log: Arc<dyn EventLog>, shutdown: Shutdown) -> EventApi {
        EventApi { log, shutdown }
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
        let from = LogPosition(request.get_ref().from_position);
        let items = subscribe(self.log.clone(), from, self.shutdown.clone());
        let stream = ReceiverStream::new(items).map(|item| {
            use pb::subscribe_response::Message;
            match item {
                Ok(SubscriptionItem::Event(event)) => Ok(pb::SubscribeResponse {
                    message: Some(Message::Event(event_to_pb(&event))),
                }),
                Ok(SubscriptionItem::CaughtUp(position)) => Ok(pb::SubscribeResponse {
                    message: Some(Message::CaughtUp(pb::CaughtUp {
                        position: position.0,
                    })),
                }),
                Err(error) => Err(log_error(&error)),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
