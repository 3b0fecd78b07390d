//! The configuration file (`--config`, `INVENTORY_CONFIG`), read by the real binary: its keys
//! set what the flags set, a flag or an environment variable wins over it, and a bad file
//! stops the start naming the key.

use crate::support;

use std::path::Path;

use inventory::grpc::pb::command_service_client::CommandServiceClient;
use support::{Process, add_stock};

fn write(directory: &Path, name: &str, text: &str) -> String {
    let path = directory.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Adds one unit, so the server writes its log where it was told to.
async fn add_one(process: &Process) {
    let channel = support::channel(process.address("command")).await;
    CommandServiceClient::new(channel)
        .add_stock(add_stock("p", "s", 1))
        .await
        .unwrap();
}

fn log_written(directory: &Path) -> bool {
    directory.join("events.log").exists()
}

#[tokio::test]
async fn the_file_sets_what_the_flags_set_and_flags_and_environment_win() {
    let directory = tempfile::tempdir().unwrap();
    let from_file = directory.path().join("from-file");
    let config = write(
        directory.path(),
        "inventory.toml",
        &format!(
            "# the defaults of this deployment\nlog = \"{}\"\ncommand_addr = \"127.0.0.1:0\"\n\
             query_addr = \"127.0.0.1:0\"\nmax_in_flight = 64\nlog_format = \"json\"\n",
            from_file.display()
        ),
    );
    // The file alone (no mode given: serve).
    let mut process = Process::start(&["--config", &config], &["command", "query"]).await;
    add_one(&process).await;
    process.kill().await;
    assert!(log_written(&from_file));

    // A flag wins over the file.
    let from_flag = directory.path().join("from-flag");
    let flag = from_flag.to_str().unwrap();
    let mut process = Process::start(
        &["serve", "--config", &config, "--log", flag],
        &["command", "query"],
    )
    .await;
    add_one(&process).await;
    process.kill().await;
    assert!(log_written(&from_flag));

    // So does the environment; and the file can be named there too.
    let from_environment = directory.path().join("from-environment");
    let mut process = Process::start_with_env(
        &["command"],
        &[
            ("INVENTORY_CONFIG", &config),
            ("INVENTORY_EVENT_LOG", from_environment.to_str().unwrap()),
        ],
        &["command"],
    )
    .await;
    add_one(&process).await;
    process.kill().await;
    assert!(log_written(&from_environment));
}

fn refused(directory: &Path, text: &str) -> String {
    let config = write(directory, "bad.toml", text);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_inventory"))
        .args(["serve", "--config", &config, "--metrics-addr", "off"])
        .env("INVENTORY_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{text}: refused");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(stderr.contains(&config), "{text}: names the file: {stderr}");
    stderr
}

#[test]
fn a_bad_file_stops_the_start_naming_the_key() {
    let directory = tempfile::tempdir().unwrap();
    let directory = directory.path();
    let stderr = refused(
        directory,
        "command_addr = \"127.0.0.1:0\"\nlogg = \"./data\"\n",
    );
    assert!(stderr.contains("unknown field `logg`"), "{stderr}");
    let stderr = refused(directory, "max_in_flight = \"lots\"\n");
    assert!(stderr.contains("max_in_flight = \"lots\""), "{stderr}");
    let stderr = refused(directory, "query_addr = \"nowhere\"\n");
    assert!(stderr.contains("query_addr"), "{stderr}");
    let stderr = refused(directory, "metrics_addr = \"nowhere\"\n");
    assert!(stderr.contains("key `metrics_addr`"), "{stderr}");
    let stderr = refused(directory, "log_format = \"xml\"\n");
    assert!(stderr.contains("key `log_format`"), "{stderr}");
    let stderr = refused(directory, "log = \"\"\n");
    assert!(stderr.contains("key `log`: must not be empty"), "{stderr}");
    let stderr = refused(directory, "command_addr = \n");
    assert!(stderr.contains("command_addr"), "{stderr}");
    // A file that is not there.
    let missing = directory.join("missing.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_inventory"))
        .args(["verify", "--config", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read the config file"));
}
