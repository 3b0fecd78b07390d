//! What a store-scoped credential learns, over TLS with API tokens as README sets it up: only
//! its own stores' stock, nothing of the existence of another store's reservations and
//! transfers, and nobody else's name or command ids (issue 28, findings 1 and 5).

use crate::support;

use tokio_stream::StreamExt;
use tonic::Code;

use inventory::app::access::Role;
use inventory::grpc::pb;
use support::secured::{Credential, Server, as_, assert_refused, credential};
use support::{add_stock, error_reason, reserve_stock};

fn ship(from: &str, to: &str, products: &[&str]) -> pb::ShipTransferRequest {
    pb::ShipTransferRequest {
        from_store_id: from.to_owned(),
        to_store_id: to.to_owned(),
        lines: products
            .iter()
            .map(|product| pb::TransferLine {
                product_id: (*product).to_owned(),
                quantity: 2,
            })
            .collect(),
        reason: "rebalance".to_owned(),
        ..Default::default()
    }
}

/// Stock of `p1` and `p2` in both stores: store-b's on hand is 45, a figure store-a may not read.
async fn stocked(server: &Server, admin: &Credential) {
    for (store, quantity) in [("store-a", 10), ("store-b", 45)] {
        for product in ["p1", "p2"] {
            server
                .commands()
                .add_stock(as_(&admin.token, add_stock(product, store, quantity)))
                .await
                .unwrap();
        }
    }
}

/// Each line of an answer: (store, whether its stock is there, withheld).
fn shown(lines: &[pb::CommandResult]) -> Vec<(&str, bool, bool)> {
    lines
        .iter()
        .map(|line| (line.store_id.as_str(), line.stock.is_some(), line.withheld))
        .collect()
}

