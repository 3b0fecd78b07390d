//! Multi-line commands over real gRPC: carts reserved all or nothing by many clients at once
//! (embedded log, and PostgreSQL with two command servers), partial commits, extensions,
//! batch stock changes, retries, subscriptions, and bad input refused with nothing stored.
//!
//! Over 600 lines: the concurrent cart scenarios share their load generator and checks, on
//! both backends.

use crate::support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;

use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::query_service_client::QueryServiceClient;
use inventory::server::{LogConfig, QuerySource};
use support::{Combined, Running, add_change, get_stock, level};

type Commands = CommandServiceClient<tonic::transport::Channel>;
type Queries = QueryServiceClient<tonic::transport::Channel>;

const ITEMS: usize = 20;

/// An accepted cart: its reservation id, the units it holds of each item (by index), and for
/// each line of its answer the line's last position and how many alerts end there.
type Cart = (String, HashMap<usize, i64>, Vec<(u64, u64)>);
const STOCK_PER_ITEM: i64 = 6;

fn item(index: usize) -> (String, String) {
    (format!("sku-{index}"), format!("store-{}", index % 3))
}

fn line(product: &str, store: &str, quantity: i64) -> pb::ReservationLine {
    pb::ReservationLine {
        product_id: product.to_owned(),
        store_id: store.to_owned(),
        quantity,
        expected_version: None,
    }
}

fn cart(lines: Vec<pb::ReservationLine>) -> pb::ReserveStockRequest {
    pb::ReserveStockRequest {
        lines,
        customer_id: "c-42".to_owned(),
        ..Default::default()
    }
}

/// A small deterministic generator, one per client.
struct Random(u64);

