//! Subscriptions: the log's events after a position, then live ones as they become durable.
//!
//! A subscription reads from the log itself, history and live alike. There is no shared
//! in-memory broadcast to fall behind: the "live buffer" is the log (and the operating
//! system's page cache over it), so there is no switch-over where an event could be skipped or
//! sent twice, and a slow consumer only slows its own reads. Each subscription's channel is
//! bounded ([`SUBSCRIPTION_BUFFER`]); when it is full the reader task waits, holding nothing
//! but its position, and the writer and other subscribers never wait for it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::shutdown::Shutdown;
use crate::domain::{EventKind, LogPosition, ProductId, RecordedEvent, StoreId};
use crate::log::{EventLog, LogError};

/// How many items may wait between a subscription's reader task and its consumer: what a
/// stalled consumer can make the server hold (a read takes no more than the room left).
pub const SUBSCRIPTION_BUFFER: usize = 256;

/// A consumer that takes nothing for this long while items wait for it is cut off: its reader
/// task ends, and the stream ends with `RESOURCE_EXHAUSTED` when it is next read. One that
/// reads, however slowly, is never cut off.
pub const STALLED_AFTER: Duration = Duration::from_secs(60);

/// The most events read from the log at once for one subscription.
pub const SUBSCRIPTION_READ_BATCH: usize = 512;

/// How often a subscriber whose filter dropped events is told how far the server has looked.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// A checkpoint is also sent after this many examined events that the filter dropped, so a
/// busy log moves a filtered consumer's saved position along between intervals.
pub const CHECKPOINT_EVERY_DROPPED: u64 = 10_000;

/// The most ids in one filter list.
pub const MAX_FILTER_IDS: usize = 1000;

/// Nearly every item is an event, so the other variants' spare room costs little, and boxing
/// the event would cost an allocation per event delivered.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionItem {
    Event(RecordedEvent),
    /// Every event that was durable when the subscription started has been examined.
    CaughtUp(LogPosition),
    /// Every event up to this position has been examined; none after the last one sent matched.
    Checkpoint(LogPosition),
}

/// Which events a subscriber wants. Each set is a list of alternatives; an empty set matches
/// everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub product_ids: HashSet<ProductId>,
    pub store_ids: HashSet<StoreId>,
    pub kinds: HashSet<EventKind>,
}

impl EventFilter {
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        (self.product_ids.is_empty() || self.product_ids.contains(&event.stream.product_id))
            && (self.store_ids.is_empty() || self.store_ids.contains(&event.stream.store_id))
            && (self.kinds.is_empty() || self.kinds.contains(&event.event.kind()))
    }
}

/// A running subscription: its items, and whether its consumer was cut off for taking
/// nothing for [`STALLED_AFTER`].
pub struct Subscription {
    pub items: mpsc::Receiver<Result<SubscriptionItem, LogError>>,
    pub stalled: Arc<AtomicBool>,
}

/// Starts a subscription to the events after `from` that match `filter`. The channel ends
/// when the consumer drops it, on shutdown, after an error item, or once the consumer stalled.
pub fn subscribe(
    log: Arc<dyn EventLog>,
    from: LogPosition,
    filter: EventFilter,
    shutdown: Shutdown,
) -> Subscription {
    subscribe_with_stall(log, from, filter, shutdown, STALLED_AFTER)
}

/// [`subscribe`], cutting a stalled consumer off after `stalled_after`.
pub fn subscribe_with_stall(
    log: Arc<dyn EventLog>,
    from: LogPosition,
    filter: EventFilter,
    shutdown: Shutdown,
    stalled_after: Duration,
) -> Subscription {
    let (sender, items) = mpsc::channel(SUBSCRIPTION_BUFFER);
    let stalled = Arc::new(AtomicBool::new(false));
    let watch = Stall {
        after: stalled_after,
        flag: stalled.clone(),
    };
    tokio::spawn(run(log, from, filter, sender, shutdown, watch));
    Subscription { items, stalled }
}

