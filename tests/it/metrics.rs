//! The Prometheus endpoint of the real binary: started with every port on `:0`, it prints the
//! metrics address it really listens on, and `/metrics` counts what the commands did.

use crate::support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::query_service_client::QueryServiceClient;
use support::{add_stock, get_stock, reserve_stock, scrape};

struct Service {
    // Held so the server lives as long as the test (it is killed on drop).
    _child: Child,
    command_addr: SocketAddr,
    query_addr: SocketAddr,
    metrics_addr: SocketAddr,
}

/// Starts the binary and reads the three addresses it prints once it listens.
async fn start(data_dir: &std::path::Path) -> Service {
    let mut child = Command::new(env!("CARGO_BIN_EXE_inventory"))
        .args([
            "serve",
            "--command-addr",
            "127.0.0.1:0",
            "--query-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--data")
        .arg(data_dir)
        .env("INVENTORY_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the inventory binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut command_addr, mut query_addr, mut metrics_addr) = (None, None, None);
    while command_addr.is_none() || query_addr.is_none() || metrics_addr.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the binary prints its addresses within 30 s")
            .unwrap()
            .expect("the binary is still running");
        let address = line.rsplit(' ').next().unwrap().parse::<SocketAddr>().ok();
        if line.starts_with("command server listening on") {
            command_addr = address;
        } else if line.starts_with("query server listening on") {
            query_addr = address;
        } else if line.starts_with("metrics listening on") {
            metrics_addr = address;
        }
    }
    let metrics_addr = metrics_addr.unwrap();
    assert_ne!(metrics_addr.port(), 0, "the real port is printed, not :0");
    Service {
        _child: child,
        command_addr: command_addr.unwrap(),
        query_addr: query_addr.unwrap(),
        metrics_addr,
    }
}

fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} is missing from {samples:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_appends_events_and_command_outcomes() {
    let directory = tempfile::tempdir().unwrap();
    let service = start(directory.path()).await;
    let mut commands = CommandServiceClient::new(support::channel(service.command_addr).await);
    // One command at a time, so each is its own batch: one append and one fsync each.
    let added = 5;
    let mut last_position = 0;
    for product in 0..added {
        let request = pb::AddStockRequest {
            command_id: format!("add-{product}"),
            ..add_stock(&format!("p{product}"), "s", 1)
        };
        let result = commands.add_stock(request).await.unwrap().into_inner();
        last_position = result.result.unwrap().position;
    }
    // The same command id again: answered from memory, nothing appended.
    let retry = pb::AddStockRequest {
        command_id: "add-0".to_owned(),
        ..add_stock("p0", "s", 1)
    };
    let replayed = commands.add_stock(retry).await.unwrap().into_inner();
    assert!(replayed.result.unwrap().replayed);
    // More than there is: refused, nothing appended.
    let refused = commands.reserve_stock(reserve_stock("p0", "s", 2)).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::FailedPrecondition);
    // Wait (without sleeping) until the read model has applied every event.
    let mut queries = QueryServiceClient::new(support::channel(service.query_addr).await);
    queries
        .get_stock(get_stock("p0", "s", last_position))
        .await
        .unwrap();

    let samples = scrape(service.metrics_addr).await;
    let added = f64::from(added);
    assert_eq!(
        sample(&samples, "inventory_log_events_appended_total"),
        added
    );
    assert_eq!(sample(&samples, "inventory_log_appends_total"), added);
    assert_eq!(sample(&samples, "inventory_log_head_position"), added);
    assert_eq!(sample(&samples, "inventory_read_model_position"), added);
    assert_eq!(
        sample(&samples, r#"inventory_commands_total{outcome="accepted"}"#),
        added
    );
    assert_eq!(
        sample(&samples, r#"inventory_commands_total{outcome="replayed"}"#),
        1.0
    );
    assert_eq!(
        sample(&samples, r#"inventory_commands_total{outcome="refused"}"#),
        1.0
    );
    assert_eq!(
        sample(&samples, "inventory_command_batch_size_count"),
        added + 2.0
    );
}

/// The value of the one series named `name` whose labels include every pair in `labels`,
/// whatever their order.
fn labelled(samples: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|(series, _)| {
            series.strip_prefix(name).is_some_and(|rest| {
                rest.starts_with('{')
                    && labels
                        .iter()
                        .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
            })
        })
        .map(|(_, value)| *value)
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {labels:?} matches {matching:?}"
    );
    matching.first().copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_is_counted_by_status_code_and_timed() {
    let directory = tempfile::tempdir().unwrap();
    let service = start(directory.path()).await;
    let mut commands = CommandServiceClient::new(support::channel(service.command_addr).await);
    for _ in 0..3 {
        commands.add_stock(add_stock("p", "s", 1)).await.unwrap();
    }
    let invalid = commands.add_stock(add_stock("", "s", 1)).await.unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    let refused = commands.reserve_stock(reserve_stock("p", "s", 99)).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::FailedPrecondition);
    let mut queries = QueryServiceClient::new(support::channel(service.query_addr).await);
    queries.get_stock(get_stock("p", "s", 3)).await.unwrap();

    // A subscription is active until its client goes away; then it counts as cancelled.
    let mut events = pb::event_service_client::EventServiceClient::new(
        support::channel(service.query_addr).await,
    );
    let mut stream = events
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    stream
        .message()
        .await
        .unwrap()
        .expect("caught_up or an event");

    let samples = scrape(service.metrics_addr).await;
    let requests = |server: &str, method: &str, code: &str| {
        labelled(
            &samples,
            "inventory_grpc_requests_total",
            &[("server", server), ("method", method), ("code", code)],
        )
    };
    const ADD: &str = "inventory.v1.CommandService/AddStock";
    const RESERVE: &str = "inventory.v1.CommandService/ReserveStock";
    const GET: &str = "inventory.v1.QueryService/GetStock";
    assert_eq!(requests("command", ADD, "OK"), Some(3.0));
    assert_eq!(requests("command", ADD, "INVALID_ARGUMENT"), Some(1.0));
    assert_eq!(
        requests("command", RESERVE, "FAILED_PRECONDITION"),
        Some(1.0)
    );
    assert_eq!(requests("query", GET, "OK"), Some(1.0));
    assert_eq!(
        labelled(
            &samples,
            "inventory_grpc_request_duration_seconds_count",
            &[("server", "command"), ("method", ADD)],
        ),
        Some(4.0)
    );
    let slowest_add = labelled(
        &samples,
        "inventory_grpc_request_duration_seconds_bucket",
        &[("server", "command"), ("method", ADD), ("le", "+Inf")],
    );
    assert_eq!(slowest_add, Some(4.0));
    assert_eq!(sample(&samples, "inventory_subscriptions_active"), 1.0);
    assert_eq!(sample(&samples, "inventory_breaker_state"), 0.0);
    assert_eq!(sample(&samples, "inventory_read_model_lag_events"), 0.0);
    // This scrape's own connections are not gRPC ones; the test holds two to each server.
    assert_eq!(
        labelled(
            &samples,
            "inventory_connections_open",
            &[("server", "command")]
        ),
        Some(1.0)
    );
    assert_eq!(
        labelled(
            &samples,
            "inventory_connections_open",
            &[("server", "query")]
        ),
        Some(2.0)
    );

    drop(stream);
    drop(events);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let samples = scrape(service.metrics_addr).await;
        let cancelled = labelled(
            &samples,
            "inventory_grpc_requests_total",
            &[
                ("method", "inventory.v1.EventService/Subscribe"),
                ("code", "CANCELLED"),
            ],
        );
        if cancelled == Some(1.0) && sample(&samples, "inventory_subscriptions_active") == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended subscription was not counted: {cancelled:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /metrics` over TLS trusting `ca_pem`, with `authorization: Bearer <token>` if given:
/// the status line and the body.
async fn scrape_tls(address: SocketAddr, ca_pem: &str, token: Option<&str>) -> (String, String) {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", address.port()))
        .await
        .unwrap();
    let mut stream = connector
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let authorization = token.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: inventory\r\n{authorization}\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// `/metrics` beyond loopback follows the servers' rule: refused without TLS and
/// authentication (unless `--insecure`); with them, served over the same TLS to a credential
/// of every store only.
#[tokio::test]
async fn metrics_beyond_loopback_need_tls_and_a_token_of_every_store() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    let base = [
        "serve",
        "--log",
        data.to_str().unwrap(),
        "--command-addr",
        "127.0.0.1:0",
        "--query-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "0.0.0.0:0",
    ];
    let refused = support::inventory(&base);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing to serve /metrics on 0.0.0.0:0") && stderr.contains("--insecure"),
        "{stderr}"
    );

    // TLS and tokens: an admin's token reads them, a store's token and no token do not.
    let certs = directory.path().join("certs");
    let made = support::inventory(&["cert", "generate", "--out", certs.to_str().unwrap()]);
    assert!(made.status.success(), "{made:?}");
    let token = |name: &str, stores: &[&str]| {
        let mut arguments = vec!["token", "new", "--name", name, "--role", "reader"];
        for store in stores {
            arguments.extend(["--stores", store]);
        }
        let made = support::inventory(&arguments);
        assert!(made.status.success(), "{made:?}");
        let stdout = String::from_utf8(made.stdout).unwrap();
        let (token, block) = stdout.split_once('\n').unwrap();
        (token.trim().to_owned(), block.to_owned())
    };
    let (everywhere, everywhere_block) = token("scraper", &[]);
    let (store_a, store_a_block) = token("reader-a", &["store-a"]);
    let config = directory.path().join("inventory.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = \"{0}/server.pem\"\nkey = \"{0}/server.key\"\n\n{everywhere_block}\n{store_a_block}",
            certs.display()
        ),
    )
    .unwrap();
    let mut arguments = base.to_vec();
    arguments.extend(["--config", config.to_str().unwrap()]);
    let process = support::Process::start(&arguments, &["metrics"]).await;
    let address = process.address("metrics");
    let ca = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let (status, body) = scrape_tls(address, &ca, Some(&everywhere)).await;
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.contains("inventory_"), "{body}");
    let (status, _) = scrape_tls(address, &ca, Some(&store_a)).await;
    assert!(status.contains("403"), "{status}");
    let (status, _) = scrape_tls(address, &ca, None).await;
    assert!(status.contains("401"), "{status}");
    let (status, _) = scrape_tls(address, &ca, Some("inv_not-a-token")).await;
    assert!(status.contains("401"), "{status}");
    // Plain HTTP gets no metrics: the server expects a TLS handshake.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", address.port()))
        .await
        .unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("inventory_"),
        "plain HTTP was answered"
    );
}
