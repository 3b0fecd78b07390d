//! One sink's deliverer: a task that reads the log after the sink's cursor, sends what its
//! filter keeps in batches, one in flight (or up to the sink's window), and stores the cursor
//! past each acknowledged batch, oldest first. Every way it waits (for events, out a backoff,
//! while parked) also listens for the operator's resume and rewind and for shutdown.
//!
//! Over 600 lines: one deliverer's loop with its window, cursor, backoff and parking, whose
//! states read best in one place.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::cursor::{Claim, Claims};
use super::{
    Acknowledgement, Batch, Control, FILTERED_CURSOR_SAVE_INTERVAL, RESYNC_INTERVAL, SinkCursor,
    SinkSpec, SinkState, SinkStatus, WINDOWED_CURSOR_SAVE_INTERVAL,
};
use crate::app::{Clock, Shutdown};
use crate::domain::{LogPosition, RecordedEvent};
use crate::log::{EventLog, MAX_READ_EVENTS};

/// How long a deliverer waits before trying again to read the log or store its cursor.
const STORAGE_RETRY: Duration = Duration::from_secs(1);

type Requests = mpsc::UnboundedReceiver<(Control, oneshot::Sender<()>)>;

pub(super) struct Deliverer {
    spec: SinkSpec,
    log: Arc<dyn EventLog>,
    claims: Arc<dyn Claims>,
    /// The right to deliver the sink, while this server holds it.
    claim: Option<Box<dyn Claim>>,
    clock: Arc<dyn Clock>,
    status: Arc<Mutex<SinkStatus>>,
    requests: Requests,
    shutdown: Shutdown,
    /// An operator's request applied but not yet stored: whether it moved the cursor, and
    /// whom to answer once it is stored.
    operator: Option<(bool, oneshot::Sender<()>)>,
    /// The cursor as last stored, and when.
    stored: SinkCursor,
    stored_at: Instant,
}

/// The deliverer's position in the log and what it has read ahead.
struct Reader {
    /// Events read from the log, after the cursor (or after the last batch taken), not yet
    /// examined.
    ahead: VecDeque<RecordedEvent>,
    /// The position of the last event read (into `ahead` or examined).
    read_through: LogPosition,
}

impl Reader {
    fn at(position: LogPosition) -> Reader {
        Reader {
            ahead: VecDeque::new(),
            read_through: position,
        }
    }
}

/// A batch waiting to be acknowledged, and the cursor it moves to.
struct Pending {
    batch: Batch,
    /// The batch's acknowledgement, while it is sent and not yet answered.
    acknowledgement: Option<Acknowledgement>,
    /// Tries so far.
    tries: u32,
    /// Failed tries that may have reached the destination: each made a duplicate if a
    /// later try succeeds.
    arrived: u32,
    /// Failures since the first try or the last resume: what the backoff doubles over.
    failures: u32,
}

/// A batch sent after the pending one (by a sink with a window), waiting for its
/// acknowledgement.
struct Sent {
    batch: Batch,
    acknowledgement: Acknowledgement,
}

impl Deliverer {
    pub(super) fn new(
        spec: SinkSpec,
        log: Arc<dyn EventLog>,
        claims: Arc<dyn Claims>,
        clock: Arc<dyn Clock>,
        status: Arc<Mutex<SinkStatus>>,
        requests: Requests,
        shutdown: Shutdown,
    ) -> Deliverer {
        Deliverer {
            spec,
            log,
            claims,
            claim: None,
            clock,
            status,
            requests,
            shutdown,
            operator: None,
            stored: SinkCursor::default(),
            stored_at: Instant::now(),
        }
    }

    fn publish(&self, cursor: &SinkCursor, state: SinkState, update: impl FnOnce(&mut SinkStatus)) {
        let head = self.log.head();
        let mut status = self.status.lock().expect("sink status poisoned");
        status.position = cursor.position;
        status.failing_since = cursor.failing_since;
        status.state = state;
        status.lag_events = head.0.saturating_sub(cursor.position.0);
        status.active = true;
        update(&mut status);
        let sink = status.name.clone();
        metrics::gauge!("inventory_delivery_position", "sink" => sink.clone())
            .set(cursor.position.0 as f64);
        metrics::gauge!("inventory_delivery_lag_events", "sink" => sink.clone())
            .set(status.lag_events as f64);
        metrics::gauge!("inventory_delivery_state", "sink" => sink).set(state.gauge());
    }

