//! Where each sink's cursor is kept: the last log position it has delivered, whether it is
//! parked, and since when it has been failing. With the embedded log, a small JSON file per
//! sink in the data directory, replaced atomically (written beside, fsynced, renamed over, the
//! directory fsynced), so a crash leaves either the old cursor or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::domain::{LogPosition, Timestamp};
use crate::log::BoxFuture;

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

/// Durable cursors, by sink name.
pub trait CursorStore: Send + Sync + 'static {
    /// The stored cursor; `None` for a sink never stored (it starts at position 0).
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<SinkCursor>, CursorError>>;

    /// Stores `cursor`, durably, before returning.
    fn save<'a>(
        &'a self,
        name: &'a str,
        cursor: SinkCursor,
    ) -> BoxFuture<'a, Result<(), CursorError>>;
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
        std::fs::create_dir_all(&self.directory)
            .map_err(|error| failed(&format!("create {}", self.directory.display()), error))?;
        let path = self.path(name);
        let temporary = self.directory.join(format!(".{name}.cursor.json.new"));
        let text = serde_json::json!({
            "position": cursor.position.0,
            "parked": cursor.parked,
            "failing_since_unix_ms": cursor.failing_since.map(Timestamp::unix_millis),
        })
        .to_string();
        let mut file = std::fs::File::create(&temporary)
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

impl CursorStore for FileCursors {
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<SinkCursor>, CursorError>> {
        let store = self.clone();
        let name = name.to_owned();
        Box::pin(async move {
            let owned = name.clone();
            tokio::task::spawn_blocking(move || store.read(&owned))
                .await
                .expect("reading a cursor panicked")
                .map_err(|problem| CursorError { name, problem })
        })
    }

    fn save<'a>(
        &'a self,
        name: &'a str,
        cursor: SinkCursor,
    ) -> BoxFuture<'a, Result<(), CursorError>> {
        let store = self.clone();
        let name = name.to_owned();
        Box::pin(async move {
            let owned = name.clone();
            tokio::task::spawn_blocking(move || store.write(&owned, cursor))
                .await
                .expect("writing a cursor panicked")
                .map_err(|problem| CursorError { name, problem })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cursor_file_is_replaced_whole_and_read_back() {
        let directory = tempfile::tempdir().unwrap();
        let store = FileCursors::new(directory.path());
        assert_eq!(store.load("erp").await.unwrap(), None);
        let cursor = SinkCursor {
            position: LogPosition(42),
            parked: true,
            failing_since: Some(Timestamp::from_unix_millis(1_700_000_000_000)),
        };
        store.save("erp", cursor).await.unwrap();
        assert_eq!(store.load("erp").await.unwrap(), Some(cursor));
        store.save("erp", SinkCursor::default()).await.unwrap();
        assert_eq!(
            store.load("erp").await.unwrap(),
            Some(SinkCursor::default())
        );
        let names: Vec<_> = std::fs::read_dir(directory.path().join("sinks"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["erp.cursor.json"], "no temporary file is left");
    }
}
