//! The bench's output: a markdown report (tables and the targets, each met or missed
//! with its ratio) and a JSON document with every figure.
//!
//! Over 600 lines: one table and one set of targets per scenario of BENCHMARKS.md, which read
//! best side by side; the tests are in `report/tests.rs`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::load::LoadResult;
use crate::machine::{self, Machine};
use crate::scenarios::Scenario;
use crate::scenarios::delivery::{CATCH_UP_BATCH, DeliveryResult};
use crate::scenarios::replay::ReplayResult;
use crate::scenarios::subscription_lag::{LAG_COMMAND_IN_FLIGHT, LagResult};
use crate::{BenchConfig, Target};

/// The level the throughput targets are stated at.
const TARGET_LEVEL: usize = 64;

/// Everything one run measured.
pub struct Report {
    pub machine: Machine,
    pub command_line: String,
    pub config: Value,
    pub load_average_at_start: String,
    pub load_average_at_end: String,
    pub loads: Vec<LoadResult>,
    pub lags: Vec<LagResult>,
    pub deliveries: Vec<DeliveryResult>,
    pub replay: Option<ReplayResult>,
}

/// One target of the issue, checked against this run.
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// Measured value divided by the bound (≥ 1 is met for "at least" targets, ≤ 1 for "at
    /// most" ones); none for a target that is a count that must be zero.
    pub ratio: Option<f64>,
    pub met: bool,
}

/// The bound of a target, and on which side of it the measured value must be.
#[derive(Clone, Copy, Debug)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

impl TargetCheck {
    /// A target met when `value` is on the right side of `bound`.
    fn compare(target: String, measured: String, value: f64, bound: Bound) -> TargetCheck {
        let ratio = match bound {
            Bound::AtLeast(bound) | Bound::AtMost(bound) => value / bound,
        };
        let met = match bound {
            Bound::AtLeast(_) => ratio >= 1.0,
            Bound::AtMost(_) => ratio <= 1.0,
        };
        TargetCheck {
            target,
            measured,
            ratio: Some(ratio),
            met,
        }
    }
}

impl Report {
    pub fn start(config: &BenchConfig) -> Report {
        let target = match &config.target {
            Target::Spawn { server_binary } => {
                json!({ "spawn": server_binary.display().to_string() })
            }
            Target::Running {
                command_addr,
                query_addr,
                metrics_addr,
            } => json!({
                "command_addr": command_addr.to_string(),
                "query_addr": query_addr.to_string(),
                "metrics_addr": metrics_addr.map(|address| address.to_string()),
            }),
        };
        Report {
            machine: Machine::describe(),
            command_line: std::env::args().collect::<Vec<_>>().join(" "),
            config: json!({
                "scenarios": config.scenarios.iter().map(|scenario| scenario.name()).collect::<Vec<_>>(),
                "levels": config.levels,
                "warmup_seconds": config.warmup.as_secs_f64(),
                "duration_seconds": config.duration.as_secs_f64(),
                "data_root": config.data_root.display().to_string(),
                "products": config.products,
                "stores": config.stores,
                "lag_subscribers": config.lag_subscribers,
                "lag_command_rate": config.lag_command_rate,
                "replay_events": config.replay_events,
                "replay_items": config.replay_items,
                "delivery_backlog": config.delivery_backlog,
                "target": target,
            }),
            load_average_at_start: machine::load_average(),
            load_average_at_end: String::new(),
            loads: Vec::new(),
            lags: Vec::new(),
            deliveries: Vec::new(),
            replay: None,
        }
    }

    pub fn finish(&mut self) {
        self.load_average_at_end = machine::load_average();
    }

    fn load(&self, scenario: Scenario, level: usize) -> Option<&LoadResult> {
        self.loads
            .iter()
            .find(|result| result.scenario == scenario.name() && result.in_flight == level)
    }

    /// The targets that this run has the figures for.
    pub fn targets(&self) -> Vec<TargetCheck> {
        let mut checks = self.command_targets();
        checks.extend(self.read_targets());
        checks.extend(self.lag_targets());
        checks.extend(self.delivery_targets());
        checks.extend(self.security_targets());
        if let Some(replay) = &self.replay {
            checks.extend(replay_targets(replay));
        }
        checks
    }

