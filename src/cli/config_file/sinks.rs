//! The sections of the outbound sinks: `[[webhook]]`, `[nats]`, `[redis]`, and their filters.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::app::EventFilter;
use crate::app::subscription::MAX_FILTER_IDS;
use crate::delivery::webhook::Endpoint;
use crate::delivery::{
    DEFAULT_BATCH_MAX, DEFAULT_TIMEOUT, MAX_BATCH_MAX, RetryPolicy, SinkConfig, SinkTarget,
    check_sink_name,
};
use crate::domain::{EventKind, ProductId, StoreId};

/// `[nats]`: every event published to NATS JetStream (the sink is named `nats`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct NatsSection {
    pub(super) url: String,
    pub(super) stream: String,
    pub(super) subject_prefix: String,
    #[serde(default)]
    pub(super) filter: FilterSection,
    pub(super) batch_max: Option<usize>,
    /// How long one delivery may take: `10s`, `500ms`, `2m`.
    pub(super) timeout: Option<String>,
    pub(super) retry_initial: Option<String>,
    pub(super) retry_max: Option<String>,
    pub(super) park_after: Option<String>,
}

/// `[redis]`: the stock cache (the sink is named `redis`). No filter: it holds every item.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RedisSection {
    pub(super) url: String,
    pub(super) key_prefix: String,
    pub(super) batch_max: Option<usize>,
    /// How long one delivery may take: `10s`, `500ms`, `2m`.
    pub(super) timeout: Option<String>,
    pub(super) retry_initial: Option<String>,
    pub(super) retry_max: Option<String>,
    pub(super) park_after: Option<String>,
}

/// What every sink may set: its batch size, its timeout and its retry policy. (Repeated in each
/// sink's section rather than flattened: serde's `flatten` would lose the position of an
/// unknown key's error.)
pub(super) struct DeliveryKeys<'a> {
    pub(super) batch_max: Option<usize>,
    pub(super) timeout: &'a Option<String>,
    pub(super) retry_initial: &'a Option<String>,
    pub(super) retry_max: &'a Option<String>,
    pub(super) park_after: &'a Option<String>,
}

/// The [`DeliveryKeys`] of a sink section.
macro_rules! delivery_keys {
    ($section:expr) => {
        DeliveryKeys {
            batch_max: $section.batch_max,
            timeout: &$section.timeout,
            retry_initial: &$section.retry_initial,
            retry_max: &$section.retry_max,
            park_after: &$section.park_after,
        }
    };
}
pub(super) use delivery_keys;

impl DeliveryKeys<'_> {
    /// `sink` with these keys applied, each error naming its key through `key`.
    pub(super) fn apply(
        &self,
        key: &dyn Fn(&str) -> String,
        mut sink: SinkConfig,
    ) -> Result<SinkConfig, (String, String)> {
        if let Some(batch_max) = self.batch_max {
            if !(1..=MAX_BATCH_MAX).contains(&batch_max) {
                return Err((key("batch_max"), format!("must be 1 to {MAX_BATCH_MAX}")));
            }
            sink.batch_max = batch_max;
        }
        let duration = |field: &str, value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => parse_duration(text).map_err(|problem| (key(field), problem)),
        };
        sink.retry = RetryPolicy {
            initial: duration("retry_initial", self.retry_initial, sink.retry.initial)?,
            max: duration("retry_max", self.retry_max, sink.retry.max)?,
            park_after: duration("park_after", self.park_after, sink.retry.park_after)?,
        };
        if sink.retry.max < sink.retry.initial {
            return Err((
                key("retry_max"),
                "must not be shorter than `retry_initial`".into(),
            ));
        }
        let timeout = duration("timeout", self.timeout, DEFAULT_TIMEOUT)?;
        match &mut sink.target {
            SinkTarget::Webhook { timeout: t, .. }
            | SinkTarget::Nats { timeout: t, .. }
            | SinkTarget::Redis { timeout: t, .. } => *t = timeout,
        }
        Ok(sink)
    }
}

/// `[[webhook]]`: an HTTP endpoint that gets the log's events, in batches, signed.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhookEntry {
    pub(super) name: String,
    pub(super) url: String,
    /// The signing secret itself; prefer `secret_env`.
    pub(super) secret: Option<String>,
    /// The environment variable holding the signing secret.
    pub(super) secret_env: Option<String>,
    #[serde(default)]
    pub(super) filter: FilterSection,
    /// The PEM CA of an https:// endpoint's certificate; the system's CAs by default.
    pub(super) ca: Option<PathBuf>,
    pub(super) batch_max: Option<usize>,
    /// How long one delivery may take: `10s`, `500ms`, `2m`.
    pub(super) timeout: Option<String>,
    pub(super) retry_initial: Option<String>,
    pub(super) retry_max: Option<String>,
    pub(super) park_after: Option<String>,
}

