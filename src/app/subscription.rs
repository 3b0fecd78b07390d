//! Subscriptions: the log's events after a position, then live ones as they become durable.
//!
//! A subscription reads from the log itself, history and live alike: it never waits on a
//! shared in-memory buffer, so there is no switch-over where an event could be skipped or sent
//! twice, and a slow consumer only slows its own reads (its channel is bounded; the writer and
//! other subscribers never wait for it).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::shutdown::Shutdown;
use crate::domain::{LogPosition, RecordedEvent};
use crate::log::{EventLog, LogError};

/// How many items may wait between a subscription's reader task and its consumer.
pub const SUBSCRIPTION_BUFFER: usize = 1024;

/// The most events read from the log at once for one subscription.
pub const SUBSCRIPTION_READ_BATCH: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionItem {
    Event(RecordedEvent),
    /// Every event that was durable when the subscription started has been sent.
    CaughtUp(LogPosition),
}

/// Starts a subscription to events after `from`. The returned channel ends when the consumer
/// drops it, on shutdown, or after an error item.
pub fn subscribe(
    log: Arc<dyn EventLog>,
    from: LogPosition,
    mut shutdown: Shutdown,
) -> mpsc::Receiver<Result<SubscriptionItem, LogError>> {
    let (sender, receiver) = mpsc::channel(SUBSCRIPTION_BUFFER);
    tokio::spawn(async move {
        let mut head = log.watch_head();
        let caught_up_at = *head.borrow_and_update();
        let mut position = from;
        let mut caught_up_sent = false;
        loop {
            if !caught_up_sent && position >= caught_up_at {
                if sender
                    .send(Ok(SubscriptionItem::CaughtUp(position)))
                    .await
                    .is_err()
                {
                    return;
                }
                caught_up_sent = true;
            }
            let head_now = *head.borrow_and_update();
            if position < head_now {
                let events = match log.read_all(position, SUBSCRIPTION_READ_BATCH).await {
                    Ok(events) => events,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                for event in events {
                    assert_eq!(event.position, position.next(), "subscription skipped");
                    position = event.position;
                    tokio::select! {
                        sent = sender.send(Ok(SubscriptionItem::Event(event))) => {
                            if sent.is_err() {
                                return;
                            }
                        }
                        () = shutdown.wait() => return,
                    }
                }
                continue;
            }
            tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = sender.closed() => return,
                () = shutdown.wait() => return,
            }
        }
    });
    receiver
}
