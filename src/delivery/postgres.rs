//! Sinks on a PostgreSQL log shared by several command servers: exactly one server delivers
//! each sink. A server holds a sink by a session advisory lock, on a connection of its own;
//! its cursor is a row of `<schema>.sink_cursors`, written through that same session, so a
//! server whose session ended (it died, or lost the database) can no longer write it, and
//! PostgreSQL releases the lock with the session. The others try for the lock every
//! [`CLAIM_POLL_INTERVAL`] and take the sink over from its stored cursor.
//!
//! A session that stops answering is given up by its holder within [`PING_INTERVAL`] +
//! [`PING_TIMEOUT`], and ended by PostgreSQL after [`IDLE_SESSION_TIMEOUT`] without a
//! statement (`idle_session_timeout`, PostgreSQL 14 and later): the holder has stopped
//! delivering before another server can take the lock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::cursor::{Claim, Claims, CursorError, SinkCursor};
use crate::domain::{LogPosition, Timestamp};
use crate::log::BoxFuture;
use crate::log::postgres::{dedicated_connection, quote_identifier};

/// How often a server that does not hold a sink tries for it.
pub const CLAIM_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often the holder checks that its session answers.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// How long the holder waits for an answer before it gives the sink up.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long PostgreSQL keeps a holder's session that sends nothing (it pings every
/// [`PING_INTERVAL`]); it must be longer than [`PING_INTERVAL`] + [`PING_TIMEOUT`].
pub const IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

const _: () = assert!(
    IDLE_SESSION_TIMEOUT.as_millis() > 2 * (PING_INTERVAL.as_millis() + PING_TIMEOUT.as_millis())
);

/// The claims of one PostgreSQL log's sinks.
pub struct PgClaims {
    url: String,
    schema: String,
}

impl PgClaims {
    pub fn new(url: &str, schema: &str) -> PgClaims {
        PgClaims {
            url: url.to_owned(),
            schema: schema.to_owned(),
        }
    }

    fn error(&self, name: &str, problem: impl std::fmt::Display) -> CursorError {
        CursorError {
            name: name.to_owned(),
            problem: problem.to_string(),
        }
    }

    /// A session set up for claiming: the cursor table made if missing.
    async fn session(
        &self,
        name: &str,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), CursorError> {
        let (client, task) = dedicated_connection(&self.url)
            .await
            .map_err(|error| self.error(name, error))?;
        let schema = quote_identifier(&self.schema);
        client
            .batch_execute(&format!(
                "SET idle_session_timeout = '{}s';
                 CREATE TABLE IF NOT EXISTS {schema}.sink_cursors (
                     name text PRIMARY KEY,
                     position bigint NOT NULL,
                     parked boolean NOT NULL,
                     failing_since_unix_ms bigint
                 );",
                IDLE_SESSION_TIMEOUT.as_secs()
            ))
            .await
            .map_err(|error| self.error(name, error))?;
        Ok((client, task))
    }
}

async fn read(
    client: &tokio_postgres::Client,
    schema: &str,
    name: &str,
) -> Result<Option<SinkCursor>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!(
                "SELECT position, parked, failing_since_unix_ms FROM {}.sink_cursors WHERE name = $1",
                quote_identifier(schema)
            ),
            &[&name],
        )
        .await?;
    Ok(row.map(|row| SinkCursor {
        position: LogPosition(row.get::<_, i64>(0) as u64),
        parked: row.get(1),
        failing_since: row
            .get::<_, Option<i64>>(2)
            .map(|millis| Timestamp::from_unix_millis(millis as u64)),
    }))
}

impl Claims for PgClaims {
    fn shared(&self) -> bool {
        true
    }

    fn claim<'a>(
        &'a self,
        name: &'a str,
        standby: &'a (dyn Fn(SinkCursor) + Send + Sync),
    ) -> BoxFuture<'a, Result<Box<dyn Claim>, CursorError>> {
        Box::pin(async move {
            let (client, task) = self.session(name).await?;
            loop {
                let taken: bool = client
                    .query_one(
                        "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))",
                        &[&self.schema, &format!("inventory sink {name}")],
                    )
                    .await
                    .map_err(|error| self.error(name, error))?
                    .get(0);
                if taken {
                    tracing::info!(sink = name, "this server holds the sink now");
                    return Ok(Box::new(PgClaim::start(client, task, &self.schema, name))
                        as Box<dyn Claim>);
                }
                if let Some(cursor) = read(&client, &self.schema, name)
                    .await
                    .map_err(|error| self.error(name, error))?
                {
                    standby(cursor);
                }
                tokio::time::sleep(CLAIM_POLL_INTERVAL).await;
            }
        })
    }
}

/// A sink this server holds: the session with its lock, and a pinger watching it.
struct PgClaim {
    client: Arc<tokio_postgres::Client>,
    schema: String,
    name: String,
    lost: watch::Receiver<bool>,
    pinger: tokio::task::JoinHandle<()>,
}

impl PgClaim {
    fn start(
        client: tokio_postgres::Client,
        connection: tokio::task::JoinHandle<()>,
        schema: &str,
        name: &str,
    ) -> PgClaim {
        let client = Arc::new(client);
        let (lose, lost) = watch::channel(false);
        let pinged = client.clone();
        let sink = name.to_owned();
        let pinger = tokio::spawn(async move {
            let mut connection = connection;
            loop {
                tokio::select! {
                    _ = &mut connection => break,
                    () = tokio::time::sleep(PING_INTERVAL) => {}
                }
                match tokio::time::timeout(PING_TIMEOUT, pinged.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(sink, %error, "the session holding the sink failed");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(sink, "the session holding the sink does not answer");
                        break;
                    }
                }
            }
            lose.send_replace(true);
        });
        PgClaim {
            client,
            schema: schema.to_owned(),
            name: name.to_owned(),
            lost,
            pinger,
        }
    }

    fn error(&self, problem: impl std::fmt::Display) -> CursorError {
        CursorError {
            name: self.name.clone(),
            problem: problem.to_string(),
        }
    }
}

impl Drop for PgClaim {
    fn drop(&mut self) {
        // The session (and with it the lock) ends when the last client handle goes.
        self.pinger.abort();
    }
}

impl Claim for PgClaim {
    fn load(&mut self) -> BoxFuture<'_, Result<Option<SinkCursor>, CursorError>> {
        Box::pin(async move {
            read(&self.client, &self.schema, &self.name)
                .await
                .map_err(|error| self.error(error))
        })
    }

    fn save(&mut self, cursor: SinkCursor) -> BoxFuture<'_, Result<(), CursorError>> {
        Box::pin(async move {
            if self.is_lost() {
                return Err(self.error("the session holding the sink has ended"));
            }
            let statement = format!(
                "INSERT INTO {}.sink_cursors (name, position, parked, failing_since_unix_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET position = $2, parked = $3, failing_since_unix_ms = $4",
                quote_identifier(&self.schema)
            );
            let failing_since = cursor.failing_since.map(|since| since.unix_millis() as i64);
            self.client
                .execute(
                    &statement,
                    &[
                        &self.name,
                        &(cursor.position.0 as i64),
                        &cursor.parked,
                        &failing_since,
                    ],
                )
                .await
                .map(|_| ())
                .map_err(|error| self.error(error))
        })
    }

    fn lost(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.lost.wait_for(|lost| *lost).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }

    fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }
}
