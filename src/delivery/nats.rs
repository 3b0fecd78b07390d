//! The NATS JetStream sink: every event published to
//! `<subject_prefix>.<store_id>.<product_id>.<EVENT_TYPE>` on a stream the sink creates if it
//! is missing (capturing `<subject_prefix>.>`), with `Nats-Msg-Id` set to the event's id so
//! that JetStream drops a resend within its duplicate window. A batch is published pipelined
//! and acknowledged once every message of it has its PubAck.
//!
//! Ids may hold `.`, which NATS takes as a token separator: in a subject every `.` of an id is
//! written `%2E` (ids never hold `%`, so the encoding is reversible: replace `%2E` by `.`).

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::{Batch, DeliveryError, Sink, json};
use crate::domain::RecordedEvent;
use crate::log::BoxFuture;

/// How long JetStream remembers a message id to drop its resend, for a stream the sink
/// creates (NATS's own default).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

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
    context: Option<jetstream::Context>,
}

impl NatsSink {
    pub fn new(url: &str, stream: &str, subject_prefix: &str) -> NatsSink {
        NatsSink {
            url: url.to_owned(),
            stream: stream.to_owned(),
            subject_prefix: subject_prefix.to_owned(),
            context: None,
        }
    }

    async fn connect(&self) -> Result<jetstream::Context, DeliveryError> {
        let client = async_nats::ConnectOptions::new()
            .name("inventory")
            .connect(self.url.as_str())
            .await
            .map_err(|error| {
                DeliveryError::unsent(format!(
                    "cannot connect to NATS at {}: {error}",
                    super::redacted(&self.url)
                ))
            })?;
        let context = jetstream::new(client);
        context
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
        Ok(context)
    }

    async fn publish(&mut self, batch: &Batch) -> Result<(), DeliveryError> {
        let context = match &self.context {
            Some(context) => context.clone(),
            None => {
                let context = self.connect().await?;
                self.context = Some(context.clone());
                context
            }
        };
        let mut acks = Vec::with_capacity(batch.events.len());
        let mut payload = Vec::with_capacity(512);
        for event in &batch.events {
            payload.clear();
            json::write_event(event, &mut payload);
            let mut headers = async_nats::HeaderMap::new();
            let id = uuid::Uuid::from_u128(event.event_id.0).to_string();
            headers.insert("Nats-Msg-Id", id.as_str());
            let ack = context
                .publish_with_headers(
                    subject(&self.subject_prefix, event),
                    headers,
                    payload.clone().into(),
                )
                .await
                .map_err(|error| DeliveryError::sent(format!("publish failed: {error}")))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await
                .map_err(|error| DeliveryError::sent(format!("no PubAck: {error}")))?;
        }
        Ok(())
    }
}

impl Sink for NatsSink {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn deliver<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), DeliveryError>> {
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
