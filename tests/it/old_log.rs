//! A log written by the binary before multi-line commands existed (`tests/fixtures/`, made by
//! `inventory serve` at commit 96a2ed0 with grpcurl: three items, every event kind of that
//! version, a command id, an expiry) opens with today's code, answers for every item and
//! reservation as it did, and takes new multi-line commands after its old events.

use crate::support;

use std::sync::Arc;

use inventory::app::ManualClock;
use inventory::domain::{LogPosition, Timestamp};
use inventory::grpc::pb;
use inventory::server::LogConfig;
use support::{Combined, get_stock, level};

const FIXTURE: &str = "tests/fixtures/log-before-multi-line";
const FIXTURE_EXPORT: &str = "tests/fixtures/log-before-multi-line.export.jsonl";
/// A few seconds after the fixture's last event, before its one active reservation expires.
const FIXTURE_NOW: Timestamp = Timestamp(1_796_181_230_000);

fn reservation(id: &str) -> pb::GetReservationRequest {
    pb::GetReservationRequest {
        reservation_id: id.to_owned(),
        store_id: String::new(),
        min_position: None,
    }
}

#[tokio::test]
async fn a_log_from_before_multi_line_commands_replays_answers_and_takes_new_commands() {
    let directory = tempfile::tempdir().unwrap();
    support::copy_fixture(FIXTURE, directory.path());
    let clock = Arc::new(ManualClock::new(FIXTURE_NOW));
    let server = Combined::start_with_clock(directory.path(), clock.clone()).await;
    let mut queries = server.queries().await;

    // Every item as the old binary last reported it: (on_hand, reserved, available), version,
    // position.
    for (product, store, stock, version, position) in [
        ("sku-1", "store-a", (7, 0, 7), 4, 9),
        ("sku-2", "store-a", (5, 2, 3), 4, 10),
        ("sku-1", "store-b", (7, 0, 7), 3, 11),
    ] {
        let item = queries
            .get_stock(get_stock(product, store, 11))
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        assert_eq!(level(item.stock), stock, "{product}@{store}");
        assert_eq!((item.version, item.position), (version, position));
    }
    // Every reservation, looked up by id, with the status its old events give it.
    for (id, status, lines, positions) in [
        (
            "r-commit",
            pb::ReservationStatus::Committed,
            (2, 2, 0),
            vec![5, 9],
        ),
        (
            "r-release",
            pb::ReservationStatus::Released,
            (1, 0, 1),
            vec![6, 10],
        ),
        (
            "r-expire",
            pb::ReservationStatus::Expired,
            (3, 0, 3),
            vec![7, 11],
        ),
        (
            "r-active",
            pb::ReservationStatus::Active,
            (2, 0, 0),
            vec![8],
        ),
    ] {
        let found = queries
            .get_reservation(reservation(id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.status(), status, "{id}");
        let [line] = found.lines.as_slice() else {
            panic!("{id}: {:?}", found.lines)
        };
        assert_eq!(
            (line.quantity, line.committed, line.released),
            lines,
            "{id}"
        );
        assert_eq!(found.event_positions, positions, "{id}");
    }
    // The old subscription still reads each old event as a command of one event.
    let mut events = server.events().await;
    let mut stream = events
        .subscribe(pb::SubscribeRequest {
            from_position: 0,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    for position in 1..=11 {
        let message = stream.message().await.unwrap().unwrap();
        let Some(pb::subscribe_response::Message::Event(event)) = message.message else {
            panic!("{message:?}")
        };
        assert_eq!(event.position, position);
        assert_eq!(
            (event.command_event_index, event.command_event_count),
            (0, 1)
        );
        assert_eq!(event.actor, "", "an old event names no actor");
    }
    drop(stream);

    // A retry of the fixture's first command (command id fx-1) gets the original answer.
    let mut commands = server.commands().await;
    let mut retry = support::add_stock("sku-1", "store-a", 10);
    retry.reason = "delivery 4711".to_owned();
    retry.command_id = "fx-1".to_owned();
    let answer = commands
        .add_stock(retry)
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert!(answer.replayed);
    assert_eq!(answer.position, 1);

    // New multi-line commands go after the old events, and the old items take part.
    let cart = commands
        .reserve_stock(pb::ReserveStockRequest {
            lines: vec![
                pb::ReservationLine {
                    product_id: "sku-1".to_owned(),
                    store_id: "store-a".to_owned(),
                    quantity: 7,
                    expected_version: Some(4),
                },
                pb::ReservationLine {
                    product_id: "sku-2".to_owned(),
                    store_id: "store-a".to_owned(),
                    quantity: 3,
                    expected_version: None,
                },
            ],
            customer_id: "c-new".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Each line's event at 12 and 14, and after each the alert of its item running out.
    let positions: Vec<u64> = cart.lines.iter().map(|line| line.position).collect();
    assert_eq!(positions, [13, 15]);
    for line in &cart.lines {
        assert_eq!(line.alerts, [pb::EventType::OutOfStock as i32]);
    }
    assert_eq!(level(cart.lines[0].stock).2, 0);
    assert_eq!(level(cart.lines[1].stock), (5, 5, 0));
    server.stop().await;

    // Reopened, the log holds old and new events alike; verify finds it sound.
    let clock = Arc::new(ManualClock::new(FIXTURE_NOW));
    let server = Combined::start_with_clock(directory.path(), clock).await;
    let mut queries = server.queries().await;
    let found = queries
        .get_reservation(reservation(&cart.reservation_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.event_positions, [12, 14]);
    assert_eq!(found.status(), pb::ReservationStatus::Active);
    // Old events name no actor; the new command's, the unauthenticated sender and the server.
    let history = queries
        .get_history(pb::GetHistoryRequest {
            product_id: "sku-2".to_owned(),
            store_id: "store-a".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let actors: Vec<(u64, &str)> = history
        .events
        .iter()
        .map(|event| (event.position, event.actor.as_str()))
        .collect();
    assert_eq!(
        actors,
        [
            (2, ""),
            (6, ""),
            (8, ""),
            (10, ""),
            (14, "anonymous"),
            (15, "system")
        ]
    );
    server.stop().await;
    let report = inventory::tools::verify(&LogConfig::Embedded {
        data_dir: directory.path().to_owned(),
    })
    .await
    .unwrap();
    assert_eq!(report.head, LogPosition(15));
}

/// `export` of the old log gives what the old binary's `export` gave, plus the new fields.
#[tokio::test]
async fn exporting_an_old_log_gives_what_the_old_binary_gave() {
    let mut output = Vec::new();
    let log = LogConfig::Embedded {
        data_dir: FIXTURE.into(),
    };
    // The fixture is opened for reading only: it stays as committed.
    inventory::tools::export(&log, LogPosition::START, &mut output)
        .await
        .unwrap();
    let ours: Vec<serde_json::Value> = String::from_utf8(output)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let theirs: Vec<serde_json::Value> = std::fs::read_to_string(FIXTURE_EXPORT)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(ours.len(), 11);
    for (mut ours, theirs) in ours.into_iter().zip(theirs) {
        assert_eq!(ours["command_event_index"], 0);
        assert_eq!(ours["command_event_count"], 1);
        let object = ours.as_object_mut().unwrap();
        object.remove("command_event_index");
        object.remove("command_event_count");
        // Actors came later: an old event has none.
        assert_eq!(object.remove("actor"), Some(serde_json::Value::Null));
        // The level's parts that came with stock states: none in an old log.
        let stock = ours["stock"].as_object_mut().unwrap();
        for part in [
            "damaged",
            "quality_control",
            "safety_stock",
            "incoming",
            "shortfall",
            "low_stock_threshold",
        ] {
            assert_eq!(stock.remove(part), Some(serde_json::json!(0)), "{part}");
        }
        // A removal of that version took available units.
        if ours["type"] == "StockRemoved" {
            let data = ours["data"].as_object_mut().unwrap();
            assert_eq!(data.remove("from"), Some(serde_json::json!("available")));
        }
        // The commit event's new field, 0 for every commit of that version.
        if ours["type"] == "ReservationCommitted" {
            assert_eq!(ours["data"]["released_quantity"], 0);
            ours["data"]
                .as_object_mut()
                .unwrap()
                .remove("released_quantity");
        }
        assert_eq!(ours, theirs);
    }
}
