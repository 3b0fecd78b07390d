//! A log written by the binary with stock states, policies, alerts and counts
//! (`tests/fixtures/log-with-stock-states/`, made by `inventory serve` of the commit that
//! added it, with grpcurl: every event kind of that version, a count dated in the past, a
//! count that left a shortfall and cut the inspected units to what it found, command ids)
//! opens with today's code, answers as it did, exports as it did and takes new commands. Every
//! later change to the stored format keeps this test passing.

use crate::support;

use std::sync::Arc;

use inventory::app::ManualClock;
use inventory::domain::{LogPosition, Timestamp};
use inventory::grpc::pb;
use inventory::server::LogConfig;
use support::{Combined, add_stock, get_stock};

const FIXTURE: &str = "tests/fixtures/log-with-stock-states";
const FIXTURE_EXPORT: &str = "tests/fixtures/log-with-stock-states.export.jsonl";
/// A minute after the fixture's last event: its command ids are still within the window in
/// which a retry gets the original answer, whatever day the test runs.
const FIXTURE_NOW: Timestamp = Timestamp(1_796_192_712_815 + 60_000);

#[tokio::test]
async fn a_log_with_stock_states_replays_answers_and_takes_new_commands() {
    let directory = tempfile::tempdir().unwrap();
    support::copy_fixture(FIXTURE, directory.path());
    let clock = Arc::new(ManualClock::new(FIXTURE_NOW));
    let server = Combined::start_with_clock(directory.path(), clock).await;
    let mut queries = server.queries().await;
    // (on_hand, reserved, damaged, quality_control, safety_stock, low_stock_threshold,
    // available, shortfall), version, position: as the binary reported them.
    for (product, parts, version, position) in [
        ("sku-1", (10, 0, 0, 0, 5, 10, 5, 0), 18, 21),
        ("sku-2", (2, 0, 0, 0, 0, 0, 2, 0), 4, 22),
    ] {
        let item = queries
            .get_stock(get_stock(product, "store-a", 22))
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        let stock = item.stock.unwrap();
        assert_eq!(
            (
                stock.on_hand,
                stock.reserved,
                stock.damaged,
                stock.quality_control,
                stock.safety_stock,
                stock.low_stock_threshold,
                stock.available,
                stock.shortfall
            ),
            parts,
            "{product}"
        );
        assert_eq!((item.version, item.position), (version, position));
    }
    // The count at position 12 left a shortfall, as of then.
    let at_count = queries
        .get_stock_at(pb::GetStockAtRequest {
            product_id: "sku-1".to_owned(),
            store_id: "store-a".to_owned(),
            as_of: Some(pb::get_stock_at_request::AsOf::AsOfPosition(12)),
            min_position: None,
        })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap()
        .stock
        .unwrap();
    assert_eq!(
        (
            at_count.on_hand,
            at_count.reserved,
            at_count.quality_control,
            at_count.shortfall
        ),
        (1, 4, 1, 4)
    );
    // Retries of its commands get their answers.
    let mut commands = server.commands().await;
    let mut retry = add_stock("sku-1", "store-a", 20);
    retry.reason = "delivery 1".to_owned();
    retry.command_id = "fx2-1".to_owned();
    let answer = commands
        .add_stock(retry)
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert!(answer.replayed);
    assert_eq!(answer.position, 1);
    let count = commands
        .record_count(pb::RecordCountRequest {
            store_id: "store-a".to_owned(),
            lines: vec![pb::CountLine {
                product_id: "sku-1".to_owned(),
                counted: 1,
            }],
            reason: "count now".to_owned(),
            command_id: "fx2-count-1".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let line = &count.lines[0];
    assert!(line.result.as_ref().unwrap().replayed);
    assert_eq!((line.on_hand_at_count, line.variance), (17, -16));
    assert_eq!(
        line.result.as_ref().unwrap().alerts,
        [
            pb::EventType::StockShort as i32,
            pb::EventType::OutOfStock as i32
        ]
    );
    // New commands go after it.
    let next = commands
        .add_stock(add_stock("sku-2", "store-a", 1))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(next.position, 23);
    server.stop().await;
    let report = inventory::tools::verify(&LogConfig::Embedded {
        data_dir: directory.path().to_owned(),
    })
    .await
    .unwrap();
    assert_eq!(report.head, LogPosition(23));
}

/// `export` of the log gives what the binary that wrote it gave.
#[tokio::test]
async fn exporting_a_log_with_stock_states_gives_what_its_binary_gave() {
    let mut output = Vec::new();
    let log = LogConfig::Embedded {
        data_dir: FIXTURE.into(),
    };
    // Opened for reading only: the fixture stays as committed.
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
    assert_eq!(ours.len(), 22);
    // Plus the actor, which came later: an old event has none.
    let ours: Vec<serde_json::Value> = ours
        .into_iter()
        .map(|mut event| {
            let object = event.as_object_mut().unwrap();
            assert_eq!(object.remove("actor"), Some(serde_json::Value::Null));
            event
        })
        .collect();
    assert_eq!(ours, theirs);
}
