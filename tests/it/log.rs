//! The embedded event log on real files: append and read back, reopen, torn tails, corruption,
//! and gapless positions under concurrent commands.
//!
//! Over 600 lines: the embedded log's file format cases (torn tails, corruption at every
//! place, reopening) share the file-level helpers defined here.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use inventory::app::command::CommandState;
use inventory::app::{CommandRequest, CommandSide, SystemClock};
use inventory::domain::AddStock;
use inventory::domain::{
    Command, CommandId, Inventory, LogPosition, ProductId, Quantity, Reason, RecordedEvent,
    StoreId, StreamKey, StreamVersion,
};
use inventory::log::embedded::LOG_FILE_NAME;
use inventory::log::{EmbeddedLog, EventLog, LogError};
use proptest::prelude::*;
use prost::Message;

use crate::support;
use support::added_events;
use support::events::any_event;

fn stream(product: &str) -> StreamKey {
    StreamKey::new(
        ProductId::parse(product).unwrap(),
        StoreId::parse("s1").unwrap(),
    )
}

fn open(directory: &std::path::Path) -> (EmbeddedLog, Vec<RecordedEvent>, u64) {
    let mut replayed = Vec::new();
    let (log, report) = EmbeddedLog::open(directory, |event| {
        replayed.push(event.clone());
        Ok(())
    })
    .expect("log opens");
    (log, replayed, report.truncated_bytes)
}

#[tokio::test]
async fn it_reads_back_what_was_appended_by_position_and_by_stream() {
    let directory = tempfile::tempdir().unwrap();
    let (log, replayed, _) = open(directory.path());
    assert!(replayed.is_empty());
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 30, 3);
    log.append(events[..10].to_vec()).await.unwrap();
    log.append(events[10..].to_vec()).await.unwrap();
    assert_eq!(log.head(), LogPosition(30));

    let all = log.read_all(LogPosition(0), 1000).await.unwrap();
    assert_eq!(all, events);
    let page = log.read_all(LogPosition(12), 5).await.unwrap();
    assert_eq!(page, events[12..17].to_vec());
    assert!(log.read_all(LogPosition(30), 10).await.unwrap().is_empty());

    let one_stream = log
        .read_stream(stream("p1"), StreamVersion(0), 1000)
        .await
        .unwrap();
    let expected: Vec<_> = events
        .iter()
        .filter(|e| e.stream == stream("p1"))
        .cloned()
        .collect();
    assert_eq!(one_stream, expected);
    let versions: Vec<u64> = one_stream.iter().map(|e| e.version.0).collect();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>());
    let later = log
        .read_stream(stream("p1"), StreamVersion(8), 1000)
        .await
        .unwrap();
    assert_eq!(later, expected[8..].to_vec());
}

/// The stream index keeps streams of one and two events inline and longer ones in a vector:
/// every page of every stream reads the same before and after a reopen, and across the
/// moves from one form to the next.
#[tokio::test]
async fn it_reads_every_page_of_streams_of_every_length() {
    let directory = tempfile::tempdir().unwrap();
    let mut inventory = Inventory::new();
    // 5 streams, 1 to 5 events each, interleaved: p0 gets 1 event, p1 2, ..., p4 5.
    let mut events = Vec::new();
    for round in 0..5u64 {
        for product in round..5 {
            let mut event = added_events(&mut Inventory::new(), LogPosition(0), 1, 1).remove(0);
            let key = stream(&format!("p{product}"));
            let command = Command::AddStock(AddStock {
                stream: key.clone(),
                quantity: Quantity::new(1).unwrap(),
                reason: Reason::parse("delivery").unwrap(),
            });
            let decision = inventory
                .decide(&command, inventory::domain::Timestamp(1_000))
                .unwrap()
                .remove(0);
            let (version, stock_after) = inventory.evolve(&decision.stream, &decision.event);
            event.position = LogPosition(events.len() as u64 + 1);
            event.stream = key;
            event.version = version;
            event.stock_after = stock_after;
            event.event = decision.event;
            events.push(event);
        }
    }
    let check = |log: EmbeddedLog, events: Vec<RecordedEvent>| async move {
        for product in 0..6u64 {
            let key = stream(&format!("p{product}"));
            let expected: Vec<_> = events.iter().filter(|e| e.stream == key).cloned().collect();
            assert_eq!(
                log.stream_version(&key),
                StreamVersion(expected.len() as u64)
            );
            for after in 0..=expected.len() + 1 {
                for limit in 0..=expected.len() + 1 {
                    let page = log
                        .read_stream(key.clone(), StreamVersion(after as u64), limit)
                        .await
                        .unwrap();
                    let wanted: Vec<_> = expected.iter().skip(after).take(limit).cloned().collect();
                    assert_eq!(page, wanted, "p{product} after {after} limit {limit}");
                }
            }
        }
    };
    {
        let (log, _, _) = open(directory.path());
        // One event per append, so the index changes form between reads.
        for (n, event) in events.iter().enumerate() {
            log.append(vec![event.clone()]).await.unwrap();
            check(log.clone(), events[..=n].to_vec()).await;
        }
    }
    let (log, replayed, _) = open(directory.path());
    assert_eq!(replayed, events);
    check(log, events).await;
}

