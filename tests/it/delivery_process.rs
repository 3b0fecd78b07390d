//! Outbound delivery through the real binary: `[[webhook]]` in the configuration file, bad
//! configurations refused naming the key, `inventory config check`, and a SIGKILL under load
//! that loses nothing.

use crate::support;

use std::path::Path;
use std::time::Duration;

use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::delivery_service_client::DeliveryServiceClient;
use support::webhook::Receiver;
use support::{Process, add_stock, wait_until};

const SECRET: &str = "a-webhook-secret-for-tests";

fn write(directory: &Path, text: &str) -> String {
    let path = directory.join("inventory.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs `inventory <arguments> --config <file with text>`; its exit success, stdout, stderr.
fn run(directory: &Path, text: &str, arguments: &[&str]) -> (bool, String, String) {
    let config = write(directory, text);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_inventory"))
        .args(arguments)
        .args(["--config", &config])
        .env("HOOK_SECRET", SECRET)
        .env_remove("INVENTORY_CONFIG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
[[webhook]]
name = "erp-low-stock"
url = "https://erp.example/hooks/stock"
secret_env = "HOOK_SECRET"
batch_max = 50
timeout = "5s"
filter = { event_types = ["STOCK_LOW", "OUT_OF_STOCK"], store_ids = ["s1"] }

[[webhook]]
name = "warehouse"
url = "http://127.0.0.1:9/hook"
secret = "a-secret-of-sixteen-or-more"

[nats]
url = "nats://127.0.0.1:4222"
stream = "INVENTORY"
subject_prefix = "inventory"

[redis]
url = "redis://127.0.0.1:6379/0"
key_prefix = "stock"
"#;

/// No credential in the file or the environment is printed: not by `config check`, not as a
/// default or an environment value in any `--help`.
#[test]
fn no_secret_is_printed_by_config_check_or_help() {
    let directory = tempfile::tempdir().unwrap();
    let text = r#"
log = "postgres://inventory:pgpass789@127.0.0.1:5432/inventory"
upstream_token = "inv_upstreamsecret0123456789"
otlp_endpoint = "http://collector:4317/?api_key=otlpsecret"

[[webhook]]
name = "erp"
url = "https://hookuser:hookpass321@erp.example/hooks?apikey=hookkey654&store=a"
secret_env = "HOOK_SECRET"

[nats]
url = "nats://natsuser:natspass456@127.0.0.1:4222"
stream = "INVENTORY"
subject_prefix = "inventory"

[redis]
url = "redis://:redispass123@127.0.0.1:6379/0"
key_prefix = "stock"
"#;
    let config = write(directory.path(), text);
    let secrets = [
        "pgpass789",
        "upstreamsecret",
        "otlpsecret",
        "hookpass321",
        "hookkey654",
        "natspass456",
        "redispass123",
        "envpass000",
    ];
    let mut printed = Vec::new();
    for arguments in [
        &["config", "check"][..],
        &["--help"],
        &["serve", "--help"],
        &["command", "--help"],
        &["query", "--help"],
        &["export", "--help"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_inventory"))
            .args(arguments)
            .args(["--config", &config])
            .env("HOOK_SECRET", SECRET)
            .env(
                "INVENTORY_EVENT_LOG",
                "postgres://u:envpass000@db/inventory",
            )
            .env_remove("INVENTORY_CONFIG")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if arguments == ["config", "check"] {
            assert!(output.status.success(), "{text}");
            assert!(
                text.contains("nats://natsuser:***@127.0.0.1:4222"),
                "{text}"
            );
            assert!(text.contains("redis://:***@127.0.0.1:6379/0"), "{text}");
            assert!(
                text.contains("https://hookuser:***@erp.example/hooks?apikey=***&store=a"),
                "{text}"
            );
        }
        for secret in secrets {
            if text.contains(secret) {
                printed.push(format!("{arguments:?} printed {secret}:\n{text}"));
            }
        }
    }
    assert!(printed.is_empty(), "{}", printed.join("\n"));
}

#[test]
fn config_check_reports_the_sinks_and_bad_sinks_are_refused_naming_the_key() {
    let directory = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = run(directory.path(), GOOD, &["config", "check"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("sinks: 4"), "{stdout}");
    assert!(
        stdout.contains("nats nats -> nats://127.0.0.1:4222 stream INVENTORY, subjects inventory.<store>.<product>.<type> (batch_max 1000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("redis redis -> redis://127.0.0.1:6379/0 keys stock:<store>:<product>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("webhook erp-low-stock -> https://erp.example/hooks/stock (batch_max 50, events: store_ids s1; event_types OUT_OF_STOCK, STOCK_LOW; signed with $HOOK_SECRET; retry 1s doubling to 10m, parked after 24h)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(SECRET) && !stdout.contains("sixteen"),
        "no secret shown"
    );

    let cases: &[(&str, &str, &str)] = &[
        (
            "[nats]\nurl = \"http://127.0.0.1:4222\"\nstream = \"S\"\nsubject_prefix = \"p\"\n",
            "nats.url",
            "nats://",
        ),
        (
            "[nats]\nurl = \"nats://127.0.0.1:4222\"\nstream = \"S\"\nsubject_prefix = \"p.>\"\n",
            "nats.subject_prefix",
            "separated by",
        ),
        (
            "[redis]\nurl = \"redis://127.0.0.1:6379\"\nkey_prefix = \"\"\n",
            "redis.key_prefix",
            "must not be empty",
        ),
        (
            "[[webhook]]\nname = \"a\"\nurl = \"http://h/\"\nsecret_env = \"HOOK_SECRET\"\nmethod = \"PUT\"\n",
            "line 5",
            "unknown field `method`",
        ),
        (
            "[[webhook]]\nname = \"a\"\nurl = \"ftp://h/\"\nsecret_env = \"HOOK_SECRET\"\n",
            "webhook[0].url",
            "http:// or https://",
        ),
        (
            "[[webhook]]\nname = \"a\"\nurl = \"http://h/\"\n",
            "webhook[0].secret",
            "missing",
        ),
        (
            "[[webhook]]\nname = \"a\"\nurl = \"http://h/\"\nsecret_env = \"NOT_SET_ANYWHERE\"\n",
            "webhook[0].secret_env",
            "NOT_SET_ANYWHERE is not set",
        ),
        (
            "[[webhook]]\nname = \"a\"\nurl = \"http://h/\"\nsecret_env = \"HOOK_SECRET\"\n\
             [[webhook]]\nname = \"a\"\nurl = \"http://i/\"\nsecret_env = \"HOOK_SECRET\"\n",
            "webhook[1].name",
            "names another sink too",
        ),
        (
            "[[webhook]]\nname = \"a/b\"\nurl = \"http://h/\"\nsecret_env = \"HOOK_SECRET\"\n",
            "webhook[0].name",
            "only letters",
        ),
        (
            "[[webhook]]\nname = \"a\"\nurl = \"http://h/\"\nsecret_env = \"HOOK_SECRET\"\nfilter = { event_types = [\"STOCK_LOWW\"] }\n",
            "webhook[0].filter.event_types[0]",
            "not an event type",
        ),
        (
            "[[webhook]]\nname = \"a\"\nurl = \"http://h/\"\nsecret_env = \"HOOK_SECRET\"\ntimeout = \"ten seconds\"\n",
            "webhook[0].timeout",
            "not a duration",
        ),
        (
            "[[webhook]]\nname = \"a\"\nurl = \"http://h/\"\nsecret_env = \"HOOK_SECRET\"\nbatch_max = 0\n",
            "webhook[0].batch_max",
            "must be 1 to",
        ),
    ];
    for &(text, key, problem) in cases {
        for arguments in [&["config", "check"][..], &["serve"][..]] {
            let (ok, _, stderr) = run(directory.path(), text, arguments);
            assert!(!ok, "{arguments:?} refuses {text}");
            assert!(stderr.contains(key), "{key} named for {text}: {stderr}");
            assert!(stderr.contains(problem), "{problem} for {text}: {stderr}");
        }
    }
}

async fn head_and_delivered(process: &Process) -> (u64, pb::SinkStatus) {
    head_and_sink(process, "erp").await
}

/// The log's head and the sink `name`'s status, from `ListSinks`.
async fn head_and_sink(process: &Process, name: &str) -> (u64, pb::SinkStatus) {
    let channel = support::channel(process.address("command")).await;
    let list = DeliveryServiceClient::new(channel)
        .list_sinks(pb::ListSinksRequest {})
        .await
        .unwrap()
        .into_inner();
    let sink = list
        .sinks
        .into_iter()
        .find(|sink| sink.name == name)
        .unwrap();
    (list.head, sink)
}

#[tokio::test]
async fn a_sigkill_under_load_loses_nothing_and_delivery_resumes_from_the_stored_cursor() {
    let directory = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let data = directory.path().join("data");
    // JetStream too, when the machine's NATS is there: after the crash its stream must hold
    // each event once, the batch in flight at the kill dropped by the duplicate window.
    let nats = support::nats_url();
    let stream = format!("inventory_test_{}", uuid::Uuid::now_v7().simple());
    let nats_section = nats.as_ref().map_or(String::new(), |url| {
        format!(
            "[nats]\nurl = \"{url}\"\nstream = \"{stream}\"\nsubject_prefix = \"{}\"\nbatch_max = 20\n\
             retry_initial = \"20ms\"\nretry_max = \"200ms\"\n\n",
            stream.replace('_', "-")
        )
    });
    let config = write(
        directory.path(),
        &format!(
            "log = \"{}\"\ncommand_addr = \"127.0.0.1:0\"\nquery_addr = \"127.0.0.1:0\"\n\n{nats_section}\
             [[webhook]]\nname = \"erp\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nbatch_max = 20\n\
             retry_initial = \"20ms\"\nretry_max = \"200ms\"\n",
            data.display(),
            receiver.url()
        ),
    );
    let arguments = ["serve", "--config", &config];
    let mut process = Process::start(&arguments, &["command", "query"]).await;
    // Load from four clients; the kill comes while they write and while batches are in
    // flight.
    let address = process.address("command");
    let mut writers = Vec::new();
    for client in 0..4 {
        writers.push(tokio::spawn(async move {
            let mut commands = CommandServiceClient::new(support::channel(address).await);
            let mut acknowledged = 0u64;
            for index in 0..1000 {
                let request = add_stock(&format!("p{client}-{}", index % 5), "s1", 1);
                if commands.add_stock(request).await.is_err() {
                    break;
                }
                acknowledged += 1;
            }
            acknowledged
        }));
    }
    wait_until(
        Duration::from_secs(30),
        "deliveries under way",
        async || receiver.accepted_positions().len() > 400,
    )
    .await;
    process.kill().await;
    let mut acknowledged = 0;
    for writer in writers {
        acknowledged += writer.await.unwrap();
    }
    assert!(acknowledged < 4000, "the kill came while the writers wrote");

    let restarted = [&arguments[..], &["--metrics-addr", "127.0.0.1:0"]].concat();
    let process = Process::start(&restarted, &["command", "query", "metrics"]).await;
    let (head, _) = head_and_delivered(&process).await;
    assert!(
        head >= acknowledged,
        "every acknowledged command is in the log"
    );
    wait_until(
        Duration::from_secs(30),
        "delivery caught up after the restart",
        async || head_and_delivered(&process).await.1.position == head,
    )
    .await;
    let duplicates =
        support::delivery::assert_every_event_in_order(&receiver.received_positions(), head);
    assert!(
        duplicates <= 20,
        "only the batch in flight at the kill is sent again: {duplicates} duplicates"
    );
    assert!(
        receiver
            .calls()
            .iter()
            .all(|call| call.signed_with(SECRET.as_bytes()))
    );
    drop(process);
}

/// The Python receiver of docs/delivery.md, taken from that page itself.
fn readme_receiver() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/delivery.md")).unwrap();
    let start = readme
        .find("```python\n")
        .expect("docs/delivery.md has a Python receiver")
        + 10;
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_owned()
}

#[tokio::test]
async fn the_readme_receiver_verifies_the_signatures_and_prints_every_event() {
    use tokio::io::AsyncBufReadExt;
    let directory = tempfile::tempdir().unwrap();
    let script = directory.path().join("receiver.py");
    std::fs::write(&script, readme_receiver()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut python = tokio::process::Command::new("python3")
        .arg(&script)
        .env("PORT", port.to_string())
        .env("ERP_WEBHOOK_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut printed = tokio::io::BufReader::new(python.stdout.take().unwrap()).lines();
    let config = write(
        directory.path(),
        &format!(
            "log = \"{}\"\ncommand_addr = \"127.0.0.1:0\"\nquery_addr = \"127.0.0.1:0\"\n\n\
             [[webhook]]\nname = \"erp\"\nurl = \"http://127.0.0.1:{port}/\"\nsecret_env = \"ERP_WEBHOOK_SECRET\"\n\
             retry_initial = \"50ms\"\nretry_max = \"200ms\"\n",
            directory.path().join("data").display(),
        ),
    );
    let process = Process::start_with_env(
        &["serve", "--config", &config],
        &[("ERP_WEBHOOK_SECRET", SECRET)],
        &["command", "query"],
    )
    .await;
    let mut commands =
        CommandServiceClient::new(support::channel(process.address("command")).await);
    for index in 0..30 {
        commands
            .add_stock(add_stock(&format!("sku-{}", index % 3), "store-a", 1))
            .await
            .unwrap();
    }
    let mut positions = Vec::new();
    while positions.len() < 30 {
        let line = tokio::time::timeout(Duration::from_secs(30), printed.next_line())
            .await
            .expect("the receiver prints each event within 30 s")
            .unwrap()
            .expect("the receiver is running");
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[1], "store-a", "{line}");
        positions.push(fields[0].parse::<u64>().unwrap());
    }
    assert_eq!(positions, (1..=30).collect::<Vec<_>>());
    drop(process);
}
