//! The event log on PostgreSQL, for running many command and query servers on one log.
//!
//! Schema (created at start-up, in its own PostgreSQL schema, default `inventory`):
//! - `events(position PRIMARY KEY, product_id, store_id, version, command_id, payload)` with
//!   `UNIQUE (product_id, store_id, version)` and a unique index on `command_id` (set on the
//!   first event of a command only, so a multi-line command's events share it in their
//!   payloads); `payload` is the protobuf `inventory.v1.InventoryEvent`, the same bytes the
//!   embedded log stores. A multi-line command's events are one append: one transaction.
//! - `head(position)`: one row, the last position.
//!
//! **Positions a tailing reader can trust.** Every append locks the head row
//! (`SELECT … FOR UPDATE`), checks that the head is where the writer decided its batch, inserts
//! the batch at the next positions, moves the head and commits. The lock serializes appends in
//! position order: an append cannot take position N+1 before the append holding N has committed
//! and released the lock. So a reader that has seen position N+1 can never later find a
//! committed N it skipped — the failure mode of sequence-based logs (a transaction that took a
//! lower sequence number and committed later). The price is one append transaction at a time
//! across all servers; group commit makes each carry many events.
//!
//! **Waking readers.** Each append `NOTIFY`s on the schema's channel inside its transaction
//! (delivered at commit). One connection per log `LISTEN`s and also polls the head every
//! [`HEAD_POLL_INTERVAL`], so a lost notification only delays readers, never loses events.
//!
//! **TLS.** Every connection, the pool's and the listener's, honours the URL's `sslmode` (and
//! `sslrootcert`) as libpq does: see [`tls`].
//!
//! Over 600 lines: one `EventLog` implementation (schema, append under the head lock, the
//! reads, the head's watch), whose parts share the connection pool and the prepared statements;
//! following the head and TLS are in `postgres/`.

mod head;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::watch;

use super::codec::{decode_event, encode_event};
use super::{BoxFuture, EventLog, LogError, MAX_APPEND_EVENTS, MAX_READ_EVENTS};
use crate::domain::{CommandKey, LogPosition, RecordedEvent, StreamKey, StreamVersion};

/// How often the head is read when no notification arrives.
pub const HEAD_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Connections per log (appends use one at a time; reads use the rest).
pub const MAX_CONNECTIONS: usize = 16;

/// How long connecting, waiting for a pooled connection, or one log operation may take before
/// it counts as a storage failure (and feeds the command side's circuit breaker).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema version this code creates and understands.
const SCHEMA_VERSION: i32 = 1;

/// The event log in a PostgreSQL database. Cloning shares the same pool.
#[derive(Clone)]
pub struct PostgresLog {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The PostgreSQL schema holding the tables, already quoted for SQL.
    schema: String,
    channel: String,
    head: watch::Sender<LogPosition>,
    /// Whether the database answered the last head poll.
    reachable: watch::Sender<bool>,
    statements: Statements,
}

/// The SQL of every statement, with the schema filled in once.
struct Statements {
    lock_head: String,
    taken_command_ids: String,
    insert_events: String,
    set_head: String,
    notify: String,
    read_all: String,
    read_stream: String,
    read_head: String,
}

fn backend(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> LogError {
    move |error| LogError::Backend {
        context,
        message: with_causes(&error),
    }
}

fn pool_error(error: deadpool_postgres::PoolError) -> LogError {
    LogError::Backend {
        context: "getting a connection",
        message: with_causes(&error),
    }
}

/// `error` and each error under it: tokio-postgres says "error performing TLS handshake" and
/// keeps the why (a certificate for another host) in its source.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    message
}

pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One connection of its own to the database of `url` (with the TLS its `sslmode` asks), not
/// from the log's pool: for a session that must stay the same, such as one holding an
/// advisory lock. The connection's task ends when the session does.
pub async fn dedicated_connection(
    url: &str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), LogError> {
    let tls::PostgresTls {
        mut config,
        connector,
        ..
    } = tls::configure(url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let (client, connection) =
        config
            .connect(connector)
            .await
            .map_err(|error| LogError::Backend {
                context: "connecting",
                message: with_causes(&error),
            })?;
    let task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(
                error = with_causes(&error),
                "a dedicated PostgreSQL session ended"
            );
        }
    });
    Ok((client, task))
}