    /// The cost of TLS and a token: server CPU per operation of a secured run against the
    /// plain run of the same scenario and level.
    fn security_targets(&self) -> Vec<TargetCheck> {
        let level = TARGET_LEVEL;
        let mut checks = Vec::new();
        for scenario in [Scenario::ReserveUniform, Scenario::Reads] {
            let secured_name = scenario.secured_name();
            let secured = self
                .loads
                .iter()
                .find(|result| result.scenario == secured_name && result.in_flight == level);
            let plain = self.load(scenario, level);
            let (Some(secured), Some(plain)) = (secured, plain) else {
                continue;
            };
            let (Some(secured_cpu), Some(plain_cpu)) = (
                secured.server_cpu_micros_per_operation,
                plain.server_cpu_micros_per_operation,
            ) else {
                continue;
            };
            checks.push(TargetCheck::compare(
                format!(
                    "{} at {level} in flight over TLS with a token: server CPU/op ≤ 1.15 × plain",
                    scenario.name()
                ),
                format!(
                    "{secured_cpu:.1} vs {plain_cpu:.1} µs/op ({:.2}×); {:.0} vs {:.0} ops/s",
                    secured_cpu / plain_cpu,
                    secured.operations_per_second,
                    plain.operations_per_second
                ),
                secured_cpu,
                Bound::AtMost(1.15 * plain_cpu),
            ));
        }
        checks
    }

    /// Throughput of reservations against the baseline and under contention, failures under
    /// contention, and the latency of one command against an fsync.
    fn command_targets(&self) -> Vec<TargetCheck> {
        let mut checks = Vec::new();
        let level = TARGET_LEVEL;
        let baseline = self.load(Scenario::BaselineRpc, level);
        let uniform = self.load(Scenario::ReserveUniform, level);
        if let (Some(baseline), Some(uniform)) = (baseline, uniform) {
            checks.push(TargetCheck::compare(
                format!("reserve-uniform at {level} in flight ≥ 0.5 × baseline-rpc"),
                throughput_against(uniform, baseline),
                uniform.operations_per_second,
                Bound::AtLeast(0.5 * baseline.operations_per_second),
            ));
        }
        if let (Some(hot), Some(uniform)) = (self.load(Scenario::ReserveHot, level), uniform) {
            checks.push(TargetCheck::compare(
                format!("reserve-hot at {level} in flight ≥ 0.8 × reserve-uniform"),
                throughput_against(hot, uniform),
                hot.operations_per_second,
                Bound::AtLeast(0.8 * uniform.operations_per_second),
            ));
        }
        checks.extend(self.multi_line_targets());
        let hot_runs: Vec<&LoadResult> = self
            .loads
            .iter()
            .filter(|result| result.scenario == Scenario::ReserveHot.name())
            .collect();
        if !hot_runs.is_empty() {
            let failures: u64 = hot_runs.iter().map(|result| result.failures).sum();
            checks.push(TargetCheck {
                target: "reserve-hot: no failures other than insufficient stock".to_owned(),
                measured: format!("{failures} failures at all levels"),
                ratio: None,
                met: failures == 0,
            });
        }
        if let (Some(baseline), Some(uniform), Some(disk)) = (
            self.load(Scenario::BaselineRpc, 1),
            self.load(Scenario::ReserveUniform, 1),
            self.load(Scenario::BaselineDisk, 1),
        ) {
            let bound = baseline.latency_micros.p50 as f64 + 1.5 * disk.latency_micros.p50 as f64;
            checks.push(TargetCheck::compare(
                "command p50 at 1 in flight ≤ baseline-rpc p50 + 1.5 × fdatasync p50".to_owned(),
                format!(
                    "{} µs vs {} + 1.5 × {} = {bound:.0} µs",
                    uniform.latency_micros.p50,
                    baseline.latency_micros.p50,
                    disk.latency_micros.p50
                ),
                uniform.latency_micros.p50 as f64,
                Bound::AtMost(bound),
            ));
        }
        checks
    }

