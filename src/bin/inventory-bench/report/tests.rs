//! The targets of a made-up run: which figures each target compares, against which bound, and
//! its verdict. No bench runs here.

use std::time::Duration;

use serde_json::json;

use super::Report;
use crate::load::{LatencySummary, LoadResult};
use crate::machine::Machine;
use crate::scenarios::delivery::DeliveryResult;
use crate::scenarios::replay::{LogReplay, MemoryFigures, ReplayResult};
use crate::scenarios::subscription_lag::LagResult;

fn load(
    scenario: &str,
    in_flight: usize,
    ops: f64,
    p50: u64,
    p99: u64,
    failures: u64,
) -> LoadResult {
    LoadResult {
        scenario: scenario.to_owned(),
        in_flight,
        connections: in_flight.isqrt().max(1),
        duration: Duration::from_secs(10),
        operations: (ops * 10.0) as u64,
        refusals: 0,
        failures,
        failure_examples: Vec::new(),
        operations_per_second: ops,
        lines_per_second: ops,
        latency_micros: LatencySummary {
            p50,
            p99,
            p999: p99 * 2,
            max: p99 * 3,
            mean: p50 as f64,
            samples: 100,
        },
        server_cpu_micros_per_operation: Some(42.5),
        bench_cpu_micros_per_operation: None,
        machine_busy_percent: Some(97.0),
        server_rss_bytes: Some(30 << 20),
        events_per_fsync: None,
        note: None,
    }
}

fn lag(subscribers: usize, p99: u64, delivered: f64) -> LagResult {
    LagResult {
        subscribers,
        command_rate_target: 5000.0,
        command_rate: 4990.0,
        lag_micros: LatencySummary {
            p50: p99 / 4,
            p99,
            p999: p99 * 2,
            max: p99 * 3,
            mean: 1.0,
            samples: 10,
        },
        received_before_acknowledgement: 3,
        missing: 0,
        events_delivered_per_second: delivered,
        server_cpu_micros_per_event: Some(1.25),
        server_rss_bytes: Some(40 << 20),
    }
}

fn delivery(sink: &'static str, p99: u64, catch_up_seconds: f64) -> DeliveryResult {
    DeliveryResult {
        sink,
        command_rate_target: 5000.0,
        command_rate: 4990.0,
        lag_micros: LatencySummary {
            p50: p99 / 4,
            p99,
            p999: p99,
            max: p99,
            mean: (p99 / 4) as f64,
            samples: 1000,
        },
        missing: 0,
        backlog_events: 1_000_000,
        catch_up_seconds,
        bare_events_per_second: (sink == "nats").then_some(90_000.0),
    }
}

fn report() -> Report {
    Report {
        machine: Machine {
            cpus: 2,
            cpu_model: "test cpu".into(),
            kernel: "6.0".into(),
            memory_total_kib: 1 << 20,
        },
        command_line: "inventory-bench".into(),
        config: json!({}),
        load_average_at_start: "0.1 0.2 0.3".into(),
        load_average_at_end: "0.4 0.5 0.6".into(),
        loads: vec![
            load("baseline-rpc", 1, 9000.0, 100, 200, 0),
            load("baseline-rpc", 64, 40000.0, 1500, 3000, 0),
            load("baseline-disk", 1, 500.0, 2000, 4000, 0),
            load("reserve-uniform", 1, 300.0, 3500, 5000, 0),
            load("reserve-uniform", 64, 15000.0, 4000, 9000, 0),
            load("reserve-hot", 64, 13000.0, 4500, 9500, 0),
            load("reads", 64, 30000.0, 2000, 7000, 0),
        ],
        lags: vec![lag(1, 1200, 4990.0), lag(100, 90000, 250000.0)],
        deliveries: vec![
            delivery("webhook", 40_000, 8.0),
            delivery("nats", 60_000, 20.0),
        ],
        replay: Some(replay()),
    }
}

