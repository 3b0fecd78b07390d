//! The most recent events of a log kept in memory, decoded, so that the readers that follow
//! the log's head (the read model, every subscription, the replicas' feeds) get new events
//! without a file read, a checksum, a decode and a blocking-pool hop each.
//!
//! [`TailCache`] wraps a log that **one process writes** (the embedded log): every append goes
//! through it. The events of an append are staged in the cache just before the log writes
//! them, and readers take from the cache only what lies at or below the log's head, which the
//! log publishes once the events are durable. So a reader woken by the new head finds the
//! events already there, and can never see an event that is not durable: if the append fails
//! they are taken out again, and the head never covered them. Appends are serialized through
//! the cache, and an append that does not continue the head is not staged at all.
//!
//! Reads of older events, or of a position the cache no longer holds, go to the log.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::{AppendLock, BoxFuture, EventLog, LogError};
use crate::domain::{LogPosition, RecordedEvent, StreamKey, StreamVersion};

/// How many recent events the cache keeps: a few seconds of a busy server's appends, a few
/// MiB of memory. A reader further behind reads the log.
pub const TAIL_EVENTS: usize = 32 * 1024;

/// A single-writer log with its recent events in memory. See the module documentation.
pub struct TailCache {
    inner: Arc<dyn EventLog>,
    recent: Arc<RwLock<Recent>>,
    /// Held for the whole of each append, so that staging, writing and un-staging of one
    /// append never interleave with another's.
    appends: Arc<Mutex<()>>,
}

impl TailCache {
    pub fn new(inner: Arc<dyn EventLog>) -> TailCache {
        TailCache::with_capacity(inner, TAIL_EVENTS)
    }

    pub fn with_capacity(inner: Arc<dyn EventLog>, capacity: usize) -> TailCache {
        TailCache {
            inner,
            recent: Arc::new(RwLock::new(Recent {
                events: VecDeque::new(),
                capacity: capacity.max(1),
            })),
            appends: Arc::new(Mutex::new(())),
        }
    }
}

/// Recent events with contiguous positions, oldest first. Those at or below the log's head
/// are durable; any above it belong to the append in progress.
struct Recent {
    events: VecDeque<RecordedEvent>,
    capacity: usize,
}

impl Recent {
    /// Adds the events of an append that continues `head`, before they are written.
    fn stage(&mut self, head: LogPosition, events: &[RecordedEvent]) {
        let continues = self.events.back().is_some_and(|last| last.position == head);
        if !continues {
            self.events.clear();
        }
        self.events.extend(events.iter().cloned());
        while self.events.len() > self.capacity {
            self.events.pop_front();
        }
    }

    /// Takes out the events from `first` on: their append failed.
    fn unstage(&mut self, first: LogPosition) {
        while self
            .events
            .back()
            .is_some_and(|last| last.position >= first)
        {
            self.events.pop_back();
        }
    }

    /// Up to `limit` events after `after` and at or below `head`, if the cache holds the one
    /// right after `after`.
    fn read(
        &self,
        after: LogPosition,
        limit: usize,
        head: LogPosition,
    ) -> Option<Vec<RecordedEvent>> {
        let first = self.events.front()?.position;
        let wanted = after.next();
        if wanted < first || wanted > head {
            return None;
        }
        let skip = usize::try_from(wanted.0 - first.0).ok()?;
        let available = usize::try_from(head.0 - after.0).unwrap_or(usize::MAX);
        let events: Vec<RecordedEvent> = self
            .events
            .iter()
            .skip(skip)
            .take(limit.min(available))
            .cloned()
            .collect();
        (!events.is_empty()).then_some(events)
    }
}

/// Stages `events` if they continue `head`, runs `write`, and un-stages them if it fails.
async fn staged_write(
    recent: &RwLock<Recent>,
    head: LogPosition,
    events: Vec<RecordedEvent>,
    write: impl FnOnce(Vec<RecordedEvent>) -> BoxFuture<'static, Result<(), LogError>>,
) -> Result<(), LogError> {
    let staged = stage(recent, head, &events);
    let result = write(events).await;
    unstage_failed(recent, staged, &result);
    result
}

