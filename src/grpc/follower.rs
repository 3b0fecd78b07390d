//! The follower: copies a command server's log into a query server's own log through
//! `EventService.Subscribe`, resuming from the local head after every disconnect.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Endpoint;

use super::pb;
use crate::app::Shutdown;
use crate::domain::RecordedEvent;
use crate::log::codec::event_from_pb;
use crate::log::{EventLog, LogError, MAX_APPEND_EVENTS};

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
    /// Stopped for good: the upstream sent something that retrying cannot fix (an event that
    /// fails validation, a log this replica's copy does not continue). The replica reports
    /// `NOT_SERVING` until an operator looks.
    Failed,
}

/// Why following the upstream stopped.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Worth trying again: the upstream is unreachable or the connection broke, or the local
    /// log could not write for now.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help: the same events would fail the same way.
    #[error("{0}")]
    Permanent(String),
}

impl FollowError {
    fn from_status(status: &tonic::Status) -> FollowError {
        use tonic::Code;
        let problem = format!("the upstream answered {status}");
        match status.code() {
            // The request itself is refused, or the upstream is not an inventory server:
            // asking again gets the same answer.
            Code::InvalidArgument
            | Code::OutOfRange
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented => FollowError::Permanent(problem),
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::AlreadyExists
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss => FollowError::Transient(problem),
        }
    }

    fn from_append(error: &LogError) -> FollowError {
        let problem = format!("appending to the local log failed: {error}");
        match error {
            LogError::Io { .. } | LogError::Backend { .. } => FollowError::Transient(problem),
            // The upstream's events do not continue this copy: it is another log, or one of
            // them is damaged.
            LogError::HeadMoved { .. }
            | LogError::VersionConflict { .. }
            | LogError::CommandIdsTaken { .. }
            | LogError::AppendTooLarge { .. }
            | LogError::Corrupt { .. }
            | LogError::CorruptRow { .. }
            | LogError::SnapshotMismatch { .. }
            | LogError::FoldMismatch { .. } => FollowError::Permanent(problem),
        }
    }
}

/// Copies events from `upstream` into `local` until `shutdown`, or until a permanent error,
/// sending `credential` as the `authorization` header when given.
/// Reports its state on `state`.
pub async fn follow(
    upstream: Endpoint,
    credential: Option<AsciiMetadataValue>,
    local: Arc<dyn EventLog>,
    state: watch::Sender<FollowerState>,
    mut shutdown: Shutdown,
) {
    let mut delay = RECONNECT_DELAY_MIN;
    loop {
        let session = copy_from(&upstream, credential.as_ref(), &*local, &state);
        tokio::select! {
            result = session => {
                match result {
                    Ok(()) => tracing::info!(upstream = %upstream.uri(), "upstream ended the subscription"),
                    Err(FollowError::Transient(problem)) => tracing::warn!(upstream = %upstream.uri(), %problem, retry_in_ms = delay.as_millis() as u64, "following the upstream failed"),
                    Err(FollowError::Permanent(problem)) => {
                        tracing::error!(upstream = %upstream.uri(), %problem, head = local.head().0, "following the upstream stopped for good; the replica is not serving");
                        state.send_replace(FollowerState::Failed);
                        return;
                    }
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

/// Over 70 lines: the batching loop and each way it ends read best together.
async fn copy_from(
    upstream: &Endpoint,
    credential: Option<&AsciiMetadataValue>,
    local: &dyn EventLog,
    state: &watch::Sender<FollowerState>,
) -> Result<(), FollowError> {
    let channel = upstream
        .connect()
        .await
        .map_err(|error| FollowError::Transient(format!("cannot connect: {error}")))?;
    let mut client = pb::event_service_client::EventServiceClient::new(channel)
        .max_decoding_message_size(super::MAX_RESPONSE_BYTES);
    let from = local.head();
    let mut request = tonic::Request::new(pb::SubscribeRequest {
        from_position: from.0,
        filter: None,
    });
    if let Some(credential) = credential {
        request
            .metadata_mut()
            .insert("authorization", credential.clone());
    }
    let mut stream = client
        .subscribe(request)
        .await
        .map_err(|status| FollowError::from_status(&status))?
        .into_inner();
    state.send_replace(FollowerState::CatchingUp);
    tracing::info!(upstream = %upstream.uri(), from = from.0, "following the upstream");
    let append = |batch: Vec<RecordedEvent>| async move {
        local
            .append(batch)
            .await
            .map_err(|error| FollowError::from_append(&error))
    };
    let mut batch: Vec<RecordedEvent> = Vec::new();
    loop {
        // Take what has arrived without waiting, so a catch-up is appended in large batches
        // and a live event is appended at once.
        // The local log only ever gets whole commands: a batch ending inside a command waits
        // for the command's last event.
        let whole = batch.last().is_some_and(RecordedEvent::ends_command);
        let message = if !whole {
            stream.message().await
        } else {
            match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                Ok(message) => message,
                Err(_) => {
                    append(std::mem::take(&mut batch)).await?;
                    continue;
                }
            }
        };
        let message = message.map_err(|status| FollowError::from_status(&status))?;
        let Some(message) = message else {
            // A command cut off by the stream's end is read again after reconnecting.
            let whole = whole_commands(&mut batch);
            if !whole.is_empty() {
                append(whole).await?;
            }
            return Ok(());
        };
        use pb::subscribe_response::Message;
        match message.message {
            Some(Message::Event(event)) => {
                let position = event.position;
                let event = event_from_pb(event).map_err(|error| {
                    FollowError::Permanent(format!(
                        "the upstream sent an invalid event at position {position}: {error}"
                    ))
                })?;
                batch.push(event);
                if batch.len() >= MAX_APPEND_EVENTS {
                    let whole = whole_commands(&mut batch);
                    if !whole.is_empty() {
                        append(whole).await?;
                    }
                }
            }
            Some(Message::CaughtUp(_)) => {
                let whole = whole_commands(&mut batch);
                if !whole.is_empty() {
                    append(whole).await?;
                }
                state.send_replace(FollowerState::CaughtUp);
            }
            Some(Message::Checkpoint(_)) | None => {}
        }
    }
}

/// Takes the events of `batch` up to the end of its last whole command, leaving the rest (the
/// start of a command whose other events have not arrived yet).
fn whole_commands(batch: &mut Vec<RecordedEvent>) -> Vec<RecordedEvent> {
    let end = crate::log::whole_commands_len(batch).unwrap_or(0);
    let rest = batch.split_off(end);
    std::mem::replace(batch, rest)
}