impl PostgresLog {
    /// Connects, creates the schema and tables if they are missing, and starts following the
    /// head. `schema` separates independent logs in one database (tests use one each).
    pub async fn connect(url: &str, schema: &str) -> Result<PostgresLog, LogError> {
        let tls::PostgresTls {
            mut config,
            connector,
            ..
        } = tls::configure(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            config.clone(),
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(MAX_CONNECTIONS)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|error| LogError::Backend {
                context: "building the connection pool",
                message: error.to_string(),
            })?;
        let quoted = quote_identifier(schema);
        migrate(&pool, &quoted).await?;
        let statements = Statements {
            lock_head: format!("SELECT position FROM {quoted}.head FOR UPDATE"),
            taken_command_ids: format!(
                "SELECT command_id FROM {quoted}.events WHERE command_id = ANY($1)"
            ),
            insert_events: format!(
                "INSERT INTO {quoted}.events (position, product_id, store_id, version, command_id, payload) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bytea[])"
            ),
            set_head: format!("UPDATE {quoted}.head SET position = $1"),
            notify: "SELECT pg_notify($1, $2)".to_owned(),
            read_all: format!(
                "SELECT payload, position FROM {quoted}.events WHERE position > $1 ORDER BY position LIMIT $2"
            ),
            read_stream: format!(
                "SELECT payload, position FROM {quoted}.events WHERE product_id = $1 AND store_id = $2 \
                 AND version > $3 ORDER BY version LIMIT $4"
            ),
            read_head: format!("SELECT position FROM {quoted}.head"),
        };
        let client = pool.get().await.map_err(pool_error)?;
        let head: i64 = client
            .query_one(&statements.read_head, &[])
            .await
            .map_err(backend("reading the head"))?
            .get(0);
        drop(client);
        let (head, _) = watch::channel(LogPosition(head as u64));
        let inner = Arc::new(Inner {
            pool,
            channel: format!("inventory_events_{schema}"),
            schema: quoted,
            head,
            reachable: watch::channel(true).0,
            statements,
        });
        tokio::spawn(head::follow_head(config, connector, Arc::downgrade(&inner)));
        Ok(PostgresLog { inner })
    }

    /// The quoted schema name, for tools and tests.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    async fn append_events(&self, events: Vec<RecordedEvent>) -> Result<(), LogError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let expected_head = LogPosition(first.position.0 - 1);
        let lock = self.lock_head().await?;
        if lock.head != expected_head {
            // Dropping the lock rolls its transaction back.
            return Err(LogError::HeadMoved {
                expected: expected_head,
                current: lock.head,
            });
        }
        lock.write(events).await
    }

    /// Starts a transaction holding the head row's lock: no other writer can append until it
    /// commits or rolls back.
    async fn lock_head(&self) -> Result<PostgresAppendLock, LogError> {
        let client = self.inner.pool.get().await.map_err(pool_error)?;
        let mut lock = PostgresAppendLock {
            client: Some(client),
            inner: self.inner.clone(),
            head: LogPosition::START,
        };
        let client = lock.client.as_ref().expect("just set");
        client
            .batch_execute("BEGIN")
            .await
            .map_err(backend("starting an append"))?;
        let head: i64 = client
            .query_one(&self.inner.statements.lock_head, &[])
            .await
            .map_err(backend("locking the head"))?
            .get(0);
        lock.head = LogPosition(head as u64);
        Ok(lock)
    }

    async fn read_after(
        &self,
        after: LogPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let client = self.inner.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &self.inner.statements.read_all,
                &[&(after.0 as i64), &(limit.min(MAX_READ_EVENTS) as i64)],
            )
            .await
            .map_err(backend("reading events"))?;
        let mut events = Vec::with_capacity(rows.len());
        let mut expected = after.next();
        for row in rows {
            let event = decode_row(&row)?;
            if event.position != expected {
                return Err(LogError::CorruptRow {
                    position: event.position,
                    problem: format!("a gap: position {expected} was expected"),
                });
            }
            expected = expected.next();
            events.push(event);
        }
        Ok(events)
    }

    async fn read_stream_after(
        &self,
        stream: StreamKey,
        after: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let client = self.inner.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &self.inner.statements.read_stream,
                &[
                    &stream.product_id.as_str(),
                    &stream.store_id.as_str(),
                    &(after.0 as i64),
                    &(limit.min(MAX_READ_EVENTS) as i64),
                ],
            )
            .await
            .map_err(backend("reading a stream"))?;
        rows.iter().map(decode_row).collect()
    }
}

/// A transaction holding the log's head row. Dropped unused, it rolls back.
struct PostgresAppendLock {
    /// `None` once the transaction has ended.
    client: Option<deadpool_postgres::Object>,
    inner: Arc<Inner>,
    head: LogPosition,
}