/// A sink's `filter`: the fields of `SubscriptionFilter`; an empty list matches everything.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FilterSection {
    #[serde(default)]
    pub(super) product_ids: Vec<String>,
    #[serde(default)]
    pub(super) store_ids: Vec<String>,
    /// Event type names as the proto spells them: `STOCK_LOW`, `OUT_OF_STOCK`, …
    #[serde(default)]
    pub(super) event_types: Vec<String>,
}

/// A duration as the configuration writes it: a whole number and a unit, `ms`, `s`, `m` or
/// `h` (`500ms`, `10s`, `24h`).
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 10s, 5m or 24h"))?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(amount),
        "s" => Duration::from_secs(amount),
        "m" => Duration::from_secs(amount.saturating_mul(60)),
        "h" => Duration::from_secs(amount.saturating_mul(3600)),
        _ => return Err(format!("{text:?}: the unit is one of ms, s, m, h")),
    };
    if duration.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(duration)
}

/// `duration` as the configuration writes it, in its largest whole unit.
pub(super) fn human(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

impl FilterSection {
    pub(super) fn filter(
        &self,
        key: &dyn Fn(&str) -> String,
    ) -> Result<EventFilter, (String, String)> {
        let lists = [
            ("filter.product_ids", self.product_ids.len()),
            ("filter.store_ids", self.store_ids.len()),
            ("filter.event_types", self.event_types.len()),
        ];
        for (field, length) in lists {
            if length > MAX_FILTER_IDS {
                return Err((
                    key(field),
                    format!("at most {MAX_FILTER_IDS}, got {length}"),
                ));
            }
        }
        let mut filter = EventFilter::default();
        for (index, text) in self.product_ids.iter().enumerate() {
            let id = ProductId::parse(text).map_err(|error| {
                (
                    key(&format!("filter.product_ids[{index}]")),
                    error.to_string(),
                )
            })?;
            filter.product_ids.insert(id);
        }
        for (index, text) in self.store_ids.iter().enumerate() {
            let id = StoreId::parse(text).map_err(|error| {
                (
                    key(&format!("filter.store_ids[{index}]")),
                    error.to_string(),
                )
            })?;
            filter.store_ids.insert(id);
        }
        for (index, name) in self.event_types.iter().enumerate() {
            let kind = EventKind::parse(name).ok_or_else(|| {
                (
                    key(&format!("filter.event_types[{index}]")),
                    format!(
                        "{name:?} is not an event type (STOCK_ADDED, STOCK_LOW, OUT_OF_STOCK, …, as in the proto)"
                    ),
                )
            })?;
            filter.kinds.insert(kind);
        }
        Ok(filter)
    }
}

impl WebhookEntry {
    pub(super) fn sink(&self, index: usize) -> Result<SinkConfig, (String, String)> {
        let key = |field: &str| format!("webhook[{index}].{field}");
        check_sink_name(&self.name).map_err(|problem| (key("name"), problem))?;
        let endpoint = Endpoint::parse(&self.url).map_err(|problem| (key("url"), problem))?;
        let secret = match (&self.secret, &self.secret_env) {
            (Some(_), Some(_)) => {
                return Err((
                    key("secret"),
                    "give `secret` or `secret_env`, not both".into(),
                ));
            }
            (None, None) => {
                return Err((
                    key("secret"),
                    "missing: a webhook signs what it sends; give `secret_env` (an environment \
                     variable holding the secret) or `secret`"
                        .into(),
                ));
            }
            (Some(secret), None) => secret.clone(),
            (None, Some(variable)) => std::env::var(variable).map_err(|_| {
                (
                    key("secret_env"),
                    format!("the environment variable {variable} is not set"),
                )
            })?,
        };
        if secret.len() < 16 {
            return Err((
                key(if self.secret.is_some() {
                    "secret"
                } else {
                    "secret_env"
                }),
                "the secret must be at least 16 characters".into(),
            ));
        }
        if !endpoint.is_https() && self.ca.is_some() {
            return Err((
                key("ca"),
                "a CA is given but the URL is not https://".into(),
            ));
        }
        let sink = SinkConfig {
            name: self.name.clone(),
            filter: self.filter.filter(&key)?,
            batch_max: DEFAULT_BATCH_MAX,
            retry: RetryPolicy::default(),
            target: SinkTarget::Webhook {
                endpoint,
                secret: secret.into_bytes(),
                timeout: DEFAULT_TIMEOUT,
                ca: self.ca.clone(),
            },
        };
        delivery_keys!(self).apply(&key, sink)
    }
}