#[tokio::test]
async fn it_replays_every_event_in_order_after_a_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 50, 7);
    {
        let (log, _, _) = open(directory.path());
        log.append(events.clone()).await.unwrap();
    }
    let (log, replayed, truncated) = open(directory.path());
    assert_eq!(replayed, events);
    assert_eq!(truncated, 0);
    assert_eq!(log.head(), LogPosition(50));
    // And it keeps going from there.
    let more = added_events(&mut inventory, LogPosition(50), 5, 7);
    log.append(more.clone()).await.unwrap();
    assert_eq!(log.read_all(LogPosition(50), 10).await.unwrap(), more);
}

// The replay decodes every record into one reused message: a field an event leaves out must
// not keep the value of the event before it.
#[tokio::test]
async fn a_replayed_event_keeps_nothing_of_the_event_before_it() {
    let directory = tempfile::tempdir().unwrap();
    let mut inventory = Inventory::new();
    let mut events = added_events(&mut inventory, LogPosition(0), 30, 4);
    for (index, event) in events.iter_mut().enumerate() {
        if index % 3 == 0 {
            event.command_id = Some(CommandId::parse(&format!("command-{index}")).unwrap());
            event.command_fingerprint = 0xfeed_0000 + index as u64;
            event.trace_parent =
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        }
    }
    {
        let (log, _, _) = open(directory.path());
        log.append(events.clone()).await.unwrap();
    }
    let (_, replayed, _) = open(directory.path());
    assert_eq!(replayed, events);
    assert!(replayed[1].command_id.is_none() && replayed[1].trace_parent.is_none());
}

proptest! {
    // The log writes events without building prost's message: the bytes must be exactly
    // prost's, so that every reader (replay, PostgreSQL, subscribers' decoders) agrees.
    #[test]
    fn the_stored_form_is_byte_for_byte_prosts_encoding(event in any_event()) {
        let written = inventory::log::codec::encode_event(&event);
        prop_assert_eq!(&written, &inventory::log::codec::event_to_pb(&event).encode_to_vec());
        // Position and version 0 only check that defaults are left out: the decoder refuses them.
        if event.position.0 > 0 && event.version.0 > 0 {
            let decoded = inventory::log::codec::decode_event(&written);
            // An empty trace context is stored as absent.
            let mut expected = event.clone();
            if expected.trace_parent.as_deref() == Some("") {
                expected.trace_parent = None;
            }
            prop_assert_eq!(decoded.ok(), Some(expected));
        }
    }
}

#[tokio::test]
async fn it_cuts_off_a_torn_tail_and_reports_it() {
    let directory = tempfile::tempdir().unwrap();
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 20, 4);
    let file_length = {
        let (log, _, _) = open(directory.path());
        log.append(events.clone()).await.unwrap();
        std::fs::metadata(log.path()).unwrap().len()
    };
    // A crash in the middle of writing the last record: its last 5 bytes never reached disk.
    let path = directory.path().join(LOG_FILE_NAME);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(file_length - 5)
        .unwrap();
    let (log, replayed, truncated) = open(directory.path());
    assert_eq!(replayed, events[..19].to_vec());
    assert!(truncated > 0, "the torn record was reported");
    assert_eq!(log.head(), LogPosition(19));
    drop(log);
    // The cut is durable: opening again finds a whole log.
    let (log, replayed, truncated) = open(directory.path());
    assert_eq!(replayed.len(), 19);
    assert_eq!(truncated, 0);
    // Position 20 is free again and versions continue from the surviving events.
    let mut inventory = Inventory::new();
    for event in &replayed {
        inventory.evolve(&event.stream, &event.event);
    }
    let next = added_events(&mut inventory, LogPosition(19), 1, 4);
    log.append(next).await.unwrap();
    assert_eq!(log.head(), LogPosition(20));
}

