//! PostgreSQL goes away under load and comes back. The connection is cut by a TCP proxy the
//! test controls (so other tests sharing the database are not disturbed). During the outage
//! commands fail fast once the circuit breaker opens and the command service reports
//! NOT_SERVING; afterwards commands succeed without restarting anything, every acknowledged
//! command is in the log, and the log holds nothing that was not sent.

use crate::support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tonic::Code;
use tonic_types::StatusExt;

use inventory::domain::LogPosition;
use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::log::{EventLog, PostgresLog};
use inventory::server::LogConfig;
use support::proxy::Proxy;
use support::{Running, add_stock};

/// The PostgreSQL side of the shared proxy.
trait PostgresProxy: Sized {
    async fn in_front_of(url: &str) -> Self;
    fn url(&self, url: &str) -> String;
}

impl PostgresProxy for Proxy {
    /// A proxy in front of the database server that `url` names (its host and port).
    async fn in_front_of(url: &str) -> Proxy {
        let direct: tokio_postgres::Config = url.parse().unwrap();
        let host = match direct.get_hosts() {
            [tokio_postgres::config::Host::Tcp(host)] => host.clone(),
            hosts => panic!(
                "the proxy tests need INVENTORY_TEST_POSTGRES_URL to name one TCP host, not {hosts:?}"
            ),
        };
        let port = direct.get_ports().first().copied().unwrap_or(5432);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap()
            .next()
            .unwrap_or_else(|| panic!("{host}:{port} resolves to no address"));
        Proxy::start(upstream).await
    }

    /// `url` through the proxy: the same user, password, database and parameters, with only
    /// the host and port replaced by the proxy's. (A URL naming `test` and `postgres` here
    /// once made a run against another database write to one and check the other.)
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or_else(|| {
            panic!(
                "the proxy tests need INVENTORY_TEST_POSTGRES_URL as a URL \
                 (postgres://user@host:port/database), not {url:?}"
            )
        });
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(authority_end);
        // The host cannot hold an '@', a user or password can (percent-encoded or not).
        let user_and_password = authority.rfind('@').map_or("", |at| &authority[..=at]);
        let proxied = format!(
            "{scheme}://{user_and_password}{}{path_and_query}",
            self.address
        );

