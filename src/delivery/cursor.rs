//! Where each sink's cursor is kept (the last log position it has delivered, whether it is
//! parked, and since when it has been failing) and who may deliver the sink.
//!
//! - With the embedded log ([`FileCursors`]), one process owns the data directory: its claim
//!   on every sink is immediate and never lost, and a cursor is a small JSON file per sink,
//!   replaced atomically (written beside, fsynced, renamed over, the directory fsynced), so a
//!   crash leaves either the old cursor or the new one.
//! - With PostgreSQL ([`super::postgres::PgClaims`]), many command servers share the log and
//!   one of them holds each sink, by a session advisory lock; the cursor is a row, written
//!   through the session that holds the lock, so a server that lost its lock cannot write.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::domain::{LogPosition, Timestamp};
use crate::log::BoxFuture;
use crate::log::embedded::{create_private_directory, create_private_file};

/// A sink's durable state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCursor {
    pub position: LogPosition,
    pub parked: bool,
    pub failing_since: Option<Timestamp>,
}

/// A cursor store failed: the deliverer stops sending until it can store again (it never
/// sends past what it could not record).
#[derive(Debug, thiserror::Error)]
#[error("sink cursor {name}: {problem}")]
pub struct CursorError {
    pub name: String,
    pub problem: String,
}

/// Who may deliver which sink, and where their cursors live.
pub trait Claims: Send + Sync + 'static {
    /// Whether other servers may hold this server's sinks (a shared database); `false` when
    /// every claim is this server's at once.
    fn shared(&self) -> bool;

    /// Waits until this server may deliver the sink `name`, calling `standby` with the stored
    /// cursor (when it can read it) while another server holds it.
    fn claim<'a>(
        &'a self,
        name: &'a str,
        standby: &'a (dyn Fn(SinkCursor) + Send + Sync),
    ) -> BoxFuture<'a, Result<Box<dyn Claim>, CursorError>>;
}

/// The right to deliver one sink, and its durable cursor, until dropped or lost.
pub trait Claim: Send {
    /// The stored cursor; `None` for a sink never stored (it starts at position 0).
    fn load(&mut self) -> BoxFuture<'_, Result<Option<SinkCursor>, CursorError>>;

    /// Stores `cursor`, durably, before returning.
    fn save(&mut self, cursor: SinkCursor) -> BoxFuture<'_, Result<(), CursorError>>;

    /// Resolves once the claim is lost (another server may hold the sink now): stop
    /// delivering. Never, for a claim that cannot be lost.
    fn lost(&mut self) -> BoxFuture<'_, ()>;

    /// Whether the claim is lost.
    fn is_lost(&self) -> bool;
}

/// Cursors as files in `<data dir>/sinks/`: `<name>.cursor.json`.
#[derive(Clone, Debug)]
pub struct FileCursors {
    directory: PathBuf,
}

impl FileCursors {
    /// Cursors in `data_dir/sinks`, made when the first is stored.
    pub fn new(data_dir: &Path) -> FileCursors {
        FileCursors {
            directory: data_dir.join("sinks"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.directory.join(format!("{name}.cursor.json"))
    }

    fn read(&self, name: &str) -> Result<Option<SinkCursor>, String> {
        let path = self.path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|error| format!("{} is not JSON: {error}", path.display()))?;
        let position = value["position"]
            .as_u64()
            .ok_or_else(|| format!("{} has no `position`", path.display()))?;
        Ok(Some(SinkCursor {
            position: LogPosition(position),
            parked: value["parked"].as_bool().unwrap_or(false),
            failing_since: value["failing_since_unix_ms"]
                .as_u64()
                .map(Timestamp::from_unix_millis),
        }))
    }

    fn write(&self, name: &str, cursor: SinkCursor) -> Result<(), String> {
        let failed = |what: &str, error: std::io::Error| format!("cannot {what}: {error}");
        create_private_directory(&self.directory)
            .map_err(|error| failed(&format!("create {}", self.directory.display()), error))?;
        let path = self.path(name);
        let temporary = self.directory.join(format!(".{name}.cursor.json.new"));
        let text = serde_json::json!({
            "position": cursor.position.0,
            "parked": cursor.parked,
            "failing_since_unix_ms": cursor.failing_since.map(Timestamp::unix_millis),
        })
        .to_string();
        let mut file = create_private_file(&temporary)
            .map_err(|error| failed(&format!("create {}", temporary.display()), error))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|error| failed(&format!("write {}", temporary.display()), error))?;
        std::fs::rename(&temporary, &path)
            .map_err(|error| failed(&format!("rename to {}", path.display()), error))?;
        std::fs::File::open(&self.directory)
            .and_then(|directory| directory.sync_all())
            .map_err(|error| failed(&format!("fsync {}", self.directory.display()), error))
    }
}

impl FileCursors {
    async fn load_async(&self, name: &str) -> Result<Option<SinkCursor>, CursorError> {
        let store = self.clone();
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || store.read(&owned))
            .await
            .expect("reading a cursor panicked")
            .map_err(|problem| CursorError {
                name: name.to_owned(),
                problem,
            })
    }

    async fn save_async(&self, name: &str, cursor: SinkCursor) -> Result<(), CursorError> {
        let store = self.clone();
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || store.write(&owned, cursor))
            .await
            .expect("writing a cursor panicked")
            .map_err(|problem| CursorError {
                name: name.to_owned(),
                problem,
            })
    }
}

impl Claims for FileCursors {
    fn shared(&self) -> bool {
        false
    }

    fn claim<'a>(
        &'a self,
        name: &'a str,
        _standby: &'a (dyn Fn(SinkCursor) + Send + Sync),
    ) -> BoxFuture<'a, Result<Box<dyn Claim>, CursorError>> {
        let claim: Box<dyn Claim> = Box::new(FileClaim {
            store: self.clone(),
            name: name.to_owned(),
        });
        Box::pin(async move { Ok(claim) })
    }
}

/// A sink of a data directory this process owns: never lost.
struct FileClaim {
    store: FileCursors,
    name: String,
}

impl Claim for FileClaim {
    fn load(&mut self) -> BoxFuture<'_, Result<Option<SinkCursor>, CursorError>> {
        Box::pin(self.store.load_async(&self.name))
    }

    fn save(&mut self, cursor: SinkCursor) -> BoxFuture<'_, Result<(), CursorError>> {
        Box::pin(self.store.save_async(&self.name, cursor))
    }

    fn lost(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    fn is_lost(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cursor_file_is_replaced_whole_and_read_back() {
        let directory = tempfile::tempdir().unwrap();
        let store = FileCursors::new(directory.path());
        assert_eq!(store.load_async("erp").await.unwrap(), None);
        let cursor = SinkCursor {
            position: LogPosition(42),
            parked: true,
            failing_since: Some(Timestamp::from_unix_millis(1_700_000_000_000)),
        };
        store.save_async("erp", cursor).await.unwrap();
        assert_eq!(store.load_async("erp").await.unwrap(), Some(cursor));
        store
            .save_async("erp", SinkCursor::default())
            .await
            .unwrap();
        assert_eq!(
            store.load_async("erp").await.unwrap(),
            Some(SinkCursor::default())
        );
        let names: Vec<_> = std::fs::read_dir(directory.path().join("sinks"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["erp.cursor.json"], "no temporary file is left");
    }
}
