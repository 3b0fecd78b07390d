//! Authentication, roles, store scopes and per-credential fairness, over real gRPC: every
//! rule has a request that breaks it, and each refusal stores nothing. Then the binary:
//! `inventory token new`, `[[auth.tokens]]` in the configuration file, a follower with its
//! token, and no token in any log line at debug level.
//!
//! Over 600 lines: each test is one whole scenario (a server with its credentials, the requests
//! that break a rule, what is stored after), and the binary's own tests share its helpers.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};

use inventory::app::ManualClock;
use inventory::app::access::Role;
use inventory::domain::{LogPosition, Timestamp};
use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::delivery_service_client::DeliveryServiceClient;
use inventory::grpc::pb::query_service_client::QueryServiceClient;
use inventory::server::LogConfig;
use support::secured::{Server, as_, assert_refused, credential};
use support::{add_stock, get_stock, reserve_stock};

#[tokio::test]
async fn without_a_valid_token_nothing_but_health_is_served() {
    let admin = credential("admin", Role::Admin, &[], None);
    let server = Server::start(&[&admin]).await;

    // No token: commands, queries, subscriptions, reflection.
    let status = server
        .commands()
        .add_stock(add_stock("p", "store-a", 1))
        .await
        .unwrap_err();
    assert_refused(&status, Code::Unauthenticated, "TOKEN_MISSING");
    let status = server
        .queries()
        .get_stock(get_stock("p", "store-a", 0))
        .await
        .unwrap_err();
    assert_refused(&status, Code::Unauthenticated, "TOKEN_MISSING");
    let status = server
        .events()
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_refused(&status, Code::Unauthenticated, "TOKEN_MISSING");
    let reflection = {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_request::MessageRequest,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        ServerReflectionClient::new(server.command.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
    };
    assert_refused(
        &reflection.unwrap_err(),
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );

    // A wrong token, another scheme, a token with a character missing.
    for header in [
        "Bearer inv_0000".to_owned(),
        format!("Basic {}", admin.token),
        format!("Bearer {}", &admin.token[..admin.token.len() - 1]),
    ] {
        let mut request = Request::new(add_stock("p", "store-a", 1));
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
        let status = server.commands().add_stock(request).await.unwrap_err();
        assert_refused(&status, Code::Unauthenticated, "TOKEN_INVALID");
        assert!(
            !status.message().contains(&admin.token[4..12]),
            "no hint of the token: {status:?}"
        );
    }

    // Health needs no credential.
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    HealthClient::new(server.command.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();

    // Nothing was stored; the right token is served.
    assert_eq!(server.stock(&admin, "p", "store-a").await, (0, 0));
    server
        .commands()
        .add_stock(as_(&admin.token, add_stock("p", "store-a", 1)))
        .await
        .unwrap();
    assert_eq!(server.stock(&admin, "p", "store-a").await, (1, 0));
    server.stop().await;
}

#[tokio::test]
async fn a_role_allows_only_its_kinds_of_request() {
    let admin = credential("admin", Role::Admin, &[], None);
    let reader = credential("dashboard", Role::Reader, &[], None);
    let sales = credential("web-shop", Role::Sales, &[], None);
    let replica = credential("replica-1", Role::Replica, &[], None);
    let server = Server::start(&[&admin, &reader, &sales, &replica]).await;
    server
        .commands()
        .add_stock(as_(&admin.token, add_stock("p", "store-a", 10)))
        .await
        .unwrap();

    // A reader sends a command; sales receive goods; a replica queries.
    let status = server
        .commands()
        .add_stock(as_(&reader.token, add_stock("p", "store-a", 1)))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    let status = server
        .commands()
        .reserve_stock(as_(&reader.token, reserve_stock("p", "store-a", 1)))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    let status = server
        .commands()
        .add_stock(as_(&sales.token, add_stock("p", "store-a", 1)))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    let status = server
        .queries()
        .get_stock(as_(&replica.token, get_stock("p", "store-a", 0)))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    assert_eq!(server.stock(&admin, "p", "store-a").await, (10, 0));

    // What each may do.
    server
        .queries()
        .get_stock(as_(&reader.token, get_stock("p", "store-a", 0)))
        .await
        .unwrap();
    server
        .commands()
        .reserve_stock(as_(&sales.token, reserve_stock("p", "store-a", 2)))
        .await
        .unwrap();
    let mut events = server
        .events()
        .subscribe(as_(&replica.token, pb::SubscribeRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(events.next().await.unwrap().is_ok());
    assert_eq!(server.stock(&admin, "p", "store-a").await, (10, 2));
    server.stop().await;
}

#[tokio::test]
async fn only_an_admin_for_every_store_operates_the_sinks() {
    let admin = credential("admin", Role::Admin, &[], None);
    let operator = credential("ops", Role::Operator, &[], None);
    let store_admin = credential("store-a-admin", Role::Admin, &["store-a"], None);
    let server = Server::start(&[&admin, &operator, &store_admin]).await;
    let mut deliveries = DeliveryServiceClient::new(server.command.clone());
    let status = deliveries
        .list_sinks(as_(&operator.token, pb::ListSinksRequest {}))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    let status = deliveries
        .rewind_sink(as_(
            &operator.token,
            pb::RewindSinkRequest {
                name: "erp".into(),
                position: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
    let status = deliveries
        .list_sinks(as_(&store_admin.token, pb::ListSinksRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("every store"), "{status:?}");
    let list = deliveries
        .list_sinks(as_(&admin.token, pb::ListSinksRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(list.sinks.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_store_scoped_credential_acts_and_sees_only_its_stores() {
    let admin = credential("admin", Role::Admin, &[], None);
    let pos_a = credential("pos-a", Role::Sales, &["store-a"], None);
    let ops_a = credential("ops-a", Role::Operator, &["store-a"], None);
    let server = Server::start(&[&admin, &pos_a, &ops_a]).await;
    for store in ["store-a", "store-b"] {
        server
            .commands()
            .add_stock(as_(&admin.token, add_stock("p", store, 10)))
            .await
            .unwrap();
    }

    // Reserving in store-b: refused naming the store, nothing stored.
    let status = server
        .commands()
        .reserve_stock(as_(&pos_a.token, reserve_stock("p", "store-b", 1)))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "STORE_NOT_PERMITTED");
    assert!(status.message().contains("store-b"), "{status:?}");
    // A cart with one line in store-b among lines in store-a.
    let cart = pb::ReserveStockRequest {
        lines: ["store-a", "store-b", "store-a"]
            .iter()
            .enumerate()
            .map(|(index, store)| pb::ReservationLine {
                product_id: format!("p{index}"),
                store_id: (*store).to_owned(),
                quantity: 1,
                ..Default::default()
            })
            .collect(),
        ..reserve_stock("", "", 0)
    };
    server
        .commands()
        .add_stock(as_(&admin.token, add_stock("p0", "store-a", 5)))
        .await
        .unwrap();
    let status = server
        .commands()
        .reserve_stock(as_(&pos_a.token, cart))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "STORE_NOT_PERMITTED");
    assert_eq!(server.stock(&admin, "p0", "store-a").await, (5, 0));
    assert_eq!(server.stock(&admin, "p", "store-b").await, (10, 0));

    // A delivery note with one foreign line: nothing of it is applied.
    let changes = pb::ApplyStockChangesRequest {
        changes: ["store-a", "store-b"]
            .iter()
            .map(|store| pb::StockChange {
                product_id: "p".to_owned(),
                store_id: (*store).to_owned(),
                change: Some(pb::stock_change::Change::Add(3)),
                ..Default::default()
            })
            .collect(),
        reason: "delivery".to_owned(),
        command_id: String::new(),
    };
    let status = server
        .commands()
        .apply_stock_changes(as_(&ops_a.token, changes))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "STORE_NOT_PERMITTED");
    assert_eq!(server.stock(&admin, "p", "store-a").await, (10, 0));

    // A reservation made in store-b cannot be committed, released or extended from store-a.
    let foreign = server
        .commands()
        .reserve_stock(as_(&admin.token, reserve_stock("p", "store-b", 2)))
        .await
        .unwrap()
        .into_inner()
        .reservation_id;
    let status = server
        .commands()
        .release_reservation(as_(
            &pos_a.token,
            pb::ReleaseReservationRequest {
                reservation_id: foreign.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    // Answered as an unknown id would be (tests/it/scopes.rs shows every such command).
    assert_refused(&status, Code::NotFound, "RESERVATION_NOT_FOUND");
    assert_eq!(server.stock(&admin, "p", "store-b").await, (10, 2));

    // Its own store works.
    server
        .commands()
        .reserve_stock(as_(&pos_a.token, reserve_stock("p", "store-a", 1)))
        .await
        .unwrap();

    // Queries: store-b refused; the product's stock shows store-a only, totals too.
    let status = server
        .queries()
        .get_stock(as_(&pos_a.token, get_stock("p", "store-b", 0)))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "STORE_NOT_PERMITTED");
    let status = server
        .queries()
        .get_reservation(as_(
            &pos_a.token,
            pb::GetReservationRequest {
                reservation_id: foreign,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_refused(&status, Code::NotFound, "RESERVATION_NOT_FOUND");
    let product = server
        .queries()
        .get_product_stock(as_(
            &pos_a.token,
            pb::GetProductStockRequest {
                product_id: "p".to_owned(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let stores: Vec<&str> = product.stores.iter().map(|s| s.store_id.as_str()).collect();
    assert_eq!(stores, ["store-a"]);
    let total = product.total.unwrap();
    assert_eq!((total.on_hand, total.reserved), (10, 1));

    // Subscriptions: only store-a's events, and a filter naming store-b is refused.
    let mut events = server
        .events()
        .subscribe(as_(&pos_a.token, pb::SubscribeRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(item) = events.next().await {
        match item.unwrap().message.unwrap() {
            pb::subscribe_response::Message::Event(event) => seen.push(event.store_id),
            pb::subscribe_response::Message::CaughtUp(_) => break,
            pb::subscribe_response::Message::Checkpoint(_) => {}
        }
    }
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|store| store == "store-a"), "{seen:?}");
    let status = server
        .events()
        .subscribe(as_(
            &pos_a.token,
            pb::SubscribeRequest {
                filter: Some(pb::SubscriptionFilter {
                    store_ids: vec!["store-a".to_owned(), "store-b".to_owned()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "STORE_NOT_PERMITTED");
    server.stop().await;
}

/// An event's kind as the export names it: `StockAdded` for `Kind::StockAdded(..)`.
fn kind_name(event: &pb::InventoryEvent) -> String {
    let kind = format!("{:?}", event.kind.as_ref().expect("an event has a kind"));
    kind.split('(').next().unwrap().to_owned()
}

/// Every event names who caused it: the credential's name for its commands' events, `system`
/// for an expiry and an alert; `GetHistory`, `Subscribe` and `export` all show the same.
#[tokio::test]
async fn every_event_names_the_credential_that_caused_it() {
    let admin = credential("back-office", Role::Admin, &[], None);
    let pos_a = credential("pos-a", Role::Sales, &["store-a"], None);
    let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    let server = Server::start_with_clock(&[&admin, &pos_a], Arc::new(clock.clone())).await;
    let policy = pb::SetItemPolicyRequest {
        product_id: "p".into(),
        store_id: "store-a".into(),
        low_stock_threshold: Some(5),
        ..Default::default()
    };
    server
        .commands()
        .set_item_policy(as_(&admin.token, policy))
        .await
        .unwrap();
    server
        .commands()
        .add_stock(as_(&admin.token, add_stock("p", "store-a", 10)))
        .await
        .unwrap();
    // 6 of 10 reserved: 4 available, at or below the threshold of 5, so STOCK_LOW is raised.
    let mut reserve = reserve_stock("p", "store-a", 6);
    reserve.ttl = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    let reserved = server
        .commands()
        .reserve_stock(as_(&pos_a.token, reserve))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reserved.lines[0].alerts, [pb::EventType::StockLow as i32]);
    let mut stream = server
        .events()
        .subscribe(as_(
            &admin.token,
            pb::SubscribeRequest {
                from_position: 0,
                filter: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    clock.advance_millis(61_000);
    let mut subscribed = Vec::new();
    while subscribed
        .last()
        .is_none_or(|(_, kind, _): &(u64, String, String)| kind != "ReservationExpired")
    {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the expiry arrives")
            .unwrap()
            .unwrap();
        if let Some(pb::subscribe_response::Message::Event(event)) = message.message {
            subscribed.push((event.position, kind_name(&event), event.actor.clone()));
        }
    }
    drop(stream);
    for (position, kind, actor) in &subscribed {
        let expected = match kind.as_str() {
            "ItemPolicyChanged" | "StockAdded" => "back-office",
            "StockReserved" => "pos-a",
            "StockLow" | "OutOfStock" | "BackInStock" | "ReservationExpired" => "system",
            other => panic!("unexpected {other} at {position}"),
        };
        assert_eq!(actor, expected, "{kind} at {position}");
    }
    let kinds: Vec<&str> = subscribed
        .iter()
        .map(|(_, kind, _)| kind.as_str())
        .collect();
    for kind in [
        "ItemPolicyChanged",
        "StockAdded",
        "StockReserved",
        "StockLow",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }

    let history = server.history(&admin, "p", "store-a").await;
    let historic: Vec<(u64, String, String)> = history
        .iter()
        .map(|event| (event.position, kind_name(event), event.actor.clone()))
        .collect();
    assert_eq!(historic, subscribed);

    let data = server.stop_keeping_data().await;
    let mut exported = Vec::new();
    let log = LogConfig::Embedded {
        data_dir: data.path().to_owned(),
    };
    inventory::tools::export(&log, LogPosition::START, &mut exported)
        .await
        .unwrap();
    let exported: Vec<(u64, String, String)> = String::from_utf8(exported)
        .unwrap()
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                event["position"].as_u64().unwrap(),
                event["type"].as_str().unwrap().to_owned(),
                event["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(exported, subscribed);
    // The log holds the credentials' names and nothing else of them.
    let stored = std::fs::read_dir(data.path())
        .unwrap()
        .flat_map(|entry| std::fs::read(entry.unwrap().path()).unwrap_or_default())
        .collect::<Vec<u8>>();
    assert!(stored.windows(5).any(|window| window == b"pos-a"));
    for token in [&admin.token, &pos_a.token] {
        let token = token.as_bytes();
        assert!(!stored.windows(token.len()).any(|window| window == token));
    }
}

#[tokio::test]
async fn one_credential_at_its_limit_does_not_hold_up_another() {
    let admin = credential("admin", Role::Admin, &[], None);
    let flooding = credential("flooding", Role::Reader, &[], Some(2));
    let server = Server::start(&[&admin, &flooding]).await;
    server
        .commands()
        .add_stock(as_(&admin.token, add_stock("p", "store-a", 1)))
        .await
        .unwrap();
    // Two queries that wait for a position the log will not reach soon: both slots taken.
    let waiting = |token: String, query: Channel| async move {
        let mut request = as_(&token, get_stock("p", "store-a", 1_000_000));
        request.set_timeout(Duration::from_secs(3));
        QueryServiceClient::new(query).get_stock(request).await
    };
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(waiting(flooding.token.clone(), server.query.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = server
        .queries()
        .get_stock(as_(&flooding.token, get_stock("p", "store-a", 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Another credential is answered at once.
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        server
            .queries()
            .get_stock(as_(&admin.token, get_stock("p", "store-a", 0))),
    )
    .await
    .expect("answered while the other credential is at its limit");
    answer.unwrap();
    for waiting in held {
        let status = waiting.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    // Its slots are back.
    server
        .queries()
        .get_stock(as_(&flooding.token, get_stock("p", "store-a", 0)))
        .await
        .unwrap();
    server.stop().await;
}

// --- The binary -------------------------------------------------------------------------

use support::inventory;

/// `inventory token new`'s token and its TOML block.
fn token_new(arguments: &[&str]) -> (String, String) {
    let mut all = vec!["token", "new"];
    all.extend_from_slice(arguments);
    let output = inventory(&all);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (token, block) = stdout.split_once('\n').unwrap();
    (token.to_owned(), block.to_owned())
}

#[tokio::test]
async fn the_binary_takes_tokens_from_the_config_file_and_never_logs_one() {
    use tokio::io::AsyncBufReadExt;
    let directory = tempfile::tempdir().unwrap();
    let (admin, admin_block) = token_new(&["--name", "ops", "--role", "admin"]);
    let (pos, pos_block) =
        token_new(&["--name", "pos-a", "--role", "sales", "--stores", "store-a"]);
    assert!(pos_block.contains("stores = [\"store-a\"]"), "{pos_block}");
    // The limit keys, at the role's defaults, ready to change (the server takes them below).
    for key in [
        "requests_per_second = 2000",
        "lines_per_second = 20000",
        "max_subscriptions = 16",
    ] {
        assert!(pos_block.contains(key), "{key} in {pos_block}");
    }
    assert!(
        !pos_block.contains(&pos),
        "the block holds the digest, not the token"
    );
    let (replica, replica_block) = token_new(&["--name", "replica-1", "--role", "replica"]);
    let config = directory.path().join("inventory.toml");
    std::fs::write(
        &config,
        format!(
            "log = \"{}\"\ncommand_addr = \"127.0.0.1:0\"\nquery_addr = \"127.0.0.1:0\"\n\
             metrics_addr = \"off\"\n{admin_block}{pos_block}{replica_block}",
            directory.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_inventory"))
        .args(["--config", config.to_str().unwrap()])
        .env("INVENTORY_LOG_LEVEL", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addresses = std::collections::HashMap::new();
    while addresses.len() < 2 {
        let line = lines.next_line().await.unwrap().expect("still running");
        if let Some((role, address)) = line.split_once(" server listening on ") {
            addresses.insert(role.to_owned(), address.parse::<SocketAddr>().unwrap());
        }
    }
    let mut stderr = child.stderr.take().unwrap();
    let logged = tokio::spawn(async move {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text)
            .await
            .unwrap();
        text
    });
    let command = support::channel(addresses["command"]).await;
    let query = support::channel(addresses["query"]).await;
    CommandServiceClient::new(command.clone())
        .add_stock(as_(&admin, add_stock("p", "store-b", 3)))
        .await
        .unwrap();
    let status = CommandServiceClient::new(command.clone())
        .reserve_stock(as_(&pos, reserve_stock("p", "store-b", 1)))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "STORE_NOT_PERMITTED");
    let status = QueryServiceClient::new(query.clone())
        .get_stock(as_(&format!("{pos}x"), get_stock("p", "store-a", 0)))
        .await
        .unwrap_err();
    assert_refused(&status, Code::Unauthenticated, "TOKEN_INVALID");

    // A follower with the replica token copies the log.
    let follower_data = directory.path().join("replica");
    let upstream = format!("http://{}", addresses["command"]);
    let follower = support::Process::start_with_env(
        &[
            "query",
            "--query-addr",
            "127.0.0.1:0",
            "--follow",
            &upstream,
            "--data",
            follower_data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[("INVENTORY_UPSTREAM_TOKEN", &replica)],
        &["query"],
    )
    .await;
    let replica_query = support::channel(follower.address("query")).await;
    let started = std::time::Instant::now();
    loop {
        let answer = QueryServiceClient::new(replica_query.clone())
            .get_stock(as_(&admin, get_stock("p", "store-b", 1)))
            .await;
        if answer.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the follower did not copy the log: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(follower);

    // Stop the server (SIGTERM) and read everything it logged at debug level.
    drop((command, query));
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the server stops on SIGTERM")
        .unwrap();
    let logged = logged.await.unwrap();
    assert!(logged.contains("DEBUG"), "debug logging was on");
    for (name, token) in [("admin", &admin), ("pos", &pos), ("replica", &replica)] {
        assert!(
            !logged.contains(token.as_str()),
            "the {name} token was logged"
        );
        assert!(
            !logged.contains(&token[4..20]),
            "part of the {name} token was logged"
        );
    }
}

#[test]
fn bad_token_entries_are_refused_naming_the_key() {
    let directory = tempfile::tempdir().unwrap();
    let digest = "ab".repeat(32);
    for (entry, key) in [
        (
            format!("name = \"a\"\nsha256 = \"{digest}\"\nrole = \"owner\"\n"),
            "auth.tokens[0].role",
        ),
        (
            "name = \"a\"\nsha256 = \"not-hex\"\nrole = \"admin\"\n".to_owned(),
            "auth.tokens[0].sha256",
        ),
        (
            format!("name = \"a\"\nsha256 = \"{digest}\"\nrole = \"replica\"\nstores = [\"s\"]\n"),
            "auth.tokens[0].stores",
        ),
        (
            format!("name = \"a\"\nsha256 = \"{digest}\"\nrole = \"admin\"\nscope = \"all\"\n"),
            "scope",
        ),
        (
            format!("name = \"a\"\nsha256 = \"{digest}\"\nrole = \"admin\"\nmax_in_flight = 0\n"),
            "auth.tokens[0].max_in_flight",
        ),
        // Names events record for the server itself and for a server without authentication.
        (
            format!("name = \"system\"\nsha256 = \"{digest}\"\nrole = \"admin\"\n"),
            "auth.tokens[0].name",
        ),
        (
            format!("name = \"anonymous\"\nsha256 = \"{digest}\"\nrole = \"reader\"\n"),
            "auth.tokens[0].name",
        ),
        // The same in another case or with space around it, a control character, a JWT's name.
        (
            format!("name = \"System \"\nsha256 = \"{digest}\"\nrole = \"admin\"\n"),
            "auth.tokens[0].name",
        ),
        (
            format!("name = \"ANONYMOUS\"\nsha256 = \"{digest}\"\nrole = \"admin\"\n"),
            "auth.tokens[0].name",
        ),
        (
            format!("name = \"pos\\u001b[2J\"\nsha256 = \"{digest}\"\nrole = \"admin\"\n"),
            "auth.tokens[0].name",
        ),
        (
            format!("name = \"JWT:pos-b\"\nsha256 = \"{digest}\"\nrole = \"sales\"\n"),
            "auth.tokens[0].name",
        ),
    ] {
        let config = directory.path().join("bad.toml");
        std::fs::write(&config, format!("[[auth.tokens]]\n{entry}")).unwrap();
        let output = inventory(&["--config", config.to_str().unwrap()]);
        assert!(!output.status.success(), "{entry}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{entry}: {stderr}");
    }
    let bad = inventory(&["token", "new", "--name", "x", "--role", "owner"]);
    assert!(!bad.status.success());
    let reserved = inventory(&["token", "new", "--name", "system", "--role", "admin"]);
    assert!(!reserved.status.success());
    assert!(String::from_utf8_lossy(&reserved.stderr).contains("--name \"system\""));
    for name in ["System", "pos\nb", "jwt:erp"] {
        let refused = inventory(&["token", "new", "--name", name, "--role", "admin"]);
        assert!(!refused.status.success(), "{name:?}");
    }
}

#[tokio::test]
async fn a_server_beyond_loopback_needs_tls_and_auth_or_insecure() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    let data = data.to_str().unwrap();
    let exposed = [
        "serve",
        "--log",
        data,
        "--command-addr",
        "0.0.0.0:0",
        "--query-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "off",
    ];
    let refused = inventory(&exposed);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0") && stderr.contains("--insecure"),
        "{stderr}"
    );
    assert!(!directory.path().join("data").exists(), "nothing started");

    // A query server alone too.
    let refused = inventory(&[
        "query",
        "--follow",
        "http://127.0.0.1:1",
        "--query-addr",
        "0.0.0.0:0",
        "--metrics-addr",
        "off",
    ]);
    assert!(!refused.status.success());

    // With --insecure it starts, and says so.
    let mut arguments = exposed.to_vec();
    arguments.push("--insecure");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_inventory"))
        .args(&arguments)
        .env("INVENTORY_LOG_LEVEL", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut listening = 0;
    while listening < 2 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("it starts")
            .unwrap()
            .expect("still running");
        if line.contains(" server listening on ") {
            listening += 1;
        }
    }
    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--insecure: serving beyond loopback"),
        "{stderr}"
    );
}
