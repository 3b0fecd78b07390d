//! Each principal's own budget on a server, over TLS with real clients (issue 28, findings 2
//! and 6): a credential past its requests or lines per second, or its subscriptions, is
//! refused alone with `RESOURCE_EXHAUSTED` (`QUOTA_EXCEEDED`, and a `RetryInfo` for a rate)
//! while another credential is served as before.

use crate::support;

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_types::StatusExt;

use inventory::app::access::{Quota, Role};
use inventory::grpc::pb;
use support::secured::{Credential, Server, as_, assert_refused, credential};
use support::{add_change, add_stock, get_stock};

fn with_quota(mut credential: Credential, quota: Quota) -> Credential {
    credential.entry.quota = quota;
    credential
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_past_its_requests_per_second_is_refused_alone_and_told_when_to_retry() {
    let admin = credential("admin", Role::Admin, &[], None);
    let flood = with_quota(
        credential("flood", Role::Reader, &[], None),
        Quota {
            requests_per_second: Some(50),
            ..Quota::default()
        },
    );
    let steady = credential("steady", Role::Reader, &[], None);
    let server = Server::start_tls(&[&admin, &flood, &steady]).await;
    server
        .commands()
        .add_stock(as_(&admin.token, add_stock("p", "store-a", 5)))
        .await
        .unwrap();

    // For one second, eight clients of `flood` send as fast as they can, while `steady`
    // sends one request every 20 ms.
    let until = Instant::now() + Duration::from_secs(1);
    let mut flooders = Vec::new();
    for _ in 0..8 {
        let queries = server.queries();
        let token = flood.token.clone();
        flooders.push(tokio::spawn(async move {
            let mut queries = queries;
            let (mut served, mut refused) = (0, 0);
            while Instant::now() < until {
                match queries
                    .get_stock(as_(&token, get_stock("p", "store-a", 0)))
                    .await
                {
                    Ok(_) => served += 1,
                    Err(status) => {
                        assert_refused(&status, Code::ResourceExhausted, "QUOTA_EXCEEDED");
                        let retry = status.get_details_retry_info().expect("a RetryInfo");
                        let delay = retry.retry_delay.expect("a delay");
                        assert!(delay <= Duration::from_secs(1), "{delay:?}");
                        refused += 1;
                    }
                }
            }
            (served, refused)
        }));
    }
    let mut queries = server.queries();
    let mut steady_served = 0;
    while Instant::now() < until {
        queries
            .get_stock(as_(&steady.token, get_stock("p", "store-a", 0)))
            .await
            .expect("another principal is always served");
        steady_served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut served, mut refused) = (0, 0);
    for flooder in flooders {
        let (s, r) = flooder.await.unwrap();
        served += s;
        refused += r;
    }
    println!(
        "in 1 s: flood served {served}, refused {refused}; steady served {steady_served}, refused 0"
    );
    // A bucket of 50 a second, full at the start: at most 50 + 50 in one second (and some
    // slack for the time the flooders took to finish their last request).
    assert!((50..=110).contains(&served), "flood served {served}");
    assert!(refused > served, "flood refused {refused}");
    assert!(steady_served >= 20, "steady served {steady_served}");
    server.stop().await;
}

#[tokio::test]
async fn a_principal_past_its_lines_per_second_is_refused_and_nothing_is_stored() {
    let admin = credential("admin", Role::Admin, &[], None);
    let bulk = with_quota(
        credential("bulk", Role::Operator, &["store-a"], None),
        Quota {
            lines_per_second: Some(100),
            ..Quota::default()
        },
    );
    let server = Server::start_tls(&[&admin, &bulk]).await;
    let note = |products: std::ops::Range<usize>| pb::ApplyStockChangesRequest {
        changes: products
            .map(|index| add_change(&format!("p{index}"), "store-a", 1))
            .collect(),
        reason: "delivery".to_owned(),
        command_id: String::new(),
    };
    server
        .commands()
        .apply_stock_changes(as_(&bulk.token, note(0..80)))
        .await
        .unwrap();
    let status = server
        .commands()
        .apply_stock_changes(as_(&bulk.token, note(80..160)))
        .await
        .unwrap_err();
    assert_refused(&status, Code::ResourceExhausted, "QUOTA_EXCEEDED");
    assert!(
        status.message().contains("100 lines a second"),
        "{status:?}"
    );
    let delay = status
        .get_details_retry_info()
        .and_then(|retry| retry.retry_delay)
        .expect("a RetryInfo with a delay");
    assert_eq!(server.stock(&admin, "p80", "store-a").await, (0, 0));
    // After the delay the bucket holds the lines again.
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    server
        .commands()
        .apply_stock_changes(as_(&bulk.token, note(80..160)))
        .await
        .unwrap();
    assert_eq!(server.stock(&admin, "p80", "store-a").await, (1, 0));
    server.stop().await;
}

#[tokio::test]
async fn a_principal_has_its_own_subscription_budget() {
    let admin = credential("admin", Role::Admin, &[], None);
    let greedy = with_quota(
        credential("greedy", Role::Reader, &["store-a"], None),
        Quota {
            max_subscriptions: Some(3),
            ..Quota::default()
        },
    );
    let other = credential("other", Role::Reader, &["store-a"], None);
    let server = Server::start_tls(&[&admin, &greedy, &other]).await;
    let subscribe = |token: &str| {
        let mut events = server.events();
        let request = as_(token, pb::SubscribeRequest::default());
        async move { events.subscribe(request).await }
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(subscribe(&greedy.token).await.unwrap().into_inner());
    }
    let status = subscribe(&greedy.token).await.unwrap_err();
    assert_refused(&status, Code::ResourceExhausted, "QUOTA_EXCEEDED");
    assert!(status.message().contains("3 subscriptions"), "{status:?}");
    // Another principal still subscribes.
    let _other = subscribe(&other.token).await.unwrap();
    // A stream that ends gives its slot back.
    drop(open.pop());
    support::wait_for(
        Duration::from_secs(10),
        "the closed stream's slot to come back",
        async || subscribe(&greedy.token).await.ok(),
    )
    .await;
    server.stop().await;
}

/// A TLS connection to `address` that completes its handshake and then sends nothing.
async fn silent_tls(
    address: std::net::SocketAddr,
    ca_pem: &str,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(
        std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.ok()?;
    connector
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .ok()
}

/// Whether the server closed `stream` (end of stream or an error) within `wait`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 256];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // The server's HTTP/2 preface and settings: keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

/// Connections that complete the TLS handshake and send nothing hold at most half the
/// connection slots, and only until the first-request timeout: a client with a valid token
/// that was connected goes on being served, and a new one gets in once they are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_hold_the_slots_of_authenticated_ones() {
    let admin = credential("admin", Role::Admin, &[], None);
    let limits = inventory::server::Limits {
        max_connections: 8,
        connection_timeouts: inventory::server::ConnectionTimeouts {
            first_request: Duration::from_secs(2),
            idle: Duration::from_secs(900),
        },
        ..inventory::server::Limits::default()
    };
    let server = Server::start_tls_with(&[&admin], limits).await;
    // The test's own channel is proven by a first request.
    server
        .commands()
        .add_stock(as_(&admin.token, add_stock("p", "store-a", 1)))
        .await
        .unwrap();
    let ca = server.ca_pem.clone().unwrap();

    // Silent connections: the handshake succeeds for the first four (half of 8, less the
    // query channel's, which is still unproven), then no more are let in.
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..8 {
        match silent_tls(server.command_addr, &ca).await {
            Some(mut stream) => {
                if closed_within(&mut stream, Duration::from_millis(200)).await {
                    break;
                }
                silent.push(stream);
            }
            None => break,
        }
    }
    assert!(
        (2..=4).contains(&silent.len()),
        "{} silent connections were let in",
        silent.len()
    );
    // The authenticated connection is served meanwhile.
    server
        .commands()
        .add_stock(as_(&admin.token, add_stock("p", "store-a", 1)))
        .await
        .expect("an authenticated connection is served while silent ones wait");
    // Each silent connection is closed by the server at its first-request timeout.
    for stream in &mut silent {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "a silent connection is closed"
        );
    }
    let held = started.elapsed();
    println!(
        "{} silent connections held their slots for {held:?}",
        silent.len()
    );
    assert!(held < Duration::from_secs(6), "{held:?}");
    // A new client with a token now connects and is served.
    let fresh = support::secured::tls_channel(server.command_addr, &ca).await;
    inventory::grpc::pb::command_service_client::CommandServiceClient::new(fresh)
        .add_stock(as_(&admin.token, add_stock("p", "store-a", 1)))
        .await
        .unwrap();
    server.stop().await;
}