impl PostgresAppendLock {
    /// Writes `events` at the positions after the locked head and commits.
    /// Over 70 lines: the steps of one transaction in order (head check, command ids,
    /// insert, head update, notify, commit), each with its own error.
    async fn write(mut self, events: Vec<RecordedEvent>) -> Result<(), LogError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        if events.len() > MAX_APPEND_EVENTS {
            return Err(LogError::AppendTooLarge {
                count: events.len(),
            });
        }
        let count = events.len();
        if first.position != self.head.next() {
            return Err(LogError::HeadMoved {
                expected: LogPosition(first.position.0 - 1),
                current: self.head,
            });
        }
        let rows = EventColumns::of(&events);
        let last = events.last().expect("not empty").position;
        let statements = &self.inner.statements;
        let client = self.client.as_ref().expect("the transaction is open");
        let ids: Vec<&String> = rows.command_ids.iter().flatten().collect();
        if !ids.is_empty() {
            let taken = client
                .query(&statements.taken_command_ids, &[&ids])
                .await
                .map_err(backend("checking command ids"))?;
            if !taken.is_empty() {
                // Every stored command id was parsed before it was written: the ones asked
                // about are those of this append, which are valid.
                let command_ids = taken
                    .iter()
                    .map(|row| {
                        CommandKey::parse_stored(row.get::<_, &str>(0))
                            .expect("a stored command id is one the append asked about")
                    })
                    .collect();
                return Err(LogError::CommandIdsTaken { command_ids });
            }
        }
        client
            .execute(
                &statements.insert_events,
                &[
                    &rows.positions,
                    &rows.products,
                    &rows.stores,
                    &rows.versions,
                    &rows.command_ids,
                    &rows.payloads,
                ],
            )
            .await
            .map_err(backend("inserting events"))?;
        client
            .execute(&statements.set_head, &[&(last.0 as i64)])
            .await
            .map_err(backend("moving the head"))?;
        client
            .execute(
                &statements.notify,
                &[&self.inner.channel, &last.0.to_string()],
            )
            .await
            .map_err(backend("notifying readers"))?;
        let client = self.client.take().expect("the transaction is open");
        if let Err(error) = client.batch_execute("COMMIT").await {
            // The outcome of a failed COMMIT is unknown; the connection is not reused.
            drop(deadpool_postgres::Object::take(client));
            return Err(backend("committing an append")(error));
        }
        // The same series as the embedded log's; here an append is one transaction.
        metrics::counter!("inventory_log_appends_total").increment(1);
        metrics::counter!("inventory_log_events_appended_total").increment(count as u64);
        metrics::gauge!("inventory_log_head_position").set(last.0 as f64);
        self.inner.head.send_if_modified(|head| {
            let moved = *head < last;
            if moved {
                *head = last;
            }
            moved
        });
        Ok(())
    }
}

/// The columns of the rows one append inserts, in the `UNNEST` form of `insert_events`.
struct EventColumns {
    positions: Vec<i64>,
    products: Vec<String>,
    stores: Vec<String>,
    versions: Vec<i64>,
    command_ids: Vec<Option<String>>,
    payloads: Vec<Vec<u8>>,
}

impl EventColumns {
    fn of(events: &[RecordedEvent]) -> EventColumns {
        let mut rows = EventColumns {
            positions: Vec::with_capacity(events.len()),
            products: Vec::with_capacity(events.len()),
            stores: Vec::with_capacity(events.len()),
            versions: Vec::with_capacity(events.len()),
            command_ids: Vec::with_capacity(events.len()),
            payloads: Vec::with_capacity(events.len()),
        };
        let first = events.first().map_or(0, |event| event.position.0);
        for (offset, event) in events.iter().enumerate() {
            assert_eq!(
                event.position.0,
                first + offset as u64,
                "the positions of one append are contiguous"
            );
            rows.positions.push(event.position.0 as i64);
            rows.products
                .push(event.stream.product_id.as_str().to_owned());
            rows.stores.push(event.stream.store_id.as_str().to_owned());
            rows.versions.push(event.version.0 as i64);
            // The column holds a command's key (its sender and id, see `CommandKey::stored`)
            // once, on its first event, so that it stays unique per command; every event's
            // payload carries the id and the sender.
            rows.command_ids.push(
                event
                    .command_id
                    .as_ref()
                    .filter(|_| event.command_event_index == 0)
                    .map(|id| {
                        CommandKey {
                            actor: event.actor.clone(),
                            command_id: id.clone(),
                        }
                        .stored()
                    }),
            );
            rows.payloads.push(encode_event(event));
        }
        rows
    }
}

impl Drop for PostgresAppendLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Release the head row: roll back before the connection goes back to the pool. If
            // no runtime is left, close the connection instead (PostgreSQL rolls back).
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        if client.batch_execute("ROLLBACK").await.is_err() {
                            drop(deadpool_postgres::Object::take(client));
                        }
                    });
                }
                Err(_) => drop(deadpool_postgres::Object::take(client)),
            }
        }
    }
}

impl super::AppendLock for PostgresAppendLock {
    fn head(&self) -> LogPosition {
        self.head
    }

    fn append(
        self: Box<Self>,
        events: Vec<RecordedEvent>,
    ) -> BoxFuture<'static, Result<(), LogError>> {
        Box::pin(bounded("appending", self.write(events)))
    }
}

