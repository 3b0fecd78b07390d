//! The NATS JetStream sink: every event published to
//! `<subject_prefix>.<store_id>.<product_id>.<EVENT_TYPE>` on a stream the sink creates if it
//! is missing (capturing `<subject_prefix>.>`; again when it is deleted), with `Nats-Msg-Id`
//! set to the event's id so that JetStream drops a resend within its duplicate window. A
//! batch is published pipelined and acknowledged once every message of it has its PubAck; up
//! to [`WINDOW`] batches wait for their PubAcks at once.
//!
//! Order is kept by a chain: every message but the first of a chain carries
//! `Nats-Expected-Last-Msg-Id`, the id of the message before it, so JetStream stores a
//! message only right after its predecessor. A connection cut loses what was in the socket,
//! while the client sends what it still queued on the connection it makes again: without the
//! chain, those later messages would be stored before the lost ones are sent again. With it,
//! they are refused, and the batches are sent again from the oldest one not acknowledged, whose
//! predecessor is the last message acknowledged. A resend of a stored message is a duplicate
//! (its `Nats-Msg-Id`), which JetStream acknowledges before it looks at the chain.
//!
//! Ids may hold `.`, which NATS takes as a token separator: in a subject every `.` of an id is
//! written `%2E` (ids never hold `%`, so the encoding is reversible: replace `%2E` by `.`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use bytes::BytesMut;
use tokio_stream::StreamExt;

use super::{Acknowledgement, Batch, DeliveryError, Sink};
use crate::domain::{LogPosition, RecordedEvent};
use crate::log::BoxFuture;
use crate::log::codec::json;

/// How long JetStream remembers a message id to drop its resend, for a stream the sink
/// creates (NATS's own default).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Batches published before the oldest of them has all its PubAcks: while JetStream stores
/// and acknowledges one, the next is read from the log and published.
pub const WINDOW: usize = 4;

/// An id as one subject token: `.` written `%2E`.
pub fn subject_token(id: &str) -> String {
    id.replace('.', "%2E")
}

/// The subject of `event` under `prefix`.
pub fn subject(prefix: &str, event: &RecordedEvent) -> String {
    format!(
        "{prefix}.{}.{}.{}",
        subject_token(event.stream.store_id.as_str()),
        subject_token(event.stream.product_id.as_str()),
        event.event.kind().name()
    )
}

/// A subject prefix: one or more tokens of letters, digits, `-` and `_`, separated by `.`.
pub fn check_subject_prefix(prefix: &str) -> Result<(), String> {
    let valid = !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{prefix:?}: tokens of letters, digits, '-' and '_', separated by '.'"
        ))
    }
}

/// A stream name: letters, digits, `-` and `_` (JetStream refuses `.`, `*`, `>` and spaces).
pub fn check_stream_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    {
        Ok(())
    } else {
        Err(format!("{name:?}: 1 to 64 letters, digits, '-' and '_'"))
    }
}

pub struct NatsSink {
    url: String,
    stream: String,
    subject_prefix: String,
    connection: Option<Connection>,
    /// Numbers each publish of a batch: its PubAcks come back to `<inbox>.<number>`.
    publishes: u64,
    /// The position and id of the last message published: the next one's predecessor.
    last_published: Option<(LogPosition, String)>,
    /// The position and id of the last message of the latest batch acknowledged: the
    /// predecessor of a batch sent again after a failure. Written by the acknowledgements.
    last_acknowledged: Arc<std::sync::Mutex<Option<(LogPosition, String)>>>,
}

/// A connection with the subscription every PubAck comes back on.
struct Connection {
    client: async_nats::Client,
    inbox: String,
    replies: Arc<tokio::sync::Mutex<Replies>>,
    /// Set when NATS answered that no stream captures the subjects (the stream was deleted):
    /// the next try connects again, which creates it.
    stream_missing: Arc<AtomicBool>,
}

/// Room for every PubAck the window may wait for, twice (late replies to a failed try are
/// read and dropped): a reply the subscription has no room for is lost, and its batch would
/// fail by its timeout.
const REPLY_CAPACITY: usize = 2 * WINDOW * super::MAX_BATCH_MAX;

