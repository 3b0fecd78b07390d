//! One conformance suite for the `EventLog` trait, run against every backend: the embedded
//! file log (also behind the cache of its recent events), and PostgreSQL when `INVENTORY_TEST_POSTGRES_URL` is set (CI sets it).

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use inventory::domain::{Inventory, LogPosition, StreamKey, StreamVersion};
use inventory::log::{EmbeddedLog, EventLog, LogError, PostgresLog, TailCache};
use support::added_events;

/// Where one test's log lives; opening it again gives a second handle on the same log (a
/// second process, for the file log after the first is dropped; a second node for PostgreSQL).
enum Backend {
    Embedded(tempfile::TempDir),
    /// The embedded log behind the in-memory cache of its recent events, as the servers use
    /// it; a small cache, so that reads also cross from the file to the cache.
    EmbeddedWithTail(tempfile::TempDir),
    Postgres {
        url: String,
        schema: String,
    },
}

impl Backend {
    fn embedded() -> Backend {
        Backend::Embedded(tempfile::tempdir().unwrap())
    }

    fn embedded_with_tail() -> Backend {
        Backend::EmbeddedWithTail(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Option<Backend> {
        support::postgres_url().map(|url| Backend::Postgres {
            url,
            schema: support::fresh_schema(),
        })
    }

    async fn open(&self) -> Arc<dyn EventLog> {
        match self {
            Backend::Embedded(directory) => {
                let (log, _) = EmbeddedLog::open(directory.path(), |_| Ok(())).unwrap();
                Arc::new(log)
            }
            Backend::EmbeddedWithTail(directory) => {
                let (log, _) = EmbeddedLog::open(directory.path(), |_| Ok(())).unwrap();
                Arc::new(TailCache::with_capacity(Arc::new(log), 5))
            }
            Backend::Postgres { url, schema } => {
                Arc::new(PostgresLog::connect(url, schema).await.unwrap())
            }
        }
    }

    /// Whether two handles may be open at once (one file must have one writer).
    fn shared(&self) -> bool {
        matches!(self, Backend::Postgres { .. })
    }

    async fn clean_up(self) {
        if let Backend::Postgres { url, schema } = self {
            support::drop_schema(&url, &schema).await;
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    let backend = super::Backend::embedded();
                    super::$name(&backend).await;
                    backend.clean_up().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded_with_tail() {
                    let backend = super::Backend::embedded_with_tail();
                    super::$name(&backend).await;
                    backend.clean_up().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(backend) = super::Backend::postgres() {
                        super::$name(&backend).await;
                        backend.clean_up().await;
                    }
                }
            }
        )*
    };
}

conformance!(
    reads_back_what_was_appended_by_position_and_by_stream,
    keeps_everything_across_a_reopen,
    refuses_a_stale_append_and_writes_nothing,
    refuses_a_version_that_does_not_follow_its_stream,
    head_and_its_watch_follow_appends,
    concurrent_writers_with_retries_keep_positions_gapless,
    a_tailing_reader_never_skips_an_event,
);

async fn read_everything(log: &dyn EventLog) -> Vec<inventory::domain::RecordedEvent> {
    let mut events = Vec::new();
    loop {
        let page = log
            .read_all(LogPosition(events.len() as u64), 1000)
            .await
            .unwrap();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

async fn reads_back_what_was_appended_by_position_and_by_stream(backend: &Backend) {
    let log = backend.open().await;
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 30, 3);
    log.append(events[..10].to_vec()).await.unwrap();
    log.append(events[10..].to_vec()).await.unwrap();
    assert_eq!(log.head(), LogPosition(30));
    assert_eq!(read_everything(&*log).await, events);
    assert_eq!(
        log.read_all(LogPosition(12), 5).await.unwrap(),
        events[12..17].to_vec()
    );
    assert!(log.read_all(LogPosition(30), 10).await.unwrap().is_empty());
    let stream = events[0].stream.clone();
    let expected: Vec<_> = events
        .iter()
        .filter(|e| e.stream == stream)
        .cloned()
        .collect();
    assert_eq!(
        log.read_stream(stream.clone(), StreamVersion(0), 100)
            .await
            .unwrap(),
        expected
    );
    assert_eq!(
        log.read_stream(stream.clone(), StreamVersion(3), 2)
            .await
            .unwrap(),
        expected[3..5].to_vec()
    );
    let unknown = StreamKey::new(
        inventory::domain::ProductId::parse("nothing").unwrap(),
        inventory::domain::StoreId::parse("s1").unwrap(),
    );
    assert!(
        log.read_stream(unknown, StreamVersion(0), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn keeps_everything_across_a_reopen(backend: &Backend) {
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 25, 4);
    {
        let log = backend.open().await;
        log.append(events.clone()).await.unwrap();
    }
    let log = backend.open().await;
    assert_eq!(log.head(), LogPosition(25));
    assert_eq!(read_everything(&*log).await, events);
}

async fn refuses_a_stale_append_and_writes_nothing(backend: &Backend) {
    let log = backend.open().await;
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 6, 2);
    log.append(events[..3].to_vec()).await.unwrap();
    // Decided against head 1, but the head is at 3.
    let mut other = Inventory::new();
    let stale = added_events(&mut other, LogPosition(1), 1, 50);
    match log.append(stale).await {
        Err(LogError::HeadMoved { expected, current }) => {
            assert_eq!((expected, current), (LogPosition(1), LogPosition(3)));
        }
        other => panic!("expected HeadMoved, got {other:?}"),
    }
    // Ahead of the head is refused the same way.
    match log.append(events[4..].to_vec()).await {
        Err(LogError::HeadMoved { current, .. }) => assert_eq!(current, LogPosition(3)),
        other => panic!("expected HeadMoved, got {other:?}"),
    }
    assert_eq!(log.head(), LogPosition(3));
    log.append(events[3..].to_vec()).await.unwrap();
    assert_eq!(read_everything(&*log).await, events);
}

async fn refuses_a_version_that_does_not_follow_its_stream(backend: &Backend) {
    let log = backend.open().await;
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 3, 1);
    log.append(events[..2].to_vec()).await.unwrap();
    let mut wrong = events[2].clone();
    wrong.version = StreamVersion(2); // the stream is at 2 already
    assert!(log.append(vec![wrong]).await.is_err());
    assert_eq!(log.head(), LogPosition(2));
    assert_eq!(read_everything(&*log).await, events[..2].to_vec());
    log.append(events[2..].to_vec()).await.unwrap();
}

async fn head_and_its_watch_follow_appends(backend: &Backend) {
    let log = backend.open().await;
    let mut head = log.watch_head();
    assert_eq!(*head.borrow_and_update(), LogPosition(0));
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 4, 2);
    let waiter = tokio::spawn(async move {
        head.wait_for(|position| *position >= LogPosition(4))
            .await
            .map(|position| *position)
    });
    log.append(events).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the watch fires")
        .unwrap()
        .unwrap();
    assert_eq!(seen, LogPosition(4));
    if backend.shared() {
        // Another node's append reaches this node's watch (notification or poll).
        let other = backend.open().await;
        let more = added_events(&mut inventory, LogPosition(4), 2, 2);
        other.append(more).await.unwrap();
        let mut head = log.watch_head();
        tokio::time::timeout(
            Duration::from_secs(5),
            head.wait_for(|position| *position >= LogPosition(6)),
        )
        .await
        .expect("another node's append is seen")
        .unwrap();
    }
}

/// Several writers, each deciding against the head it knows and retrying on HeadMoved, as
/// command servers sharing a log do.
async fn concurrent_writers_with_retries_keep_positions_gapless(backend: &Backend) {
    let first = backend.open().await;
    let second = if backend.shared() {
        backend.open().await
    } else {
        first.clone()
    };
    let mut writers = Vec::new();
    for (writer, log) in [first.clone(), second, first.clone(), first.clone()]
        .into_iter()
        .enumerate()
    {
        writers.push(tokio::spawn(async move {
            let mut appended = 0;
            let mut retries = 0;
            while appended < 20 {
                // Fold the log to decide against its current state, as the writer task does.
                let mut inventory = Inventory::new();
                let all = read_everything(&*log).await;
                for event in &all {
                    inventory.evolve(&event.stream, &event.event);
                }
                let head = LogPosition(all.len() as u64);
                let mut batch = added_events(&mut inventory, head, 2, 7);
                for event in &mut batch {
                    event.event_id = inventory::domain::EventId(
                        (writer as u128) << 64 | u128::from(event.position.0),
                    );
                }
                match log.append(batch).await {
                    Ok(()) => appended += 2,
                    Err(LogError::HeadMoved { .. }) => retries += 1,
                    Err(other) => panic!("writer {writer}: {other}"),
                }
            }
            retries
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let events = read_everything(&*first).await;
    assert_eq!(events.len(), 80);
    let mut versions: HashMap<StreamKey, u64> = HashMap::new();
    let mut per_writer: HashMap<u128, usize> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.position, LogPosition(index as u64 + 1));
        let version = versions.entry(event.stream.clone()).or_default();
        *version += 1;
        assert_eq!(event.version, StreamVersion(*version));
        *per_writer.entry(event.event_id.0 >> 64).or_default() += 1;
    }
    assert_eq!(per_writer.values().copied().collect::<Vec<_>>().len(), 4);
    assert!(per_writer.values().all(|count| *count == 20));
}

/// A reader tails the log while writers append: every read continues exactly where the last
/// one stopped.
async fn a_tailing_reader_never_skips_an_event(backend: &Backend) {
    let log = backend.open().await;
    let reader_log = if backend.shared() {
        backend.open().await
    } else {
        log.clone()
    };
    const TOTAL: u64 = 200;
    let reader = tokio::spawn(async move {
        let mut position = LogPosition(0);
        let mut head = reader_log.watch_head();
        while position < LogPosition(TOTAL) {
            let page = reader_log.read_all(position, 7).await.unwrap();
            for event in &page {
                assert_eq!(event.position, position.next(), "the reader skipped");
                position = event.position;
            }
            if page.is_empty() {
                let _ = tokio::time::timeout(Duration::from_millis(50), head.changed()).await;
            }
        }
        position
    });
    let mut inventory = Inventory::new();
    let mut head = LogPosition(0);
    while head < LogPosition(TOTAL) {
        let batch = added_events(&mut inventory, head, 5, 3);
        log.append(batch).await.unwrap();
        head = LogPosition(head.0 + 5);
    }
    let reached = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the reader catches up")
        .unwrap();
    assert_eq!(reached, LogPosition(TOTAL));
}
