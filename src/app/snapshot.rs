//! Snapshots: the command side's state and the read model at one log position, so that a
//! start replays only the events after it.
//!
//! A snapshot is a file `snapshots/snapshot-<position>.snap` beside the embedded log (all
//! integers little-endian):
//! - `INVSNAP` and a zero byte, then the format version (`u32`, [`FORMAT_VERSION`]);
//! - the position it was taken at (`u64`) and the id of the event there (`u128`, 0 at
//!   position 0), which start-up checks against the log, so that a snapshot of another log is
//!   never loaded;
//! - the body's length (`u64`) and its CRC-32C (`u32`, over the version, position, event id,
//!   length and body);
//! - the body: the command state's length (`u64`) and bytes, then the read model's bytes, each
//!   in the canonical encoding of [`crate::domain::state_codec`].
//!
//! A snapshot is written to a `.tmp` file, synced, renamed into place and the folder synced,
//! so a crash leaves either the whole file or none (a stray `.tmp` is ignored and removed by
//! the next snapshot). One that fails its checksum, is cut short or has an unknown version is
//! skipped with a warning and the next older one is used, or the whole log is replayed: a
//! snapshot saves time and never decides the state.
//!
//! Snapshots are taken off the command path: [`take`] loads the newest snapshot into a state
//! of its own, folds the log's events after it (on its own thread, reading through the log
//! like any reader), and writes the result. The writer never waits for it; the cost is a second
//! copy of the state while a snapshot is being made.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::command::CommandState;
use super::projection::{ReadModel, ReadModelState};
use crate::domain::state_codec::{Decode, DecodeError, Decoder, Encoder};
use crate::domain::{LogPosition, RecordedEvent};
use crate::log::{LogError, MAX_READ_EVENTS};

/// The folder of snapshots inside a data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// The version of the snapshot format this build writes and reads. A snapshot of another
/// version is skipped (and the log replayed), so the format may change between releases.
pub const FORMAT_VERSION: u32 = 2;

const MAGIC: &[u8; 8] = b"INVSNAP\0";
/// Magic, version, position, event id, body length, checksum.
const HEADER_LEN: usize = 8 + 4 + 8 + 16 + 8 + 4;

/// How often snapshots are taken, and how many are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Events appended between two snapshots; 0 takes none while running (only at a clean
    /// shutdown).
    pub every_events: u64,
    /// Snapshots kept; the oldest beyond this are removed after a new one is written.
    pub keep: usize,
}

impl SnapshotPolicy {
    pub const DEFAULT: SnapshotPolicy = SnapshotPolicy {
        every_events: 1_000_000,
        keep: 2,
    };
    /// No snapshot is written and none is loaded: every start replays the whole log.
    pub const OFF: SnapshotPolicy = SnapshotPolicy {
        every_events: 0,
        keep: 0,
    };

    pub fn enabled(&self) -> bool {
        self.keep > 0
    }
}

impl Default for SnapshotPolicy {
    fn default() -> SnapshotPolicy {
        SnapshotPolicy::DEFAULT
    }
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{path}: not a snapshot (no INVSNAP header)")]
    NotASnapshot { path: PathBuf },
    #[error("{path}: snapshot format version {version}, this build reads {FORMAT_VERSION}")]
    UnknownVersion { path: PathBuf, version: u32 },
    #[error("{path}: cut short: {expected} bytes of body, {found} present")]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        path: PathBuf,
        stored: u32,
        computed: u32,
    },
    #[error("{path}: {source}")]
    Decode { path: PathBuf, source: DecodeError },
    #[error(transparent)]
    Log(#[from] LogError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Io {
        context: context.into(),
        source,
    }
}

/// A snapshot file read whole and checked (header, length, checksum); its body is decoded by
/// [`Snapshot::decode`].
pub struct Snapshot {
    pub path: PathBuf,
    pub position: LogPosition,
    /// The id of the event at `position` (0 at position 0).
    pub event_id: u128,
    body: Vec<u8>,
}

