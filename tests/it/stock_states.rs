//! Stock states, item policies and alerts over real gRPC channels: MoveStock, RemoveStock from
//! a state, SetItemPolicy, the alerts in answers, in the history and in `Subscribe`, the
//! low-stock report, bad input, restarts, and several PostgreSQL command servers.
//!
//! Over 600 lines: the stock states end to end, one scenario per behaviour over the same
//! servers, on both backends.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::event_service_client::EventServiceClient;
use inventory::grpc::pb::subscribe_response::Message;
use inventory::server::LogConfig;
use support::{Combined, Running, add_stock, bad_fields, error_reason, get_stock, reserve_stock};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

type Commands = CommandServiceClient<Channel>;

fn move_stock(
    product: &str,
    quantity: i64,
    from: pb::StockState,
    to: pb::StockState,
) -> pb::MoveStockRequest {
    pb::MoveStockRequest {
        product_id: product.to_owned(),
        store_id: "store-a".to_owned(),
        quantity,
        from: from as i32,
        to: to as i32,
        reason: "found damaged".to_owned(),
        ..Default::default()
    }
}

fn set_policy(
    product: &str,
    store: &str,
    safety_stock: Option<i64>,
    low_stock_threshold: Option<i64>,
) -> pb::SetItemPolicyRequest {
    pb::SetItemPolicyRequest {
        product_id: product.to_owned(),
        store_id: store.to_owned(),
        safety_stock,
        low_stock_threshold,
        ..Default::default()
    }
}

/// (on_hand, reserved, damaged, quality_control, safety_stock, available).
fn parts(stock: Option<pb::StockLevel>) -> (i64, i64, i64, i64, i64, i64) {
    let stock = stock.unwrap();
    (
        stock.on_hand,
        stock.reserved,
        stock.damaged,
        stock.quality_control,
        stock.safety_stock,
        stock.available,
    )
}

/// Every event of the log that matches `filter`, read through `Subscribe` until caught up.
async fn events(
    client: &mut EventServiceClient<Channel>,
    filter: Option<pb::SubscriptionFilter>,
) -> Vec<pb::InventoryEvent> {
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            from_position: 0,
            filter,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    loop {
        match stream.message().await.unwrap().unwrap().message.unwrap() {
            Message::Event(event) => events.push(event),
            Message::CaughtUp(_) => return events,
            Message::Checkpoint(_) => {}
        }
    }
}

fn alert_filter() -> pb::SubscriptionFilter {
    pb::SubscriptionFilter {
        event_types: [
            pb::EventType::StockLow,
            pb::EventType::OutOfStock,
            pb::EventType::BackInStock,
            pb::EventType::StockShort,
        ]
        .into_iter()
        .map(|kind| kind as i32)
        .collect(),
        ..Default::default()
    }
}

/// The alerts among `events`, as (product, store, alert kind name, available after).
fn alerts(events: &[pb::InventoryEvent]) -> Vec<(String, String, &'static str, i64)> {
    use pb::inventory_event::Kind;
    events
        .iter()
        .filter_map(|event| {
            let kind = match event.kind.as_ref()? {
                Kind::StockLow(_) => "STOCK_LOW",
                Kind::OutOfStock(_) => "OUT_OF_STOCK",
                Kind::BackInStock(_) => "BACK_IN_STOCK",
                Kind::StockShort(_) => "STOCK_SHORT",
                _ => return None,
            };
            Some((
                event.product_id.clone(),
                event.store_id.clone(),
                kind,
                event.stock.unwrap().available,
            ))
        })
        .collect()
}

