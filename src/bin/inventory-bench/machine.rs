//! What the bench reads from Linux's `/proc`: the machine it runs on, the load average, how
//! busy its CPUs are, and a process's CPU time and resident memory.

use serde_json::{Value, json};

use crate::BenchError;

/// Clock ticks per second of `/proc/<pid>/stat`'s `utime` and `stime` (`getconf CLK_TCK`).
/// It is 100 on every Linux architecture we run on; reading it needs `sysconf`, and the crate
/// has no `libc` dependency to spend on one number.
pub const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// The machine the numbers were measured on.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_total_kib: u64,
}

impl Machine {
    /// Reads the machine's description; parts that cannot be read are reported as `unknown`.
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |cpus| cpus.get()),
            cpu_model,
            kernel,
            memory_total_kib: status_field_kib(&meminfo, "MemTotal:").unwrap_or(0),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "cpus": self.cpus,
            "cpu_model": self.cpu_model,
            "kernel": self.kernel,
            "memory_total_kib": self.memory_total_kib,
        })
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` writes them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// CPU time (user + system) a process has used so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(BenchError::io(format!("reading {path}")))?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields from
    // after its closing parenthesis, where field 3 (state) starts.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| BenchError::Invalid(format!("{path} has no command name")))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, so 11 and 12 after field 3.
    let field = |index: usize| -> Result<u64, BenchError> {
        fields
            .get(index)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| BenchError::Invalid(format!("{path}: field {} unreadable", index + 3)))
    };
    Ok(field(11)? + field(12)?)
}

/// The CPU time between two readings of [`cpu_ticks`], in microseconds.
pub fn ticks_to_micros(before: u64, after: u64) -> f64 {
    after.saturating_sub(before) as f64 * 1e6 / CLOCK_TICKS_PER_SECOND as f64
}

/// Ticks every CPU of the machine has spent since boot: `(busy, total)`, from the first line
/// of `/proc/stat`. Busy is everything but idle and I/O wait.
pub fn machine_ticks() -> Result<(u64, u64), BenchError> {
    let path = "/proc/stat";
    let stat = std::fs::read_to_string(path).map_err(BenchError::io(format!("reading {path}")))?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .ok_or_else(|| BenchError::Invalid(format!("{path} has no `cpu` line")))?
        .split_whitespace()
        .map(|field| field.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|error| BenchError::Invalid(format!("{path}: {error}")))?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
    // already counted in user and nice.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((total.saturating_sub(idle), total))
}

/// A process's resident set size (`VmRSS`), in bytes.
pub fn resident_bytes(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(BenchError::io(format!("reading {path}")))?;
    status_field_kib(&status, "VmRSS:")
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::Invalid(format!("{path} has no VmRSS")))
}

fn status_field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::{cpu_ticks, load_average, machine_ticks, resident_bytes};

    #[test]
    fn proc_figures_of_this_process_are_readable() {
        let pid = std::process::id();
        // Only that the figures read is asserted: their values depend on the machine.
        let ticks = cpu_ticks(pid).unwrap();
        assert!(cpu_ticks(pid).unwrap() >= ticks);
        assert!(resident_bytes(pid).unwrap() > 0);
        let (busy, total) = machine_ticks().unwrap();
        assert!(total > 0 && busy <= total, "busy {busy} of {total} ticks");
        let (busy_later, total_later) = machine_ticks().unwrap();
        assert!(busy_later >= busy && total_later >= total);
        assert_eq!(load_average().split(' ').count(), 3);
    }
}
