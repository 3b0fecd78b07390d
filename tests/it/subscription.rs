//! Subscriptions: no gap and no duplicate from any position under concurrent writes, filters
//! and checkpoints, slow consumers, and the per-server limit.
//!
//! Over 600 lines: the subscription scenarios share a counting log and stream helpers.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::transport::{Channel, Server};

use inventory::app::command::CommandState;
use inventory::app::subscription::{
    SUBSCRIPTION_BUFFER, SUBSCRIPTION_READ_BATCH, SubscriptionItem,
};
use inventory::app::{
    CommandRequest, CommandSide, EventFilter, Shutdown, ShutdownSignal, SystemClock, subscribe,
    subscribe_with_stall,
};
use inventory::domain::AddStock;
use inventory::domain::{
    LogPosition, ProductId, Quantity, Reason, RecordedEvent, StoreId, StreamKey, StreamVersion,
};
use inventory::grpc::event_service::EventApi;
use inventory::grpc::pb;
use inventory::grpc::pb::event_service_client::EventServiceClient;
use inventory::log::{AppendLock, BoxFuture, EmbeddedLog, EventLog, LogError};
use pb::subscribe_response::Message;
use support::{Combined, add_stock, reserve_stock};

/// Everything in the log, read from the file after the server stopped: the truth.
async fn log_contents(directory: &std::path::Path) -> Vec<(u64, String)> {
    let (log, _) = EmbeddedLog::open(directory, |_| Ok(())).unwrap();
    let mut events = Vec::new();
    loop {
        let page = log
            .read_all(LogPosition(events.len() as u64), 4096)
            .await
            .unwrap();
        if page.is_empty() {
            return events;
        }
        events.extend(page.into_iter().map(|e| {
            (
                e.position.0,
                uuid::Uuid::from_u128(e.event_id.0).to_string(),
            )
        }));
    }
}

async fn next_message(stream: &mut tonic::Streaming<pb::SubscribeResponse>) -> Message {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a message within 20 s")
        .expect("the stream is open")
        .expect("no error")
        .message
        .expect("a message")
}

fn subscribe_request(from_position: u64) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        from_position,
        filter: None,
    }
}

