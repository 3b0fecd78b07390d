//! Opening the embedded log: every record is read, checked and decoded (on a thread of its
//! own, in batches), then positions and versions are checked and indexed in log order, and the
//! events handed to the caller's folds. The first problem in log order is the one reported.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;

use super::format::{
    FRAME_HEADER_LEN, HEADER, MAX_RECORD_BYTES, MAX_TORN_TAIL_BYTES, checksum_matches, parse_frame,
};
use super::index::{Index, KeyInterner};
use super::{OpenReport, io_error};
use crate::domain::{LogPosition, RecordedEvent};
use crate::log::codec::{EventDecoder, decode_event};
use crate::log::{LogError, MAX_APPEND_EVENTS};

/// How many replayed events are handed to the visitor at once.
pub const REPLAY_BATCH_EVENTS: usize = 1024;

/// How many decoded batches may wait for the indexing thread during a replay.
pub(super) const REPLAY_QUEUE_BATCHES: usize = 8;

/// Events decoded from consecutive records, and where each record starts.
pub(super) struct DecodedBatch {
    offsets: Vec<u64>,
    events: Vec<RecordedEvent>,
}

impl DecodedBatch {
    fn new() -> DecodedBatch {
        DecodedBatch {
            offsets: Vec::with_capacity(REPLAY_BATCH_EVENTS),
            events: Vec::with_capacity(REPLAY_BATCH_EVENTS),
        }
    }
}

/// Reads every record from the start, indexing and visiting each (in batches of up to
/// [`REPLAY_BATCH_EVENTS`], in order); returns the offset just past the last whole record.
/// Stops with an error on corruption that is not a torn tail; the first problem in log order
/// is the one reported.
///
/// Reading the records, checking their checksums and decoding them (most of a replay's work)
/// runs on a thread of its own, ahead of this one, which checks positions and versions,
/// indexes and visits. That thread also keeps one copy of each product and store id, so
/// the ids of a stream seen before are neither parsed nor allocated again (and allocations
/// made on one thread are not all freed on the other, which is slow with glibc's arenas).
pub(super) fn replay(
    file: &File,
    index: &mut Index,
    visit: &mut impl FnMut(Vec<RecordedEvent>) -> Result<(), LogError>,
    report: &mut OpenReport,
) -> Result<u64, LogError> {
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel(REPLAY_QUEUE_BATCHES);
        let decoder = std::thread::Builder::new()
            .name("replay-decode".to_owned())
            .spawn_scoped(scope, move || decode_records(file, &sender))
            .map_err(io_error("starting the replay's decoding thread"))?;
        for batch in receiver {
            // An error here drops the receiver, which stops the decoding thread.
            index_and_visit(batch, index, visit, report)?;
        }
        decoder
            .join()
            .expect("the replay's decoding thread panicked")
    })
}

/// Checks each event's position and version, indexes it and hands the batch to `visit`.
pub(super) fn index_and_visit(
    batch: DecodedBatch,
    index: &mut Index,
    visit: &mut impl FnMut(Vec<RecordedEvent>) -> Result<(), LogError>,
    report: &mut OpenReport,
) -> Result<(), LogError> {
    let DecodedBatch {
        offsets,
        mut events,
    } = batch;
    let mut problem = None;
    for (at, (event, &offset)) in events.iter_mut().zip(&offsets).enumerate() {
        if let Err(error) = index_event(event, offset, index) {
            problem = Some((at, error));
            break;
        }
    }
    // The events before a problem are visited first: a refusal among them comes first in
    // the log.
    events.truncate(problem.as_ref().map_or(events.len(), |(at, _)| *at));
    report.events += events.len() as u64;
    if !events.is_empty() {
        visit(events)?;
    }
    match problem {
        Some((_, error)) => Err(error),
        None => Ok(()),
    }
}

pub(super) fn index_event(
    event: &mut RecordedEvent,
    offset: u64,
    index: &mut Index,
) -> Result<(), LogError> {
    let expected_position = index.head().next();
    if event.position != expected_position {
        return Err(LogError::Corrupt {
            offset,
            problem: format!(
                "position {} where {expected_position} was expected",
                event.position
            ),
        });
    }
    // Indexing also gives the event the index's copy of its stream key, which the folds
    // keep. If the version is wrong the open fails, so the index entry does not matter.
    let expected_version = index
        .record(&mut event.stream, event.position, offset)
        .next();
    if event.version != expected_version {
        return Err(LogError::Corrupt {
            offset,
            problem: format!(
                "stream {} has version {} where {expected_version} was expected",
                event.stream, event.version
            ),
        });
    }
    Ok(())
}