/// [`staged_write`] with a write that blocks.
fn staged_write_blocking(
    recent: &RwLock<Recent>,
    head: LogPosition,
    events: Vec<RecordedEvent>,
    write: impl FnOnce(Vec<RecordedEvent>) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let staged = stage(recent, head, &events);
    let result = write(events);
    unstage_failed(recent, staged, &result);
    result
}

/// Stages `events` if they continue `head`; returns the first staged position.
fn stage(
    recent: &RwLock<Recent>,
    head: LogPosition,
    events: &[RecordedEvent],
) -> Option<LogPosition> {
    let first = events.first().map(|event| event.position)?;
    if first != head.next() {
        return None;
    }
    recent
        .write()
        .expect("tail lock poisoned")
        .stage(head, events);
    Some(first)
}

fn unstage_failed(
    recent: &RwLock<Recent>,
    staged: Option<LogPosition>,
    result: &Result<(), LogError>,
) {
    if result.is_err()
        && let Some(first) = staged
    {
        recent.write().expect("tail lock poisoned").unstage(first);
    }
}

impl EventLog for TailCache {
    fn append(&self, events: Vec<RecordedEvent>) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            let _append = self.appends.lock().await;
            let inner = self.inner.clone();
            staged_write(&self.recent, self.inner.head(), events, move |events| {
                Box::pin(async move { inner.append(events).await })
            })
            .await
        })
    }

    fn read_all(
        &self,
        after: LogPosition,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, LogError>> {
        // The head first: whatever the cache holds at or below it is durable.
        let head = self.inner.head();
        if after >= head {
            return Box::pin(async { Ok(Vec::new()) });
        }
        let cached = self
            .recent
            .read()
            .expect("tail lock poisoned")
            .read(after, limit, head);
        match cached {
            Some(events) => Box::pin(async move { Ok(events) }),
            None => self.inner.read_all(after, limit),
        }
    }

    fn read_stream(
        &self,
        stream: StreamKey,
        after: StreamVersion,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, LogError>> {
        self.inner.read_stream(stream, after, limit)
    }

    fn head(&self) -> LogPosition {
        self.inner.head()
    }

    fn lock(&self) -> BoxFuture<'_, Result<Box<dyn AppendLock>, LogError>> {
        Box::pin(async move {
            let append = self.appends.clone().lock_owned().await;
            let lock = self.inner.lock().await?;
            Ok(Box::new(TailLock {
                lock,
                recent: self.recent.clone(),
                _append: append,
            }) as Box<dyn AppendLock>)
        })
    }

    fn latest_head(&self) -> BoxFuture<'_, Result<LogPosition, LogError>> {
        self.inner.latest_head()
    }

    fn watch_head(&self) -> watch::Receiver<LogPosition> {
        self.inner.watch_head()
    }

    fn reachable(&self) -> watch::Receiver<bool> {
        self.inner.reachable()
    }
}

/// The inner log's append lock, with the cache's own.
struct TailLock {
    lock: Box<dyn AppendLock>,
    recent: Arc<RwLock<Recent>>,
    _append: OwnedMutexGuard<()>,
}

impl AppendLock for TailLock {
    fn head(&self) -> LogPosition {
        self.lock.head()
    }