#[tokio::test]
async fn it_cuts_off_garbage_after_the_last_record() {
    let directory = tempfile::tempdir().unwrap();
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 3, 1);
    let file_length = {
        let (log, _, _) = open(directory.path());
        log.append(events.clone()).await.unwrap();
        std::fs::metadata(log.path()).unwrap().len()
    };
    // A half-written frame header and zeros: what a crash while extending the file leaves.
    let file = OpenOptions::new()
        .write(true)
        .open(directory.path().join(LOG_FILE_NAME))
        .unwrap();
    file.write_all_at(&[0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], file_length)
        .unwrap();
    let (_, replayed, truncated) = open(directory.path());
    assert_eq!(replayed, events);
    assert_eq!(truncated, 11);
}

/// A multi-line command is one write: a crash that left only part of it (its last record
/// torn, or whole records of it but not all) takes the whole command back, never half of it.
#[tokio::test]
async fn a_crash_in_the_middle_of_a_multi_line_command_takes_the_whole_command_back() {
    let mut inventory = Inventory::new();
    let mut events = added_events(&mut inventory, LogPosition(0), 20, 4);
    // Positions 17 to 20: one command of four events, one per item.
    for (index, event) in (0u32..).zip(&mut events[16..]) {
        event.command_event_index = index;
        event.command_event_count = 4;
    }
    // How long the file is with the command's first two records only.
    let two_of_four = {
        let directory = tempfile::tempdir().unwrap();
        let (log, _, _) = open(directory.path());
        log.append(events[..18].to_vec()).await.unwrap();
        std::fs::metadata(log.path()).unwrap().len()
    };
    for cut_to in [Cut::TornLastRecord, Cut::At(two_of_four)] {
        let directory = tempfile::tempdir().unwrap();
        let file_length = {
            let (log, _, _) = open(directory.path());
            log.append(events[..16].to_vec()).await.unwrap();
            log.append(events[16..].to_vec()).await.unwrap();
            std::fs::metadata(log.path()).unwrap().len()
        };
        let length = match cut_to {
            Cut::TornLastRecord => file_length - 5,
            Cut::At(length) => length,
        };
        OpenOptions::new()
            .write(true)
            .open(directory.path().join(LOG_FILE_NAME))
            .unwrap()
            .set_len(length)
            .unwrap();
        let (log, replayed, truncated) = open(directory.path());
        assert_eq!(replayed, events[..16].to_vec(), "{cut_to:?}");
        assert!(
            truncated > 0,
            "{cut_to:?}: the partial command was reported"
        );
        assert_eq!(log.head(), LogPosition(16));
        drop(log);
        // The cut is durable, and the positions are free for the next command.
        let (log, replayed, truncated) = open(directory.path());
        assert_eq!((replayed.len(), truncated), (16, 0));
        log.append(events[16..].to_vec()).await.unwrap();
        assert_eq!(log.head(), LogPosition(20));
    }
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    TornLastRecord,
    At(u64),
}

#[tokio::test]
async fn it_refuses_to_open_a_log_corrupted_before_its_tail() {
    let directory = tempfile::tempdir().unwrap();
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 10, 2);
    {
        let (log, _, _) = open(directory.path());
        log.append(events).await.unwrap();
    }
    // Flip one bit inside the first record's payload (header 8 bytes + frame header 8 bytes).
    let path = directory.path().join(LOG_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, 20).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], 20).unwrap();
    let length_before = std::fs::metadata(&path).unwrap().len();

    let error = EmbeddedLog::open(directory.path(), |_| Ok(()))
        .err()
        .expect("a corrupt log must not open");
    match error {
        LogError::Corrupt { offset, problem } => {
            assert_eq!(offset, 8, "the damaged record is named");
            assert!(problem.contains("checksum"), "{problem}");
            assert!(problem.contains("valid record follows"), "{problem}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    // Nothing was cut off: the data stays for an operator to inspect.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), length_before);
}

#[tokio::test]
async fn it_refuses_a_file_that_is_not_a_log() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join(LOG_FILE_NAME), b"hello, world").unwrap();
    let error = EmbeddedLog::open(directory.path(), |_| Ok(())).err();
    assert!(matches!(error, Some(LogError::Corrupt { offset: 0, .. })));
}