        // What the server sees must not change, only where the connection goes.
        let direct: tokio_postgres::Config = url.parse().unwrap();
        let through: tokio_postgres::Config = proxied.parse().unwrap();
        assert_eq!(
            through.get_hosts(),
            [tokio_postgres::config::Host::Tcp(
                self.address.ip().to_string()
            )],
            "the proxied URL {proxied:?} names one host, the proxy's (a host in the query \
             parameters would bypass it)"
        );
        assert_eq!(through.get_ports(), [self.address.port()], "{proxied:?}");
        assert_eq!(through.get_user(), direct.get_user(), "{proxied:?}");
        assert_eq!(through.get_password(), direct.get_password(), "{proxied:?}");
        assert_eq!(through.get_dbname(), direct.get_dbname(), "{proxied:?}");
        assert_eq!(through.get_options(), direct.get_options(), "{proxied:?}");
        assert_eq!(
            through.get_application_name(),
            direct.get_application_name(),
            "{proxied:?}"
        );
        proxied
    }
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_fails_fast_recovers_by_itself_and_loses_nothing() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema();
    let proxy = Proxy::in_front_of(&url).await;
    let server = Running::command_on(LogConfig::Postgres {
        url: proxy.url(&url),
        schema: schema.clone(),
    })
    .await;

    // Load: clients that keep sending commands with unique ids through the outage.
    let load = Load::start(server.address, "load").await;
    load.wait_for_acknowledged(50).await;

    proxy.cut();
    // The breaker opens: commands are refused without touching the storage.
    let mut probe = CommandServiceClient::new(support::channel(server.address).await);
    let mut opened = false;
    for attempt in 0..300 {
        let mut request = tonic::Request::new(add_stock("probe", "s", 1));
        request.set_timeout(Duration::from_secs(20));
        match probe.add_stock(request).await {
            Err(status) if reason(&status) == "CIRCUIT_OPEN" => {
                assert_eq!(status.code(), Code::Unavailable);
                assert!(
                    status.get_details_retry_info().is_some(),
                    "a retry delay is given"
                );
                opened = true;
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
            Ok(_) => assert!(
                attempt < 5,
                "commands kept succeeding with the database cut off"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(opened, "the circuit breaker opened");
    assert!(
        !support::serving(server.address, "inventory.v1.CommandService").await,
        "NOT_SERVING while the breaker is open"
    );
    let acknowledged_during_outage = load.acknowledged();

    proxy.restore();
    // It recovers by itself: no restart.
    support::wait_until(
        Duration::from_secs(20),
        "commands to succeed again once the database is back",
        async || {
            let mut request = tonic::Request::new(add_stock("probe", "s", 1));
            request.set_timeout(Duration::from_secs(20));
            probe.add_stock(request).await.is_ok()
        },
    )
    .await;
    assert!(
        support::serving(server.address, "inventory.v1.CommandService").await,
        "SERVING again"
    );
    load.wait_for_acknowledged(acknowledged_during_outage + 20)
        .await;
    let load = load.stop().await;
    server.stop().await;
    load.check_log(&url, &schema).await;
    support::drop_schema(&url, &schema).await;
}

/// Clients that keep sending commands with unique command ids, recording what they sent and
/// what was acknowledged. Failures must be UNAVAILABLE (the storage is failing).
struct Load {
    sent: Arc<Mutex<Vec<String>>>,
    acknowledged: Arc<Mutex<Vec<String>>>,
    stop: watch::Sender<bool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(address: SocketAddr, prefix: &'static str) -> Load {
        let sent: Arc<Mutex<Vec<String>>> = Arc::default();
        let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
        let (stop, stop_watch) = watch::channel(false);
        let mut clients = Vec::new();
        for client in 0..4 {
            let channel = support::channel(address).await;
            let (sent, acknowledged, stop_watch) =
                (sent.clone(), acknowledged.clone(), stop_watch.clone());
            clients.push(tokio::spawn(async move {
                let mut commands = CommandServiceClient::new(channel);
                let mut sequence = 0;
                while !*stop_watch.borrow() {
                    sequence += 1;
                    let command_id = format!("{prefix}-{client}-{sequence}");
                    sent.lock().unwrap().push(command_id.clone());
                    let mut request = tonic::Request::new(pb::AddStockRequest {
                        command_id: command_id.clone(),
                        ..add_stock(&format!("p{client}"), "s", 1)
                    });
                    request.set_timeout(Duration::from_secs(20));
                    match commands.add_stock(request).await {
                        Ok(_) => acknowledged.lock().unwrap().push(command_id),
                        Err(status) => {
                            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        Load {
            sent,
            acknowledged,
            stop,
            clients,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    async fn wait_for_acknowledged(&self, count: usize) {
        support::wait_until(
            Duration::from_secs(60),
            &format!("{count} commands to be acknowledged"),
            async || self.acknowledged() >= count,
        )
        .await;
    }

    /// Stops the clients (each finishes its command in flight).
    async fn stop(mut self) -> Load {
        self.stop.send_replace(true);
        for client in self.clients.drain(..) {
            client.await.unwrap();
        }
        self
    }

    /// The log, read directly: every acknowledged command is there once, and nothing that was
    /// never sent.
    async fn check_log(&self, url: &str, schema: &str) {
        let log = PostgresLog::connect(url, schema).await.unwrap();
        let mut stored = HashSet::new();
        let mut position = LogPosition(0);
        loop {
            let events = log.read_all(position, 1000).await.unwrap();
            let Some(last) = events.last() else { break };
            position = last.position;
            for event in events {
                if let Some(command_id) = event.command_id {
                    assert!(
                        stored.insert(command_id.to_string()),
                        "stored twice: {command_id}"
                    );
                }
            }
        }
        let sent: HashSet<String> = self.sent.lock().unwrap().iter().cloned().collect();
        for command_id in self.acknowledged.lock().unwrap().iter() {
            assert!(
                stored.contains(command_id),
                "acknowledged but lost: {command_id}"
            );
        }
        for command_id in &stored {
            assert!(
                sent.contains(command_id),
                "stored but never sent: {command_id}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killing_the_servers_connections_under_load_loses_nothing() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema();
    // The server's connections carry a name of their own, so the test kills only those.
    let application = format!("inventory_{schema}");
    let server = Running::command_on(LogConfig::Postgres {
        url: support::with_application_name(&url, &application),
        schema: schema.clone(),
    })
    .await;
    let load = Load::start(server.address, "kill").await;
    load.wait_for_acknowledged(50).await;

    // An administrator (or a failover) terminates every connection of the server, three
    // times, while the load runs.
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut killed = 0;
    for round in 1..=3 {
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&application],
            )
            .await
            .unwrap();
        killed += rows.len();
        // The service goes on by itself: new connections replace the killed ones.
        load.wait_for_acknowledged(50 + round * 50).await;
    }
    assert!(
        killed >= 3,
        "the server's connections were found and killed ({killed})"
    );
    let load = load.stop().await;
    server.stop().await;
    load.check_log(&url, &schema).await;
    println!(
        "{killed} connections killed in 3 rounds; {} commands sent, {} acknowledged",
        load.sent.lock().unwrap().len(),
        load.acknowledged()
    );
    support::drop_schema(&url, &schema).await;
}

/// GetStock on `server`, waiting for `min_position`.
async fn stock_at(
    server: SocketAddr,
    min_position: u64,
) -> Result<pb::GetStockResponse, tonic::Status> {
    let mut queries =
        pb::query_service_client::QueryServiceClient::new(support::channel(server).await);
    let mut request = tonic::Request::new(support::get_stock("p", "s", min_position));
    request.set_timeout(Duration::from_secs(5));
    queries
        .get_stock(request)
        .await
        .map(|answer| answer.into_inner())
}

fn on_hand(answer: &pb::GetStockResponse) -> i64 {
    answer.item.as_ref().unwrap().stock.unwrap().on_hand
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_server_reading_postgres_answers_marked_stale_while_it_is_away_then_catches_up() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema();
    let proxy = Proxy::in_front_of(&url).await;
    // The command server reaches the database directly; only the query server goes through
    // the proxy.
    let command = Running::command_on(LogConfig::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    })
    .await;
    let query = Running::query_from(inventory::server::QuerySource::Postgres {
        url: proxy.url(&url),
        schema: schema.clone(),
    })
    .await;
    let mut commands = CommandServiceClient::new(support::channel(command.address).await);
    let first = commands.add_stock(add_stock("p", "s", 5)).await.unwrap();
    let first_position = first.into_inner().result.unwrap().position;
    let answer = stock_at(query.address, first_position).await.unwrap();
    assert_eq!(on_hand(&answer), 5);
    assert_eq!(answer.upstream_unreachable_since, None);

    // The database goes away while nothing is written: the query server notices by itself
    // and keeps answering from its model, marked stale.
    proxy.cut();
    let stale = support::wait_for(
        Duration::from_secs(10),
        "answers marked stale after the database went away",
        async || {
            let answer = stock_at(query.address, 0)
                .await
                .expect("reads keep working");
            answer
                .upstream_unreachable_since
                .is_some()
                .then_some(answer)
        },
    )
    .await;
    assert_eq!(on_hand(&stale), 5);
    assert_eq!(stale.read_position, first_position);
    assert!(
        support::serving(query.address, "inventory.v1.QueryService").await,
        "a query server keeps serving, degraded, while its database is away"
    );
    // Meanwhile the command server writes on.
    let second = commands.add_stock(add_stock("p", "s", 3)).await.unwrap();
    let second_position = second.into_inner().result.unwrap().position;
    let still_stale = stock_at(query.address, 0).await.unwrap();
    assert_eq!(on_hand(&still_stale), 5);
    assert_eq!(
        still_stale.upstream_unreachable_since, stale.upstream_unreachable_since,
        "the outage's start stays the same"
    );

    // The database is back: the query server catches up and the mark goes away.
    proxy.restore();
    let caught_up = support::wait_for(
        Duration::from_secs(20),
        "the query server to catch up, unmarked, once the database is back",
        async || {
            stock_at(query.address, second_position)
                .await
                .ok()
                .filter(|answer| answer.upstream_unreachable_since.is_none())
        },
    )
    .await;
    assert_eq!(on_hand(&caught_up), 8);
    query.stop().await;
    command.stop().await;
    support::drop_schema(&url, &schema).await;
}
