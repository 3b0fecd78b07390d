//! The follower: copies a command server's log into a query server's own log through
//! `EventService.Subscribe`, resuming from the local head after every disconnect.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Endpoint;

use super::pb;
use crate::app::Shutdown;
use crate::domain::RecordedEvent;
use crate::log::codec::event_from_pb;
use crate::log::{EventLog, MAX_APPEND_EVENTS};

/// The first and the longest wait before reconnecting to the upstream.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(50);
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);

/// Where the follower stands, for health reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowerState {
    Connecting,
    /// Connected and has copied everything the upstream had when it connected.
    CaughtUp,
    CatchingUp,
}

/// Copies events from `upstream` into `local` until `shutdown`. Reports its state on `state`.
pub async fn follow(
    upstream: Endpoint,
    local: Arc<dyn EventLog>,
    state: watch::Sender<FollowerState>,
    mut shutdown: Shutdown,
) {
    let mut delay = RECONNECT_DELAY_MIN;
    loop {
        let session = copy_from(&upstream, &*local, &state);
        tokio::select! {
            result = session => {
                match result {
                    Ok(()) => tracing::info!(upstream = %upstream.uri(), "upstream ended the subscription"),
                    Err(problem) => tracing::warn!(upstream = %upstream.uri(), %problem, retry_in_ms = delay.as_millis() as u64, "following the upstream failed"),
                }
            }
            () = shutdown.wait() => return,
        }
        state.send_replace(FollowerState::Connecting);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.wait() => return,
        }
        delay = (delay * 2).min(RECONNECT_DELAY_MAX);
        if state.borrow().eq(&FollowerState::CaughtUp) {
            delay = RECONNECT_DELAY_MIN;
        }
    }
}

async fn copy_from(
    upstream: &Endpoint,
    local: &dyn EventLog,
    state: &watch::Sender<FollowerState>,
) -> Result<(), String> {
    let channel = upstream.connect().await.map_err(|e| e.to_string())?;
    let mut client = pb::event_service_client::EventServiceClient::new(channel)
        .max_decoding_message_size(super::MAX_RESPONSE_BYTES);
    let from = local.head();
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            from_position: from.0,
            filter: None,
        })
        .await
        .map_err(|status| status.to_string())?
        .into_inner();
    state.send_replace(FollowerState::CatchingUp);
    tracing::info!(upstream = %upstream.uri(), from = from.0, "following the upstream");
    let mut batch: Vec<RecordedEvent> = Vec::new();
    loop {
        // Take what has arrived without waiting, so a catch-up is appended in large batches
        // and a live event is appended at once.
        let message = if batch.is_empty() {
            stream.message().await
        } else {
            match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                Ok(message) => message,
                Err(_) => {
                    local
                        .append(std::mem::take(&mut batch))
                        .await
                        .map_err(|e| e.to_string())?;
                    continue;
                }
            }
        };
        let message = message.map_err(|status| status.to_string())?;
        let Some(message) = message else {
            if !batch.is_empty() {
                local.append(batch).await.map_err(|e| e.to_string())?;
            }
            return Ok(());
        };
        use pb::subscribe_response::Message;
        match message.message {
            Some(Message::Event(event)) => {
                let event = event_from_pb(event).map_err(|e| e.to_string())?;
                batch.push(event);
                if batch.len() >= MAX_APPEND_EVENTS {
                    local
                        .append(std::mem::take(&mut batch))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Some(Message::CaughtUp(_)) => {
                if !batch.is_empty() {
                    local
                        .append(std::mem::take(&mut batch))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                state.send_replace(FollowerState::CaughtUp);
            }
            Some(Message::Checkpoint(_)) | None => {}
        }
    }
}
