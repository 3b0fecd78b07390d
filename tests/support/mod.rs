//! Shared test harness: real servers started in-process on `127.0.0.1:0`, real gRPC clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use inventory::app::{Clock, ShutdownSignal, SystemClock};
use inventory::proto::pb;
use inventory::proto::pb::command_service_client::CommandServiceClient;
use inventory::proto::pb::event_service_client::EventServiceClient;
use inventory::proto::pb::query_service_client::QueryServiceClient;
use inventory::server::{self, CommandConfig, ServerError};

/// Both servers in one process on one data directory, as `cargo run` starts them.
pub struct Combined {
    pub command_addr: SocketAddr,
    pub query_addr: SocketAddr,
    pub data_dir: PathBuf,
    signal: ShutdownSignal,
    task: JoinHandle<Result<(), ServerError>>,
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    (listener, address)
}

pub async fn channel(address: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

impl Combined {
    pub async fn start(data_dir: &Path) -> Combined {
        Combined::start_with_clock(data_dir, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(data_dir: &Path, clock: Arc<dyn Clock>) -> Combined {
        let (command_listener, command_addr) = listener().await;
        let (query_listener, query_addr) = listener().await;
        let (signal, shutdown) = ShutdownSignal::new();
        let config = CommandConfig {
            data_dir: data_dir.to_owned(),
            clock,
        };
        let task = tokio::spawn(server::run_combined(
            config,
            command_listener,
            query_listener,
            shutdown,
        ));
        Combined {
            command_addr,
            query_addr,
            data_dir: data_dir.to_owned(),
            signal,
            task,
        }
    }

    pub async fn commands(&self) -> CommandServiceClient<Channel> {
        CommandServiceClient::new(channel(self.command_addr).await)
    }

    pub async fn queries(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::new(channel(self.query_addr).await)
    }

    pub async fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(channel(self.command_addr).await)
    }

    /// Graceful shutdown; returns once every in-flight command is durable.
    pub async fn stop(self) {
        self.signal.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within 10 s")
            .expect("server task")
            .expect("server ran without error");
    }
}

/// A server that runs until `stop`: for the split-mode pieces.
pub struct Running {
    pub address: SocketAddr,
    signal: ShutdownSignal,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    pub async fn command(data_dir: &Path) -> Running {
        let (listener, address) = listener().await;
        let (signal, shutdown) = ShutdownSignal::new();
        let config = CommandConfig {
            data_dir: data_dir.to_owned(),
            clock: Arc::new(SystemClock),
        };
        let task = tokio::spawn(server::run_command_server(config, listener, shutdown));
        Running {
            address,
            signal,
            task,
        }
    }

    pub async fn query(data_dir: &Path, upstream: SocketAddr) -> Running {
        let (listener, address) = listener().await;
        let (signal, shutdown) = ShutdownSignal::new();
        let data_dir = data_dir.to_owned();
        let upstream = format!("http://{upstream}");
        let task = tokio::spawn(async move {
            server::run_query_server(&data_dir, &upstream, listener, shutdown).await
        });
        Running {
            address,
            signal,
            task,
        }
    }

    pub async fn stop(self) {
        self.signal.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within 10 s")
            .expect("server task")
            .expect("server ran without error");
    }
}

pub fn add_stock(product: &str, store: &str, quantity: i64) -> pb::AddStockRequest {
    pb::AddStockRequest {
        product_id: product.to_owned(),
        store_id: store.to_owned(),
        quantity,
        reason: "delivery".to_owned(),
        command_id: String::new(),
        expected_version: None,
    }
}

pub fn reserve_stock(product: &str, store: &str, quantity: i64) -> pb::ReserveStockRequest {
    pb::ReserveStockRequest {
        product_id: product.to_owned(),
        store_id: store.to_owned(),
        quantity,
        customer_id: "customer-1".to_owned(),
        ttl: None,
        reservation_id: String::new(),
        command_id: String::new(),
        expected_version: None,
    }
}

pub fn get_stock(product: &str, store: &str, min_position: u64) -> pb::GetStockRequest {
    pb::GetStockRequest {
        product_id: product.to_owned(),
        store_id: store.to_owned(),
        min_position: Some(min_position),
    }
}

/// (on_hand, reserved, available) of a response's stock level.
pub fn level(stock: Option<pb::StockLevel>) -> (i64, i64, i64) {
    let stock = stock.expect("stock level present");
    (stock.on_hand, stock.reserved, stock.available)
}