/// The PubAcks received, counted per publish of a batch. They are read by whichever
/// acknowledgement is awaited (the oldest batch's): replies to later batches are counted for
/// them meanwhile.
struct Replies {
    subscriber: async_nats::Subscriber,
    /// Per publish number: PubAcks received, and the first error.
    counts: HashMap<u64, (usize, Option<String>)>,
    stream_missing: Arc<AtomicBool>,
    /// Replies to publishes up to this number are no longer waited for (late or stale ones).
    finished_through: u64,
}

impl Replies {
    /// Waits until publish `number` has `expected` PubAcks, or an error.
    async fn wait(&mut self, number: u64, expected: usize) -> Result<(), DeliveryError> {
        loop {
            if let Some((count, error)) = self.counts.get(&number) {
                if let Some(error) = error {
                    return Err(DeliveryError::sent(error.clone()));
                }
                if *count >= expected {
                    self.finished_through = self.finished_through.max(number);
                    let through = self.finished_through;
                    self.counts.retain(|&other, _| other > through);
                    return Ok(());
                }
            }
            let Some(reply) = self.subscriber.next().await else {
                return Err(DeliveryError::sent("no PubAck: the NATS connection closed"));
            };
            let Some(replied) = reply
                .subject
                .rsplit('.')
                .next()
                .and_then(|token| token.parse::<u64>().ok())
            else {
                continue;
            };
            if replied <= self.finished_through {
                continue;
            }
            if reply.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                self.stream_missing.store(true, Ordering::Relaxed);
            }
            let (count, error) = self.counts.entry(replied).or_default();
            match pub_ack_error(&reply) {
                None => *count += 1,
                Some(message) => {
                    error.get_or_insert(message);
                }
            }
        }
    }
}

/// What is wrong with a reply to a publish, if it is not a PubAck.
fn pub_ack_error(reply: &async_nats::Message) -> Option<String> {
    if reply.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Some("no PubAck: no JetStream stream captures the subject".to_owned());
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        stream: Option<String>,
        error: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Answer>(&reply.payload) {
        Ok(Answer {
            stream: Some(_),
            error: None,
        }) => None,
        Ok(Answer {
            error: Some(error), ..
        }) => Some(format!("JetStream refused a message: {error}")),
        _ => Some(format!(
            "no PubAck: {:?}",
            String::from_utf8_lossy(&reply.payload)
        )),
    }
}

/// The headers of one message: its id, which JetStream's duplicate window keys on, and the id
/// of the message it must follow, if any.
fn message_headers(id: &str, predecessor: Option<&str>) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    if let Some(predecessor) = predecessor {
        headers.insert("Nats-Expected-Last-Msg-Id", predecessor);
    }
    headers
}

impl NatsSink {
    pub fn new(url: &str, stream: &str, subject_prefix: &str) -> NatsSink {
        NatsSink {
            url: url.to_owned(),
            stream: stream.to_owned(),
            subject_prefix: subject_prefix.to_owned(),
            connection: None,
            publishes: 0,
            last_published: None,
            last_acknowledged: Arc::default(),
        }
    }

    /// The id the first message of a batch starting at `first` must follow: the last message
    /// published when the batch continues the chain; the last one acknowledged when it is a
    /// batch sent again after a failure; none when the chain starts over (the first batch, a
    /// rewind, a stream created empty).
    fn predecessor(&self, first: LogPosition) -> Option<String> {
        let (published_through, published_id) = self.last_published.as_ref()?;
        if first > *published_through {
            return Some(published_id.clone());
        }
        let acknowledged = self
            .last_acknowledged
            .lock()
            .expect("the acknowledged message is never poisoned")
            .clone();
        acknowledged
            .filter(|(acknowledged_through, _)| first > *acknowledged_through)
            .map(|(_, id)| id)
    }