    /// Stores `cursor`, trying again until it is stored; `false` on shutdown or a lost claim
    /// first.
    async fn save(&mut self, cursor: SinkCursor) -> bool {
        loop {
            let Some(claim) = self.claim.as_mut() else {
                return false;
            };
            match claim.save(cursor).await {
                Ok(()) => {
                    self.stored = cursor;
                    self.stored_at = Instant::now();
                    return true;
                }
                Err(error) => {
                    if claim.is_lost() {
                        return false;
                    }
                    tracing::error!(sink = self.spec.name, %error, "cannot store the sink's cursor; delivery waits");
                    self.status.lock().expect("sink status poisoned").last_error =
                        Some(error.to_string());
                }
            }
            if !self.sleep(STORAGE_RETRY).await {
                return false;
            }
        }
    }

    /// Sleeps for `duration`; `false` on shutdown or a lost claim first.
    async fn sleep(&mut self, duration: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        let lost = lost(&mut self.claim);
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = shutdown.wait() => false,
            () = lost => false,
        }
    }

    /// Waits up to `timeout` (forever with `None`), for the log's head to move if `head` is
    /// given, for an operator's request (applied to `cursor` and `pending`) or for shutdown;
    /// `false` on shutdown.
    async fn wait(
        &mut self,
        timeout: Option<Duration>,
        head: Option<&mut watch::Receiver<LogPosition>>,
        cursor: &mut SinkCursor,
        pending: &mut Option<Pending>,
    ) -> bool {
        let sleep = async {
            match timeout {
                Some(timeout) => tokio::time::sleep(timeout).await,
                None => std::future::pending().await,
            }
        };
        let moved = async {
            match head {
                Some(head) => {
                    if head.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let mut shutdown = self.shutdown.clone();
        let lost = lost(&mut self.claim);
        tokio::select! {
            () = sleep => true,
            () = moved => true,
            () = shutdown.wait() => false,
            () = lost => false,
            request = self.requests.recv() => match request {
                Some((control, done)) => {
                    let rewound = apply(control, cursor, pending);
                    // Answered once the change is stored, at the top of the loop.
                    self.operator = Some((rewound, done));
                    true
                }
                None => false,
            },
        }
    }

    /// The next batch after the reader's position, and the cursor past it (which may be past
    /// events the filter dropped); an empty batch when the reader is at the log's head.
    async fn next_batch(
        &mut self,
        reader: &mut Reader,
    ) -> Result<(Vec<RecordedEvent>, LogPosition), crate::log::LogError> {
        let mut events = Vec::new();
        let mut through = None;
        let mut examined = 0usize;
        loop {
            while let Some(event) = reader.ahead.pop_front() {
                examined += 1;
                through = Some(event.position);
                if self.spec.filter.matches(&event) {
                    events.push(event);
                    if events.len() == self.spec.batch_max {
                        return Ok((events, through.expect("an event was examined")));
                    }
                }
            }
            // A long run of dropped events ends a (possibly empty) batch, so the cursor and
            // the status move along.
            if examined >= 16 * MAX_READ_EVENTS {
                break;
            }
            let page = self
                .log
                .read_all(reader.read_through, MAX_READ_EVENTS)
                .await?;
            let Some(last) = page.last() else { break };
            reader.read_through = last.position;
            reader.ahead.extend(page);
        }
        Ok((events, through.unwrap_or(reader.read_through)))
    }
}

/// Applies an operator's request; `true` when it moved the cursor (a rewind).
fn apply(control: Control, cursor: &mut SinkCursor, pending: &mut Option<Pending>) -> bool {
    cursor.parked = false;
    cursor.failing_since = None;
    match control {
        Control::Resume => {
            if let Some(pending) = pending {
                // The backoff starts again from its first wait.
                pending.failures = 0;
            }
            false
        }
        Control::Rewind(position) => {
            cursor.position = position;
            *pending = None;
            true
        }
    }
}

/// Resolves once `claim` is lost; never without one.
async fn lost(claim: &mut Option<Box<dyn Claim>>) {
    match claim {
        Some(claim) => claim.lost().await,
        None => std::future::pending().await,
    }
}

/// Waits until this server holds the sink, showing the stored cursor meanwhile; `false` on
/// shutdown first.
async fn take_claim(deliverer: &mut Deliverer) -> bool {
    let status = deliverer.status.clone();
    let log = deliverer.log.clone();
    let standby = move |cursor: SinkCursor| {
        let mut status = status.lock().expect("sink status poisoned");
        status.active = false;
        status.position = cursor.position;
        status.failing_since = cursor.failing_since;
        status.state = if cursor.parked {
            SinkState::Parked
        } else {
            SinkState::Running
        };
        status.lag_events = log.head().0.saturating_sub(cursor.position.0);
    };
    loop {
        let mut shutdown = deliverer.shutdown.clone();
        let claimed = tokio::select! {
            claimed = deliverer.claims.claim(&deliverer.spec.name, &standby) => claimed,
            () = shutdown.wait() => return false,
        };
        match claimed {
            Ok(claim) => {
                deliverer.claim = Some(claim);
                return true;
            }
            Err(error) => {
                tracing::error!(sink = deliverer.spec.name, %error, "cannot claim the sink; retrying");
                if !deliverer.sleep(STORAGE_RETRY).await {
                    return false;
                }
            }
        }
    }
}

/// Delivers the sink while this server holds it, taking it again whenever it is lost, until
/// shutdown.
pub(super) async fn run(mut deliverer: Deliverer) {
    loop {
        if !take_claim(&mut deliverer).await {
            return;
        }
        deliver_claimed(&mut deliverer).await;
        deliverer.claim = None;
        if deliverer.shutdown.is_triggered() {
            return;
        }
        tracing::warn!(
            sink = deliverer.spec.name,
            "lost the claim on the sink (its database session ended); another server may deliver it now"
        );
        deliverer
            .status
            .lock()
            .expect("sink status poisoned")
            .active = false;
    }
}

fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_or(u32::MAX / 2, |()| u32::from_le_bytes(bytes))
}

/// Sends the batches after the pending one (which moves the cursor to `pending_through`),
/// until the sink's window is full, the reader is at the head or an operator's request waits.
/// A failure to read or to send ends it, with the reader back after the last batch sent.
async fn send_following(
    deliverer: &mut Deliverer,
    reader: &mut Reader,
    following: &mut VecDeque<Sent>,
    pending_through: LogPosition,
) {
    while following.len() + 1 < deliverer.spec.sink.window() && deliverer.requests.is_empty() {
        let last_sent = following
            .back()
            .map_or(pending_through, |sent| sent.batch.through);
        let batch = match deliverer.next_batch(reader).await {
            Ok((events, _)) if events.is_empty() => return,
            Ok((events, through)) => Batch::new(&deliverer.spec.name, events, through),
            Err(_) => {
                *reader = Reader::at(last_sent);
                return;
            }
        };
        match deliverer.spec.sink.send(&batch).await {
            Ok(acknowledgement) => following.push_back(Sent {
                batch,
                acknowledgement,
            }),
            Err(_) => {
                // Sent again once the batches before it are acknowledged.
                *reader = Reader::at(last_sent);
                return;
            }
        }
    }
}

/// Delivers while the claim holds: returns on shutdown or once the claim is lost.
///
/// Over 70 lines: the loop's state (cursor, batch in flight, read-ahead) and each branch's
/// way out stay in one place, so every path that moves the cursor is visible together.
async fn deliver_claimed(deliverer: &mut Deliverer) {
    let name = deliverer.spec.name.clone();
    let mut cursor = loop {
        let Some(claim) = deliverer.claim.as_mut() else {
            return;
        };
        match claim.load().await {
            Ok(cursor) => break cursor.unwrap_or_default(),
            Err(error) => {
                tracing::error!(sink = name, %error, "cannot read the sink's cursor; retrying");
                if !deliverer.sleep(STORAGE_RETRY).await {
                    return;
                }
            }
        }
    };
    tracing::info!(
        sink = name,
        kind = deliverer.spec.sink.kind(),
        position = cursor.position.0,
        parked = cursor.parked,
        "delivering"
    );
    let mut head = deliverer.log.watch_head();
    let mut reader = Reader::at(cursor.position);
    let mut pending: Option<Pending> = None;
    // Batches sent after the pending one, oldest first: only while a batch is pending.
    let mut following: VecDeque<Sent> = VecDeque::new();
    let mut resynced_at: Option<Instant> = None;
    deliverer.stored = cursor;
    let initial = if cursor.parked {
        SinkState::Parked
    } else {
        SinkState::Running
    };
    deliverer.publish(&cursor, initial, |_| {});
    loop {
        if deliverer.shutdown.is_triggered() {
            if cursor != deliverer.stored {
                deliverer.save(cursor).await;
            }
            return;
        }
        // A request that came while the deliverer was busy (catching up, it never waits) is
        // taken here, between two batches.
        if deliverer.operator.is_none()
            && let Ok((control, done)) = deliverer.requests.try_recv()
        {
            let rewound = apply(control, &mut cursor, &mut pending);
            deliverer.operator = Some((rewound, done));
        }
        if let Some((rewound, done)) = deliverer.operator.take() {
            if rewound {
                reader = Reader::at(cursor.position);
                following.clear();
            }
            if !deliverer.save(cursor).await {
                return;
            }
            let state = if pending.is_some() {
                SinkState::Retrying
            } else {
                SinkState::Running
            };
            deliverer.publish(&cursor, state, |_| {});
            let _ = done.send(());
        }
        if cursor.parked {
            deliverer.publish(&cursor, SinkState::Parked, |_| {});
            if !deliverer
                .wait(None, Some(&mut head), &mut cursor, &mut pending)
                .await
            {
                return;
            }
            continue;
        }
        if pending.is_none() && resynced_at.is_none_or(|at| at.elapsed() >= RESYNC_INTERVAL) {
            resynced_at = Some(Instant::now());
            if let Ok(Some(recorded)) = deliverer.spec.sink.recorded_position().await
                && recorded < cursor.position
            {
                tracing::warn!(
                    sink = name,
                    recorded = recorded.0,
                    cursor = cursor.position.0,
                    "the destination holds less than the cursor (a flushed cache?): delivering again from what it holds"
                );
                cursor.position = recorded;
                reader = Reader::at(recorded);
                if !deliverer.save(cursor).await {
                    return;
                }
                deliverer.publish(&cursor, SinkState::Running, |_| {});
            }
        }
        if pending.is_none() {
            head.borrow_and_update();
            match deliverer.next_batch(&mut reader).await {
                Ok((events, through)) if events.is_empty() => {
                    cursor.position = through;
                    let caught_up = through == reader.read_through && reader.ahead.is_empty();
                    let due =
                        caught_up || deliverer.stored_at.elapsed() >= FILTERED_CURSOR_SAVE_INTERVAL;
                    if cursor != deliverer.stored && due && !deliverer.save(cursor).await {
                        return;
                    }
                    deliverer.publish(&cursor, SinkState::Running, |_| {});
                    // Waking every RESYNC_INTERVAL, so a flushed cache is seen while idle.
                    if caught_up
                        && !deliverer
                            .wait(
                                Some(RESYNC_INTERVAL),
                                Some(&mut head),
                                &mut cursor,
                                &mut pending,
                            )
                            .await
                    {
                        return;
                    }
                    continue;
                }
                Ok((events, through)) => {
                    pending = Some(Pending {
                        batch: Batch::new(&name, events, through),
                        acknowledgement: None,
                        tries: 0,
                        arrived: 0,
                        failures: 0,
                    });
                }
                Err(error) => {
                    tracing::error!(sink = name, %error, "cannot read the log; retrying");
                    // The events the failed read had taken from the read-ahead are read again.
                    reader = Reader::at(cursor.position);
                    if !deliverer
                        .wait(Some(STORAGE_RETRY), None, &mut cursor, &mut pending)
                        .await
                    {
                        return;
                    }
                    continue;
                }
            }
        }
        let current = pending.as_mut().expect("a batch is pending");
        // Not cut short by a shutdown: the sink's timeout bounds it, and its answer is stored.
        let sent = match current.acknowledgement.take() {
            Some(acknowledgement) => Ok(acknowledgement),
            None => {
                current.tries += 1;
                deliverer.spec.sink.send(&current.batch).await
            }
        };
        let result = match sent {
            Ok(acknowledgement) => {
                let through = current.batch.through;
                send_following(deliverer, &mut reader, &mut following, through).await;
                acknowledgement.await
            }
            Err(error) => Err(error),
        };
        let current = pending.as_mut().expect("a batch is pending");
        let count = current.batch.events.len() as u64;
        let duplicates = count * u64::from(current.arrived);
        match result {
            Ok(()) => {
                cursor.position = current.batch.through;
                cursor.failing_since = None;
                pending = following.pop_front().map(|sent| Pending {
                    batch: sent.batch,
                    acknowledgement: Some(sent.acknowledgement),
                    tries: 1,
                    arrived: 0,
                    failures: 0,
                });
                // One batch at a time: stored before the next is sent. With a window, at most
                // every WINDOWED_CURSOR_SAVE_INTERVAL while more are in flight.
                let due = deliverer.spec.sink.window() == 1
                    || pending.is_none()
                    || deliverer.stored_at.elapsed() >= WINDOWED_CURSOR_SAVE_INTERVAL;
                if due && !deliverer.save(cursor).await {
                    return;
                }
                let now = deliverer.clock.now();
                metrics::counter!("inventory_delivery_delivered_total", "sink" => name.clone())
                    .increment(count);
                deliverer.publish(&cursor, SinkState::Running, |status| {
                    status.delivered_events += count;
                    status.redelivered_events += duplicates;
                    status.last_success = Some(now);
                });
            }
            Err(error) => {
                current.failures += 1;
                current.arrived += u32::from(error.sent);
                // The batches sent after it go again after it, read from the log again: they
                // were sent, so they count as sent twice now.
                let resent: u64 = following
                    .drain(..)
                    .map(|sent| sent.batch.events.len() as u64)
                    .sum();
                reader = Reader::at(current.batch.through);
                let (tries, failures) = (current.tries, current.failures);
                let now = deliverer.clock.now();
                let since = *cursor.failing_since.get_or_insert(now);
                let failed_for =
                    Duration::from_millis(now.unix_millis().saturating_sub(since.unix_millis()));
                metrics::counter!("inventory_delivery_failures_total", "sink" => name.clone())
                    .increment(1);
                let park = failed_for >= deliverer.spec.retry.park_after;
                cursor.parked = park;
                tracing::warn!(sink = name, delivery_id = current.batch.delivery_id, %error, tries, parked = park, "delivery failed");
                let state = if park {
                    SinkState::Parked
                } else {
                    SinkState::Retrying
                };
                if cursor != deliverer.stored {
                    // The failure's start (or the park) is stored, so a restart neither
                    // forgets how long the sink has failed nor un-parks it.
                    if !deliverer.save(cursor).await {
                        return;
                    }
                }
                deliverer.publish(&cursor, state, |status| {
                    status.redelivered_events += resent;
                    status.failures += 1;
                    status.last_error = Some(error.message.clone());
                });
                if !park {
                    let backoff = deliverer.spec.retry.backoff(failures, random_u32());
                    if !deliverer
                        .wait(Some(backoff), None, &mut cursor, &mut pending)
                        .await
                    {
                        return;
                    }
                }
            }
        }
    }
}
