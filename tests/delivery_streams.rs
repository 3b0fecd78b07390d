//! The NATS JetStream and Redis sinks against the machine's own servers (`.ci/run` starts them
//! and sets `INVENTORY_TEST_NATS_URL` and `INVENTORY_TEST_REDIS_URL`). JetStream's stream holds
//! exactly the log's events, also after a resend of all of them; the Redis hashes equal the
//! read model after load, after a rewind and after a flush.

mod support;

use std::collections::HashMap;

use inventory::delivery::SinkConfig;
use inventory::grpc::pb;
use support::delivery::{WAIT, cursor_at, quick, rewind};
use support::{Combined, add_stock, reserve_stock, wait_for};

/// Receipts and reservations over `items`, in store `store`; the log's head after them.
async fn load(server: &Combined, items: &[&str], store: &str, rounds: usize) -> u64 {
    let mut commands = server.commands().await;
    let mut head = 0;
    for round in 0..rounds {
        for item in items {
            let result = if round % 3 == 2 {
                commands
                    .reserve_stock(reserve_stock(item, store, 1))
                    .await
                    .unwrap()
                    .into_inner()
                    .result
            } else {
                commands
                    .add_stock(add_stock(item, store, 2))
                    .await
                    .unwrap()
                    .into_inner()
                    .result
            };
            head = result.unwrap().position;
        }
    }
    head
}

#[tokio::test]
async fn jetstream_holds_exactly_the_logs_events_also_after_everything_is_sent_again() {
    let Some(url) = support::nats_url() else {
        return;
    };
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let stream_name = format!("inventory_test_{unique}");
    let prefix = format!("invtest.{unique}");
    let data = tempfile::tempdir().unwrap();
    let sink = quick(SinkConfig::nats(&url, &stream_name, &prefix).unwrap());
    let server = Combined::start_with_sinks(data.path(), vec![sink]).await;
    let items = ["sku.1", "sku-2", "sku:3.red"];
    let head = load(&server, &items, "shop.berlin", 40).await;
    cursor_at(&server, "nats", head).await;

    // Everything again: every message id is one JetStream already has.
    rewind(&server, "nats", 0).await;
    cursor_at(&server, "nats", head).await;
    // And a restart (the cursor file is read back; nothing is sent twice).
    server.stop().await;
    let server = Combined::start_with_sinks(
        data.path(),
        vec![quick(
            SinkConfig::nats(&url, &stream_name, &prefix).unwrap(),
        )],
    )
    .await;
    let head = head.max(load(&server, &items, "shop.berlin", 1).await);
    cursor_at(&server, "nats", head).await;

    let client = async_nats::connect(url.as_str()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(&stream_name).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, head, "exactly one message per event");
    let mut history = server.queries().await;
    let mut ids = std::collections::HashSet::new();
    for sequence in 1..=head {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(
            event["position"],
            sequence.to_string(),
            "the stream is in log order"
        );
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .expect("every message has its id")
            .to_string();
        assert_eq!(event["eventId"], id);
        assert!(ids.insert(id));
        let subject = message.subject.to_string();
        assert!(
            subject.starts_with(&format!("{prefix}.shop%2Eberlin.")),
            "{subject}"
        );
        let kind = subject.rsplit('.').next().unwrap();
        assert!(
            matches!(kind, "STOCK_ADDED" | "STOCK_RESERVED"),
            "{subject}"
        );
        let product = subject.split('.').nth(3).unwrap().replace("%2E", ".");
        assert_eq!(event["productId"], product.as_str());
    }
    // The stream's events are the log's.
    let logged = history
        .get_history(pb::GetHistoryRequest {
            product_id: "sku:3.red".into(),
            store_id: "shop.berlin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for event in logged.events {
        assert!(ids.contains(&event.event_id));
    }
    jetstream.delete_stream(&stream_name).await.unwrap();
    server.stop().await;
}

/// Every hash of `prefix`, by key.
async fn hashes(
    connection: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> HashMap<String, HashMap<String, String>> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(connection)
        .await
        .unwrap();
    let mut all = HashMap::new();
    for key in keys {
        if key.ends_with(":position") {
            continue;
        }
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(connection)
            .await
            .unwrap();
        all.insert(key, hash);
    }
    all
}

/// What the read model says of each item, as the cache should hold it.
async fn expected(
    server: &Combined,
    prefix: &str,
    items: &[&str],
    store: &str,
) -> HashMap<String, HashMap<String, String>> {
    let mut queries = server.queries().await;
    let mut all = HashMap::new();
    for item in items {
        let answer = queries
            .get_stock(support::get_stock(item, store, 0))
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        let stock = answer.stock.unwrap();
        let fields = [
            ("version", answer.version.to_string()),
            ("position", answer.position.to_string()),
            ("store_id", store.to_owned()),
            ("product_id", item.to_string()),
            ("on_hand", stock.on_hand.to_string()),
            ("reserved", stock.reserved.to_string()),
            ("available", stock.available.to_string()),
            ("damaged", stock.damaged.to_string()),
            ("quality_control", stock.quality_control.to_string()),
            ("safety_stock", stock.safety_stock.to_string()),
            ("incoming", stock.incoming.to_string()),
            ("shortfall", stock.shortfall.to_string()),
            ("low_stock_threshold", stock.low_stock_threshold.to_string()),
        ];
        let key = format!(
            "{prefix}:{}:{}",
            store.replace(':', "%3A"),
            item.replace(':', "%3A")
        );
        all.insert(
            key,
            fields
                .into_iter()
                .map(|(field, value)| (field.to_owned(), value))
                .collect(),
        );
    }
    all
}

#[tokio::test]
async fn the_redis_hashes_equal_the_read_model_after_load_a_rewind_and_a_flush() {
    let Some(url) = support::redis_url() else {
        return;
    };
    // A database of its own, so that FLUSHDB is a real flush that touches no one else.
    let url = format!("{}/9", url.trim_end_matches('/'));
    let prefix = "stock";
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut connection)
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let sink = quick(SinkConfig::redis(&url, prefix).unwrap());
    let server = Combined::start_with_sinks(data.path(), vec![sink]).await;
    let items = ["sku-1", "sku:2", "a:b", "a"];
    let store = "store:x";
    let head = load(&server, &items, store, 30).await;
    cursor_at(&server, "redis", head).await;
    let want = expected(&server, prefix, &items, store).await;
    assert_eq!(want.len(), 4, "no two items share a key");
    assert_eq!(hashes(&mut connection, prefix).await, want, "after load");
    let position: u64 = redis::cmd("GET")
        .arg("stock:position")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(position, head);

    // A rewind sends old events again: no hash moves back.
    rewind(&server, "redis", 5).await;
    cursor_at(&server, "redis", head).await;
    assert_eq!(
        hashes(&mut connection, prefix).await,
        want,
        "after a rewind"
    );

    // A flush: the deliverer sees the position gone and rebuilds from 0.
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut connection)
        .await
        .unwrap();
    wait_for(WAIT, "the cache rebuilt", async || {
        let position: Option<u64> = redis::cmd("GET")
            .arg("stock:position")
            .query_async(&mut connection)
            .await
            .unwrap();
        (position == Some(head)).then_some(())
    })
    .await;
    assert_eq!(hashes(&mut connection, prefix).await, want, "after a flush");

    // More load on top.
    let head = load(&server, &items, store, 3).await;
    cursor_at(&server, "redis", head).await;
    let want = expected(&server, prefix, &items, store).await;
    assert_eq!(
        hashes(&mut connection, prefix).await,
        want,
        "after more load"
    );
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut connection)
        .await
        .unwrap();
    server.stop().await;
}
