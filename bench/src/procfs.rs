//! CPU time and peak memory of a process, from Linux's `/proc`.
//!
//! CPU: `utime + stime` of `/proc/PID/stat` (every thread, living or exited), in clock
//! ticks (`getconf CLK_TCK`, 100 on Linux: 10 ms resolution, fine over a run of seconds).
//! Peak memory: `VmHWM` of `/proc/PID/status`, the resident set's high-water mark.
//! The whole machine's busy time (`/proc/stat`, all CPUs) is read too, so that CPU used by
//! anything else during a run — other people's builds on a shared machine — shows.

use std::io;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::load::Window;

/// Clock ticks per second of `/proc/PID/stat` times.
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User plus system CPU seconds `pid` has used so far.
///
/// # Errors
/// When the process is gone or its stat line cannot be read.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / ticks_per_second())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc stat line"))
}

/// `utime + stime` (fields 14 and 15) of a stat line; the command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq, steal),
/// summed over all CPUs.
///
/// # Errors
/// When `/proc/stat` cannot be read.
pub fn machine_busy_seconds() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    parse_machine_busy(&stat)
        .map(|ticks| ticks as f64 / ticks_per_second())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/stat"))
}

/// Busy ticks of the `cpu` line: every field but idle (4th) and iowait (5th); guest time
/// is already inside user time.
fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = fields[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

/// Peak resident set size of `pid`, in bytes.
///
/// # Errors
/// When the process is gone or reports no `VmHWM`.
pub fn peak_rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmHWM in /proc status"))
}

/// CPU seconds used within a measured window.
#[derive(Debug, Clone, Default)]
pub struct WindowCpu {
    /// Per process asked for, in the order given (`None` if it could not be read).
    pub processes: Vec<Option<f64>>,
    /// The whole machine, all CPUs.
    pub machine: Option<f64>,
}

/// Samples the CPU seconds of each of `pids`, and of the machine, at the start and the end
/// of the measured window, on a thread of its own.
pub fn sample_window(pids: Vec<u32>, window: Window) -> JoinHandle<WindowCpu> {
    std::thread::spawn(move || {
        sleep_until(window.measure);
        let before: Vec<_> = pids.iter().map(|p| cpu_seconds(*p).ok()).collect();
        let machine_before = machine_busy_seconds().ok();
        sleep_until(window.end);
        let machine = machine_busy_seconds()
            .ok()
            .zip(machine_before)
            .map(|(a, b)| a - b);
        let processes = pids
            .iter()
            .zip(before)
            .map(|(p, b)| Some(cpu_seconds(*p).ok()? - b?))
            .collect();
        WindowCpu { processes, machine }
    })
}

fn sleep_until(t: Instant) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_an_awkward_command_name() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 500 0 0 0 123 45 0 0 20 0 9 0 100 \
                    1000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(line), Some(168));
    }

    #[test]
    fn reads_the_machine_busy_ticks() {
        let stat = "cpu  100 5 50 9000 40 3 2 1 0 0\ncpu0 50 2 25 4500 20 1 1 0 0 0\n";
        assert_eq!(parse_machine_busy(stat), Some(161));
        assert!(machine_busy_seconds().expect("/proc/stat") > 0.0);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).expect("own stat") >= 0.0);
        assert!(peak_rss_bytes(pid).expect("own status") > 0);
    }
}
