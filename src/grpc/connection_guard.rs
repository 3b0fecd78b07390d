//! What a connection may hold without using it: until its first request with a valid
//! credential it is *unproven*, takes a slot of a smaller budget of its own and has
//! [`ConnectionTimeouts::first_request`] to send that request; once proven, it is closed after
//! [`ConnectionTimeouts::idle`] without a request and with none in progress (an open
//! subscription is a request in progress). Dead peers are found sooner by HTTP/2 keep-alive
//! pings (`server.rs`). So connections that never authenticate cannot hold the slots of those
//! that do (issue 28, finding 3).
//!
//! A connection is closed by shutting its socket down (`shutdown(2)`, through a duplicate of its
//! descriptor), which ends the pending read of whoever serves it: no cost on the path of a
//! read or a write.

use std::net::Shutdown;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit};

/// How long a connection may wait: for its first authenticated request, and between requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    pub first_request: Duration,
    pub idle: Duration,
}

impl ConnectionTimeouts {
    pub const DEFAULT: ConnectionTimeouts = ConnectionTimeouts {
        first_request: Duration::from_secs(10),
        idle: Duration::from_secs(900),
    };
}

/// Of a server's connections, how many may be unproven at once: half, so that connections
/// that never authenticate cannot take the slots of those that did.
pub fn unproven_budget(max_connections: usize) -> usize {
    (max_connections / 2).max(1)
}

/// A request in progress on a connection, until dropped.
pub struct Activity(std::sync::Arc<ConnectionGuard>);

impl Drop for Activity {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

impl std::fmt::Debug for ConnectionGuard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConnectionGuard")
            .field("proven", &self.proven.load(Ordering::Relaxed))
            .field("in_progress", &self.in_progress.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// One connection's state, shared by its socket wrapper, its watchdog and the auth layer
/// (through the request's `ConnectionInfo`).
pub struct ConnectionGuard {
    /// A duplicate of the connection's descriptor: shutting it down shuts the socket.
    socket: std::net::TcpStream,
    /// The slot of the unproven budget, given back at the first authenticated request.
    unproven: Mutex<Option<OwnedSemaphorePermit>>,
    proven: AtomicBool,
    in_progress: AtomicUsize,
    /// Milliseconds since `start` at the last request's start.
    last_request: AtomicU64,
    start: Instant,
    ended: Notify,
    closed_idle: AtomicBool,
}

impl ConnectionGuard {
    pub fn new(socket: std::net::TcpStream, unproven: OwnedSemaphorePermit) -> ConnectionGuard {
        ConnectionGuard {
            socket,
            unproven: Mutex::new(Some(unproven)),
            proven: AtomicBool::new(false),
            in_progress: AtomicUsize::new(0),
            last_request: AtomicU64::new(0),
            start: Instant::now(),
            ended: Notify::new(),
            closed_idle: AtomicBool::new(false),
        }
    }

    /// A request with a valid credential (or any request, on a server without
    /// authentication) arrived: the connection is proven, and its unproven slot given back.
    pub fn prove(&self) {
        if !self.proven.load(Ordering::Acquire) {
            self.proven.store(true, Ordering::Release);
            self.unproven.lock().expect("guard lock poisoned").take();
        }
    }

    /// A request started: the connection is not idle until the request (and its response
    /// stream, if any) ends, which the returned value's drop says.
    pub fn request_started(self: &std::sync::Arc<Self>) -> Activity {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Activity(self.clone())
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_request.store(now, Ordering::Release);
    }

    /// The connection is gone: called by its socket wrapper when it is dropped. The socket is
    /// shut down now, as the duplicate descriptor would keep it open.
    pub fn dropped(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
        self.ended.notify_one();
    }

    /// Whether the watchdog closed it for waiting too long.
    pub fn closed_for_waiting(&self) -> bool {
        self.closed_idle.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closed_idle.store(true, Ordering::Release);
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    /// Closes the connection if it sends no authenticated request within
    /// `timeouts.first_request`, or later waits `timeouts.idle` with nothing in progress. Ends
    /// when the connection does.
    pub async fn watch(self: std::sync::Arc<Self>, timeouts: ConnectionTimeouts) {
        let ended = self.ended.notified();
        tokio::pin!(ended);
        tokio::select! {
            () = &mut ended => return,
            () = tokio::time::sleep(timeouts.first_request) => {}
        }
        if !self.proven.load(Ordering::Acquire) {
            metrics::counter!("inventory_connections_closed_total", "why" => "no_request")
                .increment(1);
            self.close();
            return;
        }
        loop {
            let last = Duration::from_millis(self.last_request.load(Ordering::Acquire));
            let idle_until = last + timeouts.idle;
            let now = self.start.elapsed();
            if now >= idle_until && self.in_progress.load(Ordering::Acquire) == 0 {
                metrics::counter!("inventory_connections_closed_total", "why" => "idle")
                    .increment(1);
                self.close();
                return;
            }
            let wait = idle_until.saturating_sub(now).max(timeouts.idle / 4);
            tokio::select! {
                () = &mut ended => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncReadExt;
    use tokio::sync::Semaphore;

    use super::*;

    /// A connected pair: the server's guard (with its watchdog running) and the client.
    async fn watched(
        timeouts: ConnectionTimeouts,
    ) -> (Arc<ConnectionGuard>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let guard = Arc::new(ConnectionGuard::new(server.into_std().unwrap(), permit));
        tokio::spawn(guard.clone().watch(timeouts));
        (guard, client)
    }

    async fn closed_within(client: &mut tokio::net::TcpStream, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(wait, client.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    const QUICK: ConnectionTimeouts = ConnectionTimeouts {
        first_request: Duration::from_millis(200),
        idle: Duration::from_millis(400),
    };

    #[tokio::test]
    async fn a_connection_without_a_first_request_is_closed() {
        let (guard, mut client) = watched(QUICK).await;
        assert!(closed_within(&mut client, Duration::from_secs(5)).await);
        assert!(guard.closed_for_waiting());
    }

    #[tokio::test]
    async fn a_proven_connection_is_closed_when_idle_and_not_while_a_request_lasts() {
        let (guard, mut client) = watched(QUICK).await;
        guard.prove();
        // A request (a subscription, say) open for three idle periods: kept.
        let activity = guard.request_started();
        assert!(!closed_within(&mut client, Duration::from_millis(1200)).await);
        drop(activity);
        // Then idle: closed after about one idle period.
        assert!(closed_within(&mut client, Duration::from_secs(5)).await);
        assert!(guard.closed_for_waiting());
    }
}
