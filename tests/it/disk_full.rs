//! The embedded log's disk fills up: on a small tmpfs made by the test, commands fail with
//! `UNAVAILABLE` (nothing stored, retry later), the breaker then refuses them at once, the log
//! stays sound (every acknowledged command in it, nothing else, no damaged record), and once
//! space is freed the service accepts commands again without a restart.
//!
//! Mounting needs privileges (root, or CAP_SYS_ADMIN). Where the mount is refused the test
//! prints why and passes without running.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tonic::Code;

use inventory::server::LogConfig;
use support::{Combined, add_stock, get_stock};

/// A tmpfs of `size` mounted on a new temporary directory, unmounted on drop.
struct SmallDisk {
    directory: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<SmallDisk, String> {
        let directory = tempfile::tempdir().map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(directory.path())
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(SmallDisk { directory })
    }

    fn path(&self) -> &Path {
        self.directory.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a server that a failed assertion left running must not keep the mount.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.directory.path())
            .status();
    }
}

/// Fills the file system but for about `leave` bytes, with one file.
fn fill(directory: &Path, leave: u64) -> PathBuf {
    use std::io::Write;
    let filler = directory.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    loop {
        if file.write_all(&block).is_err() {
            break;
        }
    }
    drop(file);
    // Give back `leave` bytes (whole pages: tmpfs counts pages).
    let length = std::fs::metadata(&filler).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    file.set_len(length.saturating_sub(leave)).unwrap();
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_commands_cleanly_and_the_service_recovers_when_space_is_freed() {
    let disk = match SmallDisk::mount("1m") {
        Ok(disk) => disk,
        Err(reason) => {
            println!("skipped: cannot mount a small file system here ({reason})");
            return;
        }
    };
    let data = disk.path().join("data");
    let server = Combined::start(&data).await;
    let mut commands = server.commands().await;
    commands
        .add_stock(add_stock("p", "s", 1))
        .await
        .expect("the log works before the disk fills");
    let filler = fill(disk.path(), 8 * 1024);

    // Commands succeed until the space is gone, then fail with UNAVAILABLE; nothing is
    // acknowledged that was not stored.
    let mut acknowledged = 1;
    let mut failures = Vec::new();
    for i in 0..10_000 {
        let request = pb_request(i);
        match commands.add_stock(request).await {
            Ok(_) if failures.is_empty() => acknowledged += 1,
            Ok(_) => {
                panic!("a command succeeded after the disk was full and before space was freed")
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                failures.push(status);
                if failures.len() == 5 {
                    break;
                }
            }
        }
    }
    assert_eq!(failures.len(), 5, "the disk never filled");
    println!(
        "{acknowledged} commands acknowledged before the disk filled; then: {}",
        failures
            .iter()
            .map(|status| status.message())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert!(acknowledged > 1, "the 8 KiB left held some events");
    assert!(
        failures[0]
            .message()
            .contains("the event log could not store the command; nothing was written"),
        "{:?}",
        failures[0]
    );
    // After three storage failures the breaker refuses at once.
    assert!(
        failures.iter().any(|status| status
            .message()
            .contains("commands are refused until it recovers")),
        "{failures:?}"
    );

    // The log on disk is sound and holds exactly the acknowledged commands.
    let report = inventory::tools::verify(&LogConfig::Embedded {
        data_dir: data.clone(),
    })
    .await
    .expect("the log verifies while the disk is full");
    assert_eq!(report.events, acknowledged);

    // Space comes back: commands succeed again without a restart (once the breaker's
    // cool-down has let a probe through).
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match commands.add_stock(add_stock("p", "s", 1)).await {
            Ok(_) => {
                acknowledged += 1;
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "commands still fail 30 s after space was freed: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    for _ in 0..10 {
        commands.add_stock(add_stock("p", "s", 1)).await.unwrap();
        acknowledged += 1;
    }
    server.stop().await;

    // After a restart the stock is exactly what was acknowledged.
    let restarted = Combined::start(&data).await;
    let stock = restarted
        .queries()
        .await
        .get_stock(get_stock("p", "s", acknowledged))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stock.item.unwrap().stock.unwrap().on_hand,
        acknowledged as i64
    );
    restarted.stop().await;
    let report = inventory::tools::verify(&LogConfig::Embedded { data_dir: data })
        .await
        .unwrap();
    assert_eq!(report.events, acknowledged);
    assert_eq!(report.torn_tail_bytes, 0);
}

/// One unit of `p` at `s`, with a reason long enough that each event takes a few hundred
/// bytes and the disk fills after a few dozen.
fn pb_request(i: u64) -> inventory::grpc::pb::AddStockRequest {
    inventory::grpc::pb::AddStockRequest {
        reason: format!("delivery {i} {}", "x".repeat(200)),
        ..add_stock("p", "s", 1)
    }
}
