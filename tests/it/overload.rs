//! Overload: far more concurrent requests than a server's limit. The excess is refused at once
//! with RESOURCE_EXHAUSTED, the accepted requests complete, health checks still answer, and the
//! server serves normally afterwards.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::error::Error as _;

use tonic::Code;

use inventory::app::SystemClock;
use inventory::server::Limits;
use support::{Combined, add_stock, get_stock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_limit_are_refused_at_once_and_the_rest_complete() {
    let directory = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_in_flight_requests: 4,
        ..Limits::default()
    };
    let server = Combined::start_with(directory.path(), Arc::new(SystemClock), limits).await;
    server
        .commands()
        .await
        .add_stock(add_stock("p", "s", 1))
        .await
        .unwrap();

    // Each of these waits for a position that will not come until its deadline: it holds its
    // place for its whole deadline.
    let queries = server.queries().await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut waiting = Vec::new();
    for _ in 0..40 {
        let mut client = queries.clone();
        let answered = answered.clone();
        waiting.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(get_stock("p", "s", 1_000_000));
            request.set_timeout(Duration::from_secs(3));
            let started = tokio::time::Instant::now();
            let result = client.get_stock(request).await;
            answered.fetch_add(1, Ordering::SeqCst);
            (
                result.map(|_| ()).map_err(|status| status.code()),
                started.elapsed(),
            )
        }));
    }
    // The server is full once everything past its limit has been answered (refused); the
    // limit's worth is still held until the 3 s deadline.
    support::wait_until(
        Duration::from_secs(10),
        "the 36 requests past the limit to be answered",
        async || answered.load(Ordering::SeqCst) >= 36,
    )
    .await;
    // While the server is full, its health check still answers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        support::channel(server.query_addr).await,
    );
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers under overload");
    assert_eq!(
        answered.load(Ordering::SeqCst),
        36,
        "the accepted requests still held their places while health answered"
    );

    let mut refused = Vec::new();
    let mut accepted = Vec::new();
    for task in waiting {
        let (result, elapsed) = task.await.unwrap();
        match result {
            Err(Code::ResourceExhausted) => refused.push(elapsed),
            Err(Code::DeadlineExceeded) => accepted.push(elapsed),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        accepted.len(),
        4,
        "the limit's worth of requests was worked on"
    );
    assert_eq!(refused.len(), 36);
    // Refused requests did not wait for a place: every one was answered before any accepted
    // one finished its wait.
    let slowest_refusal = refused.iter().max().unwrap();
    let fastest_accepted = accepted.iter().min().unwrap();
    assert!(
        slowest_refusal < fastest_accepted,
        "{slowest_refusal:?} vs {fastest_accepted:?}"
    );

    // Afterwards the server works normally.
    let mut queries = server.queries().await;
    let item = queries
        .get_stock(get_stock("p", "s", 1))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(item.version, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_fail_at_once_and_the_open_ones_keep_working() {
    let directory = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = Combined::start_with(directory.path(), Arc::new(SystemClock), limits).await;
    // Two connections, each used, fill the command server's limit.
    let mut first = server.commands().await;
    let mut second = server.commands().await;
    first.add_stock(add_stock("p", "s", 1)).await.unwrap();
    second.add_stock(add_stock("p", "s", 1)).await.unwrap();

    // A third is closed as soon as it is accepted: the call fails fast with a connection
    // error rather than hanging until its deadline.
    let started = tokio::time::Instant::now();
    let refused = match connect(server.command_addr).await {
        Err(_) => true,
        Ok(mut client) => {
            let mut request = tonic::Request::new(add_stock("p", "s", 1));
            request.set_timeout(Duration::from_secs(10));
            let status = client.add_stock(request).await.unwrap_err();
            // The client sees its connection fail, not an answer from the server. Which code
            // tonic gives that depends on when the close arrives (UNAVAILABLE, UNKNOWN
            // "transport error", CANCELLED "connection closed"); the cause is always a
            // transport error.
            assert!(
                status
                    .source()
                    .and_then(|cause| cause.downcast_ref::<tonic::transport::Error>())
                    .is_some(),
                "{status:?}"
            );
            true
        }
    };
    assert!(refused);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused after {:?}",
        started.elapsed()
    );

    // The open connections are unaffected, and the query server has a limit of its own.
    first.add_stock(add_stock("p", "s", 1)).await.unwrap();
    server
        .queries()
        .await
        .get_stock(get_stock("p", "s", 0))
        .await
        .unwrap();

    // Once one closes, a new connection is admitted.
    drop(first);
    support::wait_until(
        Duration::from_secs(10),
        "a new connection to be admitted after one closed",
        async || match connect(server.command_addr).await {
            Ok(mut client) => client.add_stock(add_stock("p", "s", 1)).await.is_ok(),
            Err(_) => false,
        },
    )
    .await;
    server.stop().await;
}

async fn connect(
    address: std::net::SocketAddr,
) -> Result<
    inventory::grpc::pb::command_service_client::CommandServiceClient<tonic::transport::Channel>,
    tonic::transport::Error,
> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await?;
    Ok(inventory::grpc::pb::command_service_client::CommandServiceClient::new(channel))
}