#[tokio::test]
async fn states_policies_and_alerts_work_over_grpc_and_survive_a_restart() {
    use pb::StockState::{Available, Damaged, QualityControl};
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let mut queries = server.queries().await;
    commands
        .add_stock(add_stock("sku-1", "store-a", 20))
        .await
        .unwrap();
    // 3 found damaged, 2 to inspection: on hand still 20, 15 available.
    let moved = commands
        .move_stock(move_stock("sku-1", 3, Available, Damaged))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(parts(moved.stock), (20, 0, 3, 0, 0, 17));
    commands
        .move_stock(move_stock("sku-1", 2, Available, QualityControl))
        .await
        .unwrap();
    // A safety stock of 5 and a threshold of 10: available 10 is at the threshold.
    let policy = commands
        .set_item_policy(set_policy("sku-1", "store-a", Some(5), Some(10)))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(parts(policy.stock), (20, 0, 3, 2, 5, 10));
    assert_eq!(policy.stock.unwrap().low_stock_threshold, 10);
    assert_eq!(policy.alerts, [pb::EventType::StockLow as i32]);
    // The answer's version and position are the alert's: the item's last event.
    assert_eq!((policy.version, policy.position), (5, 5));
    // The damaged units written off: on hand 17.
    let written_off = commands
        .remove_stock(pb::RemoveStockRequest {
            product_id: "sku-1".to_owned(),
            store_id: "store-a".to_owned(),
            quantity: 3,
            from: Damaged as i32,
            reason: "write-off".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(parts(written_off.stock), (17, 0, 0, 2, 5, 10));
    assert!(written_off.alerts.is_empty());
    // Reserving every available unit: out of stock (already low, so no second STOCK_LOW).
    let reservation = commands
        .reserve_stock(reserve_stock("sku-1", "store-a", 10))
        .await
        .unwrap()
        .into_inner();
    let result = reservation.result.unwrap();
    assert_eq!(parts(result.stock), (17, 10, 0, 2, 5, 0));
    assert_eq!(result.alerts, [pb::EventType::OutOfStock as i32]);
    // Nothing more can be reserved: the safety stock and the inspected units are not for sale.
    let refused = commands
        .reserve_stock(reserve_stock("sku-1", "store-a", 1))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    // Released: back in stock.
    let released = commands
        .release_reservation(pb::ReleaseReservationRequest {
            reservation_id: reservation.reservation_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        released.lines[0].alerts,
        [pb::EventType::BackInStock as i32]
    );
    let head = released.lines[0].position;

    // GetStock shows every part; GetStockAt shows them as they were.
    let item = queries
        .get_stock(get_stock("sku-1", "store-a", head))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(parts(item.stock), (17, 0, 0, 2, 5, 10));
    let before_policy = queries
        .get_stock_at(pb::GetStockAtRequest {
            product_id: "sku-1".to_owned(),
            store_id: "store-a".to_owned(),
            as_of: Some(pb::get_stock_at_request::AsOf::AsOfPosition(3)),
            min_position: Some(head),
        })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(parts(before_policy.stock), (20, 0, 3, 2, 0, 15));

    // The alerts are events: in the history and in a subscription filtered on them.
    let expected = vec![
        ("sku-1".to_owned(), "store-a".to_owned(), "STOCK_LOW", 10),
        ("sku-1".to_owned(), "store-a".to_owned(), "OUT_OF_STOCK", 0),
        (
            "sku-1".to_owned(),
            "store-a".to_owned(),
            "BACK_IN_STOCK",
            10,
        ),
    ];
    let mut client = server.events().await;
    let only_alerts = events(&mut client, Some(alert_filter())).await;
    assert_eq!(alerts(&only_alerts), expected);
    assert_eq!(only_alerts.len(), 3, "the filter lets only alerts through");
    let history = queries
        .get_history(pb::GetHistoryRequest {
            product_id: "sku-1".to_owned(),
            store_id: "store-a".to_owned(),
            min_position: Some(head),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alerts(&history.events), expected);
    assert_eq!(history.events.len() as u64, head);
    server.stop().await;

    // Replayed after a restart: the same alerts, none raised again, the same stock.
    let server = Combined::start(directory.path()).await;
    let mut client = server.events().await;
    let all = events(&mut client, None).await;
    assert_eq!(all.len() as u64, head);
    assert_eq!(alerts(&all), expected);
    let mut queries = server.queries().await;
    let item = queries
        .get_stock(get_stock("sku-1", "store-a", head))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(parts(item.stock), (17, 0, 0, 2, 5, 10));
    // The low-stock report is rebuilt by the replay: available 10 is at the threshold.
    let low = queries
        .list_low_stock(pb::ListLowStockRequest {
            store_id: "store-a".to_owned(),
            min_position: Some(head),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    let low: Vec<_> = low.iter().map(|item| item.product_id.as_str()).collect();
    assert_eq!(low, ["sku-1"]);
    server.stop().await;
    let report = inventory::tools::verify(&LogConfig::Embedded {
        data_dir: directory.path().to_owned(),
    })
    .await
    .unwrap();
    assert_eq!(report.head.0, head);
}

#[tokio::test]
async fn the_low_stock_report_lists_a_stores_low_items_page_by_page() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let mut queries = server.queries().await;
    let mut head = 0;
    // store-a: sku-1..sku-5 with 2 units and threshold 3 (low), sku-6 with 9 (not low);
    // store-b: sku-1 low. Thresholds are per item.
    for (product, store, units) in [
        ("sku-3", "store-a", 2),
        ("sku-1", "store-a", 2),
        ("sku-5", "store-a", 2),
        ("sku-2", "store-a", 2),
        ("sku-4", "store-a", 2),
        ("sku-6", "store-a", 9),
        ("sku-1", "store-b", 1),
    ] {
        commands
            .add_stock(add_stock(product, store, units))
            .await
            .unwrap();
        head = commands
            .set_item_policy(set_policy(product, store, None, Some(3)))
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap()
            .position;
    }
    let page = |page_token: String| pb::ListLowStockRequest {
        store_id: "store-a".to_owned(),
        page_size: 2,
        page_token,
        min_position: Some(head),
    };
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let answer = queries
            .list_low_stock(page(token))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.items.len() <= 2);
        for item in &answer.items {
            assert_eq!(item.store_id, "store-a");
            let stock = item.stock.unwrap();
            assert!(stock.available <= stock.low_stock_threshold);
        }
        listed.extend(answer.items.into_iter().map(|item| item.product_id));
        if answer.next_page_token.is_empty() {
            break;
        }
        token = answer.next_page_token;
    }
    assert_eq!(listed, ["sku-1", "sku-2", "sku-3", "sku-4", "sku-5"]);
    // A delivery lifts sku-2 above its threshold: it leaves the report.
    let delivered = commands
        .add_stock(add_stock("sku-2", "store-a", 5))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    let answer = queries
        .list_low_stock(pb::ListLowStockRequest {
            store_id: "store-a".to_owned(),
            min_position: Some(delivered.position),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<_> = answer
        .items
        .iter()
        .map(|item| item.product_id.as_str())
        .collect();
    assert_eq!(listed, ["sku-1", "sku-3", "sku-4", "sku-5"]);
    assert!(answer.next_page_token.is_empty());
    let bad = queries
        .list_low_stock(pb::ListLowStockRequest {
            store_id: "store a".to_owned(),
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&bad), ["store_id", "page_size"]);
    server.stop().await;
}

#[tokio::test]
async fn bad_state_commands_are_refused_naming_the_field_and_store_nothing() {
    use pb::StockState::{Available, Damaged, QualityControl};
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let head = commands
        .add_stock(add_stock("sku-1", "store-a", 5))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
        .position;
    let invalid = support::assert_invalid;
    // An unknown state, no state, one state to itself, a zero quantity.
    let mut unknown = move_stock("sku-1", 1, Available, Damaged);
    unknown.from = 9;
    invalid(commands.move_stock(unknown).await.unwrap_err(), &["from"]);
    let mut unset = move_stock("sku-1", 1, Available, Damaged);
    unset.to = 0;
    invalid(commands.move_stock(unset).await.unwrap_err(), &["to"]);
    invalid(
        commands
            .move_stock(move_stock("sku-1", 1, Damaged, Damaged))
            .await
            .unwrap_err(),
        &["to"],
    );
    invalid(
        commands
            .move_stock(move_stock("sku-1", 0, Available, Damaged))
            .await
            .unwrap_err(),
        &["quantity"],
    );
    // More than the source state holds.
    let short = commands
        .move_stock(move_stock("sku-1", 1, QualityControl, Available))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&short), "INSUFFICIENT_STOCK_IN_STATE");
    let info = short.get_details_error_info().unwrap();
    assert_eq!(info.metadata["state"], "QUALITY_CONTROL");
    assert_eq!(info.metadata["held"], "0");
    let subjects: Vec<_> = short
        .get_details_precondition_failure()
        .unwrap()
        .violations
        .into_iter()
        .map(|violation| violation.subject)
        .collect();
    assert_eq!(subjects, ["quantity"]);
    let removed = commands
        .remove_stock(pb::RemoveStockRequest {
            product_id: "sku-1".to_owned(),
            store_id: "store-a".to_owned(),
            quantity: 1,
            from: Damaged as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error_reason(&removed), "INSUFFICIENT_STOCK_IN_STATE");
    // A negative policy quantity, an empty policy.
    invalid(
        commands
            .set_item_policy(set_policy("sku-1", "store-a", Some(-1), Some(2)))
            .await
            .unwrap_err(),
        &["safety_stock"],
    );
    invalid(
        commands
            .set_item_policy(set_policy("sku-1", "store-a", None, None))
            .await
            .unwrap_err(),
        &["safety_stock"],
    );
    // A state on a change that is not a removal; an unknown state on one that is.
    let changes = commands
        .apply_stock_changes(pb::ApplyStockChangesRequest {
            changes: vec![
                pb::StockChange {
                    product_id: "sku-1".to_owned(),
                    store_id: "store-a".to_owned(),
                    change: Some(pb::stock_change::Change::Add(1)),
                    expected_version: None,
                    from: Damaged as i32,
                },
                pb::StockChange {
                    product_id: "sku-2".to_owned(),
                    store_id: "store-a".to_owned(),
                    change: Some(pb::stock_change::Change::Remove(1)),
                    expected_version: None,
                    from: 7,
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    invalid(changes, &["changes[0].from", "changes[1].from"]);
    // Nothing was stored.
    let mut client = server.events().await;
    assert_eq!(events(&mut client, None).await.len() as u64, head);
    server.stop().await;
}

/// 64 clients race for an item with a threshold through `servers`: whatever the interleaving,
/// the log holds exactly one STOCK_LOW and one OUT_OF_STOCK, at the right stock.
async fn race_for_the_last_units(servers: &[std::net::SocketAddr]) -> usize {
    let mut commands = Commands::new(support::channel(servers[0]).await);
    commands.add_stock(add_stock("hot", "s", 40)).await.unwrap();
    commands
        .set_item_policy(set_policy("hot", "s", None, Some(10)))
        .await
        .unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..64 {
        let address = servers[client % servers.len()];
        let accepted = accepted.clone();
        clients.push(tokio::spawn(async move {
            let mut commands = Commands::new(support::channel(address).await);
            match commands.reserve_stock(reserve_stock("hot", "s", 1)).await {
                Ok(_) => {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
                Err(status) => assert_eq!(status.code(), Code::FailedPrecondition),
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    accepted.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_clients_raise_each_alert_exactly_once() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    assert_eq!(race_for_the_last_units(&[server.command_addr]).await, 40);
    let mut client = server.events().await;
    assert_eq!(
        alerts(&events(&mut client, Some(alert_filter())).await),
        [
            ("hot".to_owned(), "s".to_owned(), "STOCK_LOW", 10),
            ("hot".to_owned(), "s".to_owned(), "OUT_OF_STOCK", 0),
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_command_servers_raise_each_alert_exactly_once() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema();
    let log = LogConfig::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    };
    let first = Running::command_on(log.clone()).await;
    let second = Running::command_on(log.clone()).await;
    assert_eq!(
        race_for_the_last_units(&[first.address, second.address]).await,
        40
    );
    let mut client = EventServiceClient::new(support::channel(second.address).await);
    let all = events(&mut client, None).await;
    assert_eq!(
        alerts(&all),
        [
            ("hot".to_owned(), "s".to_owned(), "STOCK_LOW", 10),
            ("hot".to_owned(), "s".to_owned(), "OUT_OF_STOCK", 0),
        ]
    );
    // The delivery, the policy, 40 reservations, 2 alerts.
    assert_eq!(all.len(), 44);
    first.stop().await;
    second.stop().await;
    let report = inventory::tools::verify(&log).await.unwrap();
    assert_eq!(report.head.0, 44);
    support::drop_schema(&url, &schema).await;
}

/// A replica follows states, policies and alerts; `export` writes them; `migrate` copies them
/// into PostgreSQL, where `verify` folds them and `export` gives the same lines.
#[tokio::test]
async fn replicas_export_and_migrate_carry_states_policies_and_alerts() {
    use pb::StockState::{Available, Damaged};
    use pb::query_service_client::QueryServiceClient;
    let primary_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let primary = Running::command(primary_dir.path()).await;
    let replica = Running::query(replica_dir.path(), primary.address).await;
    let mut commands = Commands::new(support::channel(primary.address).await);
    commands
        .add_stock(add_stock("sku-1", "store-a", 6))
        .await
        .unwrap();
    commands
        .move_stock(move_stock("sku-1", 2, Available, Damaged))
        .await
        .unwrap();
    let low = commands
        .set_item_policy(set_policy("sku-1", "store-a", Some(1), Some(3)))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(low.alerts, [pb::EventType::StockLow as i32]);
    let head = commands
        .reserve_stock(reserve_stock("sku-1", "store-a", 3))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
        .position;
    let mut queries = QueryServiceClient::new(support::channel(replica.address).await);
    let item = queries
        .get_stock(get_stock("sku-1", "store-a", head))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(parts(item.stock), (6, 3, 2, 0, 1, 0));
    let low_items = queries
        .list_low_stock(pb::ListLowStockRequest {
            store_id: "store-a".to_owned(),
            min_position: Some(head),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(low_items.len(), 1);
    let mut replica_events = EventServiceClient::new(support::channel(replica.address).await);
    let mut primary_events = EventServiceClient::new(support::channel(primary.address).await);
    assert_eq!(
        events(&mut replica_events, None).await,
        events(&mut primary_events, None).await
    );
    replica.stop().await;
    primary.stop().await;

    let log = LogConfig::Embedded {
        data_dir: primary_dir.path().to_owned(),
    };
    let mut exported = Vec::new();
    inventory::tools::export(&log, inventory::domain::LogPosition::START, &mut exported)
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(exported.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|line| line["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "StockAdded",
            "StockMoved",
            "ItemPolicyChanged",
            "StockLow",
            "StockReserved",
            "OutOfStock"
        ]
    );
    assert_eq!(lines[1]["data"]["from"], "available");
    assert_eq!(lines[1]["data"]["to"], "damaged");
    assert_eq!(lines[2]["data"]["low_stock_threshold"], 3);
    assert_eq!(lines[3]["stock"]["damaged"], 2);
    assert_eq!(lines[3]["stock"]["safety_stock"], 1);
    assert_eq!(lines[3]["stock"]["available"], 3);
    assert_eq!(lines[5]["stock"]["available"], 0);

    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema();
    let target = inventory::log::PostgresLog::connect(&url, &schema)
        .await
        .unwrap();
    let copied = inventory::tools::migrate(primary_dir.path(), &target)
        .await
        .unwrap();
    assert_eq!(copied, head);
    let postgres = LogConfig::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    };
    assert_eq!(
        inventory::tools::verify(&postgres).await.unwrap().head.0,
        head
    );
    let mut from_postgres = Vec::new();
    inventory::tools::export(
        &postgres,
        inventory::domain::LogPosition::START,
        &mut from_postgres,
    )
    .await
    .unwrap();
    assert_eq!(from_postgres, exported, "the same events, byte for byte");
    support::drop_schema(&url, &schema).await;
}

fn count_request(
    lines: &[(&str, i64)],
    counted_at: Option<inventory::domain::Timestamp>,
) -> pb::RecordCountRequest {
    pb::RecordCountRequest {
        store_id: "store-a".to_owned(),
        lines: lines
            .iter()
            .map(|(product, counted)| pb::CountLine {
                product_id: (*product).to_owned(),
                counted: *counted,
            })
            .collect(),
        counted_at: counted_at.map(inventory::log::codec::timestamp_to_pb),
        reason: "cycle count".to_owned(),
        ..Default::default()
    }
}

fn sale(product: &str, quantity: i64) -> pb::RemoveStockRequest {
    pb::RemoveStockRequest {
        product_id: product.to_owned(),
        store_id: "store-a".to_owned(),
        quantity,
        reason: "sale".to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_count_dated_in_the_past_keeps_what_was_recorded_after_it() {
    use inventory::app::{Clock, ManualClock};
    use inventory::domain::Timestamp;
    const MINUTE: u64 = 60_000;
    let start = Timestamp(1_800_000_000_000);
    let directory = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let server = Combined::start_with_clock(directory.path(), clock.clone()).await;
    let mut commands = server.commands().await;
    commands
        .add_stock(add_stock("sku-1", "store-a", 20))
        .await
        .unwrap();
    clock.advance_millis(10 * MINUTE);
    commands.remove_stock(sale("sku-1", 3)).await.unwrap();
    clock.advance_millis(10 * MINUTE);
    // The shelf was counted at minute 5 (18 found, the log said 20) and entered at minute 20,
    // after the sale of 3 at minute 10: 18 - 3 = 15 now.
    let mut past = count_request(&[("sku-1", 18)], Some(Timestamp(start.0 + 5 * MINUTE)));
    past.command_id = "count-1".to_owned();
    let counted = commands
        .record_count(past.clone())
        .await
        .unwrap()
        .into_inner();
    let line = &counted.lines[0];
    assert_eq!((line.on_hand_at_count, line.variance), (20, -2));
    assert_eq!(
        parts(line.result.as_ref().unwrap().stock),
        (15, 0, 0, 0, 0, 15)
    );
    // A retry gets the same answer, also once more was sold.
    commands.remove_stock(sale("sku-1", 1)).await.unwrap();
    let retried = commands.record_count(past).await.unwrap().into_inner();
    assert!(retried.lines[0].result.as_ref().unwrap().replayed);
    assert_eq!(retried.lines[0].variance, -2);
    // A count of now: what is on the shelf is on hand.
    let now = commands
        .record_count(count_request(&[("sku-1", 13)], None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (now.lines[0].on_hand_at_count, now.lines[0].variance),
        (14, -1)
    );

    // Reserved 10, then a count finds 6: recorded all the same, with the shortfall.
    let reservation = commands
        .reserve_stock(reserve_stock("sku-1", "store-a", 10))
        .await
        .unwrap()
        .into_inner();
    let short = commands
        .record_count(count_request(&[("sku-1", 6)], None))
        .await
        .unwrap()
        .into_inner();
    let result = short.lines[0].result.as_ref().unwrap();
    assert_eq!(parts(result.stock), (6, 10, 0, 0, 0, 0));
    assert_eq!(result.stock.unwrap().shortfall, 4);
    assert_eq!(
        result.alerts,
        [
            pb::EventType::StockShort as i32,
            pb::EventType::OutOfStock as i32
        ]
    );
    let refused = commands
        .reserve_stock(reserve_stock("sku-1", "store-a", 1))
        .await
        .unwrap_err();
    assert_eq!(error_reason(&refused), "INSUFFICIENT_STOCK");
    let commit = |lines: Vec<pb::CommitLine>| pb::CommitReservationRequest {
        reservation_id: reservation.reservation_id.clone(),
        order_id: "order-9".to_owned(),
        lines,
        ..Default::default()
    };
    let not_there = commands
        .commit_reservation(commit(Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(not_there.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&not_there), "STOCK_SHORT");
    // What is there ships; the rest is released: no shortfall left.
    let shipped = commands
        .commit_reservation(commit(vec![pb::CommitLine {
            product_id: "sku-1".to_owned(),
            store_id: "store-a".to_owned(),
            quantity: 6,
        }]))
        .await
        .unwrap()
        .into_inner();
    let stock = shipped.lines[0].stock.unwrap();
    assert_eq!((stock.on_hand, stock.reserved, stock.shortfall), (0, 0, 0));

    // Bad counts: nothing stored.
    let head = shipped.lines[0].position;
    let invalid = support::assert_invalid;
    let future = Timestamp(clock.now().0 + MINUTE);
    invalid(
        commands
            .record_count(count_request(&[("sku-1", 1)], Some(future)))
            .await
            .unwrap_err(),
        &["counted_at"],
    );
    let too_old = Timestamp(clock.now().0 - 8 * 24 * 60 * MINUTE);
    invalid(
        commands
            .record_count(count_request(&[("sku-1", 1)], Some(too_old)))
            .await
            .unwrap_err(),
        &["counted_at"],
    );
    invalid(
        commands
            .record_count(count_request(&[("sku-1", 1), ("sku-1", 2)], None))
            .await
            .unwrap_err(),
        &["lines[1]"],
    );
    invalid(
        commands
            .record_count(count_request(&[("sku-1", -1)], None))
            .await
            .unwrap_err(),
        &["lines[0].counted"],
    );
    invalid(
        commands
            .record_count(count_request(&[], None))
            .await
            .unwrap_err(),
        &["lines"],
    );
    let mut client = server.events().await;
    let all = events(&mut client, None).await;
    assert_eq!(all.len() as u64, head);
    let counts: Vec<_> = all
        .iter()
        .filter_map(|event| match event.kind.as_ref() {
            Some(pb::inventory_event::Kind::StockCounted(count)) => Some((
                count.counted,
                count.on_hand_at_count,
                count.variance,
                count.on_hand,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(counts, [(18, 20, -2, 15), (13, 14, -1, 13), (6, 13, -7, 6)]);
    server.stop().await;
    let report = inventory::tools::verify(&LogConfig::Embedded {
        data_dir: directory.path().to_owned(),
    })
    .await
    .unwrap();
    assert_eq!(report.head.0, head);
}

/// A count dated between two events, on the PostgreSQL log: its reference is read from the
/// database.
#[tokio::test]
async fn a_past_count_reads_its_reference_from_the_postgres_log() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema();
    let log = LogConfig::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    };
    let server = Running::command_on(log.clone()).await;
    let mut commands = Commands::new(support::channel(server.address).await);
    commands
        .add_stock(add_stock("sku-1", "store-a", 20))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let between = inventory::domain::Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    commands.remove_stock(sale("sku-1", 3)).await.unwrap();
    let counted = commands
        .record_count(count_request(&[("sku-1", 19), ("sku-2", 4)], Some(between)))
        .await
        .unwrap()
        .into_inner();
    let found: Vec<_> = counted
        .lines
        .iter()
        .map(|line| {
            (
                line.on_hand_at_count,
                line.variance,
                line.result.as_ref().unwrap().stock.unwrap().on_hand,
            )
        })
        .collect();
    // sku-1: 19 found where the log said 20, 3 sold since: 16. sku-2 had no event: 4.
    assert_eq!(found, [(20, -1, 16), (0, 4, 4)]);
    server.stop().await;
    assert_eq!(inventory::tools::verify(&log).await.unwrap().head.0, 4);
    support::drop_schema(&url, &schema).await;
}
