//! The `inventory` binary: everything it does is in the library's [`inventory::cli`], so that
//! tests can use the same parsing.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    inventory::cli::main(std::env::args_os().collect())
}