    /// A connection, and whether the stream holds no message.
    async fn connect(&self) -> Result<(Connection, bool), DeliveryError> {
        let client = async_nats::ConnectOptions::new()
            .name("inventory")
            .subscription_capacity(REPLY_CAPACITY)
            .connect(self.url.as_str())
            .await
            .map_err(|error| {
                DeliveryError::unsent(format!(
                    "cannot connect to NATS at {}: {error}",
                    super::redacted(&self.url)
                ))
            })?;
        let mut jetstream_stream = jetstream::new(client.clone())
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![format!("{}.>", self.subject_prefix)],
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|error| {
                DeliveryError::unsent(format!(
                    "cannot find or create the JetStream stream {}: {error}",
                    self.stream
                ))
            })?;
        let stream_is_empty = jetstream_stream
            .info()
            .await
            .map_err(|error| {
                DeliveryError::unsent(format!(
                    "cannot read the JetStream stream {}: {error}",
                    self.stream
                ))
            })?
            .state
            .messages
            == 0;
        let inbox = client.new_inbox();
        let subscriber = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|error| {
                DeliveryError::unsent(format!("cannot subscribe to the PubAcks: {error}"))
            })?;
        let stream_missing = Arc::new(AtomicBool::new(false));
        let connection = Connection {
            client,
            inbox,
            replies: Arc::new(tokio::sync::Mutex::new(Replies {
                subscriber,
                counts: HashMap::new(),
                finished_through: 0,
                stream_missing: stream_missing.clone(),
            })),
            stream_missing,
        };
        Ok((connection, stream_is_empty))
    }

    /// Publishes every event of `batch`, each asking for a PubAck, without waiting for them;
    /// the returned future waits for them.
    async fn publish(&mut self, batch: &Batch) -> Result<Acknowledgement, DeliveryError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|connection| connection.stream_missing.load(Ordering::Relaxed))
        {
            tracing::warn!(
                stream = self.stream,
                "no JetStream stream captures the subjects any more; creating it again"
            );
            self.connection = None;
        }
        if self.connection.is_none() {
            let (connection, stream_is_empty) = self.connect().await?;
            if stream_is_empty {
                // A stream made now (or emptied) holds no predecessor: the chain starts over.
                self.last_published = None;
                *self
                    .last_acknowledged
                    .lock()
                    .expect("the acknowledged message is never poisoned") = None;
            }
            self.connection = Some(connection);
        }
        let connection = self.connection.as_ref().expect("connected");
        self.publishes += 1;
        let number = self.publishes;
        let reply = async_nats::Subject::from(format!("{}.{number}", connection.inbox));
        // The payloads share a few allocations: each is split off one buffer.
        let mut payloads = BytesMut::with_capacity(batch.events.len() * 640);
        let mut text = Vec::with_capacity(1024);
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let first = batch.events.first().expect("a batch is not empty").position;
        let mut predecessor = self.predecessor(first);
        for event in &batch.events {
            text.clear();
            json::write_event(event, &mut text);
            payloads.extend_from_slice(&text);
            let payload = payloads.split();
            let id = uuid::Uuid::from_u128(event.event_id.0)
                .hyphenated()
                .encode_lower(&mut id);
            let headers = message_headers(id, predecessor.as_deref());
            predecessor = Some(id.to_owned());
            connection
                .client
                .publish_with_reply_and_headers(
                    subject(&self.subject_prefix, event),
                    reply.clone(),
                    headers,
                    payload.freeze(),
                )
                .await
                .map_err(|error| DeliveryError::sent(format!("publish failed: {error}")))?;
        }
        let last = batch.events.last().expect("a batch is not empty").position;
        let last_id = predecessor.expect("a batch is not empty");
        self.last_published = Some((last, last_id.clone()));
        let replies = connection.replies.clone();
        let last_acknowledged = self.last_acknowledged.clone();
        let expected = batch.events.len();
        Ok(Box::pin(async move {
            replies.lock().await.wait(number, expected).await?;
            // Batches are acknowledged oldest first: this is the latest.
            *last_acknowledged
                .lock()
                .expect("the acknowledged message is never poisoned") = Some((last, last_id));
            Ok(())
        }))
    }
}

impl Sink for NatsSink {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn deliver<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move { self.publish(batch).await?.await })
    }

    /// JetStream keeps the order of one connection's messages and drops a resend by its
    /// `Nats-Msg-Id`: the next batches are published while a batch waits for its PubAcks.
    fn window(&self) -> usize {
        WINDOW
    }

    fn send<'a>(
        &'a mut self,
        batch: &'a Batch,
    ) -> BoxFuture<'a, Result<Acknowledgement, DeliveryError>> {
        Box::pin(self.publish(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dot_in_an_id_is_escaped_reversibly_and_nothing_else_is() {
        assert_eq!(subject_token("sku-1:red_XL"), "sku-1:red_XL");
        assert_eq!(subject_token("shop.berlin.1"), "shop%2Eberlin%2E1");
        assert_eq!(
            subject_token("shop.berlin.1").replace("%2E", "."),
            "shop.berlin.1"
        );
        assert!(check_subject_prefix("inventory.events").is_ok());
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a"] {
            assert!(check_subject_prefix(bad).is_err(), "{bad}");
        }
    }
}