#[tokio::test]
async fn a_transfer_answers_a_store_only_its_own_levels() {
    let admin = credential("admin", Role::Admin, &[], None);
    let ops_a = credential("ops-a", Role::Operator, &["store-a"], None);
    let ops_b = credential("ops-b", Role::Operator, &["store-b"], None);
    let server = Server::start_tls(&[&admin, &ops_a, &ops_b]).await;
    stocked(&server, &admin).await;

    let shipped = server
        .commands()
        .ship_transfer(as_(&ops_a.token, ship("store-a", "store-b", &["p1", "p2"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        shown(&shipped.lines),
        [
            ("store-a", true, false),
            ("store-b", false, true),
            ("store-a", true, false),
            ("store-b", false, true)
        ]
    );
    for line in shipped.lines.iter().filter(|line| line.withheld) {
        assert_eq!((line.version, line.alerts.len()), (0, 0), "{line:?}");
        assert!(
            line.position > 0,
            "the command's position is the caller's own"
        );
    }
    let cancelled = server
        .commands()
        .cancel_transfer(as_(
            &ops_a.token,
            pb::CancelTransferRequest {
                transfer_id: shipped.transfer_id.clone(),
                reason: "wrong truck".to_owned(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!cancelled.lines.is_empty());
    for line in &cancelled.lines {
        assert_eq!(line.stock.is_some(), line.store_id == "store-a", "{line:?}");
        assert_eq!(line.withheld, line.store_id == "store-b", "{line:?}");
    }

    // Received by the destination: it sees its own levels, not the source's.
    let shipped = server
        .commands()
        .ship_transfer(as_(&ops_a.token, ship("store-a", "store-b", &["p1"])))
        .await
        .unwrap()
        .into_inner();
    let received = server
        .commands()
        .receive_transfer(as_(
            &ops_b.token,
            pb::ReceiveTransferRequest {
                transfer_id: shipped.transfer_id,
                lines: vec![pb::TransferLine {
                    product_id: "p1".to_owned(),
                    quantity: 2,
                }],
                close: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    for line in &received.lines {
        assert_eq!(line.withheld, line.store_id != "store-b", "{line:?}");
    }

    // An unrestricted credential sees every level.
    let shipped = server
        .commands()
        .ship_transfer(as_(&admin.token, ship("store-a", "store-b", &["p2"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        shown(&shipped.lines),
        [("store-a", true, false), ("store-b", true, false)]
    );
    server.stop().await;
}

/// The answer to an id the caller may not see is the answer to an id that does not exist.
fn assert_not_found(status: &tonic::Status, reason: &str, unknown: &tonic::Status) {
    assert_refused(status, Code::NotFound, reason);
    assert_eq!(error_reason(status), error_reason(unknown));
    assert!(!status.message().contains("store-"), "{status:?}");
}

#[tokio::test]
async fn another_stores_reservations_and_transfers_answer_as_unknown_ids() {
    let admin = credential("admin", Role::Admin, &[], None);
    let ops_a = credential("ops-a", Role::Operator, &["store-a"], None);
    let ops_c = credential("ops-c", Role::Operator, &["store-c"], None);
    let server = Server::start_tls(&[&admin, &ops_a, &ops_c]).await;
    stocked(&server, &admin).await;
    let mut held = reserve_stock("p1", "store-b", 1);
    held.reservation_id = "order-b".to_owned();
    server
        .commands()
        .reserve_stock(as_(&admin.token, held))
        .await
        .unwrap();
    let transfer = server
        .commands()
        .ship_transfer(as_(&admin.token, ship("store-b", "store-c", &["p1"])))
        .await
        .unwrap()
        .into_inner()
        .transfer_id;

    let reservation = |id: &str| pb::GetReservationRequest {
        reservation_id: id.to_owned(),
        ..Default::default()
    };
    let unknown = server
        .queries()
        .get_reservation(as_(&ops_a.token, reservation("order-none")))
        .await
        .unwrap_err();
    let status = server
        .queries()
        .get_reservation(as_(&ops_a.token, reservation("order-b")))
        .await
        .unwrap_err();
    assert_not_found(&status, "RESERVATION_NOT_FOUND", &unknown);
    let release = pb::ReleaseReservationRequest {
        reservation_id: "order-b".to_owned(),
        ..Default::default()
    };
    let status = server
        .commands()
        .release_reservation(as_(&ops_a.token, release))
        .await
        .unwrap_err();
    assert_not_found(&status, "RESERVATION_NOT_FOUND", &unknown);
    let commit = pb::CommitReservationRequest {
        reservation_id: "order-b".to_owned(),
        order_id: "o-1".to_owned(),
        ..Default::default()
    };
    let status = server
        .commands()
        .commit_reservation(as_(&ops_a.token, commit))
        .await
        .unwrap_err();
    assert_not_found(&status, "RESERVATION_NOT_FOUND", &unknown);
    let extend = pb::ExtendReservationRequest {
        reservation_id: "order-b".to_owned(),
        ttl: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    };
    let status = server
        .commands()
        .extend_reservation(as_(&ops_a.token, extend))
        .await
        .unwrap_err();
    assert_not_found(&status, "RESERVATION_NOT_FOUND", &unknown);
    // 45, less 2 in transit to store-c, 1 still held.
    assert_eq!(server.stock(&admin, "p1", "store-b").await, (43, 1));

    // A transfer between store-b and store-c: store-a sees neither; store-c sees it.
    let get = |id: &str| pb::GetTransferRequest {
        transfer_id: id.to_owned(),
        ..Default::default()
    };
    let unknown = server
        .queries()
        .get_transfer(as_(&ops_a.token, get("transfer-none")))
        .await
        .unwrap_err();
    let status = server
        .queries()
        .get_transfer(as_(&ops_a.token, get(&transfer)))
        .await
        .unwrap_err();
    assert_not_found(&status, "TRANSFER_NOT_FOUND", &unknown);
    let cancel = pb::CancelTransferRequest {
        transfer_id: transfer.clone(),
        reason: "probe".to_owned(),
        ..Default::default()
    };
    let status = server
        .commands()
        .cancel_transfer(as_(&ops_a.token, cancel))
        .await
        .unwrap_err();
    assert_not_found(&status, "TRANSFER_NOT_FOUND", &unknown);
    let receive = pb::ReceiveTransferRequest {
        transfer_id: transfer.clone(),
        close: true,
        ..Default::default()
    };
    let status = server
        .commands()
        .receive_transfer(as_(&ops_a.token, receive))
        .await
        .unwrap_err();
    assert_not_found(&status, "TRANSFER_NOT_FOUND", &unknown);
    server
        .queries()
        .get_transfer(as_(&ops_c.token, get(&transfer)))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn either_store_of_a_split_cart_reads_it_whole() {
    let admin = credential("admin", Role::Admin, &[], None);
    let pos_a = credential("pos-a", Role::Sales, &["store-a"], None);
    let pos_c = credential("pos-c", Role::Sales, &["store-c"], None);
    let server = Server::start_tls(&[&admin, &pos_a, &pos_c]).await;
    stocked(&server, &admin).await;
    let cart = pb::ReserveStockRequest {
        lines: ["store-a", "store-b"]
            .iter()
            .map(|store| pb::ReservationLine {
                product_id: "p1".to_owned(),
                store_id: (*store).to_owned(),
                quantity: 1,
                ..Default::default()
            })
            .collect(),
        reservation_id: "split-1".to_owned(),
        ..reserve_stock("", "", 0)
    };
    server
        .commands()
        .reserve_stock(as_(&admin.token, cart))
        .await
        .unwrap();
    let request = || pb::GetReservationRequest {
        reservation_id: "split-1".to_owned(),
        ..Default::default()
    };
    let seen = server
        .queries()
        .get_reservation(as_(&pos_a.token, request()))
        .await
        .unwrap()
        .into_inner();
    let stores: Vec<&str> = seen
        .lines
        .iter()
        .map(|line| line.store_id.as_str())
        .collect();
    assert_eq!(stores, ["store-a", "store-b"]);
    let status = server
        .queries()
        .get_reservation(as_(&pos_c.token, request()))
        .await
        .unwrap_err();
    assert_refused(&status, Code::NotFound, "RESERVATION_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn a_scoped_caller_sees_its_stores_events_but_not_who_else_acted() {
    let admin = credential("admin", Role::Admin, &[], None);
    let ops_a = credential("ops-a", Role::Operator, &["store-a"], None);
    let reader_a = credential("reader-a", Role::Reader, &["store-a"], None);
    let server = Server::start_tls(&[&admin, &ops_a, &reader_a]).await;
    let mut by_admin = add_stock("p", "store-a", 5);
    by_admin.command_id = "admin-secret-command".to_owned();
    server
        .commands()
        .add_stock(as_(&admin.token, by_admin))
        .await
        .unwrap();
    let mut by_ops = add_stock("p", "store-a", 1);
    by_ops.command_id = "ops-command".to_owned();
    server
        .commands()
        .add_stock(as_(&ops_a.token, by_ops))
        .await
        .unwrap();

    let history = |token: &str| {
        as_(
            token,
            pb::GetHistoryRequest {
                product_id: "p".to_owned(),
                store_id: "store-a".to_owned(),
                ..Default::default()
            },
        )
    };
    let who = |events: &[pb::InventoryEvent]| -> Vec<(String, String)> {
        events
            .iter()
            .map(|event| (event.actor.clone(), event.command_id.clone()))
            .collect()
    };
    let events = server
        .queries()
        .get_history(history(&ops_a.token))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        who(&events),
        [
            (String::new(), String::new()),
            ("ops-a".to_owned(), "ops-command".to_owned())
        ]
    );
    let events = server
        .queries()
        .get_history(history(&reader_a.token))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        who(&events)
            .iter()
            .all(|(actor, command)| actor.is_empty() && command.is_empty()),
        "{events:?}"
    );
    let events = server
        .queries()
        .get_history(history(&admin.token))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        who(&events),
        [
            ("admin".to_owned(), "admin-secret-command".to_owned()),
            ("ops-a".to_owned(), "ops-command".to_owned())
        ]
    );

    // The same through a subscription.
    let mut stream = server
        .events()
        .subscribe(as_(&reader_a.token, pb::SubscribeRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item.unwrap().message.unwrap() {
            pb::subscribe_response::Message::Event(event) => events.push(event),
            pb::subscribe_response::Message::CaughtUp(_) => break,
            pb::subscribe_response::Message::Checkpoint(_) => {}
        }
    }
    assert_eq!(events.len(), 2);
    assert!(
        who(&events)
            .iter()
            .all(|(actor, command)| actor.is_empty() && command.is_empty()),
        "{events:?}"
    );
    server.stop().await;
}

/// A `command_id` belongs to its sender: another credential's command with the same id is its
/// own, and a retry by the first is still answered as the original.
#[tokio::test]
async fn two_credentials_may_use_the_same_command_id() {
    let pos_a = credential("pos-a", Role::Operator, &["store-a"], None);
    let pos_b = credential("pos-b", Role::Operator, &["store-b"], None);
    let server = Server::start_tls(&[&pos_a, &pos_b]).await;
    let add = |store: &str, quantity: i64| pb::AddStockRequest {
        command_id: "order-777".to_owned(),
        ..add_stock("p", store, quantity)
    };
    let result = |answer: pb::AddStockResponse| answer.result.unwrap();
    let first = result(
        server
            .commands()
            .add_stock(as_(&pos_a.token, add("store-a", 5)))
            .await
            .unwrap()
            .into_inner(),
    );
    let other = result(
        server
            .commands()
            .add_stock(as_(&pos_b.token, add("store-b", 7)))
            .await
            .expect("another credential's id is its own")
            .into_inner(),
    );
    assert!(!other.replayed);
    assert_eq!(other.stock.unwrap().on_hand, 7);
    let retry = result(
        server
            .commands()
            .add_stock(as_(&pos_a.token, add("store-a", 5)))
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(retry.replayed);
    assert_eq!(retry.position, first.position);
    server.stop().await;
}

/// Reservation ids are unique per store (finding 4): store-b reserving `order-777` after
/// store-a did simply succeeds, each store's commands and reads find its own, a caller who
/// sees both must say which, and an id is still refused in a store that used it.
#[tokio::test]
async fn two_stores_may_use_the_same_reservation_id() {
    let admin = credential("admin", Role::Admin, &[], None);
    let pos_a = credential("pos-a", Role::Sales, &["store-a"], None);
    let pos_b = credential("pos-b", Role::Sales, &["store-b"], None);
    let server = Server::start_tls(&[&admin, &pos_a, &pos_b]).await;
    stocked(&server, &admin).await;
    let order = |store: &str, quantity: i64| {
        let mut request = reserve_stock("p1", store, quantity);
        request.reservation_id = "order-777".to_owned();
        request
    };
    server
        .commands()
        .reserve_stock(as_(&pos_a.token, order("store-a", 2)))
        .await
        .unwrap();
    server
        .commands()
        .reserve_stock(as_(&pos_b.token, order("store-b", 5)))
        .await
        .expect("another store may use the same reservation id");
    // The id is still taken in store-a, and the refusal names no store.
    let status = server
        .commands()
        .reserve_stock(as_(&pos_a.token, order("store-a", 1)))
        .await
        .unwrap_err();
    assert_refused(&status, Code::AlreadyExists, "RESERVATION_EXISTS");
    assert!(!status.message().contains("store-"), "{status:?}");

    let get = |store: &str| pb::GetReservationRequest {
        reservation_id: "order-777".to_owned(),
        store_id: store.to_owned(),
        ..Default::default()
    };
    let lines = |found: pb::GetReservationResponse| {
        found
            .lines
            .iter()
            .map(|line| (line.store_id.clone(), line.quantity))
            .collect::<Vec<_>>()
    };
    let own = |token: &str| {
        let server = &server;
        let token = token.to_owned();
        async move {
            server
                .queries()
                .get_reservation(as_(&token, get("")))
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(lines(own(&pos_a.token).await), [("store-a".to_owned(), 2)]);
    assert_eq!(lines(own(&pos_b.token).await), [("store-b".to_owned(), 5)]);
    // A caller who sees both stores names one; without, it is told to, and which it sees.
    let status = server
        .queries()
        .get_reservation(as_(&admin.token, get("")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(support::bad_fields(&status), ["store_id"]);
    assert!(status.message().contains("store-a, store-b"), "{status:?}");
    let found = server
        .queries()
        .get_reservation(as_(&admin.token, get("store-b")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lines(found), [("store-b".to_owned(), 5)]);

    // Store-b commits its own; store-a's stays active, and the admin releases it by store.
    let commit = pb::CommitReservationRequest {
        reservation_id: "order-777".to_owned(),
        order_id: "o-b".to_owned(),
        ..Default::default()
    };
    server
        .commands()
        .commit_reservation(as_(&pos_b.token, commit.clone()))
        .await
        .unwrap();
    assert_eq!(
        own(&pos_a.token).await.status,
        pb::ReservationStatus::Active as i32
    );
    assert_eq!(
        own(&pos_b.token).await.status,
        pb::ReservationStatus::Committed as i32
    );
    let status = server
        .commands()
        .commit_reservation(as_(&admin.token, commit))
        .await
        .unwrap_err();
    assert_eq!(support::bad_fields(&status), ["store_id"], "{status:?}");
    let release = pb::ReleaseReservationRequest {
        reservation_id: "order-777".to_owned(),
        store_id: "store-a".to_owned(),
        ..Default::default()
    };
    server
        .commands()
        .release_reservation(as_(&admin.token, release))
        .await
        .unwrap();
    assert_eq!(
        own(&pos_a.token).await.status,
        pb::ReservationStatus::Released as i32
    );
    assert_eq!(server.stock(&admin, "p1", "store-a").await, (10, 0));
    assert_eq!(server.stock(&admin, "p1", "store-b").await, (40, 0));
    server.stop().await;
}

/// Transfer ids are unique per source store (finding 4): store-a and store-c may each ship a
/// transfer `move-1`, even to the same destination; each source cancels or reads its own, and
/// the destination, which sees both, names the source it means.
#[tokio::test]
async fn two_sources_may_use_the_same_transfer_id() {
    let admin = credential("admin", Role::Admin, &[], None);
    let ops_a = credential("ops-a", Role::Operator, &["store-a"], None);
    let ops_b = credential("ops-b", Role::Operator, &["store-b"], None);
    let ops_c = credential("ops-c", Role::Operator, &["store-c"], None);
    let server = Server::start_tls(&[&admin, &ops_a, &ops_b, &ops_c]).await;
    stocked(&server, &admin).await;
    for product in ["p1", "p2"] {
        server
            .commands()
            .add_stock(as_(&admin.token, add_stock(product, "store-c", 20)))
            .await
            .unwrap();
    }
    let named = |from: &str, to: &str, product: &str| {
        let mut request = ship(from, to, &[product]);
        request.transfer_id = "move-1".to_owned();
        request
    };
    server
        .commands()
        .ship_transfer(as_(&ops_a.token, named("store-a", "store-b", "p1")))
        .await
        .unwrap();
    server
        .commands()
        .ship_transfer(as_(&ops_c.token, named("store-c", "store-b", "p2")))
        .await
        .expect("another source may use the same transfer id");
    let status = server
        .commands()
        .ship_transfer(as_(&ops_a.token, named("store-a", "store-c", "p2")))
        .await
        .unwrap_err();
    assert_refused(&status, Code::AlreadyExists, "TRANSFER_EXISTS");
    assert!(!status.message().contains("store-"), "{status:?}");

    let get = |from: &str| pb::GetTransferRequest {
        transfer_id: "move-1".to_owned(),
        from_store_id: from.to_owned(),
        ..Default::default()
    };
    let source_of = |found: pb::GetTransferResponse| found.transfer.unwrap().from_store_id;
    let found = server
        .queries()
        .get_transfer(as_(&ops_c.token, get("")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(source_of(found), "store-c");
    // Store-b receives from both: it names the source, or is told to.
    let status = server
        .queries()
        .get_transfer(as_(&ops_b.token, get("")))
        .await
        .unwrap_err();
    assert_eq!(
        support::bad_fields(&status),
        ["from_store_id"],
        "{status:?}"
    );
    assert!(status.message().contains("store-a, store-c"), "{status:?}");
    let receive = |from: &str| pb::ReceiveTransferRequest {
        transfer_id: "move-1".to_owned(),
        from_store_id: from.to_owned(),
        lines: vec![pb::TransferLine {
            product_id: "p2".to_owned(),
            quantity: 2,
        }],
        ..Default::default()
    };
    let status = server
        .commands()
        .receive_transfer(as_(&ops_b.token, receive("")))
        .await
        .unwrap_err();
    assert_eq!(
        support::bad_fields(&status),
        ["from_store_id"],
        "{status:?}"
    );
    server
        .commands()
        .receive_transfer(as_(&ops_b.token, receive("store-c")))
        .await
        .unwrap();
    // Store-a cancels its own, still in transit; store-c's was received.
    let cancel = pb::CancelTransferRequest {
        transfer_id: "move-1".to_owned(),
        reason: "wrong truck".to_owned(),
        ..Default::default()
    };
    server
        .commands()
        .cancel_transfer(as_(&ops_a.token, cancel))
        .await
        .unwrap();
    let status_of = |found: pb::GetTransferResponse| found.transfer.unwrap().status;
    let a = server
        .queries()
        .get_transfer(as_(&admin.token, get("store-a")))
        .await
        .unwrap()
        .into_inner();
    let c = server
        .queries()
        .get_transfer(as_(&admin.token, get("store-c")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(a), pb::TransferStatus::Cancelled as i32);
    assert_eq!(status_of(c), pb::TransferStatus::Received as i32);
    // p1 went back to store-a; p2 (2 units) arrived in store-b from store-c.
    assert_eq!(server.stock(&admin, "p1", "store-a").await, (10, 0));
    assert_eq!(server.stock(&admin, "p2", "store-b").await, (47, 0));
    assert_eq!(server.stock(&admin, "p2", "store-c").await, (18, 0));
    server.stop().await;
}