/// When a consumer counts as stalled, and where to say it was.
struct Stall {
    after: Duration,
    flag: Arc<AtomicBool>,
}

/// Over 70 lines: the loop's state (position, what was reported, when) and its `send!` exits
/// stay in one place, so that every way the task ends is visible.
async fn run(
    log: Arc<dyn EventLog>,
    from: LogPosition,
    filter: EventFilter,
    sender: mpsc::Sender<Result<SubscriptionItem, LogError>>,
    mut shutdown: Shutdown,
    stall: Stall,
) {
    let metrics = SubscriptionMetrics::start();
    let mut head = log.watch_head();
    let caught_up_at = *head.borrow_and_update();
    // The last position examined, and the last one the consumer was told about.
    let mut position = from;
    let mut reported = from;
    let mut dropped_since_report = 0u64;
    let mut last_sent = Instant::now();
    let mut caught_up_sent = false;
    // Sends one item unless the consumer is gone or the server stops; false means stop.
    macro_rules! send {
        ($item:expr) => {{
            let item = $item;
            tokio::select! {
                sent = sender.send(Ok(item)) => {
                    if sent.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(stall.after) => {
                    stall.flag.store(true, Ordering::Release);
                    metrics::counter!("inventory_subscriptions_stalled_total").increment(1);
                    return;
                }
                () = shutdown.wait() => return,
            }
            last_sent = Instant::now();
        }};
    }
    loop {
        if !caught_up_sent && position >= caught_up_at {
            send!(SubscriptionItem::CaughtUp(position));
            reported = position;
            caught_up_sent = true;
        }
        let head_now = *head.borrow_and_update();
        if position < head_now {
            metrics.read(head_now, position);
            // No more than the consumer has room for: a consumer that stopped taking makes the
            // server hold its buffer's items, not a whole read batch besides.
            let room = sender.capacity().clamp(1, SUBSCRIPTION_READ_BATCH);
            let events = match log.read_all(position, room).await {
                Ok(events) => events,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            for event in events {
                assert_eq!(event.position, position.next(), "subscription skipped");
                position = event.position;
                if filter.matches(&event) {
                    send!(SubscriptionItem::Event(event));
                    metrics.sent.increment(1);
                    reported = position;
                    dropped_since_report = 0;
                } else {
                    dropped_since_report += 1;
                }
            }
            if position > reported
                && (dropped_since_report >= CHECKPOINT_EVERY_DROPPED
                    || last_sent.elapsed() >= CHECKPOINT_INTERVAL)
            {
                send!(SubscriptionItem::Checkpoint(position));
                reported = position;
                dropped_since_report = 0;
            }
            continue;
        }
        let checkpoint_due = position > reported;
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(last_sent + CHECKPOINT_INTERVAL), if checkpoint_due => {
                send!(SubscriptionItem::Checkpoint(position));
                reported = position;
                dropped_since_report = 0;
            }
            () = sender.closed() => return,
            () = shutdown.wait() => return,
        }
    }
}

/// A subscription's part of the metrics: `inventory_subscriptions_active` counts it while it
/// runs; every read records how far behind the log's head it was.
struct SubscriptionMetrics {
    active: metrics::Gauge,
    sent: metrics::Counter,
    lag: metrics::Histogram,
}

impl SubscriptionMetrics {
    fn start() -> SubscriptionMetrics {
        let active = metrics::gauge!("inventory_subscriptions_active");
        active.increment(1.0);
        SubscriptionMetrics {
            active,
            sent: metrics::counter!("inventory_subscription_events_sent_total"),
            lag: metrics::histogram!("inventory_subscription_lag_events"),
        }
    }

    /// Records the lag (events durable but not yet examined) when a read starts.
    fn read(&self, head: LogPosition, position: LogPosition) {
        self.lag.record(head.0.saturating_sub(position.0) as f64);
    }
}

impl Drop for SubscriptionMetrics {
    fn drop(&mut self) {
        self.active.decrement(1.0);
    }
}