#[tokio::test]
async fn it_refuses_appends_that_skip_a_position_or_a_version_and_writes_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let (log, _, _) = open(directory.path());
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 4, 1);
    log.append(events[..2].to_vec()).await.unwrap();

    let gap = log.append(vec![events[3].clone()]).await;
    assert!(matches!(gap, Err(LogError::HeadMoved { .. })), "{gap:?}");

    let mut stale = events[2].clone();
    stale.version = StreamVersion(2); // the stream is already at version 2
    let conflict = log.append(vec![stale]).await;
    assert!(
        matches!(
            conflict,
            Err(LogError::VersionConflict {
                current: StreamVersion(2),
                ..
            })
        ),
        "{conflict:?}"
    );

    assert_eq!(log.head(), LogPosition(2));
    log.append(events[2..].to_vec()).await.unwrap();
    drop(log);
    let (_, replayed, truncated) = open(directory.path());
    assert_eq!(replayed, events);
    assert_eq!(truncated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_stay_gapless_and_versions_contiguous_under_concurrent_commands() {
    let directory = tempfile::tempdir().unwrap();
    let (log, _, _) = open(directory.path());
    let log: Arc<dyn EventLog> = Arc::new(log);
    let side = CommandSide::start(CommandState::new(), log.clone(), Arc::new(SystemClock));
    let mut tasks = Vec::new();
    for task in 0..32 {
        let handle = side.handle.clone();
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for i in 0..25 {
                let request = CommandRequest {
                    command: AddStock {
                        stream: stream(&format!("p{}", (task + i) % 5)),
                        quantity: Quantity::new(1).unwrap(),
                        reason: Reason::default(),
                    },
                    command_id: None,
                    expected_version: None,
                };
                positions.push(handle.execute(request).await.unwrap().position);
            }
            positions
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    acknowledged.sort();
    let expected: Vec<LogPosition> = (1..=800).map(LogPosition).collect();
    assert_eq!(
        acknowledged, expected,
        "every position acknowledged exactly once"
    );

    let events = log.read_all(LogPosition(0), 1000).await.unwrap();
    assert_eq!(events.len(), 800);
    let mut versions: HashMap<StreamKey, u64> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.position, LogPosition(index as u64 + 1));
        let version = versions.entry(event.stream.clone()).or_default();
        *version += 1;
        assert_eq!(event.version, StreamVersion(*version));
        assert_eq!(event.stock_after.on_hand(), *version);
    }
    drop(side.handle);
    side.writer.await.unwrap();
}

/// In combined mode the read model folds the replay on a thread of its own: it must end in
/// the same state as the command side, at the log's head, across several replay batches.
#[tokio::test]
async fn a_combined_replay_folds_the_read_model_like_the_command_side() {
    use inventory::app::ReadModel;
    use inventory::app::replay::open_embedded;
    let directory = tempfile::tempdir().unwrap();
    let mut inventory = Inventory::new();
    let count = 3 * inventory::log::embedded::REPLAY_BATCH_EVENTS as u64 + 5;
    let events = added_events(&mut inventory, LogPosition(0), count, 7);
    {
        let (log, _, _) = open(directory.path());
        for chunk in events.chunks(1000) {
            log.append(chunk.to_vec()).await.unwrap();
        }
    }
    let model = Arc::new(ReadModel::new());
    let now = inventory::domain::Timestamp(1_000);
    let (log, state, report) = open_embedded(
        directory.path(),
        Some(&model),
        now,
        inventory::app::snapshot::SnapshotPolicy::DEFAULT,
    )
    .unwrap();
    assert_eq!(report.events, count);
    assert_eq!(log.head(), LogPosition(count));
    assert_eq!(state.head(), LogPosition(count));
    assert_eq!(model.position(), LogPosition(count));
    assert_eq!(model.item_count(), 7);
    for product in 0..7 {
        let key = stream(&format!("p{product}"));
        let item = state.inventory().item(&key).unwrap();
        let (level, version, _) = model.stock(&key).unwrap();
        assert_eq!((level, version), (item.level(), item.version()));
        assert_eq!(item.level(), inventory.item(&key).unwrap().level());
    }
}

