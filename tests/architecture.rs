//! The layering rules of ARCHITECTURE.md, checked against the source tree: each test reads
//! every `.rs` file of a layer and fails on a path the layer must not name. Comments are left
//! out (a doc comment may say what a module does not know); code, `use` lines and paths in
//! expressions are checked.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/` whose path (relative to the crate) satisfies `include`.
fn sources(include: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut folders = vec![root.join("src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if include(&relative) {
                    let text = std::fs::read_to_string(&path).unwrap();
                    files.push((relative, text));
                }
            }
        }
    }
    assert!(!files.is_empty(), "no source file matched");
    files
}

/// The code of a line: what is left once a `//` comment is cut off (outside string literals).
fn code(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' if in_string => index += 1,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(index + 1) == Some(&b'/') => return &line[..index],
            _ => {}
        }
        index += 1;
    }
    line
}

/// Whether `code` names the path `name` (a crate or module followed by `::`, or imported
/// with `use name`), as a whole word.
fn names(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = &code[at + name.len()..];
        let whole_word = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        whole_word
            && (after.starts_with("::") || after.starts_with(';') || after.starts_with(" as "))
    })
}

/// Every place in `files` that names one of `forbidden`, as `file:line: text`.
fn violations(files: &[(String, String)], forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (file, text) in files {
        for (number, line) in text.lines().enumerate() {
            let code = code(line);
            for name in forbidden {
                if names(code, name) {
                    found.push(format!("{file}:{}: {name}: {}", number + 1, line.trim()));
                }
            }
        }
    }
    found
}

fn in_layer(path: &str, layer: &str) -> bool {
    path == format!("src/{layer}.rs") || path.starts_with(&format!("src/{layer}/"))
}

const TONIC: &[&str] = &[
    "tonic",
    "tonic_health",
    "tonic_reflection",
    "tonic_types",
    "tonic_prost",
];

#[test]
fn the_domain_does_no_io_reads_no_clock_and_knows_no_framework() {
    let files = sources(|path| in_layer(path, "domain"));
    let mut forbidden = vec![
        "tokio",
        "prost",
        "prost_types",
        "std::fs",
        "std::io",
        "std::net",
        "std::process",
        "std::thread",
        "std::time",
        "SystemTime",
        "Instant",
        "now_v7",
        "crate::log",
        "crate::app",
        "crate::grpc",
        "crate::server",
        "crate::telemetry",
        "crate::tools",
    ];
    forbidden.extend(TONIC);
    let found = violations(&files, &forbidden);
    assert!(
        found.is_empty(),
        "the domain must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_log_knows_no_tonic_and_nothing_above_it() {
    let files = sources(|path| in_layer(path, "log"));
    let mut forbidden = vec!["crate::app", "crate::grpc", "crate::server", "crate::tools"];
    forbidden.extend(TONIC);
    let found = violations(&files, &forbidden);
    assert!(
        found.is_empty(),
        "the log is below the app and gRPC:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_application_layer_knows_no_grpc() {
    let files = sources(|path| in_layer(path, "app"));
    let mut forbidden = vec!["crate::grpc", "crate::server", "prost", "prost_types"];
    forbidden.extend(TONIC);
    let found = violations(&files, &forbidden);
    assert!(
        found.is_empty(),
        "the app knows nothing of gRPC:\n{}",
        found.join("\n")
    );
}

#[test]
fn delivery_knows_no_servers_and_no_services() {
    let files = sources(|path| in_layer(path, "delivery"));
    let found = violations(
        &files,
        &["crate::server", "crate::tools", "crate::grpc::pb"],
    );
    assert!(
        found.is_empty(),
        "delivery is an adapter beside gRPC, not above it:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_grpc_and_the_wiring_above_it_know_tonic() {
    // The gRPC adapters, the servers' wiring, and the binaries (clients of the service).
    let may_know_tonic = |path: &str| {
        in_layer(path, "grpc") || path == "src/server.rs" || path.starts_with("src/bin/")
    };
    let files = sources(|path| !may_know_tonic(path));
    let found = violations(&files, TONIC);
    assert!(
        found.is_empty(),
        "tonic outside the gRPC layer:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_stored_event_codec_and_grpc_know_prost() {
    let may_know_prost = |path: &str| {
        path == "src/log/codec.rs" || in_layer(path, "grpc") || path.starts_with("src/bin/")
    };
    let files = sources(|path| !may_know_prost(path));
    let found = violations(&files, &["prost", "prost_types"]);
    assert!(
        found.is_empty(),
        "prost outside its owners:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_rule_checker_sees_what_it_must() {
    assert!(names("use tonic::Status;", "tonic"));
    assert!(names("    let s = tonic::Status::ok(\"\");", "tonic"));
    assert!(names("use crate::grpc::pb;", "crate::grpc"));
    assert!(names("fn f() -> std::time::Instant {", "std::time"));
    assert!(!names("use tonic_types::StatusExt;", "tonic"));
    assert!(!names("use inventory::grpc::pb;", "crate::grpc"));
    assert_eq!(code("let a = 1; // uses tonic::Status"), "let a = 1; ");
    assert_eq!(
        code("let url = \"http://x\"; // c"),
        "let url = \"http://x\"; "
    );
}