    fn append(
        self: Box<Self>,
        events: Vec<RecordedEvent>,
    ) -> BoxFuture<'static, Result<(), LogError>> {
        Box::pin(async move {
            let TailLock {
                lock,
                recent,
                _append,
            } = *self;
            let head = lock.head();
            staged_write(&recent, head, events, move |events| lock.append(events)).await
        })
    }

    fn append_blocking(self: Box<Self>, events: Vec<RecordedEvent>) -> Result<(), LogError> {
        let TailLock {
            lock,
            recent,
            _append,
        } = *self;
        let head = lock.head();
        staged_write_blocking(&recent, head, events, move |events| {
            lock.append_blocking(events)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;
    use crate::domain::{
        AddStock, Command, EventId, Inventory, LogPosition, ProductId, Quantity, Reason,
        RecordedEvent, StoreId, StreamKey, Timestamp,
    };

    /// `count` events continuing `head`, on one stream.
    fn events(inventory: &mut Inventory, head: u64, count: u64) -> Vec<RecordedEvent> {
        let stream = StreamKey::new(ProductId::parse("p").unwrap(), StoreId::parse("s").unwrap());
        (1..=count)
            .map(|i| {
                let command = Command::AddStock(AddStock {
                    stream: stream.clone(),
                    quantity: Quantity::new(1).unwrap(),
                    reason: Reason::default(),
                });
                let decision = inventory.decide(&command, Timestamp(0)).unwrap().remove(0);
                let (version, stock_after) = inventory.evolve(&decision.stream, &decision.event);
                RecordedEvent {
                    position: LogPosition(head + i),
                    event_id: EventId(u128::from(head + i)),
                    stream: stream.clone(),
                    version,
                    occurred_at: Timestamp(0),
                    stock_after,
                    command_id: None,
                    command_fingerprint: 0,
                    trace_parent: None,
                    command_event_index: 0,
                    command_event_count: 1,
                    actor: None,
                    event: decision.event,
                }
            })
            .collect()
    }

    fn positions(events: Option<Vec<RecordedEvent>>) -> Option<Vec<u64>> {
        events.map(|events| events.iter().map(|event| event.position.0).collect())
    }

    #[test]
    fn reads_only_what_the_head_covers_and_forgets_a_failed_append() {
        let mut inventory = Inventory::new();
        let mut recent = Recent {
            events: Default::default(),
            capacity: 100,
        };
        recent.stage(LogPosition(0), &events(&mut inventory, 0, 3));
        // Staged, not yet durable: the head is still 0.
        assert_eq!(
            positions(recent.read(LogPosition(0), 10, LogPosition(0))),
            None
        );
        // Durable up to 2 of 3.
        assert_eq!(
            positions(recent.read(LogPosition(0), 10, LogPosition(2))),
            Some(vec![1, 2])
        );
        assert_eq!(
            positions(recent.read(LogPosition(1), 1, LogPosition(3))),
            Some(vec![2])
        );
        // The next append fails: its events go, the durable ones stay.
        recent.stage(LogPosition(3), &events(&mut inventory, 3, 2));
        recent.unstage(LogPosition(4));
        assert_eq!(
            positions(recent.read(LogPosition(0), 10, LogPosition(5))),
            Some(vec![1, 2, 3])
        );
        assert_eq!(
            positions(recent.read(LogPosition(3), 10, LogPosition(5))),
            None
        );
    }

    #[test]
    fn keeps_the_latest_events_up_to_its_capacity_and_restarts_after_a_gap() {
        let mut inventory = Inventory::new();
        let mut recent = Recent {
            events: Default::default(),
            capacity: 4,
        };
        recent.stage(LogPosition(0), &events(&mut inventory, 0, 3));
        recent.stage(LogPosition(3), &events(&mut inventory, 3, 3));
        // 1 and 2 were evicted: reading after 0 or 1 is for the log.
        assert_eq!(
            positions(recent.read(LogPosition(0), 10, LogPosition(6))),
            None
        );
        assert_eq!(
            positions(recent.read(LogPosition(1), 10, LogPosition(6))),
            None
        );
        assert_eq!(
            positions(recent.read(LogPosition(2), 10, LogPosition(6))),
            Some(vec![3, 4, 5, 6])
        );
        // Events that do not continue the cache (another writer's in between) replace it.
        recent.stage(LogPosition(8), &events(&mut inventory, 8, 2));
        assert_eq!(
            positions(recent.read(LogPosition(6), 10, LogPosition(10))),
            None
        );
        assert_eq!(
            positions(recent.read(LogPosition(8), 10, LogPosition(10))),
            Some(vec![9, 10])
        );
    }
}
