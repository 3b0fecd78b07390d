//! Several command servers and query servers on one PostgreSQL log. These tests run when
//! `INVENTORY_TEST_POSTGRES_URL` is set (CI sets it) and say so when they are skipped.
//!
//! Over 600 lines: every scenario shares the fresh-schema database set-up and the helpers that
//! block and inspect PostgreSQL sessions.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::Code;

use inventory::app::ShutdownSignal;
use inventory::app::command::CommandState;
use inventory::app::projection::ReadModel;
use inventory::domain::{Inventory, LogPosition, StreamKey, Timestamp};
use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::query_service_client::QueryServiceClient;
use inventory::log::{EventLog, PostgresLog};
use inventory::server::{LogConfig, QuerySource};
use support::{Running, add_stock, get_stock, level, reserve_stock};

struct Database {
    url: String,
    schema: String,
}

impl Database {
    fn new() -> Option<Database> {
        support::postgres_url().map(|url| Database {
            url,
            schema: support::fresh_schema(),
        })
    }

    fn log(&self) -> LogConfig {
        LogConfig::Postgres {
            url: self.url.clone(),
            schema: self.schema.clone(),
        }
    }

    async fn query_server(&self) -> Running {
        Running::query_from(QuerySource::Postgres {
            url: self.url.clone(),
            schema: self.schema.clone(),
        })
        .await
    }

    async fn drop(self) {
        support::drop_schema(&self.url, &self.schema).await;
    }
}

