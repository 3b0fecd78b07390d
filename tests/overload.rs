//! Overload: far more concurrent requests than a server's limit. The excess is refused at once
//! with RESOURCE_EXHAUSTED, the accepted requests complete, health checks still answer, and the
//! server serves normally afterwards.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use inventory::app::SystemClock;
use inventory::server::Limits;
use support::{Combined, add_stock, get_stock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_limit_are_refused_at_once_and_the_rest_complete() {
    let directory = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_in_flight_requests: 4,
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
    let mut waiting = Vec::new();
    for _ in 0..40 {
        let mut client = queries.clone();
        waiting.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(get_stock("p", "s", 1_000_000));
            request.set_timeout(Duration::from_secs(3));
            let started = tokio::time::Instant::now();
            let result = client.get_stock(request).await;
            (
                result.map(|_| ()).map_err(|status| status.code()),
                started.elapsed(),
            )
        }));
    }
    // While the server is full, its health check still answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        support::channel(server.query_addr).await,
    );
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers under overload");

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
