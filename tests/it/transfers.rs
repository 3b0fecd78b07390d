//! Transfers between stores over real gRPC channels: ship, receive in parts, close with a loss,
//! cancel, the queries, bad input, a restart, a replica, and two PostgreSQL command servers.

use crate::support;

use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::query_service_client::QueryServiceClient;
use inventory::server::LogConfig;
use support::{
    Combined, Running, add_stock, bad_fields, error_reason, get_stock, level, reserve_stock,
};
use tonic::Code;
use tonic::transport::Channel;

type Commands = CommandServiceClient<Channel>;
type Queries = QueryServiceClient<Channel>;

fn lines(lines: &[(&str, i64)]) -> Vec<pb::TransferLine> {
    lines
        .iter()
        .map(|(product, quantity)| pb::TransferLine {
            product_id: (*product).to_owned(),
            quantity: *quantity,
        })
        .collect()
}

fn ship(transfer_id: &str, shipped: &[(&str, i64)]) -> pb::ShipTransferRequest {
    pb::ShipTransferRequest {
        transfer_id: transfer_id.to_owned(),
        from_store_id: "warehouse".to_owned(),
        to_store_id: "store-a".to_owned(),
        lines: lines(shipped),
        reason: "weekly replenishment".to_owned(),
        ..Default::default()
    }
}

fn receive(transfer_id: &str, arrived: &[(&str, i64)], close: bool) -> pb::ReceiveTransferRequest {
    pb::ReceiveTransferRequest {
        transfer_id: transfer_id.to_owned(),
        lines: lines(arrived),
        close,
        ..Default::default()
    }
}

/// (on_hand, reserved, available, incoming) of an item, as of `position`.
async fn stock(
    queries: &mut Queries,
    product: &str,
    store: &str,
    position: u64,
) -> (i64, i64, i64, i64) {
    let item = queries
        .get_stock(get_stock(product, store, position))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    let (on_hand, reserved, available) = level(item.stock);
    (on_hand, reserved, available, item.stock.unwrap().incoming)
}

