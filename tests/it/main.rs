//! Every integration test, in one binary: the library and the test harness are compiled and
//! linked once instead of once per file. Each file is a module named after its topic; run one
//! with `cargo test --test it <module>::`.

mod support;

mod architecture;
mod auth;
mod config;
mod crash;
mod delivery;
mod delivery_postgres;
mod delivery_process;
mod delivery_streams;
mod disk_full;
mod domain;
mod e2e;
mod fault_postgres;
mod follower;
mod jwt;
mod log;
mod log_conformance;
mod metrics;
mod multi_line;
mod old_log;
mod overload;
mod postgres;
mod postgres_tls;
mod quotas;
mod replica;
mod scopes;
mod snapshots;
mod stock_model;
mod stock_states;
mod stock_states_log;
mod subscription;
mod telemetry;
mod tls;
mod tools;
mod transfers;
