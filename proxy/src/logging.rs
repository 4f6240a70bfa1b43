//! Structured logs with `tracing`: human format on a terminal, JSON lines otherwise
//! (or as chosen with `--log-format`); levels from `--log-level` or `SLUICE_LOG`; to
//! stderr, or where the agent file's `log:` says ([`LogTarget`]).
//!
//! [`Throttle`] is the crate's one log rate limiter: every log line an outsider (or a
//! failing kernel call) could repeat at will goes through one, usually by way of
//! [`log_throttled!`](crate::log_throttled). Admission control (the agent port's
//! handshake token bucket, the admin API's hold-off of wrong keys) is a different job
//! and lives with what it guards.

use std::io::IsTerminal;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
    /// `key=value` lines (logfmt).
    Logfmt,
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogTarget {
    /// Standard error (the default).
    #[default]
    Stderr,
    /// Standard output.
    Stdout,
    /// Nowhere (ngrok's `log: false`).
    Off,
    /// Appended to this file.
    File(std::path::PathBuf),
}

/// Installs the global subscriber, writing to stderr. An edge passes its `edge_id`,
/// which then names it on every line (fleet logs are read side by side).
pub fn init(level: Option<&str>, format: LogFormat, edge: Option<&str>) {
    let _ = init_to(level, format, edge, &LogTarget::Stderr);
}

/// [`init`], writing to `target`; a file that cannot be opened is an error (and
/// nothing is installed).
pub fn init_to(
    level: Option<&str>,
    format: LogFormat,
    edge: Option<&str>,
    target: &LogTarget,
) -> Result<(), String> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let (writer, terminal) = match target {
        LogTarget::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
        LogTarget::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        LogTarget::Off => (BoxMakeWriter::new(std::io::sink), false),
        LogTarget::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("log file {}: {e}", path.display()))?;
            (BoxMakeWriter::new(std::sync::Mutex::new(file)), false)
        }
    };
    let json = match format {
        LogFormat::Auto => !terminal,
        LogFormat::Text | LogFormat::Logfmt => false,
        LogFormat::Json => true,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_thread_names(true);
    if format == LogFormat::Logfmt {
        let _ = builder
            .event_format(crate::logfmt::Logfmt {
                edge: edge.map(str::to_owned),
            })
            .try_init();
        return Ok(());
    }
    let lines = tracing_subscriber::fmt::format().with_thread_names(true);
    let _ = match (json, edge) {
        (true, None) => builder.json().flatten_event(true).try_init(),
        (false, None) => builder.with_ansi(terminal).try_init(),
        (true, Some(edge)) => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(WithEdge::new(lines.json().flatten_event(true), edge, true))
            .try_init(),
        (false, Some(edge)) => builder
            .with_ansi(terminal)
            .event_format(WithEdge::new(lines, edge, false))
            .try_init(),
    };
    Ok(())
}

/// The default formatters with the edge's name on every line of its log: the first
/// member of a JSON line (`"edge":"edge-a"`), a `[edge-a]` prefix on a text line.
struct WithEdge<F> {
    inner: F,
    /// The JSON member's value, quoted and escaped.
    quoted: String,
    /// The text prefix: `[edge-a] `.
    text_prefix: String,
    json: bool,
}

