//! The operator tools (`verify`, `export`, `migrate`), run as the real binary on real logs.

use crate::support;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Output;

use inventory::log::embedded::LOG_FILE_NAME;
use support::{Combined, add_stock, reserve_stock};

/// The binary, logging only warnings and errors.
fn inventory(arguments: &[&str]) -> Output {
    support::inventory_with_env(arguments, &[("INVENTORY_LOG_LEVEL", "warn")])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A log with 12 events: stock added, reserved, committed.
async fn make_log(directory: &std::path::Path) {
    let server = Combined::start(directory).await;
    let mut commands = server.commands().await;
    for item in 0..4 {
        let product = format!("p{item}");
        commands
            .add_stock(add_stock(&product, "s", 10))
            .await
            .unwrap();
        let reservation = commands
            .reserve_stock(reserve_stock(&product, "s", 2))
            .await
            .unwrap()
            .into_inner()
            .reservation_id;
        commands
            .commit_reservation(inventory::grpc::pb::CommitReservationRequest {
                reservation_id: reservation,
                order_id: format!("o{item}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn verify_accepts_a_sound_log_and_rejects_a_corrupt_one() {
    let directory = tempfile::tempdir().unwrap();
    make_log(directory.path()).await;
    let data = directory.path().to_str().unwrap();
    let output = inventory(&["verify", "--log", data]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).starts_with("ok: 12 events, head 12, 4 stock items"),
        "{}",
        text(&output.stdout)
    );

    // Flip a byte inside the first record.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(directory.path().join(LOG_FILE_NAME))
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, 30).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], 30).unwrap();
    let output = inventory(&["verify", "--log", data]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("corrupt"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn export_writes_one_json_object_per_event_from_a_position() {
    let directory = tempfile::tempdir().unwrap();
    make_log(directory.path()).await;
    let data = directory.path().to_str().unwrap();
    let output = inventory(&["export", "--log", data, "--from", "2"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[0]["position"], 3);
    assert_eq!(lines[0]["type"], "ReservationCommitted");
    assert_eq!(lines[0]["product_id"], "p0");
    assert_eq!(lines[0]["stock"]["on_hand"], 8);
    assert_eq!(lines[0]["data"]["order_id"], "o0");
    assert_eq!(lines[1]["type"], "StockAdded");
    assert_eq!(lines[1]["data"]["quantity"], 10);

    // To a file: the same lines, in a file only its owner may read (every store's events).
    let file = directory.path().join("export.jsonl");
    let output = inventory(&[
        "export",
        "--log",
        data,
        "--from",
        "2",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 10);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn migrate_copies_an_embedded_log_into_postgres_and_resumes() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema();
    let directory = tempfile::tempdir().unwrap();
    make_log(directory.path()).await;
    let data = directory.path().to_str().unwrap();
    let output = inventory(&[
        "migrate",
        "--from",
        data,
        "--to",
        &url,
        "--pg-schema",
        &schema,
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("migrated 12 events"));
    // Running it again copies nothing more: the target already holds the source.
    let output = inventory(&[
        "migrate",
        "--from",
        data,
        "--to",
        &url,
        "--pg-schema",
        &schema,
    ]);
    assert!(
        text(&output.stdout).contains("migrated 0 events"),
        "{}",
        text(&output.stdout)
    );

    let output = inventory(&["verify", "--log", &url, "--pg-schema", &schema]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("ok: 12 events"));
    let from_file = inventory(&["export", "--log", data]).stdout;
    let from_postgres = inventory(&["export", "--log", &url, "--pg-schema", &schema]).stdout;
    assert_eq!(
        text(&from_postgres),
        text(&from_file),
        "the same events, byte for byte"
    );
    support::drop_schema(&url, &schema).await;
}

/// A target that ends like the source but differs earlier is not a prefix: refused, nothing
/// copied.
#[tokio::test]
async fn migrate_refuses_a_target_that_differs_from_the_source_before_its_last_event() {
    use inventory::domain::{EventId, Inventory, LogPosition};
    use inventory::log::{EmbeddedLog, EventLog, PostgresLog};
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema();
    let directory = tempfile::tempdir().unwrap();
    let events = support::added_events(&mut Inventory::new(), LogPosition(0), 8, 2);
    {
        let (source, _) = EmbeddedLog::open(directory.path(), |_| Ok(())).unwrap();
        source.append(events.clone()).await.unwrap();
    }
    let target = PostgresLog::connect(&url, &schema).await.unwrap();
    let mut differing = events[..5].to_vec();
    differing[1].event_id = EventId(0xdead_beef);
    target.append(differing).await.unwrap();

    let refused = inventory::tools::migrate(directory.path(), &target)
        .await
        .expect_err("a target that is not a prefix is refused");
    assert!(
        refused.to_string().contains("event at 2 differs"),
        "the first differing position is named: {refused}"
    );
    assert_eq!(target.latest_head().await.unwrap(), LogPosition(5));

    // The same first five events are a prefix: the migration resumes after them.
    let resumed_schema = support::fresh_schema();
    let resumed = PostgresLog::connect(&url, &resumed_schema).await.unwrap();
    resumed.append(events[..5].to_vec()).await.unwrap();
    let copied = inventory::tools::migrate(directory.path(), &resumed)
        .await
        .unwrap();
    assert_eq!(copied, 3);
    assert_eq!(resumed.read_all(LogPosition(0), 100).await.unwrap(), events);
    support::drop_schema(&url, &schema).await;
    support::drop_schema(&url, &resumed_schema).await;
}

/// A multi-line command that straddles the migration's read pages is copied whole, and the
/// copy folds and verifies like the source.
#[tokio::test]
async fn migrate_copies_multi_line_commands_whole_across_its_pages() {
    use inventory::domain::{Inventory, LogPosition};
    use inventory::log::{EmbeddedLog, EventLog, MAX_APPEND_EVENTS, PostgresLog};
    use inventory::server::LogConfig;
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema();
    let directory = tempfile::tempdir().unwrap();
    // One page of the migration is MAX_APPEND_EVENTS events: the command of three events
    // starts at its last position.
    let total = MAX_APPEND_EVENTS as u64 + 2;
    let mut events = support::added_events(&mut Inventory::new(), LogPosition(0), total, 7);
    let start = MAX_APPEND_EVENTS - 1;
    for (index, event) in (0u32..).zip(&mut events[start..]) {
        event.command_event_index = index;
        event.command_event_count = 3;
    }
    {
        let (source, _) = EmbeddedLog::open(directory.path(), |_| Ok(())).unwrap();
        source.append(events[..1000].to_vec()).await.unwrap();
        source.append(events[1000..].to_vec()).await.unwrap();
    }
    let target = PostgresLog::connect(&url, &schema).await.unwrap();
    let copied = inventory::tools::migrate(directory.path(), &target)
        .await
        .unwrap();
    assert_eq!(copied, total);
    let mut copy = Vec::new();
    while (copy.len() as u64) < total {
        let after = LogPosition(copy.len() as u64);
        copy.extend(target.read_all(after, MAX_APPEND_EVENTS).await.unwrap());
    }
    assert_eq!(copy, events);
    let report = inventory::tools::verify(&LogConfig::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    })
    .await
    .unwrap();
    assert_eq!(report.head, LogPosition(total));
    support::drop_schema(&url, &schema).await;
}