impl Snapshot {
    /// The bytes of a snapshot of `state` and `model`, both at the position of `event_id`'s
    /// event (see [`take`]).
    pub fn encode(state: &CommandState, model: &ReadModel, event_id: u128) -> Vec<u8> {
        assert_eq!(
            state.head(),
            model.position(),
            "the command state and the read model are at one position"
        );
        let mut command = Encoder::new();
        command.put(state);
        let mut body = Encoder::new();
        body.put(&(command.len() as u64));
        let command = command.into_bytes();
        let mut body = body.into_bytes();
        body.extend_from_slice(&command);
        let mut model_part = Encoder::new();
        model.encode_state(&mut model_part);
        body.extend_from_slice(&model_part.into_bytes());
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&state.head().0.to_le_bytes());
        bytes.extend_from_slice(&event_id.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        let checksum = crc32c::crc32c_append(crc32c::crc32c(&bytes[8..HEADER_LEN - 4]), &body);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    /// Reads and checks the snapshot at `path`.
    pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
        let mut file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io(format!("reading {}", path.display())))?;
        Snapshot::parse(path, bytes)
    }

    fn parse(path: &Path, mut bytes: Vec<u8>) -> Result<Snapshot, SnapshotError> {
        let path = path.to_owned();
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(SnapshotError::NotASnapshot { path });
        }
        let field = |at: usize, len: usize| &bytes[at..at + len];
        let version = u32::from_le_bytes(field(8, 4).try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnknownVersion { path, version });
        }
        if bytes.len() < HEADER_LEN {
            return Err(SnapshotError::Truncated {
                path,
                expected: HEADER_LEN as u64,
                found: bytes.len() as u64,
            });
        }
        let position = u64::from_le_bytes(field(12, 8).try_into().expect("8 bytes"));
        let event_id = u128::from_le_bytes(field(20, 16).try_into().expect("16 bytes"));
        let body_len = u64::from_le_bytes(field(36, 8).try_into().expect("8 bytes"));
        let stored = u32::from_le_bytes(field(44, 4).try_into().expect("4 bytes"));
        let found = (bytes.len() - HEADER_LEN) as u64;
        if found != body_len {
            return Err(SnapshotError::Truncated {
                path,
                expected: body_len,
                found,
            });
        }
        let computed = crc32c::crc32c_append(
            crc32c::crc32c(&bytes[8..HEADER_LEN - 4]),
            &bytes[HEADER_LEN..],
        );
        if computed != stored {
            return Err(SnapshotError::Checksum {
                path,
                stored,
                computed,
            });
        }
        bytes.drain(..HEADER_LEN);
        Ok(Snapshot {
            path,
            position: LogPosition(position),
            event_id,
            body: bytes,
        })
    }

    /// The command state and the read model's state the snapshot holds.
    pub fn decode(&self) -> Result<(CommandState, ReadModelState), SnapshotError> {
        let decode = || -> Result<(CommandState, ReadModelState), DecodeError> {
            let mut input = Decoder::new(&self.body);
            let command_len = input.u64()? as usize;
            let rest = input.raw(command_len)?;
            let mut command = Decoder::new(rest);
            let state = CommandState::decode(&mut command)?;
            command.finish()?;
            let model = ReadModelState::decode(&mut input)?;
            input.finish()?;
            if state.head() != LogPosition(self.position.0)
                || model.position() != LogPosition(self.position.0)
            {
                return Err(DecodeError::new(format!(
                    "the states are at {} and {}, the header says {}",
                    state.head().0,
                    model.position().0,
                    self.position.0
                )));
            }
            Ok((state, model))
        };
        decode().map_err(|source| SnapshotError::Decode {
            path: self.path.clone(),
            source,
        })
    }

    /// The body, for comparing two snapshots' states.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// The snapshots in `data_dir`, newest first (by the position in their names).
pub fn list(data_dir: &Path) -> Vec<(LogPosition, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(SNAPSHOT_DIR)) else {
        return Vec::new();
    };
    let mut found: Vec<(LogPosition, PathBuf)> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let position = name
                .strip_prefix("snapshot-")?
                .strip_suffix(".snap")?
                .parse()
                .ok()?;
            Some((LogPosition(position), path))
        })
        .collect();
    found.sort_by_key(|(position, _)| std::cmp::Reverse(*position));
    found
}

/// The newest snapshot in `data_dir` that reads and decodes whole, with its states; each one
/// newer that does not is skipped with a warning. `None` when there is none.
pub fn load_newest(data_dir: &Path) -> Option<(Snapshot, CommandState, ReadModelState)> {
    for (_, path) in list(data_dir) {
        match Snapshot::read(&path).and_then(|snapshot| {
            let (state, model) = snapshot.decode()?;
            Ok((snapshot, state, model))
        }) {
            Ok(loaded) => return Some(loaded),
            Err(error) => tracing::warn!(%error, "skipping a snapshot that cannot be used"),
        }
    }
    None
}