fn decode_row(row: &tokio_postgres::Row) -> Result<RecordedEvent, LogError> {
    let payload: &[u8] = row.get(0);
    decode_event(payload).map_err(|error| LogError::CorruptRow {
        position: LogPosition(row.get::<_, i64>(1) as u64),
        problem: error.to_string(),
    })
}

/// Bounds one operation: a database that stops answering becomes an error, not a hang.
async fn bounded<T>(
    context: &'static str,
    operation: impl std::future::Future<Output = Result<T, LogError>>,
) -> Result<T, LogError> {
    tokio::time::timeout(OPERATION_TIMEOUT, operation)
        .await
        .unwrap_or_else(|_| {
            Err(LogError::Backend {
                context,
                message: format!("no answer within {OPERATION_TIMEOUT:?}"),
            })
        })
}

impl EventLog for PostgresLog {
    fn append(&self, events: Vec<RecordedEvent>) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(bounded("appending", self.append_events(events)))
    }

    fn read_all(
        &self,
        after: LogPosition,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, LogError>> {
        Box::pin(bounded("reading events", self.read_after(after, limit)))
    }

    fn read_stream(
        &self,
        stream: StreamKey,
        after: StreamVersion,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, LogError>> {
        Box::pin(bounded(
            "reading a stream",
            self.read_stream_after(stream, after, limit),
        ))
    }

    fn head(&self) -> LogPosition {
        *self.inner.head.borrow()
    }

    fn reachable(&self) -> watch::Receiver<bool> {
        self.inner.reachable.subscribe()
    }

    fn watch_head(&self) -> watch::Receiver<LogPosition> {
        self.inner.head.subscribe()
    }

    fn lock(&self) -> BoxFuture<'_, Result<Box<dyn super::AppendLock>, LogError>> {
        Box::pin(async move {
            let lock: Box<dyn super::AppendLock> =
                Box::new(bounded("locking the log", self.lock_head()).await?);
            Ok(lock)
        })
    }

    fn latest_head(&self) -> BoxFuture<'_, Result<LogPosition, LogError>> {
        Box::pin(async move {
            let client = self.inner.pool.get().await.map_err(pool_error)?;
            let position: i64 = client
                .query_one(&self.inner.statements.read_head, &[])
                .await
                .map_err(backend("reading the head"))?
                .get(0);
            let position = LogPosition(position as u64);
            self.inner.head.send_if_modified(|head| {
                let moved = *head < position;
                if moved {
                    *head = position;
                }
                moved
            });
            Ok(position)
        })
    }
}

async fn migrate(pool: &Pool, schema: &str) -> Result<(), LogError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let transaction = client
        .transaction()
        .await
        .map_err(backend("starting the migration"))?;
    // Serialize concurrent start-ups of several servers on one database.
    transaction
        .execute("SELECT pg_advisory_xact_lock(7243890011)", &[])
        .await
        .map_err(backend("locking for the migration"))?;
    transaction
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.schema_version (version integer NOT NULL);
             CREATE TABLE IF NOT EXISTS {schema}.events (
                 position bigint PRIMARY KEY CHECK (position > 0),
                 product_id text NOT NULL,
                 store_id text NOT NULL,
                 version bigint NOT NULL CHECK (version > 0),
                 command_id text,
                 payload bytea NOT NULL,
                 UNIQUE (product_id, store_id, version)
             );
             CREATE UNIQUE INDEX IF NOT EXISTS events_command_id ON {schema}.events (command_id)
                 WHERE command_id IS NOT NULL;
             CREATE TABLE IF NOT EXISTS {schema}.head (
                 single boolean PRIMARY KEY DEFAULT true CHECK (single),
                 position bigint NOT NULL
             );
             INSERT INTO {schema}.head (single, position) VALUES (true, 0) ON CONFLICT DO NOTHING;"
        ))
        .await
        .map_err(backend("creating the schema"))?;
    let version: Option<i32> = transaction
        .query_opt(
            &format!("SELECT max(version) FROM {schema}.schema_version"),
            &[],
        )
        .await
        .map_err(backend("reading the schema version"))?
        .and_then(|row| row.get(0));
    match version {
        None => {
            transaction
                .execute(
                    &format!("INSERT INTO {schema}.schema_version (version) VALUES ($1)"),
                    &[&SCHEMA_VERSION],
                )
                .await
                .map_err(backend("recording the schema version"))?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(LogError::Backend {
                context: "checking the schema version",
                message: format!(
                    "the database has schema version {other}; this server understands {SCHEMA_VERSION}"
                ),
            });
        }
    }
    transaction
        .commit()
        .await
        .map_err(backend("committing the migration"))?;
    Ok(())
}