async fn transfer(queries: &mut Queries, transfer_id: &str, position: u64) -> pb::Transfer {
    queries
        .get_transfer(pb::GetTransferRequest {
            transfer_id: transfer_id.to_owned(),
            min_position: Some(position),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap()
}

/// (product, shipped, received, missing, lost) of each line.
fn line_states(transfer: &pb::Transfer) -> Vec<(String, i64, i64, i64, i64)> {
    transfer
        .lines
        .iter()
        .map(|line| {
            (
                line.product_id.clone(),
                line.shipped,
                line.received,
                line.missing,
                line.lost,
            )
        })
        .collect()
}

/// The whole life of two transfers through `commands` and `queries`; returns the last position.
async fn transfer_lifecycle(commands: &mut Commands, queries: &mut Queries) -> u64 {
    for (product, units) in [("sku-1", 20), ("sku-2", 5)] {
        commands
            .add_stock(add_stock(product, "warehouse", units))
            .await
            .unwrap();
    }
    commands
        .reserve_stock(reserve_stock("sku-1", "warehouse", 12))
        .await
        .unwrap();
    // More than is unreserved: refused whole, nothing shipped.
    let refused = commands
        .ship_transfer(ship("t-1", &[("sku-1", 9), ("sku-2", 5)]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&refused), "INSUFFICIENT_STOCK");
    let shipped = commands
        .ship_transfer(ship("t-1", &[("sku-1", 8), ("sku-2", 5)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shipped.transfer_id, "t-1");
    // Per line the source's item and the destination's: the warehouse's sku-1 and sku-2 run
    // out (OUT_OF_STOCK on each).
    assert_eq!(shipped.lines.len(), 4);
    let at = shipped.position;
    assert_eq!(
        stock(queries, "sku-1", "warehouse", at).await,
        (12, 12, 0, 0)
    );
    assert_eq!(stock(queries, "sku-1", "store-a", at).await, (0, 0, 0, 8));
    assert_eq!(stock(queries, "sku-2", "store-a", at).await, (0, 0, 0, 5));
    let found = transfer(queries, "t-1", at).await;
    assert_eq!(found.status(), pb::TransferStatus::InTransit);
    assert_eq!(
        (found.from_store_id.as_str(), found.to_store_id.as_str()),
        ("warehouse", "store-a")
    );

    // The first pallet: 6 of sku-1.
    let part = commands
        .receive_transfer(receive("t-1", &[("sku-1", 6)], false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(part.status(), pb::TransferStatus::PartiallyReceived);
    assert_eq!(
        stock(queries, "sku-1", "store-a", part.position).await,
        (6, 0, 6, 2)
    );
    // More than is still on its way: refused.
    let too_many = commands
        .receive_transfer(receive("t-1", &[("sku-1", 3)], false))
        .await
        .unwrap_err();
    assert_eq!(error_reason(&too_many), "RECEIVE_EXCEEDS_IN_TRANSIT");
    let subjects: Vec<_> = tonic_types::StatusExt::get_details_precondition_failure(&too_many)
        .unwrap()
        .violations
        .into_iter()
        .map(|violation| violation.subject)
        .collect();
    assert_eq!(subjects, ["lines[0].quantity"]);
    // The last pallet: 1 more sku-1 and 4 sku-2; closed, the rest is lost in transit.
    let closed = commands
        .receive_transfer(receive("t-1", &[("sku-1", 1), ("sku-2", 4)], true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.status(), pb::TransferStatus::Received);
    let at = closed.position;
    assert_eq!(stock(queries, "sku-1", "store-a", at).await, (7, 0, 7, 0));
    assert_eq!(stock(queries, "sku-2", "store-a", at).await, (4, 0, 4, 0));
    let found = transfer(queries, "t-1", at).await;
    assert_eq!(found.status(), pb::TransferStatus::Received);
    assert_eq!(
        line_states(&found),
        [
            ("sku-1".to_owned(), 8, 7, 1, 1),
            ("sku-2".to_owned(), 5, 4, 1, 1),
        ]
    );
    let positions = &found.event_positions;
    // Its events (alerts are the items'): 2 per shipped line, 1 receipt, then 2 receipts and
    // 2 losses.
    assert_eq!(positions.len(), 9);
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));
    assert!(*positions.last().unwrap() <= at);
    let closed_again = commands
        .receive_transfer(receive("t-1", &[("sku-1", 1)], false))
        .await
        .unwrap_err();
    assert_eq!(closed_again.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&closed_again), "TRANSFER_RECEIVED");

    // A second transfer, called back: the goods return to the warehouse.
    commands
        .add_stock(add_stock("sku-2", "warehouse", 3))
        .await
        .unwrap();
    let second = commands
        .ship_transfer(pb::ShipTransferRequest {
            transfer_id: String::new(),
            ..ship("", &[("sku-2", 3)])
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.transfer_id.len(), 36, "a UUID made by the server");
    let cancelled = commands
        .cancel_transfer(pb::CancelTransferRequest {
            transfer_id: second.transfer_id.clone(),
            reason: "truck broke down".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let at = cancelled.position;
    assert_eq!(stock(queries, "sku-2", "warehouse", at).await, (3, 0, 3, 0));
    assert_eq!(stock(queries, "sku-2", "store-a", at).await, (4, 0, 4, 0));
    let found = transfer(queries, &second.transfer_id, at).await;
    assert_eq!(found.status(), pb::TransferStatus::Cancelled);

    // The store's transfers, by id, of a status or any.
    let list = |status: pb::TransferStatus, page_token: String| pb::ListTransfersRequest {
        store_id: "store-a".to_owned(),
        status: status as i32,
        page_size: 1,
        page_token,
        min_position: Some(at),
    };
    let first_page = queries
        .list_transfers(list(pb::TransferStatus::Unspecified, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.transfers.len(), 1);
    let second_page = queries
        .list_transfers(list(
            pb::TransferStatus::Unspecified,
            first_page.next_page_token.clone(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second_page.transfers.len(), 1);
    assert!(second_page.next_page_token.is_empty());
    let mut ids: Vec<String> = [&first_page, &second_page]
        .iter()
        .map(|page| page.transfers[0].transfer_id.clone())
        .collect();
    ids.sort();
    let mut expected = vec!["t-1".to_owned(), second.transfer_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    let received = queries
        .list_transfers(list(pb::TransferStatus::Received, String::new()))
        .await
        .unwrap()
        .into_inner();
    let received: Vec<_> = received
        .transfers
        .iter()
        .map(|t| t.transfer_id.as_str())
        .collect();
    assert_eq!(received, ["t-1"]);
    at
}

#[tokio::test]
async fn a_transfer_ships_arrives_in_parts_closes_with_a_loss_and_another_is_cancelled() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let mut queries = server.queries().await;
    let head = transfer_lifecycle(&mut commands, &mut queries).await;
    server.stop().await;
    // Replayed: the read model's transfers are rebuilt from the log.
    let server = Combined::start(directory.path()).await;
    let mut queries = server.queries().await;
    let found = transfer(&mut queries, "t-1", head).await;
    assert_eq!(
        line_states(&found),
        [
            ("sku-1".to_owned(), 8, 7, 1, 1),
            ("sku-2".to_owned(), 5, 4, 1, 1),
        ]
    );
    server.stop().await;
    let report = inventory::tools::verify(&LogConfig::Embedded {
        data_dir: directory.path().to_owned(),
    })
    .await
    .unwrap();
    assert_eq!(report.head.0, head);
}

#[tokio::test]
async fn bad_transfer_commands_are_refused_naming_the_field_and_store_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let server = Combined::start(directory.path()).await;
    let mut commands = server.commands().await;
    let head = commands
        .add_stock(add_stock("sku-1", "warehouse", 5))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
        .position;
    let invalid = support::assert_invalid;
    let mut same_store = ship("t-1", &[("sku-1", 1)]);
    same_store.to_store_id = "warehouse".to_owned();
    invalid(
        commands.ship_transfer(same_store).await.unwrap_err(),
        &["to_store_id"],
    );
    invalid(
        commands
            .ship_transfer(ship("t-1", &[("sku-1", 1), ("sku-1", 2)]))
            .await
            .unwrap_err(),
        &["lines[1]"],
    );
    invalid(
        commands
            .ship_transfer(ship("t-1", &[("sku-1", 0)]))
            .await
            .unwrap_err(),
        &["lines[0].quantity"],
    );
    invalid(
        commands.ship_transfer(ship("t-1", &[])).await.unwrap_err(),
        &["lines"],
    );
    invalid(
        commands
            .receive_transfer(receive("t-1", &[], false))
            .await
            .unwrap_err(),
        &["lines"],
    );
    let unknown = commands
        .receive_transfer(receive("t-9", &[("sku-1", 1)], false))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(error_reason(&unknown), "TRANSFER_NOT_FOUND");
    let mut queries = server.queries().await;
    let not_found = queries
        .get_transfer(pb::GetTransferRequest {
            transfer_id: "t-9".to_owned(),
            min_position: Some(head),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);
    let bad_status = queries
        .list_transfers(pb::ListTransfersRequest {
            store_id: "store-a".to_owned(),
            status: 9,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&bad_status), ["status"]);
    // Nothing was stored.
    let after = commands
        .add_stock(add_stock("sku-1", "warehouse", 1))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
        .position;
    assert_eq!(after, head + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_through_two_postgres_command_servers_and_a_replica_of_one() {
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
    let query = Running::query_from(inventory::server::QuerySource::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    })
    .await;
    let replica_dir = tempfile::tempdir().unwrap();
    let replica = Running::query(replica_dir.path(), first.address).await;
    let mut shipping = Commands::new(support::channel(first.address).await);
    let mut receiving = Commands::new(support::channel(second.address).await);
    let mut queries = Queries::new(support::channel(query.address).await);
    for (product, units) in [("sku-1", 20), ("sku-2", 5)] {
        shipping
            .add_stock(add_stock(product, "warehouse", units))
            .await
            .unwrap();
    }
    shipping
        .ship_transfer(ship("t-pg", &[("sku-1", 8), ("sku-2", 5)]))
        .await
        .unwrap();
    // The other server receives: it decides against the shipment the first one wrote.
    let closed = receiving
        .receive_transfer(receive("t-pg", &[("sku-1", 8), ("sku-2", 2)], true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.status(), pb::TransferStatus::Received);
    let expected = [
        ("sku-1".to_owned(), 8, 8, 0, 0),
        ("sku-2".to_owned(), 5, 2, 3, 3),
    ];
    let found = transfer(&mut queries, "t-pg", closed.position).await;
    assert_eq!(line_states(&found), expected);
    let mut replica_queries = Queries::new(support::channel(replica.address).await);
    let on_replica = transfer(&mut replica_queries, "t-pg", closed.position).await;
    assert_eq!(on_replica, found);
    assert_eq!(
        stock(&mut replica_queries, "sku-2", "store-a", closed.position).await,
        (2, 0, 2, 0)
    );
    replica.stop().await;
    query.stop().await;
    first.stop().await;
    second.stop().await;
    assert_eq!(
        inventory::tools::verify(&log).await.unwrap().head.0,
        closed.position
    );
    support::drop_schema(&url, &schema).await;
}