/// The resident memory of a process, from `/proc/<pid>/status`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Well past the server's longest `min_position` wait, so that the server answers first also
/// on a machine busy with other test binaries (12 s was once not enough in CI).
const CLIENT_DEADLINE: Duration = Duration::from_secs(20);
const _: () = assert!(CLIENT_DEADLINE.as_secs() > inventory::grpc::MAX_MIN_POSITION_WAIT.as_secs());

/// `requests` GetStock calls at once over `connections` connections, each waiting for a
/// position that never comes. Returns (refused, accepted) and the server's largest RSS seen
/// while they ran.
///
/// An accepted call is held until the server's longest `min_position` wait (10 s), far longer
/// than sending and refusing every other call takes even on a loaded machine (a debug build
/// refuses 8,000 in about 3 s with both cores busy): no place is freed while calls are still
/// arriving, so exactly the limit's worth is accepted. The client's own deadline is longer
/// still, so every call gets the server's answer.
async fn flood(
    address: std::net::SocketAddr,
    pid: u32,
    connections: usize,
    requests: usize,
) -> (usize, usize, u64) {
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(support::channel(address).await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for call in 0..requests {
        let mut client = inventory::grpc::pb::query_service_client::QueryServiceClient::new(
            channels[call % connections].clone(),
        );
        calls.spawn(async move {
            let mut request = tonic::Request::new(get_stock("p", "s", 1_000_000_000));
            request.set_timeout(CLIENT_DEADLINE);
            client.get_stock(request).await.map(|_| ())
        });
    }
    let mut peak = rss_kib(pid);
    let (mut refused, mut accepted) = (0, 0);
    let mut sample = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            joined = calls.join_next() => match joined {
                None => break,
                Some(result) => match result.unwrap() {
                    Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
                    // Worked on until the server's longest wait: its DEADLINE_EXCEEDED.
                    Err(status)
                        if status.code() == Code::DeadlineExceeded
                            && status.message().contains("min_position") =>
                    {
                        accepted += 1
                    }
                    other => panic!("unexpected {other:?}"),
                },
            },
            _ = sample.tick() => peak = peak.max(rss_kib(pid)),
        }
    }
    (refused, accepted, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_requests_are_refused_and_the_servers_memory_stays_bounded() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().to_str().unwrap();
    let service = support::Process::start(
        &[
            "serve",
            "--command-addr",
            "127.0.0.1:0",
            "--query-addr",
            "127.0.0.1:0",
            "--data",
            data,
            "--max-in-flight",
            "64",
        ],
        &["command", "query"],
    )
    .await;
    let pid = service.child.id().unwrap();
    let address = service.address("query");
    let before = rss_kib(pid);
    // 8 connections × 1,000 streams (the per-connection stream limit is 1,024): 8,000
    // requests at once, 125 times the limit. Three floods in a row.
    let mut peaks = Vec::new();
    for _ in 0..3 {
        let (refused, accepted, peak) = flood(address, pid, 8, 8_000).await;
        assert_eq!(accepted, 64, "exactly the limit's worth was worked on");
        assert_eq!(refused, 8_000 - 64);
        peaks.push(peak);
    }
    let after = rss_kib(pid);
    println!(
        "server RSS: {before} KiB before, peaks {peaks:?} KiB during three floods of 8,000 requests, {after} KiB after"
    );
    // Bounded: the flood costs at most a few tens of MiB of buffers, and repeating it does not
    // add more (nothing queues or leaks).
    assert!(
        peaks.iter().all(|peak| peak - before < 128 * 1024),
        "a flood grew the server by over 128 MiB: {before} → {peaks:?} KiB"
    );
    assert!(
        peaks[2] < peaks[0] + 16 * 1024,
        "each flood grew the server further: {peaks:?} KiB"
    );
    // And it still answers.
    let mut queries = inventory::grpc::pb::query_service_client::QueryServiceClient::new(
        support::channel(address).await,
    );
    let missing = queries.get_stock(get_stock("p", "s", 0)).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}
