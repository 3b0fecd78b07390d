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

/// The prost family: prost, its well-known types, reflection over descriptors, and tonic's
/// prost glue. Only the stored-event codec (which owns the format) and gRPC know it.
const PROST: &[&str] = &["prost", "prost_types", "prost_reflect", "tonic_prost"];

/// One layer's rule: the source files it covers and the paths they must not name.
struct Rule {
    layer: &'static str,
    covers: fn(&str) -> bool,
    forbidden: Vec<&'static str>,
    why: &'static str,
}

/// Every rule of ARCHITECTURE.md's layering (`domain` ← `log` ← `app` ← `delivery` ← `grpc` ←
/// `server` ← `tools` ← `cli` and the binaries), besides the domain's purity, which has its own
/// test.
fn rules() -> Vec<Rule> {
    let with = |mut names: Vec<&'static str>, more: &[&'static str]| {
        names.extend(more);
        names
    };
    vec![
        Rule {
            layer: "log",
            covers: |path| in_layer(path, "log"),
            forbidden: with(
                vec![
                    "crate::app",
                    "crate::delivery",
                    "crate::grpc",
                    "crate::server",
                    "crate::tools",
                ],
                TONIC,
            ),
            why: "the log is below the application, delivery and gRPC",
        },
        Rule {
            layer: "app",
            covers: |path| in_layer(path, "app"),
            forbidden: with(
                with(
                    vec![
                        "crate::delivery",
                        "crate::grpc",
                        "crate::server",
                        "crate::tools",
                    ],
                    TONIC,
                ),
                PROST,
            ),
            why: "the application knows no adapter and no wire format",
        },
        Rule {
            layer: "delivery",
            covers: |path| in_layer(path, "delivery"),
            forbidden: with(
                with(vec!["crate::grpc", "crate::server", "crate::tools"], TONIC),
                PROST,
            ),
            why: "delivery is an adapter below gRPC: it uses the app and the log's codec",
        },
        Rule {
            layer: "grpc",
            covers: |path| in_layer(path, "grpc"),
            forbidden: vec!["crate::server", "crate::tools"],
            why: "gRPC's services know nothing of the servers' wiring or the operator tools",
        },
        Rule {
            layer: "server",
            covers: |path| path == "src/server.rs",
            forbidden: vec!["crate::tools"],
            why: "the servers' wiring knows nothing of the operator tools",
        },
        Rule {
            layer: "everything below the command line",
            covers: |path| !(in_layer(path, "cli") || path == "src/main.rs"),
            forbidden: vec!["crate::cli"],
            why: "the command line is the top: only the binary calls it",
        },
        Rule {
            layer: "tonic outside gRPC and the wiring above it",
            // The gRPC adapters, the servers' wiring, and the binaries (clients of the service).
            covers: |path| {
                !(in_layer(path, "grpc") || path == "src/server.rs" || path.starts_with("src/bin/"))
            },
            forbidden: TONIC.to_vec(),
            why: "only gRPC and the wiring above it know tonic",
        },
        Rule {
            layer: "prost outside its owners",
            covers: |path| {
                !(path == "src/log/codec.rs"
                    || path.starts_with("src/log/codec/")
                    || in_layer(path, "grpc")
                    || path.starts_with("src/bin/"))
            },
            forbidden: PROST.to_vec(),
            why: "only the stored-event codec and gRPC know prost",
        },
    ]
}

#[test]
fn every_layer_names_only_what_is_below_it() {
    let mut broken = Vec::new();
    for rule in rules() {
        let found = violations(&sources(rule.covers), &rule.forbidden);
        if !found.is_empty() {
            broken.push(format!(
                "{} ({}):\n{}",
                rule.layer,
                rule.why,
                found.join("\n")
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n\n"));
}

/// Each rule fails on a violation planted in a file it covers: a rule that cannot fail checks
/// nothing.
#[test]
fn every_rule_fails_on_a_planted_violation() {
    let planted_path = |rule: &Rule| {
        [
            "src/log/x.rs",
            "src/app/x.rs",
            "src/delivery/x.rs",
            "src/grpc/x.rs",
            "src/server.rs",
            "src/tools.rs",
        ]
        .into_iter()
        .find(|path| (rule.covers)(path))
        .expect("a rule covers one of the layers")
    };
    for rule in rules() {
        for name in &rule.forbidden {
            let file = planted_path(&rule).to_owned();
            let planted = [(file, format!("use {name}::Planted;"))];
            assert!(
                !violations(&planted, &rule.forbidden).is_empty(),
                "{}: `use {name}::Planted;` is not caught",
                rule.layer
            );
        }
    }
}

/// Every module of the library belongs to a layer of the code map, so that a new one gets a
/// rule (or is added here with the reason it needs none).
#[test]
fn every_module_is_in_a_layer() {
    let layered = [
        "domain", "log", "app", "delivery", "grpc", "server", "tools", "cli",
    ];
    // Leaves every layer may use (no `crate::` path of their own but the one named) and the
    // library's root.
    let leaves = ["dense_map", "telemetry", "certificates", "lib"];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut unplaced = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let Some(module) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        let is_rust_file = path.extension().is_some_and(|extension| extension == "rs");
        // The binaries: `main.rs`, which only calls `cli`, and `bin/`.
        let binary = ["main", "bin"].contains(&module);
        if (is_rust_file || path.is_dir())
            && !binary
            && !layered.contains(&module)
            && !leaves.contains(&module)
        {
            unplaced.push(module.to_owned());
        }
    }
    assert!(unplaced.is_empty(), "modules in no layer: {unplaced:?}");
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
