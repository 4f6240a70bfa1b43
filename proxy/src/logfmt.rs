//! logfmt lines (`--log-format logfmt`, or an ngrok agent file's `log_format: logfmt`):
//! `t=… lvl=info thread=… msg="…" key=value …`, one event a line, values quoted when
//! they hold a space, `=` or `"`, as ngrok's agent and many log shippers write them.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The logfmt event format; an edge's lines start with `edge=NAME`.
#[derive(Default)]
pub struct Logfmt {
    /// The edge's `edge_id`, on every line.
    pub edge: Option<String>,
}

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let meta = event.metadata();
        let mut line = String::with_capacity(160);
        if let Some(edge) = &self.edge {
            pair(&mut line, "edge", edge);
            line.remove(0);
            line.push(' ');
        }
        let _ = write!(
            line,
            "t={} lvl={}",
            time.trim(),
            meta.level().as_str().to_ascii_lowercase()
        );
        if let Some(name) = std::thread::current().name() {
            pair(&mut line, "thread", name);
        }
        let mut fields = Fields {
            message: None,
            rest: String::new(),
        };
        event.record(&mut fields);
        pair(&mut line, "msg", fields.message.as_deref().unwrap_or(""));
        line.push_str(&fields.rest);
        pair(&mut line, "target", meta.target());
        writeln!(writer, "{line}")
    }
}

struct Fields {
    message: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            pair(&mut self.rest, field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// ` key=value`, the value quoted (and `"` and `\` escaped) when it needs to be.
fn pair(out: &mut String, key: &str, value: &str) {
    let quote = value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c == '=' || c == '"' || c.is_control());
    if quote {
        let _ = write!(out, " {key}=\"");
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
    } else {
        let _ = write!(out, " {key}={value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_key_value_lines_quoted_where_needed() {
        let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || SinkWriter(writer.clone()))
            .event_format(Logfmt::default())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                port = 7,
                peer = "a b",
                note = "say \"hi\"",
                "endpoint bound"
            );
        });
        let text = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("t="), "{text}");
        assert!(text.contains(" lvl=warn "), "{text}");
        assert!(text.contains(" msg=\"endpoint bound\""), "{text}");
        assert!(text.contains(" port=7"), "{text}");
        assert!(text.contains(" peer=\"a b\""), "{text}");
        assert!(text.contains(r#" note="say \"hi\"""#), "{text}");
        assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
    }

    struct SinkWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for SinkWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
