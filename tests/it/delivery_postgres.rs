//! Sinks on a PostgreSQL log shared by two command servers, each the real binary: exactly one
//! delivers each sink; when it is SIGKILLed the other takes over from the stored cursor within
//! seconds, and the receiver still gets every event, in order.

use crate::support;

use std::time::Duration;

use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::delivery_service_client::DeliveryServiceClient;
use support::webhook::Receiver;
use support::{Process, add_stock, wait_for, wait_until};

const SECRET: &str = "a-webhook-secret-for-tests";

async fn sink(process: &Process) -> pb::SinkStatus {
    let channel = support::channel(process.address("command")).await;
    DeliveryServiceClient::new(channel)
        .list_sinks(pb::ListSinksRequest {})
        .await
        .unwrap()
        .into_inner()
        .sinks
        .remove(0)
}

async fn write(process: &Process, count: usize, tag: &str) -> u64 {
    write_to(process.address("command"), count, tag).await
}

/// `count` receipts over 4 items tagged `tag`, sent to the command server at `address`; the
/// log's head after them.
async fn write_to(address: std::net::SocketAddr, count: usize, tag: &str) -> u64 {
    let channel = support::channel(address).await;
    let mut commands = CommandServiceClient::new(channel);
    let mut head = 0;
    for index in 0..count {
        head = commands
            .add_stock(add_stock(&format!("{tag}-{}", index % 4), "s1", 1))
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap()
            .position;
    }
    head
}

#[tokio::test]
async fn one_of_two_command_servers_delivers_and_the_other_takes_over_when_it_dies() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema();
    let receiver = Receiver::start().await;
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("inventory.toml");
    std::fs::write(
        &config,
        format!(
            "log = \"{url}\"\npg_schema = \"{schema}\"\ncommand_addr = \"127.0.0.1:0\"\n\n\
             [[webhook]]\nname = \"erp\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nbatch_max = 10\n\
             retry_initial = \"20ms\"\nretry_max = \"200ms\"\n",
            receiver.url()
        ),
    )
    .unwrap();
    let arguments = ["command", "--config", config.to_str().unwrap()];
    let mut first = Process::start(&arguments, &["command"]).await;
    wait_until(
        Duration::from_secs(10),
        "the first server to hold the sink",
        async || sink(&first).await.active,
    )
    .await;
    let second = Process::start(&arguments, &["command"]).await;
    write(&first, 40, "a").await;
    let head = write(&second, 40, "b").await;
    wait_until(
        Duration::from_secs(30),
        "delivery through the head",
        async || receiver.accepted_positions().last() == Some(&head),
    )
    .await;
    let standby = wait_for(
        Duration::from_secs(10),
        "the standby to show the stored cursor",
        async || {
            let status = sink(&second).await;
            (status.position == head).then_some(status)
        },
    )
    .await;
    assert!(!standby.active, "only one server delivers the sink");
    assert!(sink(&first).await.active);
    // A standby refuses to act on a sink it does not deliver.
    let refused = DeliveryServiceClient::new(support::channel(second.address("command")).await)
        .resume_sink(pb::ResumeSinkRequest { name: "erp".into() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // The deliverer dies under load; the other server takes over and delivers the rest.
    let loader = tokio::spawn(write_to(second.address("command"), 200, "c"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    first.kill().await;
    let killed_at = tokio::time::Instant::now();
    let head = loader.await.unwrap();
    wait_until(
        Duration::from_secs(20),
        "the other server to take over",
        async || sink(&second).await.active,
    )
    .await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(10), "took over after {took:?}");
    eprintln!("the standby took the sink over {took:?} after the SIGKILL");
    wait_until(
        Duration::from_secs(30),
        "delivery through the new head",
        async || sink(&second).await.position == head,
    )
    .await;
    let duplicates =
        support::delivery::assert_every_event_in_order(&receiver.received_positions(), head);
    assert!(
        duplicates <= 10,
        "at most the batch in flight again: {duplicates}"
    );
    drop(second);
    support::drop_schema(&url, &schema).await;
}
