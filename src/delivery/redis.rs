//! The Redis stock cache: a hash per item, `<key_prefix>:<store_id>:<product_id>`, holding
//! every quantity of its stock level (`on_hand`, `reserved`, `available`, `damaged`,
//! `quality_control`, `safety_stock`, `incoming`, `shortfall`, `low_stock_threshold`), its
//! `version`, the `position` of the event that set it, and its `store_id` and `product_id`.
//! `<key_prefix>:position` is the highest log position the cache has applied.
//!
//! A batch is one Lua script run, atomic in Redis: each item's hash is written only when the
//! event's version is newer than the hash's, so a resend or a rewind never moves an item
//! back. A flushed cache (no `<key_prefix>:position`) is seen by the deliverer, which starts
//! again from position 0 and rebuilds it.
//!
//! Ids may hold `:`, the key's separator: in a key every `:` of an id is written `%3A` (ids
//! never hold `%`), so two items never share a key. The hash's `store_id` and `product_id`
//! are the ids as they are.

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;

use super::{Batch, DeliveryError, Sink};
use crate::domain::{LogPosition, RecordedEvent};
use crate::log::BoxFuture;

/// KEYS[1] the position key, KEYS[2..] the items; ARGV[1] the batch's last position, then
/// per item its version and its fields (FIELDS of them).
const SCRIPT: &str = r"
local fields = {'position', 'store_id', 'product_id', 'on_hand', 'reserved', 'available',
  'damaged', 'quality_control', 'safety_stock', 'incoming', 'shortfall', 'low_stock_threshold'}
local width = #fields + 1
local written = 0
for item = 2, #KEYS do
  local base = 1 + (item - 2) * width
  local version = tonumber(ARGV[base + 1])
  local current = tonumber(redis.call('HGET', KEYS[item], 'version') or '0')
  if version > current then
    local pairs = {'version', ARGV[base + 1]}
    for index, field in ipairs(fields) do
      pairs[#pairs + 1] = field
      pairs[#pairs + 1] = ARGV[base + 1 + index]
    end
    redis.call('HSET', KEYS[item], unpack(pairs))
    written = written + 1
  end
end
local applied = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > applied then
  redis.call('SET', KEYS[1], ARGV[1])
end
return written
";

/// An id as one part of a key: `:` written `%3A`.
pub fn key_part(id: &str) -> String {
    id.replace(':', "%3A")
}

/// The hash of an item.
pub fn item_key(prefix: &str, event: &RecordedEvent) -> String {
    format!(
        "{prefix}:{}:{}",
        key_part(event.stream.store_id.as_str()),
        key_part(event.stream.product_id.as_str())
    )
}

pub fn position_key(prefix: &str) -> String {
    format!("{prefix}:position")
}

pub struct RedisSink {
    url: String,
    key_prefix: String,
    script: redis::Script,
    connection: Option<MultiplexedConnection>,
}

impl RedisSink {
    pub fn new(url: &str, key_prefix: &str) -> RedisSink {
        RedisSink {
            url: url.to_owned(),
            key_prefix: key_prefix.to_owned(),
            script: redis::Script::new(SCRIPT),
            connection: None,
        }
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, DeliveryError> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let unreachable = |error: redis::RedisError| {
            DeliveryError::unsent(format!(
                "cannot connect to Redis at {}: {error}",
                super::redacted(&self.url)
            ))
        };
        let client = redis::Client::open(self.url.as_str()).map_err(unreachable)?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(unreachable)?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    async fn write(&mut self, batch: &Batch) -> Result<(), DeliveryError> {
        let mut connection = self.connection().await?;
        // Only each item's last event of the batch matters: its stock is the newest.
        let mut last: HashMap<String, &RecordedEvent> = HashMap::new();
        for event in &batch.events {
            last.insert(item_key(&self.key_prefix, event), event);
        }
        let through = batch.through.0;
        let mut invocation = self.script.prepare_invoke();
        invocation.key(position_key(&self.key_prefix)).arg(through);
        let mut items: Vec<(&String, &&RecordedEvent)> = last.iter().collect();
        items.sort_by_key(|(_, event)| event.position);
        for (key, event) in items {
            let stock = event.stock_after;
            invocation
                .key(key)
                .arg(event.version.0)
                .arg(event.position.0)
                .arg(event.stream.store_id.as_str())
                .arg(event.stream.product_id.as_str())
                .arg(stock.on_hand())
                .arg(stock.reserved())
                .arg(stock.available())
                .arg(stock.damaged())
                .arg(stock.quality_control())
                .arg(stock.safety_stock())
                .arg(stock.incoming())
                .arg(stock.shortfall())
                .arg(stock.low_stock_threshold());
        }
        let result: Result<i64, _> = invocation.invoke_async(&mut connection).await;
        result.map(|_| ()).map_err(|error| {
            if error.is_io_error() || error.is_connection_dropped() {
                self.connection = None;
            }
            DeliveryError::sent(format!("the script failed: {error}"))
        })
    }

    async fn applied(&mut self) -> Result<Option<LogPosition>, DeliveryError> {
        let mut connection = self.connection().await?;
        let position: Option<u64> = redis::cmd("GET")
            .arg(position_key(&self.key_prefix))
            .query_async(&mut connection)
            .await
            .map_err(|error| {
                self.connection = None;
                DeliveryError::unsent(format!("cannot read the cache's position: {error}"))
            })?;
        Ok(Some(LogPosition(position.unwrap_or(0))))
    }
}

impl Sink for RedisSink {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn deliver<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.write(batch))
    }

    fn recorded_position(&mut self) -> BoxFuture<'_, Result<Option<LogPosition>, DeliveryError>> {
        Box::pin(self.applied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_colon_in_an_id_is_escaped_so_two_items_never_share_a_key() {
        assert_eq!(key_part("sku-1.red"), "sku-1.red");
        assert_ne!(
            format!("stock:{}:{}", key_part("a:b"), key_part("c")),
            format!("stock:{}:{}", key_part("a"), key_part("b:c"))
        );
    }
}