    /// Multi-line commands against single-line reservations measured in the same run: a
    /// cart's lines at least 3 × reserve-uniform's operations with a p99 at most twice its
    /// p99, and a delivery note's changes at least 10 × its operations.
    fn multi_line_targets(&self) -> Vec<TargetCheck> {
        let mut checks = Vec::new();
        let level = TARGET_LEVEL;
        let Some(uniform) = self.load(Scenario::ReserveUniform, level) else {
            return checks;
        };
        if let Some(cart) = self.load(Scenario::Cart, level) {
            checks.push(TargetCheck::compare(
                format!("cart lines/s at {level} in flight ≥ 3 × reserve-uniform ops/s"),
                format!(
                    "{:.0} lines/s vs {:.0} ops/s ({:.2}×)",
                    cart.lines_per_second,
                    uniform.operations_per_second,
                    cart.lines_per_second / uniform.operations_per_second
                ),
                cart.lines_per_second,
                Bound::AtLeast(3.0 * uniform.operations_per_second),
            ));
            checks.push(TargetCheck::compare(
                format!("cart p99 at {level} in flight ≤ 2 × reserve-uniform p99"),
                format!(
                    "{} µs vs {} µs",
                    cart.latency_micros.p99, uniform.latency_micros.p99
                ),
                cart.latency_micros.p99 as f64,
                Bound::AtMost(2.0 * uniform.latency_micros.p99 as f64),
            ));
        }
        let bulk = self
            .loads
            .iter()
            .find(|result| result.scenario == Scenario::Bulk.name());
        if let Some(bulk) = bulk {
            checks.push(TargetCheck::compare(
                format!(
                    "bulk changes/s at {} in flight ≥ 10 × reserve-uniform ops/s at {level}",
                    bulk.in_flight
                ),
                format!(
                    "{:.0} changes/s vs {:.0} ops/s ({:.1}×)",
                    bulk.lines_per_second,
                    uniform.operations_per_second,
                    bulk.lines_per_second / uniform.operations_per_second
                ),
                bulk.lines_per_second,
                Bound::AtLeast(10.0 * uniform.operations_per_second),
            ));
        }
        checks
    }

    /// Reads against the baseline, in throughput and in tail latency.
    fn read_targets(&self) -> Vec<TargetCheck> {
        let level = TARGET_LEVEL;
        let (Some(baseline), Some(reads)) = (
            self.load(Scenario::BaselineRpc, level),
            self.load(Scenario::Reads, level),
        ) else {
            return Vec::new();
        };
        vec![
            TargetCheck::compare(
                format!("reads at {level} in flight ≥ 0.8 × baseline-rpc"),
                throughput_against(reads, baseline),
                reads.operations_per_second,
                Bound::AtLeast(0.8 * baseline.operations_per_second),
            ),
            TargetCheck::compare(
                format!("reads p99 at {level} in flight ≤ 2 × baseline-rpc p99"),
                format!(
                    "{} vs {} µs",
                    reads.latency_micros.p99, baseline.latency_micros.p99
                ),
                reads.latency_micros.p99 as f64,
                Bound::AtMost(2.0 * baseline.latency_micros.p99 as f64),
            ),
        ]
    }

    /// Each sink's lag under the paced load, and its catch-up rate.
    fn delivery_targets(&self) -> Vec<TargetCheck> {
        let mut checks = Vec::new();
        for delivery in &self.deliveries {
            let sink = delivery.sink;
            checks.push(TargetCheck::compare(
                format!("{sink} lag p99 ≤ 50 ms at half the reserve-uniform rate"),
                format!(
                    "{} µs (commands at {:.0}/s)",
                    delivery.lag_micros.p99, delivery.command_rate
                ),
                delivery.lag_micros.p99 as f64,
                Bound::AtMost(50_000.0),
            ));
            if delivery.backlog_events > 0 {
                checks.push(TargetCheck::compare(
                    format!("{sink} catches up on a backlog at ≥ 100,000 events/s"),
                    format!(
                        "{:.0} events/s ({} events in {:.2} s)",
                        delivery.catch_up_events_per_second(),
                        delivery.backlog_events,
                        delivery.catch_up_seconds
                    ),
                    delivery.catch_up_events_per_second(),
                    Bound::AtLeast(100_000.0),
                ));
            }
        }
        checks
    }