impl<F> WithEdge<F> {
    fn new(inner: F, edge: &str, json: bool) -> Self {
        Self {
            inner,
            quoted: serde_json::to_string(edge).unwrap_or_else(|_| "\"?\"".into()),
            text_prefix: format!("[{edge}] "),
            json,
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithEdge<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if !self.json {
            writer.write_str(&self.text_prefix)?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let Some(rest) = line.strip_prefix('{') else {
            return writer.write_str(&line);
        };
        let separator = if rest.starts_with('}') { "" } else { "," };
        write!(writer, "{{\"edge\":{}{separator}{rest}", self.quoted)
    }
}

/// Events per second a [`Throttle`] lets through before it starts counting instead.
pub const THROTTLE_PER_SEC: u64 = 10;

/// A per-call-site log rate limiter (see [`log_throttled!`](crate::log_throttled)):
/// the first `limit` events of each window (by default [`THROTTLE_PER_SEC`] a second)
/// are logged, the rest are counted and reported with the next event that gets
/// through. Windows are aligned on the crate clock ([`crate::clock::mono_ms`]).
pub struct Throttle {
    /// (window number << 20) | events this window.
    window: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
    limit: u64,
    window_ms: u64,
}

impl Throttle {
    /// A throttle letting [`THROTTLE_PER_SEC`] events a second through.
    pub const fn new() -> Self {
        Self::per_window(THROTTLE_PER_SEC, 1000)
    }

    /// A throttle letting `limit` events through per `window_ms` milliseconds
    /// (`limit` below 2^20, `window_ms` at least 1).
    pub const fn per_window(limit: u64, window_ms: u64) -> Self {
        Self {
            window: std::sync::atomic::AtomicU64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
            limit,
            window_ms: if window_ms == 0 { 1 } else { window_ms },
        }
    }

    /// Whether to log this event; `Some(n)` with `n` events suppressed since the last
    /// one logged.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(crate::clock::mono_ms())
    }

    /// [`Self::admit`] at `now_ms` on the crate clock (tests pass their own).
    pub fn admit_at(&self, now_ms: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        // Window numbers start at 1, so the initial 0 is never the current window.
        let current = now_ms / self.window_ms + 1;
        let packed = self.window.load(Relaxed);
        let (at, seen) = (packed >> 20, packed & 0xfffff);
        if at != current {
            self.window.store((current << 20) | 1, Relaxed);
            return Some(self.suppressed.swap(0, Relaxed));
        }
        if seen < self.limit {
            self.window.store((current << 20) | (seen + 1), Relaxed);
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

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged_by(edge: &str, json: bool) -> String {
        let sink = Sink::default();
        let writer = sink.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false);
        let lines = tracing_subscriber::fmt::format();
        let dispatch = if json {
            tracing::Dispatch::new(
                builder
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(WithEdge::new(lines.json().flatten_event(true), edge, true))
                    .finish(),
            )
        } else {
            tracing::Dispatch::new(
                builder
                    .event_format(WithEdge::new(lines, edge, false))
                    .finish(),
            )
        };
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(port = 7, "first");
            tracing::warn!("second");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn every_line_of_an_edge_names_it() {
        let json = logged_by("edge \"a\"", true);
        let lines: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{json}");
        for line in &lines {
            assert_eq!(line["edge"], "edge \"a\"", "{line}");
        }
        assert_eq!(lines[0]["port"], 7);
        assert_eq!(lines[1]["message"], "second");

        let text = logged_by("edge-b", false);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().all(|l| l.starts_with("[edge-b] ")), "{text}");
        assert!(text.contains("first port=7"), "{text}");
    }

    #[test]
    fn throttle_admits_a_burst_then_counts() {
        let t = Throttle::new();
        let admitted = (0..100).filter(|_| t.admit().is_some()).count();
        // A second boundary may fall inside the loop: at most two bursts.
        assert!((THROTTLE_PER_SEC as usize..=2 * THROTTLE_PER_SEC as usize).contains(&admitted));
        assert!(t.suppressed.load(std::sync::atomic::Ordering::Relaxed) > 0 || admitted == 100);
    }

    #[test]
    fn a_throttle_on_a_fake_clock_counts_what_it_held_back() {
        let t = Throttle::per_window(2, 5000);
        let start = 1_000_000;
        assert_eq!(t.admit_at(start), Some(0));
        assert_eq!(t.admit_at(start + 1), Some(0));
        assert_eq!(t.admit_at(start + 2), None);
        assert_eq!(t.admit_at(start + 4999 - start % 5000), None);
        // The next window: the two held back ride on its first event.
        assert_eq!(t.admit_at(start - start % 5000 + 5000), Some(2));
        assert_eq!(t.admit_at(start - start % 5000 + 5001), Some(0));
    }
}