/// An event the read model refuses stops a combined start-up, even though the read model
/// folds on another thread than the command side.
#[tokio::test]
async fn a_combined_replay_fails_when_the_read_model_refuses_an_event() {
    use inventory::app::ReadModel;
    use inventory::app::replay::open_embedded;
    let directory = tempfile::tempdir().unwrap();
    let mut inventory = Inventory::new();
    let events = added_events(&mut inventory, LogPosition(0), 2000, 3);
    {
        let (log, _, _) = open(directory.path());
        log.append(events.clone()).await.unwrap();
    }
    // A model that already holds the first event expects position 2 first.
    let model = Arc::new(ReadModel::new());
    model.apply(&events[0]).unwrap();
    let now = inventory::domain::Timestamp(1_000);
    match open_embedded(
        directory.path(),
        Some(&model),
        now,
        inventory::app::snapshot::SnapshotPolicy::DEFAULT,
    ) {
        Err(LogError::FoldMismatch {
            position, mismatch, ..
        }) => {
            assert_eq!(position, LogPosition(1), "the refused event is named");
            assert_eq!(
                *mismatch,
                inventory::domain::FoldMismatch::Position {
                    expected: LogPosition(2),
                    got: LogPosition(1)
                }
            );
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("the start-up succeeded with a read model that refused an event"),
    }
}

/// The replay decodes on one thread and indexes on another, in batches: damage in a later
/// batch is still found and named, after every event before it was visited, and a refusal
/// by the visitor earlier in the log is the error reported, not the damage after it.
#[tokio::test]
async fn it_reports_the_first_problem_in_log_order_across_replay_batches() {
    let directory = tempfile::tempdir().unwrap();
    let mut inventory = Inventory::new();
    let batch = inventory::log::embedded::REPLAY_BATCH_EVENTS as u64;
    let count = 3 * batch;
    let events = added_events(&mut inventory, LogPosition(0), count, 5);
    {
        let (log, _, _) = open(directory.path());
        for chunk in events.chunks(1000) {
            log.append(chunk.to_vec()).await.unwrap();
        }
    }
    // Find the record at position 2 × batch + 10 and flip a bit in its payload.
    let damaged_position = 2 * batch + 10;
    let mut offsets = Vec::new();
    let path = directory.path().join(LOG_FILE_NAME);
    let bytes = std::fs::read(&path).unwrap();
    let mut offset = 8usize;
    while offset < bytes.len() {
        offsets.push(offset as u64);
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        offset += 8 + length;
    }
    let damaged_offset = offsets[(damaged_position - 1) as usize];
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let at = damaged_offset + 12;
    file.write_all_at(&[bytes[at as usize] ^ 0x01], at).unwrap();

    let mut visited = Vec::new();
    let error = EmbeddedLog::open(directory.path(), |event| {
        visited.push(event.position);
        Ok(())
    })
    .err()
    .expect("a corrupt log must not open");
    match error {
        LogError::Corrupt { offset, problem } => {
            assert_eq!(offset, damaged_offset, "the damaged record is named");
            assert!(problem.contains("valid record follows"), "{problem}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let expected: Vec<_> = (1..damaged_position).map(LogPosition).collect();
    assert_eq!(
        visited, expected,
        "every event before the damage was visited, in order"
    );

    // A visitor that refuses an event in the first batch: its refusal is the error.
    let error = EmbeddedLog::open(directory.path(), |event| {
        if event.position == LogPosition(7) {
            return Err(LogError::Corrupt {
                offset: 0,
                problem: "refused by the fold".to_owned(),
            });
        }
        Ok(())
    })
    .err()
    .expect("a refused event stops the opening");
    match error {
        LogError::Corrupt { problem, .. } => assert_eq!(problem, "refused by the fold"),
        other => panic!("expected the visitor's refusal, got {other}"),
    }
}

/// A log whose command events are out of place (a command's second event missing, a new
/// command starting inside another) folds into nothing: the command side, and so `verify`,
/// names the event.
#[tokio::test]
async fn a_command_whose_events_are_not_contiguous_is_refused_by_the_fold() {
    let mut inventory = Inventory::new();
    let mut events = added_events(&mut inventory, LogPosition(0), 6, 6);
    // Events 2 and 3: indices 0 and 2 of a command of three.
    events[1].command_event_count = 3;
    events[2].command_event_index = 2;
    events[2].command_event_count = 3;
    let directory = tempfile::tempdir().unwrap();
    let (log, _, _) = open(directory.path());
    log.append(events).await.unwrap();
    let now = inventory::domain::Timestamp(1_000);
    match CommandState::load(&log, now).await {
        Err(LogError::FoldMismatch {
            position, mismatch, ..
        }) => {
            assert_eq!(position, LogPosition(3));
            assert_eq!(
                *mismatch,
                inventory::domain::FoldMismatch::CommandEvents {
                    expected_index: 1,
                    got_index: 2,
                    got_count: 3
                }
            );
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a log with a broken command folded"),
    }
}

/// Issue 28, finding 10: the data directory and the log hold every store's events, customers'
/// ids and actors, so only the server's user may read them.
#[test]
fn a_new_data_directory_and_its_log_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data").join("inventory");
    let (_log, _, _) = open(&data);
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode(&data) & 0o777, 0o700, "the data directory");
    assert_eq!(
        mode(data.parent().unwrap()) & 0o777,
        0o700,
        "a parent made for it"
    );
    assert_eq!(
        mode(&data.join(LOG_FILE_NAME)) & 0o777,
        0o600,
        "the log file"
    );
}
