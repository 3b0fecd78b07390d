//! End to end over real gRPC channels: servers started in-process on 127.0.0.1:0 with a real
//! log in a temporary directory.
//!
//! Over 600 lines: the behaviours a client sees end to end, one scenario each over the same
//! in-process servers; the topics with their own set-up have their own files.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

use inventory::app::ManualClock;
use inventory::domain::Timestamp;
use inventory::grpc::pb;
use support::{
    Combined, Running, add_stock, bad_fields, error_reason, get_stock, level, reserve_stock,
};

fn error_metadata(status: &tonic::Status, key: &str) -> String {
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get(key).cloned())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_rpc_works_over_grpc() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let mut queries = server.queries().await;

    let added = commands
        .add_stock(add_stock("sku-1", "store-a", 10))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!((added.version, added.position), (1, 1));
    assert_eq!(level(added.stock), (10, 0, 10));
    commands
        .add_stock(add_stock("sku-1", "store-b", 3))
        .await
        .unwrap();

    let reserved = commands
        .reserve_stock(reserve_stock("sku-1", "store-a", 4))
        .await
        .unwrap()
        .into_inner();
    let reservation_id = reserved.reservation_id.clone();
    assert_eq!(
        uuid::Uuid::parse_str(&reservation_id)
            .unwrap()
            .get_version_num(),
        7
    );
    let result = reserved.result.unwrap();
    assert_eq!(level(result.stock), (10, 4, 6));
    let expires_at = reserved.expires_at.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (expires_at.seconds - now - 1800).abs() <= 5,
        "default ttl is 30 minutes"
    );

    let stock = queries
        .get_stock(get_stock("sku-1", "store-a", result.position))
        .await
        .unwrap()
        .into_inner();
    let item = stock.item.unwrap();
    assert_eq!(level(item.stock), (10, 4, 6));
    assert_eq!((item.version, item.position), (2, 3));
    assert!(stock.read_position >= 3);

    let availability = queries
        .check_availability(pb::CheckAvailabilityRequest {
            product_id: "sku-1".into(),
            store_id: "store-a".into(),
            quantity: 7,
            min_position: Some(3),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!availability.available);
    assert_eq!(availability.available_quantity, 6);

    let reservations = queries
        .list_reservations(pb::ListReservationsRequest {
            product_id: "sku-1".into(),
            store_id: "store-a".into(),
            min_position: Some(3),
        })
        .await
        .unwrap()
        .into_inner()
        .reservations;
    assert_eq!(reservations.len(), 1);
    assert_eq!(reservations[0].reservation_id, reservation_id);
    assert_eq!(reservations[0].quantity, 4);
    assert_eq!(reservations[0].customer_id, "customer-1");

    let committed = commands
        .commit_reservation(pb::CommitReservationRequest {
            reservation_id: reservation_id.clone(),
            order_id: "order-9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(level(committed.stock), (6, 0, 6));

    let mut second = reserve_stock("sku-1", "store-a", 2);
    second.reservation_id = "my-reservation".into();
    second.ttl = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    let second = commands.reserve_stock(second).await.unwrap().into_inner();
    assert_eq!(second.reservation_id, "my-reservation");
    let released = commands
        .release_reservation(pb::ReleaseReservationRequest {
            reservation_id: "my-reservation".into(),
            reason: "customer changed their mind".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(level(released.stock), (6, 0, 6));

    let adjusted = commands
        .adjust_stock(pb::AdjustStockRequest {
            product_id: "sku-1".into(),
            store_id: "store-a".into(),
            on_hand: 5,
            reason: "cycle count".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(level(adjusted.stock), (5, 0, 5));
    assert_eq!(adjusted.version, 6);

    let product = queries
        .get_product_stock(pb::GetProductStockRequest {
            product_id: "sku-1".into(),
            min_position: Some(adjusted.position),
        })
        .await
        .unwrap()
        .into_inner();
    let stores: Vec<_> = product.stores.iter().map(|s| s.store_id.as_str()).collect();
    assert_eq!(stores, ["store-a", "store-b"]);
    assert_eq!(level(product.total), (8, 0, 8));

    // The audit trail, in pages.
    let first_page = queries
        .get_history(pb::GetHistoryRequest {
            product_id: "sku-1".into(),
            store_id: "store-a".into(),
            page_size: 4,
            page_token: String::new(),
            min_position: Some(adjusted.position),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.events.len(), 4);
    assert_eq!(first_page.next_page_token, "4");
    let second_page = queries
        .get_history(pb::GetHistoryRequest {
            product_id: "sku-1".into(),
            store_id: "store-a".into(),
            page_size: 4,
            page_token: first_page.next_page_token.clone(),
            min_position: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second_page.events.len(), 2);
    assert!(second_page.next_page_token.is_empty());
    use pb::inventory_event::Kind;
    let kinds: Vec<&str> = first_page
        .events
        .iter()
        .chain(&second_page.events)
        .map(|event| match event.kind.as_ref().unwrap() {
            Kind::StockAdded(_) => "added",
            Kind::StockReserved(_) => "reserved",
            Kind::ReservationCommitted(_) => "committed",
            Kind::ReservationReleased(_) => "released",
            Kind::StockAdjusted(_) => "adjusted",
            Kind::ReservationExpired(_) => "expired",
            Kind::StockRemoved(_) => "removed",
            Kind::ReservationExtended(_) => "extended",
            Kind::StockMoved(_) => "moved",
            Kind::ItemPolicyChanged(_) => "policy",
            Kind::StockLow(_) => "low",
            Kind::OutOfStock(_) => "out of stock",
            Kind::BackInStock(_) => "back in stock",
            Kind::StockShort(_) => "short",
            Kind::StockCounted(_) => "counted",
            Kind::TransferShipped(_)
            | Kind::TransferIncoming(_)
            | Kind::TransferReceived(_)
            | Kind::TransferLost(_)
            | Kind::TransferCancelled(_)
            | Kind::TransferReturned(_) => "transfer",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "added",
            "reserved",
            "committed",
            "reserved",
            "released",
            "adjusted"
        ]
    );
    let versions: Vec<u64> = first_page
        .events
        .iter()
        .chain(&second_page.events)
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    let reserved_event = &first_page.events[1];
    assert_eq!(level(reserved_event.stock), (10, 4, 6));
    assert_eq!(
        uuid::Uuid::parse_str(&reserved_event.event_id)
            .unwrap()
            .get_version_num(),
        7
    );

    // Temporal queries: by position and by time.
    let at_position = queries
        .get_stock_at(pb::GetStockAtRequest {
            product_id: "sku-1".into(),
            store_id: "store-a".into(),
            as_of: Some(pb::get_stock_at_request::AsOf::AsOfPosition(3)),
            min_position: None,
        })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(level(at_position.stock), (10, 4, 6));
    assert_eq!(at_position.version, 2);
    let before_everything = queries
        .get_stock_at(pb::GetStockAtRequest {
            product_id: "sku-1".into(),
            store_id: "store-a".into(),
            as_of: Some(pb::get_stock_at_request::AsOf::AsOfTime(
                prost_types::Timestamp {
                    seconds: 1_000_000,
                    nanos: 0,
                },
            )),
            min_position: None,
        })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(level(before_everything.stock), (0, 0, 0));
    assert_eq!(before_everything.version, 0);
    let at_time = queries
        .get_stock_at(pb::GetStockAtRequest {
            product_id: "sku-1".into(),
            store_id: "store-a".into(),
            as_of: Some(pb::get_stock_at_request::AsOf::AsOfTime(
                first_page.events[2].occurred_at.unwrap(),
            )),
            min_position: None,
        })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    // Everything that occurred up to the commit's millisecond (maybe more in the same ms).
    assert!(at_time.version >= 3);

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_racing_for_forty_units_get_exactly_forty() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    commands.add_stock(add_stock("hot", "s", 40)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        // One channel each: 64 independent clients.
        let mut client = server.commands().await;
        tasks.push(tokio::spawn(async move {
            client.reserve_stock(reserve_stock("hot", "s", 1)).await
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(error_reason(&status), "INSUFFICIENT_STOCK");
                assert_eq!(error_metadata(&status, "available"), "0");
                assert_eq!(error_metadata(&status, "requested"), "1");
                refused += 1;
            }
        }
    }
    assert_eq!((accepted, refused), (40, 24));
    let mut queries = server.queries().await;
    let item = queries
        .get_stock(get_stock("hot", "s", 41))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(level(item.stock), (40, 40, 0));
    // The delivery, 40 reservations and the OUT_OF_STOCK alert after the last.
    assert_eq!(item.version, 42);
    server.stop().await;
}

#[tokio::test]
async fn a_retried_command_returns_the_original_answer_also_after_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    commands.add_stock(add_stock("p", "s", 10)).await.unwrap();
    let mut request = reserve_stock("p", "s", 3);
    request.command_id = "order-77-reserve".into();
    let first = commands
        .reserve_stock(request.clone())
        .await
        .unwrap()
        .into_inner();
    let retry = commands
        .reserve_stock(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.reservation_id, first.reservation_id);
    assert_eq!(retry.expires_at, first.expires_at);
    let (first_result, retry_result) = (first.result.unwrap(), retry.result.unwrap());
    assert!(!first_result.replayed);
    assert!(retry_result.replayed);
    assert_eq!(retry_result.position, first_result.position);
    assert_eq!(retry_result.version, first_result.version);

    // The same id with a different request is refused and changes nothing.
    let mut different = request.clone();
    different.quantity = 4;
    let status = commands.reserve_stock(different).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(error_reason(&status), "COMMAND_ID_REUSED");
    assert_eq!(bad_fields(&status), ["command_id"]);
    server.stop().await;

    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let after_restart = commands.reserve_stock(request).await.unwrap().into_inner();
    assert_eq!(after_restart.reservation_id, first.reservation_id);
    assert!(after_restart.result.as_ref().unwrap().replayed);
    let mut queries = server.queries().await;
    let item = queries
        .get_stock(get_stock("p", "s", 2))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(
        level(item.stock),
        (10, 3, 7),
        "reserved once, not three times"
    );
    assert_eq!(item.version, 2);
    server.stop().await;
}

#[tokio::test]
async fn a_stale_expected_version_is_aborted_with_the_current_version() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    commands.add_stock(add_stock("p", "s", 10)).await.unwrap();
    let mut request = add_stock("p", "s", 1);
    request.expected_version = Some(0);
    let status = commands.add_stock(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(error_metadata(&status, "current_version"), "1");
    assert_eq!(error_metadata(&status, "expected_version"), "0");
    request.expected_version = Some(1);
    let result = commands
        .add_stock(request)
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(result.version, 2);
    server.stop().await;
}

#[tokio::test]
async fn min_position_gives_read_your_writes_and_times_out_with_deadline_exceeded() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let mut queries = server.queries().await;
    for round in 1..=20 {
        let result = commands
            .add_stock(add_stock("p", "s", 1))
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        let item = queries
            .get_stock(get_stock("p", "s", result.position))
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        assert_eq!(
            level(item.stock).0,
            round,
            "the query saw the write it waited for"
        );
    }
    let mut request = tonic::Request::new(get_stock("p", "s", 1_000_000));
    request.set_timeout(Duration::from_millis(200));
    let status = queries.get_stock(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_stock_reservations_and_history() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    commands.add_stock(add_stock("p", "s", 10)).await.unwrap();
    let reservation = commands
        .reserve_stock(reserve_stock("p", "s", 4))
        .await
        .unwrap()
        .into_inner();
    server.stop().await;

    let server = Combined::start(directory.path()).await;
    let mut queries = server.queries().await;
    let item = queries
        .get_stock(get_stock("p", "s", 2))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(level(item.stock), (10, 4, 6));
    let reservations = queries
        .list_reservations(pb::ListReservationsRequest {
            product_id: "p".into(),
            store_id: "s".into(),
            min_position: None,
        })
        .await
        .unwrap()
        .into_inner()
        .reservations;
    assert_eq!(reservations[0].reservation_id, reservation.reservation_id);
    // The command side remembers the reservation too: it can be committed after the restart.
    let mut commands = server.commands().await;
    let committed = commands
        .commit_reservation(pb::CommitReservationRequest {
            reservation_id: reservation.reservation_id,
            order_id: "o-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(level(committed.stock), (6, 0, 6));
    assert_eq!(committed.position, 3);
    server.stop().await;
}

/// Waits on a subscription for the first ReservationExpired event.
async fn next_expiry(events: &mut tonic::Streaming<pb::SubscribeResponse>) -> pb::InventoryEvent {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an expiry within 10 s")
            .expect("stream open")
            .expect("no error");
        if let Some(pb::subscribe_response::Message::Event(event)) = message.message
            && matches!(
                event.kind,
                Some(pb::inventory_event::Kind::ReservationExpired(_))
            )
        {
            return event;
        }
    }
}

#[tokio::test]
async fn reservations_expire_by_themselves_also_while_the_server_was_down() {
    let directory = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    let server = Combined::start_with_clock(directory.path(), Arc::new(clock.clone())).await;
    let mut commands = server.commands().await;
    commands.add_stock(add_stock("p", "s", 10)).await.unwrap();
    let mut short = reserve_stock("p", "s", 3);
    short.ttl = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    let short = commands.reserve_stock(short).await.unwrap().into_inner();
    let long = commands
        .reserve_stock(reserve_stock("p", "s", 2))
        .await
        .unwrap()
        .into_inner();
    let mut events = server
        .events()
        .await
        .subscribe(pb::SubscribeRequest {
            from_position: 3,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();

    clock.advance_millis(61_000);
    let expired = next_expiry(&mut events).await;
    match expired.kind.unwrap() {
        pb::inventory_event::Kind::ReservationExpired(expired_event) => {
            assert_eq!(expired_event.reservation_id, short.reservation_id);
            assert_eq!(expired_event.quantity, 3);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(level(expired.stock), (10, 2, 8));
    let status = commands
        .commit_reservation(pb::CommitReservationRequest {
            reservation_id: short.reservation_id.clone(),
            order_id: "late".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&status), "RESERVATION_EXPIRED");
    drop(events);
    server.stop().await;

    // The long reservation runs out while the server is down.
    clock.advance_millis(30 * 60 * 1000);
    let server = Combined::start_with_clock(directory.path(), Arc::new(clock.clone())).await;
    let mut events = server
        .events()
        .await
        .subscribe(pb::SubscribeRequest {
            from_position: 4,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    let expired = next_expiry(&mut events).await;
    match expired.kind.unwrap() {
        pb::inventory_event::Kind::ReservationExpired(expired_event) => {
            assert_eq!(expired_event.reservation_id, long.reservation_id);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(level(expired.stock), (10, 0, 10));
    drop(events);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field_and_changes_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    commands.add_stock(add_stock("p", "s", 5)).await.unwrap();

    let cases: Vec<(pb::AddStockRequest, Vec<&str>)> = vec![
        (add_stock("", "s", 1), vec!["product_id"]),
        (add_stock("p", "", 1), vec!["store_id"]),
        (add_stock(&"x".repeat(129), "s", 1), vec!["product_id"]),
        (add_stock("p q", "s", 1), vec!["product_id"]),
        (add_stock("p", "s", 0), vec!["quantity"]),
        (add_stock("p", "s", -4), vec!["quantity"]),
        (
            add_stock("", "", -1),
            vec!["product_id", "store_id", "quantity"],
        ),
        (
            pb::AddStockRequest {
                reason: "r".repeat(300),
                ..add_stock("p", "s", 1)
            },
            vec!["reason"],
        ),
        (
            pb::AddStockRequest {
                command_id: "bad id!".into(),
                ..add_stock("p", "s", 1)
            },
            vec!["command_id"],
        ),
    ];
    for (request, fields) in cases {
        let status = commands.add_stock(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert_eq!(bad_fields(&status), fields, "{request:?}");
        for field in fields {
            assert!(status.message().contains(field), "{}", status.message());
        }
    }
    // Overflow of on_hand is refused too.
    let status = commands
        .add_stock(add_stock("p", "s", i64::MAX))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["quantity"]);

    let mut bad_ttl = reserve_stock("p", "s", 1);
    bad_ttl.ttl = Some(prost_types::Duration {
        seconds: 0,
        nanos: 500_000_000,
    });
    let status = commands.reserve_stock(bad_ttl.clone()).await.unwrap_err();
    assert_eq!(
        (status.code(), bad_fields(&status)),
        (Code::InvalidArgument, vec!["ttl".to_owned()])
    );
    bad_ttl.ttl = Some(prost_types::Duration {
        seconds: 24 * 3600 + 1,
        nanos: 0,
    });
    let status = commands.reserve_stock(bad_ttl).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["ttl"]);

    let status = commands
        .adjust_stock(pb::AdjustStockRequest {
            product_id: "p".into(),
            store_id: "s".into(),
            on_hand: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["on_hand"]);

    let status = commands
        .commit_reservation(pb::CommitReservationRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["reservation_id", "order_id"]);

    // A message over the size limit is refused before it is parsed.
    let status = commands
        .add_stock(pb::AddStockRequest {
            reason: "r".repeat(inventory::grpc::MAX_REQUEST_BYTES + 1),
            ..add_stock("p", "s", 1)
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_fields(&status), ["request"]);

    let mut queries = server.queries().await;
    let status = queries
        .check_availability(pb::CheckAvailabilityRequest {
            product_id: "p".into(),
            store_id: "s".into(),
            quantity: 0,
            min_position: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["quantity"]);
    let status = queries
        .get_history(pb::GetHistoryRequest {
            product_id: "p".into(),
            store_id: "s".into(),
            page_size: 5000,
            page_token: "nope".into(),
            min_position: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["page_size", "page_token"]);
    let status = queries
        .get_stock_at(pb::GetStockAtRequest {
            product_id: "p".into(),
            store_id: "s".into(),
            as_of: None,
            min_position: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["as_of"]);

    // Nothing changed: still the one event from the start.
    let item = queries
        .get_stock(get_stock("p", "s", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(item.read_position, 1);
    assert_eq!(level(item.item.unwrap().stock), (5, 0, 5));
    server.stop().await;
}

#[tokio::test]
async fn business_rule_errors_carry_their_codes_and_details() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let mut queries = server.queries().await;

    let status = queries
        .get_stock(get_stock("nothing", "s", 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_reason(&status), "ITEM_NOT_FOUND");

    let status = commands
        .commit_reservation(pb::CommitReservationRequest {
            reservation_id: "unknown".into(),
            order_id: "o".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_reason(&status), "RESERVATION_NOT_FOUND");

    commands.add_stock(add_stock("p", "s", 5)).await.unwrap();
    let status = commands
        .reserve_stock(reserve_stock("p", "s", 6))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(error_metadata(&status, "requested"), "6");
    assert_eq!(error_metadata(&status, "available"), "5");
    let failure = status.get_details_precondition_failure().unwrap();
    assert_eq!(failure.violations[0].r#type, "INSUFFICIENT_STOCK");

    let reservation = commands
        .reserve_stock(reserve_stock("p", "s", 2))
        .await
        .unwrap()
        .into_inner()
        .reservation_id;
    let commit = pb::CommitReservationRequest {
        reservation_id: reservation.clone(),
        order_id: "o".into(),
        ..Default::default()
    };
    commands.commit_reservation(commit.clone()).await.unwrap();
    let status = commands.commit_reservation(commit).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&status), "RESERVATION_COMMITTED");
    assert!(status.message().contains("committed"));
    let status = commands
        .release_reservation(pb::ReleaseReservationRequest {
            reservation_id: reservation.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error_reason(&status), "RESERVATION_COMMITTED");

    let mut reuse = reserve_stock("p", "s", 1);
    reuse.reservation_id = reservation;
    let status = commands.reserve_stock(reuse).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    let status = commands
        .adjust_stock(pb::AdjustStockRequest {
            product_id: "p".into(),
            store_id: "s".into(),
            on_hand: 0,
            ..Default::default()
        })
        .await;
    assert!(status.is_ok(), "nothing reserved: on_hand may go to 0");
    commands.add_stock(add_stock("p", "s", 5)).await.unwrap();
    commands
        .reserve_stock(reserve_stock("p", "s", 4))
        .await
        .unwrap();
    let status = commands
        .adjust_stock(pb::AdjustStockRequest {
            product_id: "p".into(),
            store_id: "s".into(),
            on_hand: 3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&status), "ON_HAND_BELOW_RESERVED");
    server.stop().await;
}

#[tokio::test]
async fn subscribe_sends_history_then_caught_up_then_live_events() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    for _ in 0..5 {
        commands.add_stock(add_stock("p", "s", 1)).await.unwrap();
    }
    let mut stream = server
        .events()
        .await
        .subscribe(pb::SubscribeRequest {
            from_position: 2,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    use pb::subscribe_response::Message;
    let mut received = Vec::new();
    loop {
        match stream.next().await.unwrap().unwrap().message.unwrap() {
            Message::Event(event) => received.push(event.position),
            Message::CaughtUp(caught_up) => {
                assert_eq!(caught_up.position, 5);
                break;
            }
            Message::Checkpoint(checkpoint) => panic!("no filter, no checkpoint: {checkpoint:?}"),
        }
    }
    assert_eq!(received, [3, 4, 5]);
    for _ in 0..3 {
        commands.add_stock(add_stock("p", "s", 1)).await.unwrap();
    }
    for expected in 6..=8 {
        match stream.next().await.unwrap().unwrap().message.unwrap() {
            Message::Event(event) => {
                assert_eq!(event.position, expected);
                assert_eq!(level(event.stock).0, expected as i64);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The stream ends cleanly when the server shuts down.
    server.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("stream ends at shutdown");
    assert!(end.is_none() || end.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_server_in_split_mode_follows_a_command_server() {
    let command_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let command_server = Running::command(command_dir.path()).await;
    let channel = support::channel(command_server.address).await;
    let mut commands = pb::command_service_client::CommandServiceClient::new(channel);
    for i in 0..50 {
        commands
            .add_stock(add_stock(&format!("p{}", i % 5), "s", 2))
            .await
            .unwrap();
    }
    let replica = Running::query(replica_dir.path(), command_server.address).await;
    let replica_channel = support::channel(replica.address).await;
    let mut queries = pb::query_service_client::QueryServiceClient::new(replica_channel.clone());
    let mut health = tonic_health::pb::health_client::HealthClient::new(replica_channel);
    let item = queries
        .get_stock(get_stock("p0", "s", 50))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(level(item.stock), (20, 0, 20));
    // Once caught up, the replica reports serving.
    support::wait_until(
        Duration::from_secs(10),
        "the replica to report SERVING after catching up",
        async || {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "inventory.v1.QueryService".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        },
    )
    .await;

    // Live: a new command reaches the replica; read-your-writes works there too.
    let reserved = commands
        .reserve_stock(reserve_stock("p1", "s", 5))
        .await
        .unwrap()
        .into_inner();
    let position = reserved.result.unwrap().position;
    let item = queries
        .get_stock(get_stock("p1", "s", position))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(level(item.stock), (20, 5, 15));
    let history = queries
        .get_history(pb::GetHistoryRequest {
            product_id: "p1".into(),
            store_id: "s".into(),
            page_size: 100,
            page_token: String::new(),
            min_position: Some(position),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.events.len(), 11);

    // The replica keeps its copy: restarted, it resumes from where it was.
    replica.stop().await;
    commands.add_stock(add_stock("p2", "s", 1)).await.unwrap();
    let replica = Running::query(replica_dir.path(), command_server.address).await;
    let mut queries =
        pb::query_service_client::QueryServiceClient::new(support::channel(replica.address).await);
    let item = queries
        .get_stock(get_stock("p2", "s", 52))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(level(item.stock), (21, 0, 21));
    replica.stop().await;
    command_server.stop().await;
}

// Each call's codec buffers start at `CODEC_BUFFER_BYTES`: requests and answers larger than
// that (the longest ids and reason, a page of such events) go through whole.
#[tokio::test]
async fn messages_larger_than_the_first_codec_buffer_go_both_ways() {
    use prost::Message;

    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let mut queries = server.queries().await;
    let product = "p".repeat(128);
    let store = "s".repeat(128);
    let reason = "r".repeat(256);
    let mut positions = Vec::new();
    for index in 0..20 {
        let request = pb::AddStockRequest {
            command_id: format!("{index:0>128}"),
            reason: reason.clone(),
            ..add_stock(&product, &store, 1 + index)
        };
        assert!(request.encoded_len() > inventory::grpc::codec::CODEC_BUFFER_BYTES);
        let added = commands.add_stock(request).await.unwrap().into_inner();
        positions.push(added.result.unwrap().position);
    }
    let history = queries
        .get_history(pb::GetHistoryRequest {
            product_id: product.clone(),
            store_id: store.clone(),
            page_size: 20,
            page_token: String::new(),
            min_position: positions.last().copied(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(history.encoded_len() > 20 * inventory::grpc::codec::CODEC_BUFFER_BYTES);
    assert_eq!(history.events.len(), 20);
    for (index, event) in history.events.iter().enumerate() {
        assert_eq!((&event.product_id, &event.store_id), (&product, &store));
        assert_eq!(event.command_id, format!("{index:0>128}"));
        assert_eq!(event.position, positions[index]);
        let Some(pb::inventory_event::Kind::StockAdded(added)) = &event.kind else {
            panic!("expected StockAdded, got {:?}", event.kind);
        };
        assert_eq!((added.quantity, &added.reason), (1 + index as i64, &reason));
    }
}

#[tokio::test]
async fn both_servers_offer_reflection_and_health() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    for (address, expected, served_elsewhere) in [
        (
            server.command_addr,
            "inventory.v1.CommandService",
            "inventory.v1.QueryService",
        ),
        (
            server.query_addr,
            "inventory.v1.QueryService",
            "inventory.v1.CommandService",
        ),
    ] {
        let channel = support::channel(address).await;
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let requests = tokio_stream::iter([
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(expected.into())),
            },
            // grpcurl's `describe` also fetches every import by name.
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileByFilename(
                    "google/protobuf/timestamp.proto".into(),
                )),
            },
            // Error details, so that grpcurl prints them instead of "not recognized".
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(
                    "google.rpc.ErrorInfo".into(),
                )),
            },
        ]);
        let mut responses = reflection
            .server_reflection_info(requests)
            .await
            .unwrap()
            .into_inner();
        let listed = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
            panic!("expected a service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains(&expected.to_owned()), "{names:?}");
        // A port lists only what it serves.
        assert!(!names.contains(&served_elsewhere.to_owned()), "{names:?}");
        assert!(
            names.contains(&"inventory.v1.EventService".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_owned()),
            "{names:?}"
        );
        let described = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response
        else {
            panic!("expected file descriptors, got {described:?}");
        };
        let names: Vec<String> = files
            .file_descriptor_proto
            .iter()
            .map(|bytes| {
                <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice())
                    .unwrap()
                    .name
                    .unwrap_or_default()
            })
            .collect();
        assert!(
            names.contains(&"inventory/v1/inventory.proto".to_owned()),
            "{names:?}"
        );
        let import = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = import.message_response else {
            panic!("the well-known types are served too, got {import:?}");
        };
        assert_eq!(files.file_descriptor_proto.len(), 1);
        let error_details = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = error_details.message_response
        else {
            panic!("google.rpc's error details are served too, got {error_details:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty());

        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: expected.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_call_to_the_wrong_port_is_told_which_server_serves_it() {
    use pb::command_service_client::CommandServiceClient;
    use pb::query_service_client::QueryServiceClient;

    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands_on_query_port =
        CommandServiceClient::new(support::channel(server.query_addr).await);
    let status = commands_on_query_port
        .add_stock(add_stock("p", "s", 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status
            .message()
            .contains("inventory.v1.CommandService is served by the command server"),
        "{status:?}"
    );
    let mut queries_on_command_port =
        QueryServiceClient::new(support::channel(server.command_addr).await);
    let status = queries_on_command_port
        .get_stock(get_stock("p", "s", 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status
            .message()
            .contains("inventory.v1.QueryService is served by the query server"),
        "{status:?}"
    );
    // Nothing was written by the misdirected command.
    let mut queries = server.queries().await;
    assert_eq!(
        queries
            .get_stock(get_stock("p", "s", 0))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    server.stop().await;
}