impl Random {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Stocks every item with one `ApplyStockChanges`; returns the command's last position.
async fn stock_items(commands: &mut Commands) -> u64 {
    let changes = (0..ITEMS)
        .map(|index| {
            let (product, store) = item(index);
            add_change(&product, &store, STOCK_PER_ITEM)
        })
        .collect();
    let response = commands
        .apply_stock_changes(pb::ApplyStockChangesRequest {
            changes,
            reason: "delivery".to_owned(),
            command_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.changes.len(), ITEMS);
    response.position
}

/// 64 clients reserving random 1–10-line carts over [`ITEMS`] items with little stock, spread
/// over `servers`. Returns each accepted cart (its reservation id and units per item) and how
/// many were refused.
async fn cart_storm(servers: &[SocketAddr]) -> (Vec<Cart>, usize) {
    let accepted: Arc<Mutex<Vec<Cart>>> = Arc::default();
    let refused = Arc::new(Mutex::new(0usize));
    let mut clients = Vec::new();
    for client in 0..64u64 {
        let address = servers[client as usize % servers.len()];
        let mut commands = Commands::new(support::channel(address).await);
        let accepted = accepted.clone();
        let refused = refused.clone();
        clients.push(tokio::spawn(async move {
            let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ ((client + 1) * 0x1000_0001));
            for _ in 0..4 {
                let mut wanted: HashMap<usize, i64> = HashMap::new();
                let mut lines = Vec::new();
                for _ in 0..=random.next(10) {
                    let index = random.next(ITEMS as u64) as usize;
                    let quantity = 1 + random.next(3) as i64;
                    let (product, store) = item(index);
                    lines.push(line(&product, &store, quantity));
                    *wanted.entry(index).or_default() += quantity;
                }
                let line_count = lines.len();
                match commands.reserve_stock(cart(lines)).await {
                    Ok(response) => {
                        let response = response.into_inner();
                        assert_eq!(response.lines.len(), wanted.len());
                        let ends = response
                            .lines
                            .iter()
                            .map(|line| (line.position, line.alerts.len() as u64))
                            .collect();
                        accepted
                            .lock()
                            .unwrap()
                            .push((response.reservation_id, wanted, ends));
                    }
                    Err(status) => {
                        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                        let details = status.get_error_details();
                        assert_eq!(details.error_info().unwrap().reason, "INSUFFICIENT_STOCK");
                        let violations = &details.precondition_failure().unwrap().violations;
                        assert!(!violations.is_empty() && violations.len() <= line_count);
                        for violation in violations {
                            assert!(violation.subject.starts_with("lines["), "{violation:?}");
                        }
                        *refused.lock().unwrap() += 1;
                    }
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let refused = *refused.lock().unwrap();
    (accepted, refused)
}

/// Every accepted cart is whole (each of its items holds what it asked for), the refused ones
/// left nothing behind (the items hold exactly what the accepted carts asked), and no item is
/// oversold.
async fn check_carts(queries: &mut Queries, accepted: &[Cart]) {
    let mut reserved = [0i64; ITEMS];
    for (reservation_id, wanted, ends) in accepted {
        let found = queries
            .get_reservation(pb::GetReservationRequest {
                reservation_id: reservation_id.clone(),
                store_id: String::new(),
                min_position: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.status(), pb::ReservationStatus::Active);
        assert_eq!(found.lines.len(), wanted.len(), "{reservation_id}");
        for (index, quantity) in wanted {
            let (product, store) = item(*index);
            let held = found
                .lines
                .iter()
                .find(|line| line.product_id == product && line.store_id == store)
                .unwrap_or_else(|| panic!("{reservation_id} lost its line on {product}"));
            assert_eq!(held.quantity, *quantity);
            reserved[*index] += quantity;
        }
        // Its events are one command: each line's event is followed only by its item's alerts,
        // then comes the next line's event.
        let positions = &found.event_positions;
        assert_eq!(positions.len(), ends.len());
        for (line, (end, alerts)) in ends.iter().enumerate() {
            assert_eq!(
                positions[line],
                end - alerts,
                "{reservation_id} line {line}"
            );
            if let Some(next) = positions.get(line + 1) {
                assert_eq!(*next, end + 1, "{reservation_id} line {line}");
            }
        }
    }
    for (index, reserved) in reserved.iter().enumerate() {
        let (product, store) = item(index);
        let stock = queries
            .get_stock(get_stock(&product, &store, 0))
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        let (on_hand, held, _) = level(stock.stock);
        assert_eq!(on_hand, STOCK_PER_ITEM);
        assert_eq!(
            held, *reserved,
            "{product}@{store}: only accepted carts hold stock"
        );
        assert!(held <= on_hand, "{product}@{store} oversold");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_reserving_carts_never_oversell_nor_leave_half_a_cart() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    stock_items(&mut commands).await;
    let (accepted, refused) = cart_storm(&[server.command_addr]).await;
    assert!(
        !accepted.is_empty() && refused > 0,
        "the stock ran out: {} accepted, {refused} refused",
        accepted.len()
    );
    let mut queries = server.queries().await;
    // Read once the model has applied everything.
    let head = commands
        .apply_stock_changes(pb::ApplyStockChangesRequest {
            changes: vec![add_change("marker", "store-0", 1)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .position;
    queries
        .get_stock(get_stock("marker", "store-0", head))
        .await
        .unwrap();
    check_carts(&mut queries, &accepted).await;
    server.stop().await;
    inventory::tools::verify(&LogConfig::Embedded {
        data_dir: directory.path().to_owned(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_through_two_postgres_command_servers_never_oversell_nor_leave_half_a_cart() {
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
    let mut commands = Commands::new(support::channel(first.address).await);
    let stocked = stock_items(&mut commands).await;
    let (accepted, refused) = cart_storm(&[first.address, second.address]).await;
    assert!(!accepted.is_empty() && refused > 0);
    let query = Running::query_from(QuerySource::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    })
    .await;
    let mut queries = Queries::new(support::channel(query.address).await);
    // The query server has read the whole log once it answers for the last cart's position.
    let marker = Commands::new(support::channel(second.address).await)
        .apply_stock_changes(pb::ApplyStockChangesRequest {
            changes: vec![add_change("marker", "store-0", 1)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .position;
    assert!(marker > stocked);
    queries
        .get_stock(get_stock("marker", "store-0", marker))
        .await
        .unwrap();
    check_carts(&mut queries, &accepted).await;
    query.stop().await;
    first.stop().await;
    second.stop().await;
    let report = inventory::tools::verify(&log).await.unwrap();
    assert_eq!(report.head.0, marker);
    support::drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn a_partial_commit_ships_some_lines_releases_the_rest_and_is_looked_up_by_id() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    commands
        .apply_stock_changes(pb::ApplyStockChangesRequest {
            changes: vec![
                add_change("sku-1", "store-a", 10),
                add_change("sku-2", "store-a", 10),
                add_change("sku-3", "store-b", 10),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let reserved = commands
        .reserve_stock(pb::ReserveStockRequest {
            reservation_id: "cart-7".to_owned(),
            ..cart(vec![
                line("sku-1", "store-a", 2),
                line("sku-2", "store-a", 1),
                line("sku-3", "store-b", 4),
            ])
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reserved.lines.len(), 3);
    // result is the last line: reading its position reads the whole command.
    assert_eq!(reserved.result.unwrap().position, 6);

    // A longer hold, then 1 of 2 sku-1 and 3 of 4 sku-3 ship; sku-2 not at all.
    let extended = commands
        .extend_reservation(pb::ExtendReservationRequest {
            reservation_id: "cart-7".to_owned(),
            ttl: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(extended.lines.len(), 3);
    let committed = commands
        .commit_reservation(pb::CommitReservationRequest {
            reservation_id: "cart-7".to_owned(),
            order_id: "order-7".to_owned(),
            lines: vec![
                pb::CommitLine {
                    product_id: "sku-1".to_owned(),
                    store_id: "store-a".to_owned(),
                    quantity: 1,
                },
                pb::CommitLine {
                    product_id: "sku-3".to_owned(),
                    store_id: "store-b".to_owned(),
                    quantity: 3,
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let stocks: Vec<_> = committed
        .lines
        .iter()
        .map(|line| level(line.stock))
        .collect();
    assert_eq!(stocks, [(9, 0, 9), (10, 0, 10), (7, 0, 7)]);
    let last = committed.result.unwrap().position;
    assert_eq!(last, 12);

    let mut queries = server.queries().await;
    let found = queries
        .get_reservation(pb::GetReservationRequest {
            reservation_id: "cart-7".to_owned(),
            store_id: String::new(),
            min_position: Some(last),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.status(), pb::ReservationStatus::PartiallyCommitted);
    assert_eq!(found.order_id, "order-7");
    assert_eq!(found.customer_id, "c-42");
    let lines: Vec<_> = found
        .lines
        .iter()
        .map(|line| {
            (
                line.product_id.as_str(),
                line.quantity,
                line.committed,
                line.released,
            )
        })
        .collect();
    assert_eq!(
        lines,
        [("sku-1", 2, 1, 1), ("sku-2", 1, 0, 1), ("sku-3", 4, 3, 1)]
    );
    assert_eq!(found.event_positions, (4..=12).collect::<Vec<u64>>());
    // Unknown ids are NOT_FOUND.
    let missing = queries
        .get_reservation(pb::GetReservationRequest {
            reservation_id: "no-such-cart".to_owned(),
            store_id: String::new(),
            min_position: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // A subscriber filtering on one product gets only that product's event of each command,
    // each saying where it is in its command.
    let mut events = server.events().await;
    let mut stream = events
        .subscribe(pb::SubscribeRequest {
            from_position: 0,
            filter: Some(pb::SubscriptionFilter {
                product_ids: vec!["sku-2".to_owned()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(pb::subscribe_response::Message::Event(event)) = message.message {
            assert_eq!(event.product_id, "sku-2");
            seen.push((
                event.position,
                event.command_event_index,
                event.command_event_count,
            ));
        }
    }
    // Stocked (3 changes), reserved (3 lines), extended (3), committed (3): sku-2 is the
    // second of each.
    assert_eq!(seen, [(2, 1, 3), (5, 1, 3), (8, 1, 3), (11, 1, 3)]);
    server.stop().await;
}

#[tokio::test]
async fn a_retried_cart_gets_its_original_multi_line_answer() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    stock_items(&mut commands).await;
    let request = pb::ReserveStockRequest {
        command_id: "checkout-1".to_owned(),
        ..cart(vec![
            line("sku-1", "store-1", 1),
            line("sku-2", "store-2", 2),
        ])
    };
    let original = commands
        .reserve_stock(request.clone())
        .await
        .unwrap()
        .into_inner();
    server.stop().await;
    // Also after a restart: the answer is rebuilt from the log.
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let retry = commands
        .reserve_stock(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.reservation_id, original.reservation_id);
    assert_eq!(retry.expires_at, original.expires_at);
    assert_eq!(retry.lines.len(), 2);
    for (retry, original) in retry.lines.iter().zip(&original.lines) {
        assert!(retry.replayed);
        assert_eq!(
            (retry.position, retry.version, retry.stock),
            (original.position, original.version, original.stock)
        );
    }
    // The same id with another cart is refused.
    let mut other = request;
    other.lines[1].quantity = 3;
    let status = commands.reserve_stock(other).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    server.stop().await;
}

#[tokio::test]
async fn a_batch_of_stock_changes_names_every_broken_change_and_stores_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let head = stock_items(&mut commands).await;
    let change = |index: usize, change| {
        let (product, store) = item(index);
        pb::StockChange {
            product_id: product,
            store_id: store,
            change: Some(change),
            expected_version: None,
            from: 0,
        }
    };
    use pb::stock_change::Change;
    // Over stock: two removals larger than the stock, among good changes.
    let status = commands
        .apply_stock_changes(pb::ApplyStockChangesRequest {
            changes: vec![
                change(0, Change::Add(5)),
                change(1, Change::Remove(7)),
                change(2, Change::SetOnHand(0)),
                change(3, Change::Remove(STOCK_PER_ITEM + 1)),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let details = status.get_error_details();
    let subjects: Vec<&str> = details
        .precondition_failure()
        .unwrap()
        .violations
        .iter()
        .map(|violation| violation.subject.as_str())
        .collect();
    assert_eq!(subjects, ["changes[1].remove", "changes[3].remove"]);
    assert!(
        status.message().starts_with(
            "changes[1].remove: sku-1@store-1: insufficient stock: requested 7, available 6; "
        ),
        "{}",
        status.message()
    );

    // Bad fields: each named with its index.
    let mut no_change = change(4, Change::Add(1));
    no_change.change = None;
    let status = commands
        .apply_stock_changes(pb::ApplyStockChangesRequest {
            changes: vec![
                change(0, Change::Add(1)),
                change(1, Change::Add(0)),
                change(2, Change::Remove(-3)),
                change(3, Change::SetOnHand(-1)),
                no_change,
                change(0, Change::Add(1)),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = bad_fields(&status);
    assert_eq!(
        fields,
        [
            "changes[1].add",
            "changes[2].remove",
            "changes[3].set_on_hand",
            "changes[4].change",
            "changes[5]"
        ]
    );
    for changes in [0, 1001] {
        let status = commands
            .apply_stock_changes(pb::ApplyStockChangesRequest {
                changes: (0..changes)
                    .map(|index| add_change(&format!("bulk-{index}"), "s", 1))
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["changes"], "{changes} changes");
    }
    // Nothing was stored: the next command lands right after the stocking.
    let next = commands
        .remove_stock(pb::RemoveStockRequest {
            product_id: "sku-0".to_owned(),
            store_id: "store-0".to_owned(),
            quantity: 2,
            reason: "write-off".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(next.position, head + 1);
    assert_eq!(
        level(next.stock),
        (STOCK_PER_ITEM - 2, 0, STOCK_PER_ITEM - 2)
    );
    server.stop().await;
}

fn bad_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest: {status:?}"))
        .field_violations
        .iter()
        .map(|violation| violation.field.clone())
        .collect()
}

#[tokio::test]
async fn bad_carts_are_refused_naming_the_field_and_store_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let head = stock_items(&mut commands).await;
    let good = || line("sku-1", "store-1", 1);
    let cases: Vec<(&str, pb::ReserveStockRequest, Vec<&str>)> = vec![
        (
            "1,001 lines",
            cart((0..1001).map(|_| good()).collect()),
            vec!["lines"],
        ),
        (
            "a bad line among good ones",
            cart(vec![good(), good(), line("sku-1", "", 1), good()]),
            vec!["lines[2].store_id"],
        ),
        (
            "quantity zero or negative",
            cart(vec![
                line("sku-1", "store-1", 0),
                line("sku-2", "store-2", -4),
            ]),
            vec!["lines[0].quantity", "lines[1].quantity"],
        ),
        (
            "both forms at once",
            pb::ReserveStockRequest {
                product_id: "sku-1".to_owned(),
                store_id: "store-1".to_owned(),
                quantity: 1,
                ..cart(vec![good()])
            },
            vec!["product_id", "store_id", "quantity"],
        ),
        (
            "a single-item expected_version with lines",
            pb::ReserveStockRequest {
                expected_version: Some(1),
                ..cart(vec![good()])
            },
            vec!["expected_version"],
        ),
        (
            "no lines and no item",
            cart(Vec::new()),
            vec!["product_id", "store_id", "quantity"],
        ),
    ];
    for (case, request, fields) in cases {
        let status = commands.reserve_stock(request).await.unwrap_err();
        assert_eq!(bad_fields(&status), fields, "{case}");
    }
    // Commit lines: zero lines is "everything"; all-zero lines and negative ones are refused.
    let reservation = commands
        .reserve_stock(cart(vec![good()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reservation.result.unwrap().position, head + 1);
    for (quantity, field) in [(0, "lines"), (-1, "lines[0].quantity")] {
        let status = commands
            .commit_reservation(pb::CommitReservationRequest {
                reservation_id: reservation.reservation_id.clone(),
                order_id: "o-1".to_owned(),
                lines: vec![pb::CommitLine {
                    product_id: "sku-1".to_owned(),
                    store_id: "store-1".to_owned(),
                    quantity,
                }],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), [field]);
    }
    // More than reserved, or an item the reservation does not hold: FAILED_PRECONDITION.
    let status = commands
        .commit_reservation(pb::CommitReservationRequest {
            reservation_id: reservation.reservation_id.clone(),
            order_id: "o-1".to_owned(),
            lines: vec![
                pb::CommitLine {
                    product_id: "sku-1".to_owned(),
                    store_id: "store-1".to_owned(),
                    quantity: 2,
                },
                pb::CommitLine {
                    product_id: "sku-9".to_owned(),
                    store_id: "store-0".to_owned(),
                    quantity: 1,
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let details = status.get_error_details();
    let violations: Vec<(&str, &str)> = details
        .precondition_failure()
        .unwrap()
        .violations
        .iter()
        .map(|violation| (violation.r#type.as_str(), violation.subject.as_str()))
        .collect();
    assert_eq!(
        violations,
        [
            ("COMMIT_EXCEEDS_RESERVED", "lines[0].quantity"),
            ("NOT_IN_RESERVATION", "lines[1]")
        ]
    );
    // Nothing of all that was stored.
    let next = commands
        .release_reservation(pb::ReleaseReservationRequest {
            reservation_id: reservation.reservation_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.result.unwrap().position, head + 2);
    server.stop().await;
}

/// More lines arrive at once than one append takes (eight deliveries of 1,000 changes against
/// an append of at most 4,096 events): the writer spreads whole commands over several appends,
/// each command's events contiguous, and every delivery counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_larger_together_than_one_append_are_each_stored_whole() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut tasks = Vec::new();
    for delivery in 0..8 {
        let mut commands = server.commands().await;
        tasks.push(tokio::spawn(async move {
            let changes = (0..1000)
                .map(|index| add_change(&format!("bulk-{index}"), "s", delivery + 1))
                .collect();
            commands
                .apply_stock_changes(pb::ApplyStockChangesRequest {
                    changes,
                    reason: format!("delivery {delivery}"),
                    command_id: format!("delivery-{delivery}"),
                })
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut last_positions = Vec::new();
    for task in tasks {
        let response = task.await.unwrap();
        let positions: Vec<u64> = response
            .changes
            .iter()
            .map(|change| change.position)
            .collect();
        assert_eq!(positions.len(), 1000);
        assert!(positions.windows(2).all(|pair| pair[1] == pair[0] + 1));
        assert_eq!(response.position, positions[999]);
        last_positions.push(response.position);
    }
    last_positions.sort_unstable();
    assert_eq!(
        last_positions,
        (1..=8).map(|n| n * 1000).collect::<Vec<u64>>()
    );
    // Every item got every delivery: 1 + 2 + … + 8 units.
    let mut queries = server.queries().await;
    for index in [0, 499, 999] {
        let item = queries
            .get_stock(get_stock(&format!("bulk-{index}"), "s", 8000))
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        assert_eq!(level(item.stock).0, 36);
        assert_eq!(item.version, 8);
    }
    server.stop().await;
}