fn replay() -> ReplayResult {
    ReplayResult {
        log: LogReplay {
            events: 1000,
            loaded_in: Duration::from_secs(3),
            listening_after: Duration::from_millis(20),
            ready_after: Duration::from_millis(800),
            rss_after_replay_bytes: 50 << 20,
            snapshot_taken_in: Duration::from_millis(900),
            from_snapshot_ready_after: Duration::from_millis(100),
            rss_after_snapshot_start_bytes: 50 << 20,
        },
        memory: MemoryFigures {
            items: 100,
            empty_ready_after: Duration::from_millis(30),
            empty_rss_bytes: 20 << 20,
            items_rss_bytes: (20 << 20) + 25_000,
            items_ready_after: Duration::from_millis(200),
            reservations_rss_bytes: (20 << 20) + 40_000,
            reservations_ready_after: Duration::from_millis(300),
        },
    }
}

/// Over 70 lines: one case per target of BENCHMARKS.md, in its order.
#[test]
fn each_target_compares_its_figure_with_its_bound() {
    let checks: Vec<(String, Option<String>, bool)> = report()
        .targets()
        .into_iter()
        .map(|check| {
            let ratio = check.ratio.map(|ratio| format!("{ratio:.3}"));
            (check.target, ratio, check.met)
        })
        .collect();
    let expected = [
        // 15,000 against 0.5 × 40,000.
        (
            "reserve-uniform at 64 in flight ≥ 0.5 × baseline-rpc",
            Some("0.750"),
            false,
        ),
        // 13,000 against 0.8 × 15,000.
        (
            "reserve-hot at 64 in flight ≥ 0.8 × reserve-uniform",
            Some("1.083"),
            true,
        ),
        (
            "reserve-hot: no failures other than insufficient stock",
            None,
            true,
        ),
        // 3,500 µs against 100 + 1.5 × 2,000.
        (
            "command p50 at 1 in flight ≤ baseline-rpc p50 + 1.5 × fdatasync p50",
            Some("1.129"),
            false,
        ),
        // 30,000 against 0.8 × 40,000, and 7,000 µs against 2 × 3,000.
        (
            "reads at 64 in flight ≥ 0.8 × baseline-rpc",
            Some("0.938"),
            false,
        ),
        (
            "reads p99 at 64 in flight ≤ 2 × baseline-rpc p99",
            Some("1.167"),
            false,
        ),
        (
            "subscription lag p99 ≤ 5 ms with 1 subscriber",
            Some("0.240"),
            true,
        ),
        (
            "≥ 200,000 events/s delivered with 100 subscribers",
            Some("1.250"),
            true,
        ),
        // 40 and 60 ms against 50 ms; 1,000,000 events in 8 s and in 20 s against 100,000/s.
        (
            "webhook lag p99 ≤ 50 ms at half the reserve-uniform rate",
            Some("0.800"),
            true,
        ),
        (
            "webhook catches up on a backlog at ≥ 100,000 events/s",
            Some("1.250"),
            true,
        ),
        (
            "nats lag p99 ≤ 50 ms at half the reserve-uniform rate",
            Some("1.200"),
            false,
        ),
        (
            "nats catches up on a backlog at ≥ 100,000 events/s",
            Some("0.500"),
            false,
        ),
        // 1,000 events in 0.8 s; 25,000 and 15,000 bytes over 100 items.
        ("replay ≥ 1,000,000 events/s", Some("0.001"), false),
        ("≤ 300 bytes of RSS per stock item", Some("0.833"), true),
        (
            "≤ 300 bytes of RSS per active reservation",
            Some("0.500"),
            true,
        ),
    ];
    let expected: Vec<(String, Option<String>, bool)> = expected
        .into_iter()
        .map(|(target, ratio, met)| (target.to_owned(), ratio.map(str::to_owned), met))
        .collect();
    assert_eq!(checks, expected);
}
