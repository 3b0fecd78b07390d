//! The NATS JetStream and Redis sinks against the machine's own servers (`.ci/run` starts them
//! and sets `INVENTORY_TEST_NATS_URL` and `INVENTORY_TEST_REDIS_URL`). JetStream's stream holds
//! exactly the log's events, also after a resend of all of them; the Redis hashes equal the
//! read model after load, after a rewind and after a flush.

use crate::support;

use std::collections::HashMap;

use std::time::Duration;

use inventory::delivery::{SinkConfig, SinkTarget};
use inventory::grpc::pb;
use support::delivery::{WAIT, cursor_at, quick, rewind, sink_status};
use support::proxy::Proxy;
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

/// A log of receipts written before any sink existed, and a JetStream stream and subject
/// prefix of the test's own: a catch-up of many small batches (10 events each).
struct Backlog {
    url: String,
    stream_name: String,
    prefix: String,
    data: tempfile::TempDir,
    head: u64,
    jetstream: async_nats::jetstream::Context,
}

impl Backlog {
    /// `lines` receipts of one unit each, in commands of 500 lines; `None` without NATS.
    async fn write(lines: usize) -> Option<Backlog> {
        let url = support::nats_url()?;
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let data = tempfile::tempdir().unwrap();
        let server = Combined::start(data.path()).await;
        let mut commands = server.commands().await;
        let mut head = 0;
        for chunk in 0..lines.div_ceil(500) {
            let changes = (0..500.min(lines - chunk * 500))
                .map(|index| support::add_change(&format!("sku-{index}"), "shop.1", 1))
                .collect();
            let answer = commands
                .apply_stock_changes(pb::ApplyStockChangesRequest {
                    changes,
                    reason: "backlog".to_owned(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            head = head.max(answer.position);
        }
        server.stop().await;
        let jetstream =
            async_nats::jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
        Some(Backlog {
            stream_name: format!("inventory_test_{unique}"),
            prefix: format!("invtest.{unique}"),
            url,
            data,
            head,
            jetstream,
        })
    }

    /// The NATS sink, through `url` (the machine's NATS or a proxy in front of it).
    fn sink(&self, url: &str) -> SinkConfig {
        let mut sink = quick(SinkConfig::nats(url, &self.stream_name, &self.prefix).unwrap());
        sink.batch_max = 10;
        sink
    }

    async fn serve(&self, sink: SinkConfig) -> Combined {
        Combined::start_with_sinks(self.data.path(), vec![sink]).await
    }

    /// Waits for the catch-up to be under way (at position 2000 or past it); the position.
    async fn under_way(&self, server: &Combined) -> u64 {
        wait_for(WAIT, "the catch-up under way", async || {
            let status = sink_status(server, "nats").await;
            (status.position >= 2000).then_some(status.position)
        })
        .await
    }

    /// The stream holds the events at positions 1 to the head, each once, in order; then it
    /// is deleted.
    async fn assert_each_event_once_in_order(&self) {
        use async_nats::jetstream::consumer;
        use tokio_stream::StreamExt;
        let stream = self.jetstream.get_stream(&self.stream_name).await.unwrap();
        let held = stream.get_info().await.unwrap().state.messages;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        for expected in 1..=held {
            let message = messages.next().await.unwrap().unwrap();
            let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            let id = message
                .headers
                .as_ref()
                .unwrap()
                .get("Nats-Msg-Id")
                .unwrap();
            assert_eq!(event["eventId"], id.as_str());
            assert_eq!(
                event["position"],
                expected.to_string(),
                "message {expected} of the stream"
            );
        }
        assert_eq!(held, self.head, "one message per event");
        self.jetstream
            .delete_stream(&self.stream_name)
            .await
            .unwrap();
    }
}

/// The NATS connection cut while several batches wait for their PubAcks (a backlog, small
/// batches): the batch that failed and every one published after it go again, and JetStream
/// holds each event once, in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_holds_each_event_once_in_order_after_a_cut_with_batches_in_flight() {
    let Some(backlog) = Backlog::write(20_000).await else {
        return;
    };
    let upstream = tokio::net::lookup_host(backlog.url.trim_start_matches("nats://"))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(upstream).await;
    let mut sink = backlog.sink(&format!("nats://{}", proxy.address));
    if let SinkTarget::Nats { timeout, .. } = &mut sink.target {
        *timeout = Duration::from_millis(500);
    }
    let server = backlog.serve(sink).await;
    backlog.under_way(&server).await;
    proxy.cut();
    let at_cut = sink_status(&server, "nats").await.position;
    assert!(
        at_cut < backlog.head,
        "caught up before the cut: nothing was in flight"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    let status = cursor_at(&server, "nats", backlog.head).await;
    assert!(status.failures >= 1, "the cut failed a batch: {status:?}");
    assert!(status.redelivered_events >= 10, "{status:?}");
    backlog.assert_each_event_once_in_order().await;
    server.stop().await;
}

/// JetStream refusing messages (the stream full) while several batches are in flight: the
/// one that failed and every one published after it go again once the stream takes them, and
/// the stream holds each event once, in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_holds_each_event_once_in_order_after_refusing_batches_in_flight() {
    use async_nats::jetstream::stream;
    let Some(backlog) = Backlog::write(10_000).await else {
        return;
    };
    // Full at 3001 messages, with new ones refused: not a multiple of the batch.
    let mut config = stream::Config {
        name: backlog.stream_name.clone(),
        subjects: vec![format!("{}.>", backlog.prefix)],
        max_messages: 3001,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    backlog
        .jetstream
        .create_stream(config.clone())
        .await
        .unwrap();
    let server = backlog.serve(backlog.sink(&backlog.url)).await;
    let refused = wait_for(WAIT, "the full stream refusing a batch", async || {
        let status = sink_status(&server, "nats").await;
        (status.failures >= 2).then_some(status)
    })
    .await;
    assert_eq!(refused.position, 3000, "{refused:?}");
    assert!(
        refused.last_error.contains("maximum messages"),
        "{refused:?}"
    );
    config.max_messages = -1;
    backlog.jetstream.update_stream(config).await.unwrap();
    cursor_at(&server, "nats", backlog.head).await;
    backlog.assert_each_event_once_in_order().await;
    server.stop().await;
}

/// A JetStream sink stores its cursor at most every 100 ms while batches keep coming, and at
/// once when the server stops: a stop in the middle of a catch-up leaves the cursor at least
/// where `ListSinks` last showed it, and the restart goes on from there, each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_mid_catch_up_stores_the_cursor_the_sink_had_reached() {
    let Some(backlog) = Backlog::write(20_000).await else {
        return;
    };
    let server = backlog.serve(backlog.sink(&backlog.url)).await;
    let shown = backlog.under_way(&server).await;
    server.stop().await;
    let file = std::fs::read_to_string(backlog.data.path().join("sinks/nats.cursor.json")).unwrap();
    let stored = serde_json::from_str::<serde_json::Value>(&file).unwrap()["position"]
        .as_u64()
        .unwrap();
    assert!(
        stored >= shown && stored < backlog.head,
        "stored {stored}, shown {shown} before the stop, head {}",
        backlog.head
    );
    let server = backlog.serve(backlog.sink(&backlog.url)).await;
    cursor_at(&server, "nats", backlog.head).await;
    backlog.assert_each_event_once_in_order().await;
    server.stop().await;
}

/// The stream deleted under a running sink: NATS answers that nothing captures the subjects,
/// and the sink creates the stream again and goes on with the events after it.
#[tokio::test]
async fn a_deleted_stream_is_created_again() {
    let Some(backlog) = Backlog::write(100).await else {
        return;
    };
    let server = backlog.serve(backlog.sink(&backlog.url)).await;
    cursor_at(&server, "nats", backlog.head).await;
    backlog
        .jetstream
        .delete_stream(&backlog.stream_name)
        .await
        .unwrap();
    let head = load(&server, &["sku-1", "sku-2"], "shop.1", 5).await;
    let status = cursor_at(&server, "nats", head).await;
    assert!(status.failures >= 1, "{status:?}");
    let mut stream = backlog
        .jetstream
        .get_stream(&backlog.stream_name)
        .await
        .unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(
        state.messages,
        head - backlog.head,
        "the events after the deletion"
    );
    let first = stream.get_raw_message(state.first_sequence).await.unwrap();
    let event: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(event["position"], (backlog.head + 1).to_string());
    backlog
        .jetstream
        .delete_stream(&backlog.stream_name)
        .await
        .unwrap();
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
