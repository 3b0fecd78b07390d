//! Query servers as read replicas in their own processes: they follow a command server that is
//! killed with SIGKILL and restarted, keep answering reads meanwhile, and converge to exactly
//! the state the command server's log folds into.

use crate::support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_stream::StreamExt;

use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::event_service_client::EventServiceClient;
use inventory::grpc::pb::query_service_client::QueryServiceClient;
use pb::subscribe_response::Message;
use support::{Process, add_stock, get_stock, level, reserve_stock};

const ITEMS: usize = 12;

async fn command_server(data: &str, address: &str) -> Process {
    Process::start(
        &["command", "--data", data, "--command-addr", address],
        &["command"],
    )
    .await
}

async fn replica(data: &str, upstream: SocketAddr) -> Process {
    let follow = format!("http://{upstream}");
    Process::start(
        &[
            "query",
            "--follow",
            &follow,
            "--data",
            data,
            "--query-addr",
            "127.0.0.1:0",
        ],
        &["query"],
    )
    .await
}

/// Mixed commands from several clients until `count` are acknowledged or the server is gone.
async fn load(address: SocketAddr, clients: usize, count_per_client: usize) -> usize {
    let mut tasks = Vec::new();
    for client in 0..clients {
        let channel = support::channel(address).await;
        tasks.push(tokio::spawn(async move {
            let mut commands = CommandServiceClient::new(channel);
            let mut acknowledged = 0;
            for i in 0..count_per_client {
                let product = format!("item-{}", (client * 7 + i) % ITEMS);
                let result = match i % 4 {
                    0 | 1 => commands
                        .add_stock(add_stock(&product, "s", 3))
                        .await
                        .map(|_| ()),
                    // A cart of two items: one command of two events for the replicas.
                    2 => match commands
                        .reserve_stock(pb::ReserveStockRequest {
                            lines: [
                                product.clone(),
                                format!("item-{}", (client * 7 + i + 1) % ITEMS),
                            ]
                            .into_iter()
                            .map(|product_id| pb::ReservationLine {
                                product_id,
                                store_id: "s".to_owned(),
                                quantity: 1,
                                expected_version: None,
                            })
                            .collect(),
                            customer_id: "c".to_owned(),
                            ..Default::default()
                        })
                        .await
                    {
                        Ok(reserved) => {
                            let reservation_id = reserved.into_inner().reservation_id;
                            commands
                                .commit_reservation(pb::CommitReservationRequest {
                                    reservation_id,
                                    order_id: format!("o-{client}-{i}"),
                                    ..Default::default()
                                })
                                .await
                                .map(|_| ())
                        }
                        Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
                        Err(status) => Err(status),
                    },
                    _ => match commands
                        .reserve_stock(reserve_stock(&product, "s", 1))
                        .await
                    {
                        Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
                        other => other.map(|_| ()),
                    },
                };
                match result {
                    Ok(()) => acknowledged += 1,
                    Err(_) => break, // the server is gone
                }
            }
            acknowledged
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total
}

/// The state the command server's log folds into: the last event of each item, and the head.
async fn fold_of_log(
    address: SocketAddr,
) -> (HashMap<String, (pb::StockLevel, u64)>, u64, Vec<String>) {
    let mut events = EventServiceClient::new(support::channel(address).await);
    let mut stream = events
        .subscribe(pb::SubscribeRequest {
            from_position: 0,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut items = HashMap::new();
    let mut event_ids = Vec::new();
    loop {
        match stream.next().await.unwrap().unwrap().message.unwrap() {
            Message::Event(event) => {
                event_ids.push(event.event_id.clone());
                items.insert(
                    event.product_id.clone(),
                    (event.stock.unwrap(), event.version),
                );
            }
            Message::CaughtUp(caught_up) => return (items, caught_up.position, event_ids),
            Message::Checkpoint(_) => {}
        }
    }
}

async fn assert_replica_matches(
    replica: SocketAddr,
    expected: &HashMap<String, (pb::StockLevel, u64)>,
    head: u64,
) {
    let mut queries = QueryServiceClient::new(support::channel(replica).await);
    assert_eq!(expected.len(), ITEMS);
    for (product, (stock, version)) in expected {
        let mut request = tonic::Request::new(get_stock(product, "s", head));
        request.set_timeout(Duration::from_secs(20));
        let item = queries
            .get_stock(request)
            .await
            .unwrap_or_else(|status| panic!("replica {replica} on {product}: {status:?}"))
            .into_inner()
            .item
            .unwrap();
        assert_eq!(
            level(item.stock),
            level(Some(*stock)),
            "{product} on {replica}"
        );
        assert_eq!(item.version, *version, "{product} on {replica}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_survive_a_killed_command_server_and_converge_after_its_restart() {
    let directory = tempfile::tempdir().unwrap();
    let path = |name: &str| directory.path().join(name).to_str().unwrap().to_owned();
    let mut command = command_server(&path("command"), "127.0.0.1:0").await;
    let command_addr = command.address("command");
    let first = replica(&path("replica-1"), command_addr).await;
    let second = replica(&path("replica-2"), command_addr).await;

    // Load, then SIGKILL the command server while clients are still sending.
    let load_task = tokio::spawn(load(command_addr, 8, 10_000));
    let mut events = EventServiceClient::new(support::channel(command_addr).await);
    let mut watch = events
        .subscribe(pb::SubscribeRequest {
            from_position: 0,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    // Wait until at least 300 events exist, then kill.
    loop {
        if let Some(Ok(pb::SubscribeResponse {
            message: Some(Message::Event(event)),
        })) = watch.next().await
            && event.position >= 300
        {
            break;
        }
    }
    command.kill().await;
    let acknowledged_before = load_task.await.unwrap();
    assert!(acknowledged_before > 0);

    // With the upstream gone, replicas keep answering from what they have, and say since when
    // it may be stale.
    let mut queries = QueryServiceClient::new(support::channel(first.address("query")).await);
    support::wait_until(
        Duration::from_secs(10),
        "answers to carry upstream_unreachable_since during the outage",
        async || {
            let answer = queries
                .get_stock(get_stock("item-0", "s", 0))
                .await
                .unwrap()
                .into_inner();
            assert!(answer.read_position > 0);
            answer.upstream_unreachable_since.is_some()
        },
    )
    .await;
    // A replica started while the upstream is down reports NOT_SERVING until it caught up.
    let late = replica(&path("replica-3"), command_addr).await;
    assert!(!support::serving(late.address("query"), "inventory.v1.QueryService").await);

    // Restart on the same address and write some more.
    let command = command_server(&path("command"), &command_addr.to_string()).await;
    assert_eq!(command.address("command"), command_addr);
    load(command_addr, 4, 50).await;

    let (expected, head, event_ids) = fold_of_log(command_addr).await;
    for replica in [&first, &second, &late] {
        assert_replica_matches(replica.address("query"), &expected, head).await;
    }
    let answer = queries
        .get_stock(get_stock("item-0", "s", head))
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer.upstream_unreachable_since.is_none(),
        "fresh again once it caught up"
    );
    support::wait_until(
        Duration::from_secs(10),
        "the late replica to report SERVING once it caught up",
        async || support::serving(late.address("query"), "inventory.v1.QueryService").await,
    )
    .await;

    // Listeners can subscribe to a replica: it serves exactly the command server's events.
    let (_, replica_head, replica_event_ids) = fold_of_log(first.address("query")).await;
    assert_eq!(replica_head, head);
    assert_eq!(replica_event_ids, event_ids);
}
