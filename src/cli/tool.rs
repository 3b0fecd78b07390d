//! The operator tools: `verify`, `snapshot`, `export`, `migrate`, `token new`, `cert generate`.

use super::{CertCommand, ConfigCommand, TokenCommand, Tool};
use crate::app::access::Role;
use crate::domain::LogPosition;
use crate::log::PostgresLog;
use crate::log::embedded::create_private_file;
use crate::server::LogConfig;
use crate::tools;

pub(super) async fn run_tool(tool: Tool) -> Result<(), String> {
    match tool {
        Tool::Verify { log } => {
            let report = tools::verify(&log.config())
                .await
                .map_err(|error| format!("verify failed: {error}"))?;
            println!(
                "ok: {} events, head {}, {} stock items; every checksum, position, version and stock invariant holds",
                report.events, report.head, report.streams
            );
            if let Some(position) = report.snapshot_checked {
                println!(
                    "ok: the snapshot at position {position} equals a replay of the log up to it"
                );
            }
            if report.torn_tail_bytes > 0 {
                println!(
                    "note: a torn tail of {} bytes (a write never acknowledged) will be cut off at the next start",
                    report.torn_tail_bytes
                );
            }
            Ok(())
        }
        Tool::Snapshot { log, keep } => {
            let LogConfig::Embedded { data_dir } = log.config() else {
                return Err("snapshot: a PostgreSQL log is not snapshotted by this tool".into());
            };
            match tools::take_snapshot(&data_dir, keep)
                .await
                .map_err(|error| format!("snapshot failed: {error}"))?
            {
                Some(taken) => println!(
                    "snapshot at position {} ({} bytes, folded from position {}): {}",
                    taken.position,
                    taken.bytes,
                    taken.from,
                    taken.path.display()
                ),
                None => println!("the newest snapshot is already at the log's head"),
            }
            Ok(())
        }
        Tool::Export { log, from, output } => {
            let mut writer: Box<dyn std::io::Write + Send> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    // Every event of every store: readable by its owner only.
                    create_private_file(path)
                        .map_err(|error| format!("cannot create {}: {error}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let count = tools::export(&log.config(), LogPosition(from), &mut *writer)
                .await
                .map_err(|error| format!("export failed: {error}"))?;
            eprintln!("exported {count} events");
            Ok(())
        }
        Tool::Migrate {
            from,
            to,
            pg_schema,
        } => {
            let LogConfig::Postgres { url, schema } = LogConfig::parse(&to, &pg_schema) else {
                return Err(format!("--to {to}: expected a postgres:// URL"));
            };
            let target = PostgresLog::connect(&url, &schema)
                .await
                .map_err(|error| format!("cannot open the target: {error}"))?;
            let copied = tools::migrate(&from, &target)
                .await
                .map_err(|error| format!("migrate failed: {error}"))?;
            println!("migrated {copied} events into schema {schema}");
            Ok(())
        }
        Tool::Token(TokenCommand::New { name, role, stores }) => new_token(&name, role, &stores),
        Tool::Config(ConfigCommand::Check) => unreachable!("`config check` is answered in main"),
        Tool::Cert(CertCommand::Generate {
            out,
            hosts,
            clients,
        }) => generate_certificates(&out, &hosts, &clients),
    }
}

/// `inventory token new`: the token on stdout's first line, then the block to configure.
fn new_token(name: &str, role: Role, stores: &[String]) -> Result<(), String> {
    if let Some(problem) = crate::app::access::Principal::name_problem(name) {
        return Err(format!("token new: --name {name:?}: {problem}"));
    }
    for store in stores {
        crate::domain::StoreId::parse(store)
            .map_err(|error| format!("token new: --stores {store:?}: {error}"))?;
    }
    if role == Role::Replica && !stores.is_empty() {
        return Err("token new: a replica copies the whole log: it takes no --stores".into());
    }
    let (token, sha256) = crate::app::access::new_token()
        .map_err(|_| "token new: the system's random generator failed".to_owned())?;
    let quoted: Vec<String> = stores
        .iter()
        .map(|store| serde_json::to_string(store).expect("a string serializes"))
        .collect();
    println!("{token}");
    println!();
    println!(
        "# The token above is shown once; the server stores only its SHA-256. Add to the config file:"
    );
    println!("[[auth.tokens]]");
    println!(
        "name = {}",
        serde_json::to_string(name).expect("a string serializes")
    );
    println!("sha256 = \"{sha256}\"");
    println!("role = \"{role}\"");
    println!("stores = [{}]", quoted.join(", "));
    // The limits, at the defaults this role gets: change them here (0: no limit).
    let quota = crate::app::access::Quota::default().resolved(role);
    let value = |limit: Option<u32>| limit.unwrap_or_default();
    println!("# Limits on each server; 0: no limit. max_in_flight: at most N requests at once.");
    println!("# max_in_flight = 64");
    println!("requests_per_second = {}", value(quota.requests_per_second));
    println!("lines_per_second = {}", value(quota.lines_per_second));
    println!("max_subscriptions = {}", value(quota.max_subscriptions));
    Ok(())
}

/// `inventory cert generate`: a CA, a server certificate and client certificates in `out`.
fn generate_certificates(
    out: &std::path::Path,
    hosts: &[String],
    clients: &[String],
) -> Result<(), String> {
    use crate::certificates::CertificateAuthority;
    let failed = |error: &dyn std::fmt::Display| format!("cert generate: {error}");
    for name in clients {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.')
            && !matches!(name.as_str(), "ca" | "server");
        if !valid {
            return Err(format!(
                "cert generate: --client {name:?}: a client name is letters, digits, '-', '_' and '.',                  not starting with '.', and not ca or server (it names the files NAME.pem, NAME.key)"
            ));
        }
    }
    std::fs::create_dir_all(out)
        .map_err(|error| failed(&format!("cannot create {}: {error}", out.display())))?;
    let authority = CertificateAuthority::new("inventory CA").map_err(|error| failed(&error))?;
    let server = authority.server(hosts).map_err(|error| failed(&error))?;
    let mut files = vec![
        (
            "ca.pem".to_owned(),
            authority.certificate_pem().to_owned(),
            false,
        ),
        ("ca.key".to_owned(), authority.key_pem().to_owned(), true),
        ("server.pem".to_owned(), server.certificate_pem, false),
        ("server.key".to_owned(), server.key_pem, true),
    ];
    for name in clients {
        let client = authority.client(name).map_err(|error| failed(&error))?;
        files.push((format!("{name}.pem"), client.certificate_pem, false));
        files.push((format!("{name}.key"), client.key_pem, true));
    }
    // Nothing is written if any file exists already: no half-replaced set of certificates.
    for (name, _, _) in &files {
        let path = out.join(name);
        if path.exists() {
            return Err(format!(
                "cert generate: {} exists; nothing was written (choose an empty folder)",
                path.display()
            ));
        }
    }
    for (name, contents, private) in &files {
        write_new(&out.join(name), contents, *private).map_err(|error| failed(&error))?;
        println!("wrote {}", out.join(name).display());
    }
    Ok(())
}

/// Writes a file that must not exist yet; a private one is readable by its owner only.
fn write_new(path: &std::path::Path, contents: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}