/// Reads, checks and decodes every record from the start, sending them in batches; returns
/// the offset just past the last whole record, or the first damage that is not a torn tail.
/// Stops early, without error, when the receiver is gone.
/// Over 70 lines: one loop over the file's frames with each way a frame can be damaged
/// handled where it is found, which reads best in one place.
pub(super) fn decode_records(
    file: &File,
    sender: &std::sync::mpsc::SyncSender<DecodedBatch>,
) -> Result<u64, LogError> {
    let mut batch = DecodedBatch::new();
    let mut records = 0u64;
    let mut ids = KeyInterner::default();
    let send = |batch: DecodedBatch| sender.send(batch).is_ok();
    let file_length = file
        .metadata()
        .map_err(io_error("reading the log file's size"))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    read_header(&mut reader)?;
    let mut offset = HEADER.len() as u64;
    let mut payload = Vec::with_capacity(MAX_RECORD_BYTES);
    let mut decoder = EventDecoder::default();
    loop {
        if offset == file_length {
            break;
        }
        let length = match read_record(&mut reader, file_length - offset, &mut payload)? {
            Ok(length) => length,
            Err(problem) => {
                // The records before a damaged one are sent first: a problem among them comes
                // first. A torn tail takes the command it cut with it.
                let (batch, end) = without_partial_command(batch, offset);
                if !send(batch) {
                    return Ok(end);
                }
                check_torn_tail(file, offset, file_length, LogPosition(records), problem)?;
                return Ok(end);
            }
        };
        let mut known = true;
        let decoded = decoder.decode(&payload, |product_id, store_id| {
            let stream = ids.known(product_id, store_id);
            known = stream.is_some();
            stream
        });
        let mut event = match decoded {
            Ok(event) => event,
            Err(error) => {
                send(batch);
                return Err(LogError::Corrupt {
                    offset,
                    problem: error.to_string(),
                });
            }
        };
        if !known {
            event.stream = ids.key(&event.stream);
        }
        batch.offsets.push(offset);
        batch.events.push(event);
        records += 1;
        offset += (FRAME_HEADER_LEN + length) as u64;
        // A batch ends with a whole command, so that the end of the log can still take back a
        // command that a crash cut short before any of it is visited.
        let whole = batch.events.last().is_some_and(RecordedEvent::ends_command);
        if batch.events.len() >= REPLAY_BATCH_EVENTS
            && (whole || batch.events.len() >= REPLAY_BATCH_EVENTS + MAX_APPEND_EVENTS)
            && !send(std::mem::replace(&mut batch, DecodedBatch::new()))
        {
            return Ok(offset);
        }
    }
    let (batch, end) = without_partial_command(batch, offset);
    send(batch);
    Ok(end)
}

/// The batch without the events of a command whose last event is missing at the end of the
/// log, and where the log's whole records end then: a crash during the command's one write
/// left part of it, and the command was never acknowledged.
fn without_partial_command(mut batch: DecodedBatch, end: u64) -> (DecodedBatch, u64) {
    if batch.events.last().is_none_or(RecordedEvent::ends_command) {
        return (batch, end);
    }
    let start = crate::log::whole_commands_len(&batch.events).unwrap_or(0);
    let end = batch.offsets[start];
    batch.events.truncate(start);
    batch.offsets.truncate(start);
    (batch, end)
}

/// Reads and checks the file's header.
fn read_header(reader: &mut impl Read) -> Result<(), LogError> {
    let mut header = [0u8; 8];
    reader
        .read_exact(&mut header)
        .map_err(|_| LogError::Corrupt {
            offset: 0,
            problem: "file is shorter than its header".to_owned(),
        })?;
    if header != HEADER {
        return Err(LogError::Corrupt {
            offset: 0,
            problem: format!("not an inventory log (header {header:?})"),
        });
    }
    Ok(())
}

/// Reads the next record, `remaining` bytes before the end of the file, into `payload`:
/// its payload's length, or what is damaged about it.
fn read_record(
    reader: &mut impl Read,
    remaining: u64,
    payload: &mut Vec<u8>,
) -> Result<Result<usize, &'static str>, LogError> {
    let mut frame_header = [0u8; FRAME_HEADER_LEN];
    if remaining < FRAME_HEADER_LEN as u64 {
        return Ok(Err("frame header cut short"));
    }
    reader
        .read_exact(&mut frame_header)
        .map_err(io_error("reading the log"))?;
    let length = u32::from_le_bytes(frame_header[0..4].try_into().expect("4 bytes")) as usize;
    if length == 0 || length > MAX_RECORD_BYTES {
        return Ok(Err("frame length out of range"));
    }
    if remaining - (FRAME_HEADER_LEN as u64) < length as u64 {
        return Ok(Err("frame payload cut short"));
    }
    payload.resize(length, 0);
    reader
        .read_exact(payload)
        .map_err(io_error("reading the log"))?;
    if !checksum_matches(&frame_header, payload) {
        return Ok(Err("checksum mismatch"));
    }
    Ok(Ok(length))
}

/// A damaged record at `offset`: a torn tail if no valid record follows it, else corruption.
pub(super) fn check_torn_tail(
    file: &File,
    offset: u64,
    file_length: u64,
    head: LogPosition,
    problem: &str,
) -> Result<(), LogError> {
    let tail_length = file_length - offset;
    let corrupt = |detail: String| LogError::Corrupt {
        offset,
        problem: format!("{problem} after position {head}; {detail}"),
    };
    if tail_length > MAX_TORN_TAIL_BYTES {
        return Err(corrupt(format!(
            "{tail_length} bytes follow, more than one append can leave behind"
        )));
    }
    let mut tail = vec![0; tail_length as usize];
    file.read_exact_at(&mut tail, offset)
        .map_err(io_error("reading the log's tail"))?;
    for start in 1..tail.len() {
        if let Ok((payload, _)) = parse_frame(&tail[start..])
            && decode_event(payload).is_ok()
        {
            return Err(corrupt(format!(
                "a valid record follows at byte offset {}",
                offset + start as u64
            )));
        }
    }
    Ok(())
}
