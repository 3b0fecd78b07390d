//! Following a shared log's head: appends by other servers are seen through LISTEN/NOTIFY,
//! with a poll of the head row as the safety net, and the log's reachability with them.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{HEAD_POLL_INTERVAL, Inner, OPERATION_TIMEOUT, quote_identifier};
use crate::domain::LogPosition;

/// Keeps `head` current with appends made by other servers: LISTEN for notifications, and
/// poll as a safety net. Stops when the log is dropped.
pub(super) async fn follow_head(
    config: tokio_postgres::Config,
    connector: MakeRustlsConnect,
    inner: Weak<Inner>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let Some(log) = inner.upgrade() else { return };
        let channel = log.channel.clone();
        drop(log);
        match listen(&config, connector.clone(), &channel, &inner).await {
            Ok(()) => return,
            Err(error) => {
                if let Some(log) = inner.upgrade() {
                    log.reachable
                        .send_if_modified(|reachable| std::mem::replace(reachable, false));
                }
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "following the log's head failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Returns `Ok` when the log was dropped, `Err` when the connection failed or the database did
/// not answer a head poll within [`OPERATION_TIMEOUT`].
async fn listen(
    config: &tokio_postgres::Config,
    connector: MakeRustlsConnect,
    channel: &str,
    inner: &Weak<Inner>,
) -> Result<(), String> {
    let (client, mut connection) = config
        .connect(connector)
        .await
        .map_err(|error| error.to_string())?;
    let notified = Arc::new(Notify::new());
    let connection_notified = notified.clone();
    let driver = tokio::spawn(async move {
        while let Some(message) =
            std::future::poll_fn(|context| connection.poll_message(context)).await
        {
            match message {
                Ok(AsyncMessage::Notification(_)) => connection_notified.notify_one(),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN {}", quote_identifier(channel)))
        .await
        .map_err(|error| error.to_string())?;
    let result = loop {
        let Some(log) = inner.upgrade() else {
            break Ok(());
        };
        let polled = tokio::time::timeout(
            OPERATION_TIMEOUT,
            client.query_one(&log.statements.read_head, &[]),
        )
        .await;
        match polled {
            Ok(Ok(row)) => {
                log.reachable
                    .send_if_modified(|reachable| !std::mem::replace(reachable, true));
                let position = LogPosition(row.get::<_, i64>(0) as u64);
                log.head.send_if_modified(|head| {
                    let moved = *head < position;
                    if moved {
                        *head = position;
                    }
                    moved
                });
            }
            Ok(Err(error)) => break Err(error.to_string()),
            Err(_) => {
                break Err(format!(
                    "no answer to a head poll within {OPERATION_TIMEOUT:?}"
                ));
            }
        }
        drop(log);
        tokio::select! {
            () = notified.notified() => {}
            () = tokio::time::sleep(HEAD_POLL_INTERVAL) => {}
        }
    };
    driver.abort();
    result
}