    /// Lag with one subscriber, and events delivered with a hundred.
    fn lag_targets(&self) -> Vec<TargetCheck> {
        let mut checks = Vec::new();
        if let Some(one) = self.lags.iter().find(|lag| lag.subscribers == 1) {
            checks.push(TargetCheck::compare(
                "subscription lag p99 ≤ 5 ms with 1 subscriber".to_owned(),
                format!("{} µs", one.lag_micros.p99),
                one.lag_micros.p99 as f64,
                Bound::AtMost(5_000.0),
            ));
        }
        if let Some(many) = self.lags.iter().find(|lag| lag.subscribers == 100) {
            checks.push(TargetCheck::compare(
                "≥ 200,000 events/s delivered with 100 subscribers".to_owned(),
                format!(
                    "{:.0} events/s (commands at {:.0}/s)",
                    many.events_delivered_per_second, many.command_rate
                ),
                many.events_delivered_per_second,
                Bound::AtLeast(200_000.0),
            ));
        }
        checks
    }

    /// The report in markdown. The writers below ignore `writeln!`'s result: writing to a
    /// String cannot fail.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        self.write_loads(&mut out);
        self.write_lags(&mut out);
        self.write_deliveries(&mut out);
        if let Some(replay) = &self.replay {
            write_replay(&mut out, replay);
        }
        write_targets(&mut out, &self.targets());
        out
    }

    fn write_header(&self, out: &mut String) {
        let machine = &self.machine;
        let _ = writeln!(out, "# inventory-bench\n");
        let _ = writeln!(
            out,
            "Machine: {} CPUs, {}, {:.1} GiB RAM, Linux {}  ",
            machine.cpus,
            machine.cpu_model,
            machine.memory_total_kib as f64 / (1024.0 * 1024.0),
            machine.kernel
        );
        let _ = writeln!(out, "Command: `{}`  ", self.command_line);
        let _ = writeln!(
            out,
            "Load average (1, 5, 15 min): {} at start, {} at end\n",
            self.load_average_at_start, self.load_average_at_end
        );
    }

    fn write_loads(&self, out: &mut String) {
        if self.loads.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "In flight = connections × requests per connection. Each request is one \
             operation (a reservation and its release are two); lines/s counts each line of a \
             multi-line command (a 5-line cart's reservation is 5 lines), and equals ops/s \
             for single-item commands. Latencies in µs; server CPU \
             is user + system time of the server process per operation, bench CPU the same \
             for the load generator (they share the machine); machine busy is the share of \
             all CPUs not idle during the window.\n"
        );
        let _ = writeln!(
            out,
            "| scenario | in flight | ops/s | lines/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/op | bench CPU µs/op | machine busy % | server RSS MiB | events/fsync | failures |"
        );
        let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for result in &self.loads {
            let in_flight = if result.connections == 0 {
                result.in_flight.to_string()
            } else {
                spread(result.in_flight, result.connections)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                result.scenario,
                in_flight,
                result.operations_per_second,
                result.lines_per_second,
                result.latency_micros.p50,
                result.latency_micros.p99,
                result.latency_micros.p999,
                optional(result.server_cpu_micros_per_operation, 1),
                optional(result.bench_cpu_micros_per_operation, 1),
                optional(result.machine_busy_percent, 0),
                optional(result.server_rss_bytes.map(mebibytes), 1),
                optional(result.events_per_fsync, 1),
                result.failures,
            );
        }
        for result in &self.loads {
            if !result.failure_examples.is_empty() {
                let _ = writeln!(
                    out,
                    "\n{} at {} in flight failed with: {}",
                    result.scenario,
                    result.in_flight,
                    result.failure_examples.join("; ")
                );
            }
        }
        let _ = writeln!(out);
    }

    fn write_lags(&self, out: &mut String) {
        if self.lags.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "Subscription lag: from the command's answer at its client to a subscriber \
             receiving its event, one sample per subscriber and event; commands \
             (reserve + release, {LAG_COMMAND_IN_FLIGHT} in flight) paced at half the \
             best reserve-uniform rate (or `--lag-command-rate`); the rate reached is \
             shown beside it.\n"
        );
        let _ = writeln!(
            out,
            "| subscribers | commands/s (target) | lag p50 µs | p99 µs | p99.9 µs | max µs | events delivered/s | received before ack | missing | server CPU µs/event | server RSS MiB |"
        );
        let _ = writeln!(out, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for lag in &self.lags {
            let _ = writeln!(
                out,
                "| {} | {:.0} ({:.0}) | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
                lag.subscribers,
                lag.command_rate,
                lag.command_rate_target,
                lag.lag_micros.p50,
                lag.lag_micros.p99,
                lag.lag_micros.p999,
                lag.lag_micros.max,
                lag.events_delivered_per_second,
                lag.received_before_acknowledgement,
                lag.missing,
                optional(lag.server_cpu_micros_per_event, 2),
                optional(lag.server_rss_bytes.map(mebibytes), 1),
            );
        }
        let _ = writeln!(out);
    }

    fn write_deliveries(&self, out: &mut String) {
        if self.deliveries.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "Delivery: lag from a command's answer at its client to its event reaching the \
             bench's webhook receiver (HTTP/1.1 on loopback, batch_max 100) or a NATS \
             subscriber of the JetStream subjects, one sample per event, under the paced \
             command load of subscription-lag; then catch-up: a server restarted on a log of \
             the backlog with one new sink (batch_max {CATCH_UP_BATCH}), from ready to its \
             cursor at the head. Bare client: the same run's baseline on the same NATS server, \
             messages of the catch-up's size and subjects published by async-nats's JetStream \
             API, a PubAck each, 4 batches of 1000 waiting at once.\n"
        );
        let _ = writeln!(
            out,
            "| sink | commands/s (target) | lag p50 µs | p99 µs | p99.9 µs | max µs | missing | backlog events | catch-up s | catch-up events/s | bare client events/s |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for delivery in &self.deliveries {
            let _ = writeln!(
                out,
                "| {} | {:.0} ({:.0}) | {} | {} | {} | {} | {} | {} | {:.2} | {:.0} | {} |",
                delivery.sink,
                delivery.command_rate,
                delivery.command_rate_target,
                delivery.lag_micros.p50,
                delivery.lag_micros.p99,
                delivery.lag_micros.p999,
                delivery.lag_micros.max,
                delivery.missing,
                delivery.backlog_events,
                delivery.catch_up_seconds,
                delivery.catch_up_events_per_second(),
                delivery.bare_events_per_second.map_or_else(
                    || "–".to_owned(),
                    |bare| format!(
                        "{bare:.0} (catch-up {:.2}×)",
                        delivery.catch_up_events_per_second() / bare
                    )
                ),
            );
        }
        let _ = writeln!(out);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "machine": self.machine.to_json(),
            "command_line": self.command_line,
            "config": self.config,
            "load_average_at_start": self.load_average_at_start,
            "load_average_at_end": self.load_average_at_end,
            "loads": self.loads.iter().map(LoadResult::to_json).collect::<Vec<_>>(),
            "subscription_lag": self.lags.iter().map(LagResult::to_json).collect::<Vec<_>>(),
            "delivery": self.deliveries.iter().map(DeliveryResult::to_json).collect::<Vec<_>>(),
            "replay": self.replay.as_ref().map(ReplayResult::to_json),
            "targets": self.targets().iter().map(|check| json!({
                "target": check.target,
                "measured": check.measured,
                "ratio_to_bound": check.ratio,
                "met": check.met,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Replay speed and memory per item and per reservation.
fn replay_targets(replay: &ReplayResult) -> Vec<TargetCheck> {
    vec![
        TargetCheck::compare(
            "replay ≥ 1,000,000 events/s".to_owned(),
            format!(
                "{:.0} events/s ({} events in {:.2} s)",
                replay.events_per_second(),
                replay.log.events,
                replay.log.ready_after.as_secs_f64()
            ),
            replay.events_per_second(),
            Bound::AtLeast(1_000_000.0),
        ),
        TargetCheck::compare(
            "≤ 300 bytes of RSS per stock item".to_owned(),
            format!(
                "{:.0} bytes ({} items)",
                replay.bytes_per_item(),
                replay.memory.items
            ),
            replay.bytes_per_item(),
            Bound::AtMost(300.0),
        ),
        TargetCheck::compare(
            "≤ 300 bytes of RSS per active reservation".to_owned(),
            format!(
                "{:.0} bytes ({} reservations)",
                replay.bytes_per_reservation(),
                replay.memory.items
            ),
            replay.bytes_per_reservation(),
            Bound::AtMost(300.0),
        ),
    ]
}

/// "measured vs reference ops/s (ratio×)".
fn throughput_against(measured: &LoadResult, reference: &LoadResult) -> String {
    format!(
        "{:.0} vs {:.0} ops/s ({:.2}×)",
        measured.operations_per_second,
        reference.operations_per_second,
        measured.operations_per_second / reference.operations_per_second
    )
}

fn write_replay(out: &mut String, replay: &ReplayResult) {
    let _ = writeln!(out, "Replay and memory (each after a restart):\n");
    let _ = writeln!(out, "| measurement | value |");
    let _ = writeln!(out, "|---|--:|");
    for (what, value) in replay_rows(replay) {
        let _ = writeln!(out, "| {what} | {value} |");
    }
    let _ = writeln!(out);
}

/// The rows of the replay and memory table: what, and its value.
fn replay_rows(replay: &ReplayResult) -> [(&'static str, String); 15] {
    [
        ("events in the replayed log", replay.log.events.to_string()),
        (
            "written in (AddStock, 256 in flight)",
            format!("{:.1} s", replay.log.loaded_in.as_secs_f64()),
        ),
        (
            "spawn → `listening` lines (ports bound)",
            format!("{:.3} s", replay.log.listening_after.as_secs_f64()),
        ),
        (
            "spawn → first answer (log replayed)",
            format!("{:.3} s", replay.log.ready_after.as_secs_f64()),
        ),
        (
            "start-up with an empty log",
            format!("{:.3} s", replay.memory.empty_ready_after.as_secs_f64()),
        ),
        (
            "replay speed (events / start-up time)",
            format!("{:.0} events/s", replay.events_per_second()),
        ),
        (
            "replay speed, the empty log's start-up subtracted",
            format!("{:.0} events/s", replay.replay_only_events_per_second()),
        ),
        (
            "RSS after replay",
            format!("{:.1} MiB", mebibytes(replay.log.rss_after_replay_bytes)),
        ),
        (
            "`inventory snapshot` of that log (open, fold, write)",
            format!("{:.2} s", replay.log.snapshot_taken_in.as_secs_f64()),
        ),
        (
            "spawn → first answer, from that snapshot at the head",
            format!(
                "{:.3} s (RSS {:.1} MiB)",
                replay.log.from_snapshot_ready_after.as_secs_f64(),
                mebibytes(replay.log.rss_after_snapshot_start_bytes)
            ),
        ),
        (
            "RSS, empty log",
            format!("{:.1} MiB", mebibytes(replay.memory.empty_rss_bytes)),
        ),
        (
            "RSS, distinct items loaded",
            format!(
                "{:.1} MiB ({} items, start-up {:.2} s)",
                mebibytes(replay.memory.items_rss_bytes),
                replay.memory.items,
                replay.memory.items_ready_after.as_secs_f64()
            ),
        ),
        (
            "RSS, plus one active reservation per item",
            format!(
                "{:.1} MiB (start-up {:.2} s)",
                mebibytes(replay.memory.reservations_rss_bytes),
                replay.memory.reservations_ready_after.as_secs_f64()
            ),
        ),
        (
            "bytes per stock item",
            format!("{:.0}", replay.bytes_per_item()),
        ),
        (
            "bytes per active reservation",
            format!("{:.0}", replay.bytes_per_reservation()),
        ),
    ]
}

fn write_targets(out: &mut String, targets: &[TargetCheck]) {
    if targets.is_empty() {
        return;
    }
    let _ = writeln!(out, "Targets of the issue:\n");
    let _ = writeln!(out, "| target | measured | ratio to the bound | |");
    let _ = writeln!(out, "|---|---|--:|---|");
    for check in targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            check.target,
            check.measured,
            optional(check.ratio, 2),
            if check.met { "met" } else { "**missed**" }
        );
    }
    let _ = writeln!(out);
}

/// "4×4", or "18 over 4" when the level does not divide evenly.
fn spread(in_flight: usize, connections: usize) -> String {
    if in_flight.is_multiple_of(connections) {
        format!("{connections}×{}", in_flight / connections)
    } else {
        format!("{in_flight} over {connections}")
    }
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{value:.decimals$}"))
}

fn mebibytes(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests;
