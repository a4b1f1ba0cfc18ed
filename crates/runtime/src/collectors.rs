//! Gauges read when `/metrics` is scraped rather than kept up to date: the process's own (CPU,
//! memory, file descriptors, threads, as Prometheus' process collector names them), and whatever a
//! service registers with [`register`] (a pool's connections, a breaker's state).

use std::sync::{Arc, Mutex, OnceLock};

type Collector = Arc<dyn Fn() + Send + Sync>;

fn collectors() -> &'static Mutex<Vec<Collector>> {
    static COLLECTORS: OnceLock<Mutex<Vec<Collector>>> = OnceLock::new();
    COLLECTORS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Runs `collect` before every scrape, for the life of the process. It should only read state it
/// already has and set gauges: it runs on the scrape's request.
pub fn register(collect: impl Fn() + Send + Sync + 'static) {
    collectors()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::new(collect));
}

/// Sets every registered gauge and the process's; called by the admin server before rendering.
pub fn collect() {
    process();
    let registered: Vec<Collector> = collectors()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for collect in registered {
        collect();
    }
}

/// CPU seconds used by the process (user and system).
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
/// Resident memory, in bytes.
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// File descriptors open now.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// The most file descriptors the process may open (its soft limit).
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// Threads of the process.
pub const PROCESS_THREADS: &str = "process_threads";
/// When the process started, in seconds since the Unix epoch.
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

/// Describes the process gauges; called once when the recorder is installed.
pub(crate) fn describe() {
    metrics::describe_gauge!(
        PROCESS_CPU_SECONDS,
        metrics::Unit::Seconds,
        "CPU time the process used, user and system"
    );
    metrics::describe_gauge!(
        PROCESS_RESIDENT_MEMORY,
        metrics::Unit::Bytes,
        "Resident memory of the process"
    );
    metrics::describe_gauge!(PROCESS_OPEN_FDS, "File descriptors the process has open");
    metrics::describe_gauge!(
        PROCESS_MAX_FDS,
        "File descriptors the process may open (soft limit)"
    );
    metrics::describe_gauge!(PROCESS_THREADS, "Threads of the process");
    metrics::describe_gauge!(
        PROCESS_START_TIME,
        metrics::Unit::Seconds,
        "When the process started, since the Unix epoch"
    );
}

/// Reads `/proc/self` (Linux); elsewhere, sets nothing.
fn process() {
    let Some(stat) = ProcStat::read() else {
        return;
    };
    let ticks = clock_ticks_per_second();
    #[allow(clippy::cast_precision_loss)]
    {
        // A gauge, as the exporter's counters count whole numbers; it only ever grows.
        metrics::gauge!(PROCESS_CPU_SECONDS).set((stat.utime + stat.stime) as f64 / ticks);
        metrics::gauge!(PROCESS_THREADS).set(stat.threads as f64);
        if let Some(boot) = boot_time_secs() {
            metrics::gauge!(PROCESS_START_TIME).set(boot as f64 + stat.start_ticks as f64 / ticks);
        }
    }
    if let Some(kib) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| resident_kib(&status))
    {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(PROCESS_RESIDENT_MEMORY).set((kib * 1024) as f64);
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(PROCESS_OPEN_FDS).set(entries.count() as f64);
    }
    if let Some(max) = max_open_files() {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(PROCESS_MAX_FDS).set(max as f64);
    }
}

/// The fields of `/proc/self/stat` that are wanted here.
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
}

impl ProcStat {
    fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Fields after the command name, which is in parentheses and may hold spaces (proc(5)):
    /// utime is the 14th field, stime 15th, num_threads 20th, starttime 22nd.
    fn parse(stat: &str) -> Option<Self> {
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // `fields[0]` is the 3rd field (state).
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            threads: field(20)?,
            start_ticks: field(22)?,
        })
    }
}

/// The unit of the times in `/proc` (`USER_HZ`, what `sysconf(_SC_CLK_TCK)` answers): 100 on
/// x86-64 and arm64, whatever the kernel's own tick rate.
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// `VmRSS` in `/proc/self/status`, in KiB.
fn resident_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Seconds since the epoch at boot (`btime` in `/proc/stat`).
fn boot_time_secs() -> Option<u64> {
    static BOOT: OnceLock<Option<u64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    })
}

/// The soft limit on open files (`Max open files` in `/proc/self/limits`).
fn max_open_files() -> Option<u64> {
    parse_max_open_files(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 \
                    9 0 123456 1000000 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        assert_eq!(
            ProcStat::parse(stat),
            Some(ProcStat {
                utime: 250,
                stime: 75,
                threads: 9,
                start_ticks: 123_456,
            })
        );
        assert_eq!(ProcStat::parse("garbage"), None);
    }

    #[test]
    fn the_soft_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
    }

    #[test]
    fn this_process_is_measured() {
        let stat = ProcStat::read().expect("/proc/self/stat");
        assert!(stat.threads >= 1);
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(resident_kib(&status).is_some_and(|kib| kib > 0));
        assert!(max_open_files().is_some_and(|max| max > 0));
    }
}
