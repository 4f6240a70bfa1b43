//! The standard Prometheus process metrics of this process (`process_open_fds`,
//! `process_max_fds`, resident and virtual memory, CPU seconds, start time), read from
//! `/proc/self` on each scrape and appended to the edge's and the agent's `/metrics`.
//! Off Linux (no `/proc`) the families that cannot be read are left out.

use std::path::Path;

use super::prometheus::Exposition;

/// One reading of the process's figures; `None` where it could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// Open file descriptors (entries of `/proc/self/fd`).
    pub open_fds: Option<u64>,
    /// The soft `RLIMIT_NOFILE`.
    pub max_fds: Option<u64>,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// The fields of `/proc/PID/stat` these metrics use (clock ticks, bytes, pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so the fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// Entries of a `/proc/PID/fd` directory.
fn count_entries(dir: &Path) -> Option<u64> {
    Some(std::fs::read_dir(dir).ok()?.filter(Result::is_ok).count() as u64)
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

fn soft_nofile() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    Some(lim.rlim_cur)
}

/// Reads this process's figures now.
pub fn read() -> ProcessStats {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t));
    let ticks = sysconf(libc::_SC_CLK_TCK);
    let page = sysconf(libc::_SC_PAGESIZE);
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_boot_time(&t));
    ProcessStats {
        open_fds: count_entries(Path::new("/proc/self/fd")),
        max_fds: soft_nofile(),
        resident_memory_bytes: stat.zip(page).map(|(s, p)| s.rss_pages * p),
        virtual_memory_bytes: stat.map(|s| s.vsize),
        cpu_seconds: stat
            .zip(ticks)
            .map(|(s, t)| (s.utime + s.stime) as f64 / t as f64),
        start_time_seconds: stat
            .zip(ticks)
            .zip(boot)
            .map(|((s, t), b)| b as f64 + s.starttime as f64 / t as f64),
    }
}

/// Appends the process families to `e` (those that could be read).
pub fn render(e: &mut Exposition) {
    render_stats(e, &read());
}

fn render_stats(e: &mut Exposition, p: &ProcessStats) {
    let mut one = |name: &str, kind: &str, help: &str, value: Option<String>| {
        if let Some(v) = value {
            e.family(name, kind, help).sample(name, &[], v);
        }
    };
    let int = |v: Option<u64>| v.map(|v| v.to_string());
    let float = |v: Option<f64>| v.map(|v| v.to_string());
    one(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        float(p.cpu_seconds),
    );
    one(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        int(p.open_fds),
    );
    one(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors (the soft RLIMIT_NOFILE).",
        int(p.max_fds),
    );
    one(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        int(p.virtual_memory_bytes),
    );
    one(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        int(p.resident_memory_bytes),
    );
    one(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        float(p.start_time_seconds),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis of its own.
        let line = "4242 (sl ice) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    170 30 0 0 20 0 3 0 9000 123456789 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            Stat {
                utime: 170,
                stime: 30,
                starttime: 9000,
                vsize: 123_456_789,
                rss_pages: 2048,
            }
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2"), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn values_are_positive_and_plausible() {
        let p = read();
        let open = p.open_fds.unwrap();
        let max = p.max_fds.unwrap();
        assert!(open >= 3 && open <= max, "{p:?}");
        let rss = p.resident_memory_bytes.unwrap();
        let vsz = p.virtual_memory_bytes.unwrap();
        assert!(rss > 0 && rss <= vsz, "{p:?}");
        assert!(p.cpu_seconds.unwrap() >= 0.0, "{p:?}");
        // Spin a little so the CPU time is measurably above zero.
        let spin = std::time::Instant::now();
        while read().cpu_seconds.unwrap() <= 0.0 {
            assert!(spin.elapsed() < std::time::Duration::from_secs(10), "{p:?}");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        // Started before now, and not before this test binary could have been built.
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }

    #[test]
    fn open_fds_grow_with_open_files() {
        // Other tests of this binary open and close descriptors concurrently: a few
        // tries, each holding 32 more files, must see the count grow by them once.
        const HELD: u64 = 32;
        let grew = (0..5).any(|_| {
            let before = read().open_fds.unwrap();
            let held: Vec<_> = (0..HELD)
                .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
                .collect();
            let during = read().open_fds.unwrap();
            drop(held);
            during >= before + HELD
        });
        assert!(grew, "open_fds did not count 32 more open files");
    }

    #[test]
    fn renders_each_family_once_with_its_type() {
        let mut e = Exposition::default();
        render(&mut e);
        let text = e.finish();
        for (name, kind) in [
            ("process_cpu_seconds_total", "counter"),
            ("process_open_fds", "gauge"),
            ("process_max_fds", "gauge"),
            ("process_virtual_memory_bytes", "gauge"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_start_time_seconds", "gauge"),
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} {kind}\n")).count(),
                1,
                "{text}"
            );
            let value = sample(&text, name);
            assert!(value > 0.0 || name == "process_cpu_seconds_total", "{text}");
        }
        // Families that could not be read are left out.
        let mut e = Exposition::default();
        render_stats(
            &mut e,
            &ProcessStats {
                open_fds: Some(7),
                ..Default::default()
            },
        );
        assert_eq!(
            e.finish(),
            "# HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds 7\n"
        );
    }

    /// The value of the unlabelled sample `name`.
    fn sample(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap()
    }
}