/// Writers and subscribers at random positions, all at once.
async fn interleaving(writers: usize, commands_per_writer: usize, starts: Vec<(u64, u64)>) {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let (done, done_watch) = tokio::sync::watch::channel(None::<u64>);
    let mut subscribers = Vec::new();
    for (from, delay_ms) in starts {
        let mut events = server.events().await;
        let mut done_watch = done_watch.clone();
        subscribers.push(tokio::spawn(async move {
            // Not a wait for anything: a random start, so that subscriptions begin at
            // different moments of the writes.
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let mut stream = events
                .subscribe(subscribe_request(from))
                .await
                .unwrap()
                .into_inner();
            let mut received = Vec::new();
            let mut last = from;
            loop {
                if let Some(target) = *done_watch.borrow()
                    && last >= target
                {
                    break;
                }
                tokio::select! {
                    message = next_message(&mut stream) => match message {
                        Message::Event(event) => {
                            last = event.position;
                            received.push((event.position, event.event_id));
                        }
                        Message::CaughtUp(_) | Message::Checkpoint(_) => {}
                    },
                    _ = done_watch.changed() => {}
                }
            }
            (from, received)
        }));
    }
    let mut writer_tasks = Vec::new();
    for writer in 0..writers {
        let mut commands = server.commands().await;
        writer_tasks.push(tokio::spawn(async move {
            for i in 0..commands_per_writer {
                let product = format!("p{}", (writer + i) % 3);
                if i % 3 == 2 {
                    // May be refused for lack of stock: refusals write nothing.
                    let _ = commands
                        .reserve_stock(reserve_stock(&product, "s", 2))
                        .await;
                } else {
                    commands
                        .add_stock(add_stock(&product, "s", 1))
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for task in writer_tasks {
        task.await.unwrap();
    }
    // Every acknowledged command is in the log; a new subscription's caught-up position is
    // its head.
    let mut events = server.events().await;
    let mut probe = events
        .subscribe(subscribe_request(0))
        .await
        .unwrap()
        .into_inner();
    let head = loop {
        if let Message::CaughtUp(caught_up) = next_message(&mut probe).await {
            break caught_up.position;
        }
    };
    drop(probe);
    done.send_replace(Some(head));
    let mut results = Vec::new();
    for subscriber in subscribers {
        results.push(subscriber.await.unwrap());
    }
    server.stop().await;
    let log = log_contents(directory.path()).await;
    assert_eq!(log.len() as u64, head);
    for (from, received) in results {
        let expected: Vec<_> = log.iter().skip(from as usize).cloned().collect();
        assert_eq!(received, expected, "subscriber from position {from}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]
    /// Each subscriber receives exactly the log's events after its position, in order, with no
    /// gap and no duplicate, however its start interleaves with concurrent writes.
    #[test]
    fn every_subscriber_receives_exactly_the_events_after_its_position(
        writers in 1usize..4,
        commands_per_writer in 1usize..40,
        starts in proptest::collection::vec((0u64..60, 0u64..30), 1..5),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(interleaving(writers, commands_per_writer, starts));
    }
}

#[tokio::test]
async fn filters_send_only_matching_events_and_checkpoints_still_advance() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    commands
        .add_stock(add_stock("apple", "s1", 10))
        .await
        .unwrap(); // 1
    commands
        .add_stock(add_stock("apple", "s2", 10))
        .await
        .unwrap(); // 2
    commands
        .add_stock(add_stock("pear", "s1", 10))
        .await
        .unwrap(); // 3
    commands
        .reserve_stock(reserve_stock("apple", "s1", 1))
        .await
        .unwrap(); // 4
    commands
        .reserve_stock(reserve_stock("pear", "s1", 1))
        .await
        .unwrap(); // 5
    commands
        .reserve_stock(reserve_stock("apple", "s2", 1))
        .await
        .unwrap(); // 6

    let mut events = server.events().await;
    let filtered =
        |products: &[&str], stores: &[&str], types: &[pb::EventType]| pb::SubscribeRequest {
            from_position: 0,
            filter: Some(pb::SubscriptionFilter {
                product_ids: products.iter().map(|p| p.to_string()).collect(),
                store_ids: stores.iter().map(|s| s.to_string()).collect(),
                event_types: types.iter().map(|t| *t as i32).collect(),
            }),
        };
    let cases = [
        (filtered(&["apple"], &[], &[]), vec![1, 2, 4, 6]),
        (filtered(&[], &["s1"], &[]), vec![1, 3, 4, 5]),
        (
            filtered(&[], &[], &[pb::EventType::StockReserved]),
            vec![4, 5, 6],
        ),
        (
            filtered(&["apple", "pear"], &["s1"], &[pb::EventType::StockReserved]),
            vec![4, 5],
        ),
        (filtered(&["nothing"], &[], &[]), vec![]),
    ];
    for (request, expected) in cases {
        let mut stream = events
            .subscribe(request.clone())
            .await
            .unwrap()
            .into_inner();
        let mut received = Vec::new();
        loop {
            match next_message(&mut stream).await {
                Message::Event(event) => received.push(event.position),
                Message::CaughtUp(caught_up) => {
                    assert_eq!(
                        caught_up.position, 6,
                        "caught up covers everything examined"
                    );
                    break;
                }
                Message::Checkpoint(_) => {}
            }
        }
        assert_eq!(received, expected, "{:?}", request.filter);
    }

    // A filter that drops everything still hears how far the server has looked.
    let mut stream = events
        .subscribe(filtered(&["nothing"], &[], &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        next_message(&mut stream).await,
        Message::CaughtUp(_)
    ));
    for _ in 0..3 {
        commands
            .add_stock(add_stock("apple", "s1", 1))
            .await
            .unwrap();
    }
    loop {
        match next_message(&mut stream).await {
            Message::Checkpoint(checkpoint) if checkpoint.position == 9 => break,
            Message::Checkpoint(checkpoint) => assert!(checkpoint.position < 9),
            other => panic!("only checkpoints can come, got {other:?}"),
        }
    }

    // Bad filters are refused with the field named.
    let status = events
        .subscribe(pb::SubscribeRequest {
            from_position: 0,
            filter: Some(pb::SubscriptionFilter {
                product_ids: vec!["bad id".into()],
                store_ids: vec![],
                event_types: vec![0],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("filter.product_ids"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("filter.event_types"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_never_holds_up_the_writer_and_later_gets_everything() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut events = server.events().await;
    // Subscribes, then reads nothing while the writes happen.
    let mut stalled = events
        .subscribe(subscribe_request(0))
        .await
        .unwrap()
        .into_inner();

    const TOTAL: usize = 6000;
    let mut writers = Vec::new();
    for writer in 0..8 {
        let mut commands = server.commands().await;
        writers.push(tokio::spawn(async move {
            for i in 0..TOTAL / 8 {
                commands
                    .add_stock(add_stock(&format!("p{}", (writer * 31 + i) % 50), "s", 1))
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(60), writer)
            .await
            .expect("commands complete while a subscriber stalls")
            .unwrap();
    }

    // The stalled gRPC subscriber now reads, and receives every event in order.
    let mut expected = 1;
    while expected <= TOTAL as u64 {
        match next_message(&mut stalled).await {
            Message::Event(event) => {
                assert_eq!(event.position, expected);
                expected += 1;
            }
            Message::CaughtUp(_) | Message::Checkpoint(_) => {}
        }
    }
    server.stop().await;
}

/// The embedded log, counting the events subscriptions take from it with `read_all`: what a
/// subscription has read and not yet handed over is what it holds in memory.
struct CountingReads {
    log: Arc<dyn EventLog>,
    events_read: AtomicUsize,
}

impl EventLog for CountingReads {
    fn append(&self, events: Vec<RecordedEvent>) -> BoxFuture<'_, Result<(), LogError>> {
        self.log.append(events)
    }

    fn read_all(
        &self,
        after: LogPosition,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, LogError>> {
        Box::pin(async move {
            let events = self.log.read_all(after, limit).await?;
            self.events_read.fetch_add(events.len(), Ordering::SeqCst);
            Ok(events)
        })
    }

    fn read_stream(
        &self,
        stream: StreamKey,
        after: StreamVersion,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, LogError>> {
        self.log.read_stream(stream, after, limit)
    }

    fn head(&self) -> LogPosition {
        self.log.head()
    }

    fn lock(&self) -> BoxFuture<'_, Result<Box<dyn AppendLock>, LogError>> {
        self.log.lock()
    }

    fn latest_head(&self) -> BoxFuture<'_, Result<LogPosition, LogError>> {
        self.log.latest_head()
    }

    fn watch_head(&self) -> tokio::sync::watch::Receiver<LogPosition> {
        self.log.watch_head()
    }
}

/// `count` receipts of one unit, one command each, over seven items of store `s`.
async fn add_ones(handle: &inventory::app::CommandHandle, count: usize) {
    for i in 0..count {
        let command = AddStock {
            stream: StreamKey::new(
                ProductId::parse(&format!("p{}", i % 7)).unwrap(),
                StoreId::parse("s").unwrap(),
            ),
            quantity: Quantity::new(1).unwrap(),
            reason: Reason::default(),
        };
        handle
            .execute(CommandRequest {
                command,
                command_id: None,
                expected_version: None,
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_buffers_at_most_its_bound_however_far_behind_it_falls() {
    let directory = tempfile::tempdir().unwrap();
    let (log, _) = EmbeddedLog::open(directory.path(), |_| Ok(())).unwrap();
    let log: Arc<dyn EventLog> = Arc::new(log);
    let side = CommandSide::start(CommandState::new(), log.clone(), Arc::new(SystemClock));
    let counted = Arc::new(CountingReads {
        log: log.clone(),
        events_read: AtomicUsize::new(0),
    });
    let mut receiver = subscribe(
        counted.clone(),
        LogPosition(0),
        EventFilter::default(),
        Shutdown::never(),
    )
    .items;
    const TOTAL: usize = 3 * SUBSCRIPTION_BUFFER;
    add_ones(&side.handle, TOTAL).await;
    assert_eq!(log.head(), LogPosition(TOTAL as u64));
    // The consumer has read nothing: the reader task fills the channel to its bound.
    support::wait_until(
        Duration::from_secs(10),
        "the subscription's channel to fill to its bound",
        async || receiver.len() == SUBSCRIPTION_BUFFER,
    )
    .await;
    // Then it waits, holding at most the rest of one read batch: it does not go on reading
    // the log into memory, however far behind the consumer is.
    let events_read = counted.events_read.load(Ordering::SeqCst);
    assert!(
        events_read <= SUBSCRIPTION_BUFFER + SUBSCRIPTION_READ_BATCH,
        "the subscription read {events_read} of {TOTAL} events ahead of its consumer"
    );

    // Nothing was lost while it was behind: the consumer now gets every event, in order.
    let mut expected = 1;
    while expected <= TOTAL as u64 {
        let item = tokio::time::timeout(Duration::from_secs(20), receiver.recv())
            .await
            .expect("an item within 20 s")
            .expect("the subscription is open")
            .unwrap();
        match item {
            SubscriptionItem::Event(event) => {
                assert_eq!(event.position, LogPosition(expected));
                expected += 1;
            }
            SubscriptionItem::CaughtUp(_) | SubscriptionItem::Checkpoint(_) => {}
        }
    }
    drop(receiver);
    drop(side.handle);
    side.writer.await.unwrap();
}

/// A consumer that takes nothing while events wait is cut off after the stall limit, and its
/// reader stops; one that reads, however slowly, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_takes_nothing_is_cut_off_and_a_slow_one_is_not() {
    let directory = tempfile::tempdir().unwrap();
    let (log, _) = EmbeddedLog::open(directory.path(), |_| Ok(())).unwrap();
    let log: Arc<dyn EventLog> = Arc::new(log);
    let side = CommandSide::start(CommandState::new(), log.clone(), Arc::new(SystemClock));
    let stall = Duration::from_millis(300);
    let start = |log: &Arc<dyn EventLog>| {
        subscribe_with_stall(
            log.clone(),
            LogPosition(0),
            EventFilter::default(),
            Shutdown::never(),
            stall,
        )
    };
    let stalled = start(&log);
    let mut slow = start(&log);
    add_ones(&side.handle, 2 * SUBSCRIPTION_BUFFER).await;
    // The slow consumer takes one item every 100 ms, for two seconds.
    for _ in 0..20 {
        slow.items.recv().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stalled.stalled.load(Ordering::SeqCst), "cut off");
    assert!(
        !slow.stalled.load(Ordering::SeqCst),
        "a slow reader is not cut off"
    );
    // The cut-off reader task has ended: its channel ends after what it holds.
    let mut items = stalled.items;
    let mut held = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), items.recv()).await {
        held += 1;
    }
    assert!(held <= SUBSCRIPTION_BUFFER, "{held}");
    drop(slow);
    drop(side.handle);
    side.writer.await.unwrap();
}

/// Through gRPC: a subscriber that reads nothing while thousands of events wait is cut off,
/// and learns it with `RESOURCE_EXHAUSTED` when it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_subscriber_that_reads_nothing_is_told_it_was_cut_off() {
    const BATCHES: usize = 40;
    let directory = tempfile::tempdir().unwrap();
    let limits = inventory::server::Limits {
        subscription_stalled_after: Duration::from_millis(500),
        ..inventory::server::Limits::default()
    };
    let server = Combined::start_with(directory.path(), Arc::new(SystemClock), limits).await;
    let mut stream = server
        .events()
        .await
        .subscribe(subscribe_request(0))
        .await
        .unwrap()
        .into_inner();
    // More than the HTTP/2 windows, the transport's send buffer and the channel hold.
    let mut commands = server.commands().await;
    for batch in 0..BATCHES {
        let changes = (0..1000)
            .map(|index| support::add_change(&format!("p{batch}-{index}"), "s", 1))
            .collect();
        commands
            .apply_stock_changes(pb::ApplyStockChangesRequest {
                changes,
                reason: "delivery".to_owned(),
                command_id: String::new(),
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut received = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("nothing within 10 s after {received} items"))
        {
            Some(Ok(_)) => received += 1,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without a status after {received} items"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("took nothing"), "{status:?}");
    println!("{received} messages arrived before the cut-off");
    assert!(
        received < BATCHES * 1000,
        "{received} of {} events arrived before the end",
        BATCHES * 1000
    );
    server.stop().await;
}

/// Of a server's subscriptions, the last eighth (at most 64) are kept for `admin` and
/// `replica`: readers without a limit of their own take every other slot, and a following
/// query server and an operator still subscribe.
#[tokio::test]
async fn replicas_and_admins_keep_their_reserve_of_subscriptions() {
    use inventory::app::access::{Authenticator, Quota, Role};
    use support::secured::{as_, credential};
    let directory = tempfile::tempdir().unwrap();
    let (log, _) = EmbeddedLog::open(directory.path(), |_| Ok(())).unwrap();
    let log: Arc<dyn EventLog> = Arc::new(log);
    let (signal, shutdown) = ShutdownSignal::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // 16 slots: 14 open to all, 2 kept.
    let api = EventApi::with_limit(log, shutdown.clone(), 16);
    let mut reader = credential("reader", Role::Reader, &[], None);
    reader.entry.quota = Quota {
        max_subscriptions: Some(0),
        ..Quota::default()
    };
    let replica = credential("replica-1", Role::Replica, &[], None);
    let auth = Authenticator::new(vec![reader.entry.clone(), replica.entry.clone()]);
    let mut server_shutdown = shutdown.clone();
    let server = tokio::spawn(
        Server::builder()
            .layer(inventory::grpc::auth::AuthLayer::new(
                Some(Arc::new(auth)),
                "command",
            ))
            .add_service(pb::event_service_server::EventServiceServer::new(api))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                server_shutdown.wait().await
            }),
    );
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EventServiceClient::new(channel);
    let mut open = Vec::new();
    loop {
        match client
            .subscribe(as_(&reader.token, subscribe_request(0)))
            .await
        {
            Ok(stream) => open.push(stream.into_inner()),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                break;
            }
        }
    }
    assert_eq!(open.len(), 14, "a reader takes every slot but the reserve");
    for _ in 0..2 {
        open.push(
            client
                .subscribe(as_(&replica.token, subscribe_request(0)))
                .await
                .expect("the replica gets a kept slot")
                .into_inner(),
        );
    }
    let status = client
        .subscribe(as_(&replica.token, subscribe_request(0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    drop(open);
    signal.trigger();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn subscriptions_past_the_limit_are_refused_with_resource_exhausted() {
    let directory = tempfile::tempdir().unwrap();
    let (log, _) = EmbeddedLog::open(directory.path(), |_| Ok(())).unwrap();
    let log: Arc<dyn EventLog> = Arc::new(log);
    let (signal, shutdown) = ShutdownSignal::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let api = EventApi::with_limit(log, shutdown.clone(), 2);
    let mut server_shutdown = shutdown.clone();
    let server = tokio::spawn(
        Server::builder()
            // As every server: the layer that names each request's principal.
            .layer(inventory::grpc::auth::AuthLayer::new(None, "query"))
            .add_service(pb::event_service_server::EventServiceServer::new(api))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                server_shutdown.wait().await
            }),
    );
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EventServiceClient::new(channel);
    let first = client
        .subscribe(subscribe_request(0))
        .await
        .unwrap()
        .into_inner();
    let mut second = client
        .subscribe(subscribe_request(0))
        .await
        .unwrap()
        .into_inner();
    let status = client.subscribe(subscribe_request(0)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    // Ending one subscription frees its place.
    drop(first);
    let _third = support::wait_for(
        Duration::from_secs(10),
        "the place of the ended subscription to be reused",
        async || match client.subscribe(subscribe_request(0)).await {
            Ok(stream) => Some(stream.into_inner()),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                None
            }
        },
    )
    .await;
    // Streams end cleanly when the server shuts down.
    signal.trigger();
    assert!(matches!(
        next_message(&mut second).await,
        Message::CaughtUp(_)
    ));
    let end = tokio::time::timeout(Duration::from_secs(5), second.next())
        .await
        .expect("the stream ends at shutdown");
    assert!(end.is_none(), "{end:?}");
    server.await.unwrap().unwrap();
}
