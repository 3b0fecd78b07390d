//! The follower tells errors that retrying can fix from those it cannot. The upstream here is a
//! stand-in `EventService` served by the test over real gRPC, so that it can send what a real
//! command server never would: an event that fails validation.

use crate::support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};

use inventory::app::{Shutdown, ShutdownSignal};
use inventory::domain::{Inventory, LogPosition};
use inventory::grpc::follower::{self, FollowerState};
use inventory::grpc::pb;
use inventory::grpc::pb::event_service_server::{EventService, EventServiceServer};
use inventory::log::codec::event_to_pb;
use inventory::log::{EmbeddedLog, EventLog};

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

/// An upstream that sends `events` (from the follower's position on) and then stays open.
struct StandInUpstream {
    events: Vec<pb::InventoryEvent>,
}

#[tonic::async_trait]
impl EventService for StandInUpstream {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let from = request.get_ref().from_position;
        let messages: Vec<Result<pb::SubscribeResponse, Status>> = self
            .events
            .iter()
            .filter(|event| event.position > from)
            .cloned()
            .map(|event| {
                Ok(pb::SubscribeResponse {
                    message: Some(pb::subscribe_response::Message::Event(event)),
                })
            })
            .chain(std::iter::once(Ok(pb::SubscribeResponse {
                message: Some(pb::subscribe_response::Message::CaughtUp(
                    pb::CaughtUp::default(),
                )),
            })))
            .collect();
        let open_forever = tokio_stream::pending();
        let stream = tokio_stream::StreamExt::chain(tokio_stream::iter(messages), open_forever);
        Ok(Response::new(Box::pin(stream)))
    }
}

async fn serve_upstream(listener: TcpListener, events: Vec<pb::InventoryEvent>) {
    Server::builder()
        .add_service(EventServiceServer::new(StandInUpstream { events }))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await
        .unwrap();
}

fn valid_events(count: u64) -> Vec<pb::InventoryEvent> {
    let mut inventory = Inventory::new();
    support::added_events(&mut inventory, LogPosition(0), count, 2)
        .iter()
        .map(event_to_pb)
        .collect()
}

fn start_follower(
    upstream: SocketAddr,
    local: Arc<dyn EventLog>,
) -> (
    watch::Receiver<FollowerState>,
    tokio::task::JoinHandle<()>,
    ShutdownSignal,
) {
    let (state, state_watch) = watch::channel(FollowerState::Connecting);
    let (signal, shutdown): (ShutdownSignal, Shutdown) = ShutdownSignal::new();
    let endpoint = Endpoint::from_shared(format!("http://{upstream}")).unwrap();
    let task = tokio::spawn(follower::follow(endpoint, None, local, state, shutdown));
    (state_watch, task, signal)
}

#[tokio::test]
async fn it_stops_for_good_when_the_upstream_sends_an_invalid_event() {
    let directory = tempfile::tempdir().unwrap();
    let (local, _) = EmbeddedLog::open(directory.path(), |_| Ok(())).unwrap();
    let local: Arc<dyn EventLog> = Arc::new(local);
    let mut events = valid_events(3);
    // The third event's stock does not add up: available is not on_hand - reserved.
    events[2].stock.as_mut().unwrap().available += 1;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(serve_upstream(listener, events));

    let (mut state, task, _signal) = start_follower(upstream, local.clone());
    // The follower returns by itself: it does not reconnect forever to get the same event.
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the follower stops on an invalid event")
        .unwrap();
    assert_eq!(*state.borrow_and_update(), FollowerState::Failed);
    // The valid events before it were copied; the invalid one was not.
    assert!(local.head() <= LogPosition(2), "head {}", local.head());
    assert!(local.read_all(LogPosition(2), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn it_reconnects_after_the_upstream_was_unreachable_and_catches_up() {
    let directory = tempfile::tempdir().unwrap();
    let (local, _) = EmbeddedLog::open(directory.path(), |_| Ok(())).unwrap();
    let local: Arc<dyn EventLog> = Arc::new(local);
    // An upstream that accepts connections and closes them at once: every attempt fails in
    // the HTTP/2 handshake, which is transient.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (mut state, task, signal) = start_follower(upstream, local.clone());
    for _ in 0..3 {
        let (connection, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the follower tries again")
            .unwrap();
        drop(connection);
    }
    assert!(!task.is_finished(), "a broken connection is retried");
    assert_ne!(*state.borrow_and_update(), FollowerState::Failed);
    drop(listener);

    let listener = TcpListener::bind(upstream).await.unwrap();
    tokio::spawn(serve_upstream(listener, valid_events(5)));
    tokio::time::timeout(Duration::from_secs(10), async {
        state
            .wait_for(|state| *state == FollowerState::CaughtUp)
            .await
            .unwrap();
    })
    .await
    .expect("the follower reconnects and catches up");
    assert_eq!(local.head(), LogPosition(5));
    signal.trigger();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the follower stops on shutdown")
        .unwrap();
}

/// An upstream whose one subscription sends whatever the test pushes, when it pushes it.
struct ScriptedUpstream {
    messages: std::sync::Mutex<
        Option<tokio::sync::mpsc::Receiver<Result<pb::SubscribeResponse, Status>>>,
    >,
}

#[tonic::async_trait]
impl EventService for ScriptedUpstream {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        _request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let messages = self.messages.lock().unwrap().take();
        let messages = messages.ok_or_else(|| Status::unavailable("one subscription only"))?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(messages),
        )))
    }
}

async fn serving_becomes(address: SocketAddr, expected: bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while support::serving(address, "inventory.v1.QueryService").await != expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the replica's health did not become serving = {expected}"));
}

#[tokio::test]
async fn a_replica_whose_follower_failed_reports_not_serving() {
    let (push, messages) = tokio::sync::mpsc::channel(16);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let scripted = ScriptedUpstream {
        messages: std::sync::Mutex::new(Some(messages)),
    };
    tokio::spawn(
        Server::builder()
            .add_service(EventServiceServer::new(scripted))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let directory = tempfile::tempdir().unwrap();
    let replica = support::Running::query(directory.path(), upstream).await;
    let mut events = valid_events(3);
    let event = |event: pb::InventoryEvent| {
        Ok(pb::SubscribeResponse {
            message: Some(pb::subscribe_response::Message::Event(event)),
        })
    };
    let mut invalid = events.pop().unwrap();
    for valid in events {
        push.send(event(valid)).await.unwrap();
    }
    push.send(Ok(pb::SubscribeResponse {
        message: Some(pb::subscribe_response::Message::CaughtUp(
            pb::CaughtUp::default(),
        )),
    }))
    .await
    .unwrap();
    serving_becomes(replica.address, true).await;

    // An event without a kind: no retry can make it valid.
    invalid.kind = None;
    push.send(event(invalid)).await.unwrap();
    serving_becomes(replica.address, false).await;
    replica.stop().await;
}
