//! A crash loses no acknowledged write: the real binary is killed with SIGKILL in the middle of
//! concurrent commands, restarted on the same data directory, and every command it had
//! acknowledged must still be there.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::query_service_client::QueryServiceClient;
use support::{Process, add_stock, get_stock, level};

async fn start(data_dir: &std::path::Path) -> Process {
    let data = data_dir.to_str().unwrap();
    Process::start(
        &[
            "serve",
            "--data",
            data,
            "--command-addr",
            "127.0.0.1:0",
            "--query-addr",
            "127.0.0.1:0",
        ],
        &["command", "query"],
    )
    .await
}

fn request(task: usize, sequence: usize) -> pb::AddStockRequest {
    pb::AddStockRequest {
        command_id: format!("crash-{task}-{sequence}"),
        ..add_stock(&format!("p{}", task % 4), "s", 1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_command() {
    let directory = tempfile::tempdir().unwrap();
    let mut service = start(directory.path()).await;
    let acknowledged: Arc<Mutex<Vec<(usize, usize, u64)>>> = Arc::default();
    let mut clients = Vec::new();
    for task in 0..16 {
        let channel = support::channel(service.address("command")).await;
        let acknowledged = acknowledged.clone();
        clients.push(tokio::spawn(async move {
            let mut commands = CommandServiceClient::new(channel);
            for sequence in 0.. {
                match commands.add_stock(request(task, sequence)).await {
                    Ok(response) => {
                        let position = response.into_inner().result.unwrap().position;
                        acknowledged
                            .lock()
                            .unwrap()
                            .push((task, sequence, position));
                    }
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Let the load run until a good number of commands were acknowledged, then kill -9.
    support::wait_until(
        Duration::from_secs(60),
        "400 commands to be acknowledged",
        async || acknowledged.lock().unwrap().len() >= 400,
    )
    .await;
    service.kill().await;
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 400,
        "load ran: {} acks",
        acknowledged.len()
    );

    let service = start(directory.path()).await;
    let mut commands =
        CommandServiceClient::new(support::channel(service.address("command")).await);
    // Every acknowledged command is in the log: retrying it returns the stored answer.
    for (task, sequence, position) in &acknowledged {
        let result = commands
            .add_stock(request(*task, *sequence))
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        assert!(result.replayed, "command {task}-{sequence} was lost");
        assert_eq!(result.position, *position);
    }
    // And the state is the fold of exactly what is in the log: one unit per event.
    let mut queries = QueryServiceClient::new(support::channel(service.address("query")).await);
    let mut on_hand_total = 0;
    let mut head = 0;
    for product in 0..4 {
        let response = queries
            .get_stock(get_stock(&format!("p{product}"), "s", 0))
            .await
            .unwrap()
            .into_inner();
        head = response.read_position;
        on_hand_total += level(response.item.unwrap().stock).0 as u64;
    }
    assert_eq!(on_hand_total, head, "one unit per event in the log");
    assert!(head >= acknowledged.len() as u64);
}

/// An acknowledged multi-line command: its client task, its sequence number, and its
/// events' positions.
type Acknowledged = (usize, usize, Vec<u64>);

/// A delivery of three items (one `ApplyStockChanges` of three changes, one unit each).
fn delivery(task: usize, sequence: usize) -> pb::ApplyStockChangesRequest {
    let change = |product: String| support::add_change(&product, "s", 1);
    pb::ApplyStockChangesRequest {
        changes: vec![
            change(format!("a{}", task % 4)),
            change(format!("b{}", sequence % 3)),
            change(format!("c{}", (task + sequence) % 5)),
        ],
        reason: "crash".to_owned(),
        command_id: format!("multi-{task}-{sequence}"),
    }
}

/// SIGKILL in the middle of multi-line commands: after the restart every acknowledged command
/// is whole, and no part of any command is visible anywhere: the log (read through a
/// subscription) holds whole commands only, and the read model one unit per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_multi_line_load_leaves_only_whole_commands() {
    let directory = tempfile::tempdir().unwrap();
    let mut service = start(directory.path()).await;
    let acknowledged: Arc<Mutex<Vec<Acknowledged>>> = Arc::default();
    let mut clients = Vec::new();
    for task in 0..16 {
        let channel = support::channel(service.address("command")).await;
        let acknowledged = acknowledged.clone();
        clients.push(tokio::spawn(async move {
            let mut commands = CommandServiceClient::new(channel);
            for sequence in 0.. {
                match commands.apply_stock_changes(delivery(task, sequence)).await {
                    Ok(response) => {
                        let positions = response
                            .into_inner()
                            .changes
                            .iter()
                            .map(|change| change.position)
                            .collect();
                        acknowledged
                            .lock()
                            .unwrap()
                            .push((task, sequence, positions));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    support::wait_until(
        Duration::from_secs(60),
        "300 multi-line commands to be acknowledged",
        async || acknowledged.lock().unwrap().len() >= 300,
    )
    .await;
    service.kill().await;
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let service = start(directory.path()).await;
    let mut commands =
        CommandServiceClient::new(support::channel(service.address("command")).await);
    for (task, sequence, positions) in &acknowledged {
        let retry = commands
            .apply_stock_changes(delivery(*task, *sequence))
            .await
            .unwrap()
            .into_inner();
        let retried: Vec<u64> = retry.changes.iter().map(|change| change.position).collect();
        assert!(
            retry.changes.iter().all(|change| change.replayed),
            "command {task}-{sequence} was lost"
        );
        assert_eq!(&retried, positions, "command {task}-{sequence}");
    }
    // The log, from its start: whole commands of three events at contiguous positions.
    let mut events = pb::event_service_client::EventServiceClient::new(
        support::channel(service.address("command")).await,
    );
    let mut stream = events
        .subscribe(pb::SubscribeRequest {
            from_position: 0,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut head = 0;
    loop {
        let message = stream.message().await.unwrap().unwrap();
        match message.message {
            Some(pb::subscribe_response::Message::Event(event)) => {
                assert_eq!(event.position, head + 1);
                assert_eq!(event.command_event_count, 3, "{event:?}");
                assert_eq!(
                    u64::from(event.command_event_index),
                    head % 3,
                    "event {} is where its command says",
                    event.position
                );
                head = event.position;
            }
            Some(pb::subscribe_response::Message::CaughtUp(_)) => break,
            _ => {}
        }
    }
    assert_eq!(head % 3, 0, "the log ends with a whole command");
    assert!(head >= 3 * acknowledged.len() as u64);
    // The read model: one unit per event, over every item.
    let mut queries = QueryServiceClient::new(support::channel(service.address("query")).await);
    let mut on_hand_total = 0;
    let items = (0..4)
        .map(|i| format!("a{i}"))
        .chain((0..3).map(|i| format!("b{i}")))
        .chain((0..5).map(|i| format!("c{i}")));
    for product in items {
        let response = queries
            .get_stock(get_stock(&product, "s", head))
            .await
            .unwrap()
            .into_inner();
        on_hand_total += level(response.item.unwrap().stock).0 as u64;
    }
    assert_eq!(on_hand_total, head, "one unit per event in the log");
}
