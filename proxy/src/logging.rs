//! Structured logs with `tracing`: human format on a terminal, JSON lines otherwise
//! (or as chosen with `--log-format`); levels from `--log-level` or `SLUICE_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber, writing to stderr.
pub fn init(level: Option<&str>, format: LogFormat) {
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Auto => !terminal,
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_ansi(terminal).try_init()
    };
}

/// Events per second a [`Throttle`] lets through before it starts counting instead.
pub const THROTTLE_PER_SEC: u64 = 10;

/// A per-call-site log rate limiter (see [`log_throttled!`](crate::log_throttled)):
/// the first [`THROTTLE_PER_SEC`] events of each second are logged, the rest are
/// counted and reported with the next event that gets through.
pub struct Throttle {
    /// (second << 20) | events this second.
    window: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// A throttle with nothing seen yet.
    pub const fn new() -> Self {
        Self {
            window: std::sync::atomic::AtomicU64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether to log this event; `Some(n)` with `n` events suppressed since the last
    /// one logged.
    pub fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let second = coarse_seconds();
        let packed = self.window.load(Relaxed);
        let (at, seen) = (packed >> 20, packed & 0xfffff);
        if at != second {
            self.window.store((second << 20) | 1, Relaxed);
            return Some(self.suppressed.swap(0, Relaxed));
        }
        if seen < THROTTLE_PER_SEC {
            self.window.store((second << 20) | (seen + 1), Relaxed);
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

fn coarse_seconds() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs()
        + 1
}

/// Logs like `tracing::$level!`, at most [`THROTTLE_PER_SEC`] times a second from this
/// call site; events beyond that are counted and the count rides on the next one logged
/// (`suppressed` field).
#[macro_export]
macro_rules! log_throttled {
    ($level:ident, $($rest:tt)+) => {{
        static THROTTLE: $crate::logging::Throttle = $crate::logging::Throttle::new();
        if let Some(suppressed) = THROTTLE.admit() {
            if suppressed > 0 {
                tracing::$level!(suppressed, "similar events suppressed (log rate limit)");
            }
            tracing::$level!($($rest)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_admits_a_burst_then_counts() {
        let t = Throttle::new();
        let admitted = (0..100).filter(|_| t.admit().is_some()).count();
        // A second boundary may fall inside the loop: at most two bursts.
        assert!((THROTTLE_PER_SEC as usize..=2 * THROTTLE_PER_SEC as usize).contains(&admitted));
        assert!(t.suppressed.load(std::sync::atomic::Ordering::Relaxed) > 0 || admitted == 100);
    }
}