async fn commands(
    address: std::net::SocketAddr,
) -> CommandServiceClient<tonic::transport::Channel> {
    CommandServiceClient::new(support::channel(address).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_command_servers_never_oversell_and_never_fail_a_command_a_retry_resolves() {
    let Some(database) = Database::new() else {
        return;
    };
    let first = Running::command_on(database.log()).await;
    let second = Running::command_on(database.log()).await;
    commands(first.address)
        .await
        .add_stock(add_stock("hot", "s", 100))
        .await
        .unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..64 {
        let address = if client % 2 == 0 {
            first.address
        } else {
            second.address
        };
        let accepted = accepted.clone();
        let mut commands = commands(address).await;
        clients.push(tokio::spawn(async move {
            for _ in 0..3 {
                match commands.reserve_stock(reserve_stock("hot", "s", 1)).await {
                    Ok(_) => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(status) => {
                        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                        assert!(
                            status.message().contains("insufficient stock"),
                            "{status:?}"
                        );
                    }
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        100,
        "exactly the stock, through both servers"
    );

    // A query server reading the database directly sees the same.
    let query = database.query_server().await;
    let mut queries = QueryServiceClient::new(support::channel(query.address).await);
    let item = queries
        .get_stock(get_stock("hot", "s", 101))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(level(item.stock), (100, 100, 0));
    // Its 100 reservations after the delivery, and OUT_OF_STOCK after the last.
    assert_eq!(item.version, 102);

    // Idempotency is shared: a retry sent to the other server gets the original answer.
    let mut request = add_stock("other", "s", 5);
    request.command_id = "shared-retry".into();
    let original = commands(first.address)
        .await
        .add_stock(request.clone())
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    let retry = commands(second.address)
        .await
        .add_stock(request)
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.position, original.position);

    query.stop().await;
    first.stop().await;
    second.stop().await;
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_server_restarted_mid_load_loses_nothing_and_oversells_nothing() {
    let Some(database) = Database::new() else {
        return;
    };
    let first = Running::command_on(database.log()).await;
    let second = Running::command_on(database.log()).await;
    let mut setup = commands(first.address).await;
    for item in 0..4 {
        setup
            .add_stock(add_stock(&format!("i{item}"), "s", 50))
            .await
            .unwrap();
    }
    let accepted = Arc::new(AtomicUsize::new(0));
    // What the server that is restarted acknowledged before it stopped.
    let accepted_by_second = Arc::new(AtomicUsize::new(0));
    let load = |address, counters: Vec<Arc<AtomicUsize>>, seed: usize| async move {
        let mut commands = commands(address).await;
        for i in 0..40 {
            let item = format!("i{}", (seed + i) % 4);
            match commands.reserve_stock(reserve_stock(&item, "s", 1)).await {
                Ok(_) => {
                    for counter in &counters {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(status) if status.code() == Code::FailedPrecondition => {}
                // The server went away under this client: stop, like a client would fail over.
                Err(_) => return,
            }
        }
    };
    let mut clients = Vec::new();
    for client in 0..8 {
        clients.push(tokio::spawn(load(
            first.address,
            vec![accepted.clone()],
            client,
        )));
        clients.push(tokio::spawn(load(
            second.address,
            vec![accepted.clone(), accepted_by_second.clone()],
            client + 1,
        )));
    }
    // Mid-load: the second server is stopped once it has acknowledged some of its clients'
    // commands, while those clients still have most of their 320 commands to send.
    support::wait_until(
        Duration::from_secs(30),
        "the second command server to acknowledge 20 reservations",
        async || accepted_by_second.load(Ordering::SeqCst) >= 20,
    )
    .await;
    second.stop().await;
    let restarted = Running::command_on(database.log()).await;
    for client in 0..4 {
        clients.push(tokio::spawn(load(
            restarted.address,
            vec![accepted.clone()],
            client,
        )));
    }
    for client in clients {
        client.await.unwrap();
    }
    let accepted = accepted.load(Ordering::SeqCst);
    let query = database.query_server().await;
    let mut queries = QueryServiceClient::new(support::channel(query.address).await);
    let head = PostgresLog::connect(&database.url, &database.schema)
        .await
        .unwrap()
        .head();
    let mut reserved = 0;
    let mut sold_out = 0;
    for item in 0..4 {
        let item = queries
            .get_stock(get_stock(&format!("i{item}"), "s", head.0))
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        let (on_hand, item_reserved, available) = level(item.stock);
        assert_eq!(on_hand, 50);
        assert!(available >= 0);
        reserved += item_reserved as usize;
        sold_out += usize::from(available == 0);
    }
    assert_eq!(
        reserved, accepted,
        "every acknowledged reservation is stored, nothing else"
    );
    // An item reserved down to nothing has its OUT_OF_STOCK alert too.
    assert_eq!(head, LogPosition(4 + (accepted + sold_out) as u64));
    query.stop().await;
    first.stop().await;
    restarted.stop().await;
    database.drop().await;
}

/// A writer that holds its transaction open (here by hand, in SQL, as a slow node would):
/// readers must not move past it, and the next append must wait for it and then continue the
/// positions — never leave a hole that a reader could skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_skips_an_append_that_commits_late() {
    let Some(database) = Database::new() else {
        return;
    };
    let log = PostgresLog::connect(&database.url, &database.schema)
        .await
        .unwrap();
    let mut inventory = Inventory::new();
    let first = support::added_events(&mut inventory, LogPosition(0), 3, 2);
    log.append(first).await.unwrap();

    // A second node, connected before the slow writer starts (connecting creates the schema
    // if missing, which waits for a transaction holding the head row). Its connections carry a
    // name of their own, so the test can see them wait.
    let fast_application = format!("fast_{}", database.schema);
    let fast_log = PostgresLog::connect(
        &support::with_application_name(&database.url, &fast_application),
        &database.schema,
    )
    .await
    .unwrap();

    // The slow writer: locks the head, writes position 4, and waits before committing.
    let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let slow_writer = backend_pid(&client).await;
    let schema = format!("\"{}\"", database.schema);
    let slow_event = support::added_events(&mut inventory, LogPosition(3), 1, 2).remove(0);
    let payload = inventory::log::codec::encode_event(&slow_event);
    client.batch_execute("BEGIN").await.unwrap();
    client
        .query_one(
            &format!("SELECT position FROM {schema}.head FOR UPDATE"),
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            &format!(
                "INSERT INTO {schema}.events (position, product_id, store_id, version, payload) \
                 VALUES (4, $1, $2, $3, $4)"
            ),
            &[
                &slow_event.stream.product_id.as_str(),
                &slow_event.stream.store_id.as_str(),
                &(slow_event.version.0 as i64),
                &payload,
            ],
        )
        .await
        .unwrap();
    client
        .execute(&format!("UPDATE {schema}.head SET position = 4"), &[])
        .await
        .unwrap();

    // Meanwhile a fast writer that knows head 4 would follow (as if it had seen the slow
    // writer's decision) must wait on the lock, not slip in.
    let fast_events = support::added_events(&mut inventory, LogPosition(4), 2, 2);
    let fast = tokio::spawn(async move { fast_log.append(fast_events).await });
    wait_until_blocked_by(
        &database.url,
        &fast_application,
        slow_writer,
        "the fast writer",
    )
    .await;
    assert!(
        !fast.is_finished(),
        "the fast writer is still waiting for the slow one"
    );
    let visible = log.read_all(LogPosition(3), 100).await.unwrap();
    assert!(
        visible.is_empty(),
        "nothing past 3 is visible before the slow commit"
    );

    client.batch_execute("COMMIT").await.unwrap();
    fast.await.unwrap().unwrap();
    let after = log.read_all(LogPosition(3), 100).await.unwrap();
    let positions: Vec<u64> = after.iter().map(|event| event.position.0).collect();
    assert_eq!(positions, [4, 5, 6]);
    database.drop().await;
}

#[tokio::test]
async fn reservations_expire_once_although_every_server_sweeps() {
    let Some(database) = Database::new() else {
        return;
    };
    let first = Running::command_on(database.log()).await;
    let second = Running::command_on(database.log()).await;
    let mut commands = commands(first.address).await;
    commands.add_stock(add_stock("p", "s", 10)).await.unwrap();
    let mut request = reserve_stock("p", "s", 3);
    request.ttl = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    commands.reserve_stock(request).await.unwrap();
    // Both servers sweep for due reservations; the first expiry is position 3.
    let query = database.query_server().await;
    let mut queries = QueryServiceClient::new(support::channel(query.address).await);
    let mut request = tonic::Request::new(get_stock("p", "s", 3));
    request.set_timeout(Duration::from_secs(10));
    let item = queries
        .get_stock(request)
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(level(item.stock), (10, 0, 10));
    // Every batch a server appends starts with a sweep for due reservations, decided under the
    // log's lock after catching up with the log. So once a command through each server has
    // been stored, each has swept after the reservation was due: a second expiry, from either,
    // would be in the log by now, before that command's event.
    let mut second_commands = CommandServiceClient::new(support::channel(second.address).await);
    commands.add_stock(add_stock("p", "s", 1)).await.unwrap();
    let last_position = second_commands
        .add_stock(add_stock("p", "s", 1))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
        .position;
    let history = queries
        .get_history(pb::GetHistoryRequest {
            product_id: "p".into(),
            store_id: "s".into(),
            page_size: 100,
            page_token: String::new(),
            min_position: Some(last_position),
        })
        .await
        .unwrap()
        .into_inner();
    let expiries = history
        .events
        .iter()
        .filter(|event| {
            matches!(
                event.kind,
                Some(pb::inventory_event::Kind::ReservationExpired(_))
            )
        })
        .count();
    assert_eq!(expiries, 1, "one expiry event, not one per server");
    assert_eq!(
        history.events.len(),
        5,
        "added, reserved, expired, added, added: {:?}",
        history.events
    );
    query.stop().await;
    first.stop().await;
    second.stop().await;
    database.drop().await;
}

/// What the application does with a log it knows only as `dyn EventLog`, on PostgreSQL: the
/// command side loads its state from it and the read model follows it, and both end up with
/// exactly the state the appended events fold to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_side_and_the_read_model_load_from_postgres_as_a_log_trait_object() {
    let Some(database) = Database::new() else {
        return;
    };
    let log: Arc<dyn EventLog> = Arc::new(
        PostgresLog::connect(&database.url, &database.schema)
            .await
            .unwrap(),
    );
    let mut expected = Inventory::new();
    let events = support::added_events(&mut expected, LogPosition(0), 30, 3);
    let streams: Vec<StreamKey> = events[..3]
        .iter()
        .map(|event| event.stream.clone())
        .collect();
    log.append(events[..10].to_vec()).await.unwrap();
    log.append(events[10..].to_vec()).await.unwrap();
    assert_eq!(log.head(), LogPosition(30));

    let state = CommandState::load(&*log, Timestamp(1_000)).await.unwrap();
    assert_eq!(state.head(), LogPosition(30));
    for stream in &streams {
        assert_eq!(
            state.inventory().item(stream),
            expected.item(stream),
            "command side, {stream:?}"
        );
    }

    let model = Arc::new(ReadModel::new());
    let (signal, shutdown) = ShutdownSignal::new();
    let follower = tokio::spawn(model.clone().follow(log.clone(), shutdown));
    assert!(
        model
            .wait_for(LogPosition(30), Duration::from_secs(10))
            .await,
        "the read model reaches the log's head"
    );
    for stream in &streams {
        let item = expected.item(stream).unwrap();
        let (level, version, _) = model.stock(stream).expect("the read model has the item");
        assert_eq!(
            (level, version),
            (item.level(), item.version()),
            "read model, {stream:?}"
        );
    }
    signal.trigger();
    follower.await.unwrap().unwrap();
    database.drop().await;
}

/// Both servers writing flat out: every command succeeds. Each server decides under the log's
/// append lock, so neither makes the other decide a batch again and again (before that, the
/// benchmark saw batches fail after 32 lost races).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_busy_command_servers_never_starve_each_other() {
    let Some(database) = Database::new() else {
        return;
    };
    let first = Running::command_on(database.log()).await;
    let second = Running::command_on(database.log()).await;
    let mut clients = Vec::new();
    for client in 0..32 {
        let address = if client % 2 == 0 {
            first.address
        } else {
            second.address
        };
        let mut commands = commands(address).await;
        clients.push(tokio::spawn(async move {
            for i in 0..40 {
                commands
                    .add_stock(add_stock(&format!("i{}", (client + i) % 7), "s", 1))
                    .await
                    .unwrap_or_else(|status| panic!("client {client}, command {i}: {status:?}"));
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let head = PostgresLog::connect(&database.url, &database.schema)
        .await
        .unwrap()
        .head();
    assert_eq!(head, LogPosition(32 * 40));
    first.stop().await;
    second.stop().await;
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_caller_gave_up_before_it_was_decided_is_not_executed() {
    let Some(database) = Database::new() else {
        return;
    };
    // The server's connections carry a name of their own, so the test can see them wait.
    let application = format!("inventory_{}", database.schema);
    let server = Running::command_on(LogConfig::Postgres {
        url: support::with_application_name(&database.url, &application),
        schema: database.schema.clone(),
    })
    .await;
    let channel = support::channel(server.address).await;
    let mut commands = CommandServiceClient::new(channel.clone());
    commands.add_stock(add_stock("p", "s", 1)).await.unwrap();

    // Another writer holds the log's append lock: the server's next batch waits for it.
    let (admin, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let other_writer = backend_pid(&admin).await;
    let schema = format!("\"{}\"", database.schema);
    admin.batch_execute("BEGIN").await.unwrap();
    admin
        .query_one(
            &format!("SELECT position FROM {schema}.head FOR UPDATE"),
            &[],
        )
        .await
        .unwrap();
    let command = |command_id: &str| {
        let mut request = tonic::Request::new(pb::AddStockRequest {
            command_id: command_id.to_owned(),
            ..add_stock("p", "s", 1)
        });
        request.set_timeout(Duration::from_secs(10));
        request
    };
    let mut waiting = CommandServiceClient::new(channel.clone());
    let first = tokio::spawn(async move { waiting.add_stock(command("waits")).await });
    wait_until_blocked_by(
        &database.url,
        &application,
        other_writer,
        "the server's append",
    )
    .await;
    // Queued behind it, a command whose client gives up after 300 ms.
    let mut hasty = tonic::Request::new(pb::AddStockRequest {
        command_id: "gives-up".to_owned(),
        ..add_stock("p", "s", 1)
    });
    hasty.set_timeout(Duration::from_millis(300));
    let gave_up = commands.add_stock(hasty).await.unwrap_err();
    assert!(
        matches!(gave_up.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{gave_up:?}"
    );
    admin.batch_execute("ROLLBACK").await.unwrap();
    first
        .await
        .unwrap()
        .expect("the waiting command is executed");

    // The abandoned command was never decided: not in the log. Sent again, it runs.
    let log = PostgresLog::connect(&database.url, &database.schema)
        .await
        .unwrap();
    let stored: Vec<String> = log
        .read_all(LogPosition(0), 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|event| event.command_id.map(|id| id.to_string()))
        .collect();
    assert_eq!(stored, ["waits"]);
    let retried = commands
        .add_stock(command("gives-up"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !retried.result.unwrap().replayed,
        "executed now, not before"
    );
    server.stop().await;
    database.drop().await;
}

/// The PostgreSQL backend process id of `client`'s connection.
async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until a connection named `application` waits for a lock held by the backend
/// `holder`: PostgreSQL's own view of who blocks whom, not a guess from elapsed time.
async fn wait_until_blocked_by(url: &str, application: &str, holder: i32, waiter: &str) {
    // A connection of its own: inside a transaction (as the holder is) PostgreSQL would answer
    // every poll from the snapshot of pg_stat_activity taken at the first.
    let (observer, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    support::wait_until(
        Duration::from_secs(10),
        &format!("{waiter} ({application}) to wait for the lock held by backend {holder}"),
        async || {
            let blocked: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = $1 AND $2 = ANY(pg_blocking_pids(pid))",
                    &[&application, &holder],
                )
                .await
                .unwrap()
                .get(0);
            blocked > 0
        },
    )
    .await;
}

/// Two credentials may each use the same `command_id` (issue 28, finding 4): in memory and in
/// the shared log's unique index alike, a command id is unique per sender. A retry by the same
/// sender is still answered as the original, and once past the idempotency window the log's
/// index still refuses the same sender's id, and only its.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_credentials_may_use_the_same_command_id_in_a_shared_log() {
    use inventory::app::access::{Principal, Role, StoreScope};
    use inventory::app::command::{CommandError, CommandRequest};
    use inventory::app::{Clock, CommandSide, ManualClock};
    use inventory::domain::{AddStock, CommandId, ProductId, Quantity, Reason, StoreId};
    let Some(database) = Database::new() else {
        return;
    };
    let log: Arc<dyn EventLog> = Arc::new(
        PostgresLog::connect(&database.url, &database.schema)
            .await
            .unwrap(),
    );
    let principal = |name: &str, store: &str| Principal {
        name: name.into(),
        role: Role::Operator,
        stores: StoreScope::of([StoreId::parse(store).unwrap()]),
    };
    let (pos_a, pos_b, pos_c) = (
        principal("pos-a", "store-a"),
        principal("pos-b", "store-b"),
        principal("pos-c", "store-c"),
    );
    let add = |store: &str, quantity: u64| CommandRequest {
        command: AddStock {
            stream: StreamKey::new(
                ProductId::parse("p").unwrap(),
                StoreId::parse(store).unwrap(),
            ),
            quantity: Quantity::new(quantity).unwrap(),
            reason: Reason::default(),
        },
        command_id: Some(CommandId::parse("order-777").unwrap()),
        expected_version: None,
    };
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000_000)));
    let side = CommandSide::start(
        CommandState::load(&*log, clock.now()).await.unwrap(),
        log.clone(),
        clock.clone(),
    );
    let first = side
        .handle
        .execute_as(add("store-a", 5), &pos_a)
        .await
        .unwrap();
    let other = side
        .handle
        .execute_as(add("store-b", 7), &pos_b)
        .await
        .unwrap();
    assert!(!first.replayed && !other.replayed);
    assert_eq!((first.stock.on_hand(), other.stock.on_hand()), (5, 7));
    let retry = side
        .handle
        .execute_as(add("store-a", 5), &pos_a)
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.position, first.position);
    drop(side.handle);
    side.writer.await.unwrap();

    // A second server, two days later: the ids left memory; the log's index still knows them.
    clock.advance_millis(2 * 24 * 3600 * 1000);
    let side = CommandSide::start(
        CommandState::load(&*log, clock.now()).await.unwrap(),
        log.clone(),
        clock.clone(),
    );
    let reused = side.handle.execute_as(add("store-a", 1), &pos_a).await;
    assert!(
        matches!(reused, Err(CommandError::CommandIdReused { .. })),
        "{reused:?}"
    );
    let third = side
        .handle
        .execute_as(add("store-c", 3), &pos_c)
        .await
        .unwrap();
    assert_eq!(third.stock.on_hand(), 3);
    drop(side.handle);
    side.writer.await.unwrap();
    database.drop().await;
}