/// Writes `bytes` (from [`Snapshot::encode`]) as the snapshot at `position` in `data_dir`:
/// to a temporary file, synced, renamed into place, the folder synced. Then removes the
/// snapshots older than the newest `keep` and any temporary file left by a crash.
pub fn write(
    data_dir: &Path,
    position: LogPosition,
    bytes: &[u8],
    keep: usize,
) -> Result<PathBuf, SnapshotError> {
    let folder = data_dir.join(SNAPSHOT_DIR);
    std::fs::create_dir_all(&folder).map_err(io(format!("creating {}", folder.display())))?;
    restrict(&folder, 0o700);
    let path = folder.join(format!("snapshot-{:020}.snap", position.0));
    let temporary = path.with_extension("snap.tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&temporary)
        .map_err(io(format!("creating {}", temporary.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(format!("writing {}", temporary.display())))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(io(format!("renaming {}", temporary.display())))?;
    File::open(&folder)
        .and_then(|folder| folder.sync_all())
        .map_err(io(format!("syncing {}", folder.display())))?;
    for (_, old) in list(data_dir).into_iter().skip(keep.max(1)) {
        if let Err(error) = std::fs::remove_file(&old) {
            tracing::warn!(%error, path = %old.display(), "could not remove an old snapshot");
        }
    }
    if let Ok(entries) = std::fs::read_dir(&folder) {
        for entry in entries.flatten() {
            let stray = entry.path();
            if stray != temporary && stray.extension().is_some_and(|ext| ext == "tmp") {
                let _ = std::fs::remove_file(stray);
            }
        }
    }
    Ok(path)
}

fn restrict(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// What [`take`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub position: LogPosition,
    /// Where the fold started: the snapshot it loaded, or 0.
    pub from: LogPosition,
    pub path: PathBuf,
    pub bytes: u64,
}

/// Folds the log from the newest usable snapshot in `data_dir` (or from the start) up to
/// `until` and writes a snapshot there; `None` when the newest snapshot is already there.
/// `read` returns the log's events after a position (at most [`MAX_READ_EVENTS`], in order).
/// Blocking: run it on a thread of its own, off the command path.
///
/// The remembered command ids older than the idempotency window before the last event are
/// left out: a server that loads the snapshot later would forget them at once.
pub fn take(
    data_dir: &Path,
    until: LogPosition,
    keep: usize,
    mut read: impl FnMut(LogPosition) -> Result<Vec<RecordedEvent>, LogError>,
) -> Result<Option<Taken>, SnapshotError> {
    let model = ReadModel::detached();
    let (mut state, mut event_id) = match load_newest(data_dir) {
        Some((snapshot, state, model_state)) => {
            if snapshot.position >= until {
                return Ok(None);
            }
            model.restore_state(model_state);
            (state, snapshot.event_id)
        }
        None => (CommandState::new(), 0),
    };
    let from = state.head();
    let mut last_time = None;
    while state.head() < until {
        let events = read(state.head())?;
        if events.is_empty() {
            break;
        }
        let wanted = events
            .iter()
            .take_while(|event| event.position <= until)
            .count();
        let events = &events[..wanted];
        for event in events {
            state.apply(event)?;
        }
        model.apply_batch(events)?;
        if let Some(last) = events.last() {
            event_id = last.event_id.0;
            last_time = Some(last.occurred_at);
        }
        if wanted == 0 {
            break;
        }
    }
    if state.head() == from {
        return Ok(None);
    }
    if let Some(time) = last_time {
        state.forget_old_commands(time);
    }
    let bytes = Snapshot::encode(&state, &model, event_id);
    let path = write(data_dir, state.head(), &bytes, keep)?;
    Ok(Some(Taken {
        position: state.head(),
        from,
        path,
        bytes: bytes.len() as u64,
    }))
}

/// Reads pages of `MAX_READ_EVENTS` from a log through `runtime` (for [`take`] on a blocking
/// thread of a server).
pub fn read_through(
    runtime: tokio::runtime::Handle,
    log: std::sync::Arc<dyn crate::log::EventLog>,
) -> impl FnMut(LogPosition) -> Result<Vec<RecordedEvent>, LogError> {
    move |after| runtime.block_on(log.read_all(after, MAX_READ_EVENTS))
}
