//! Logging: the subscriber (JSON lines or text), and the access event written once per call.
//!
//! JSON lines put `timestamp`, `level` and `message` first, then every field the event
//! declares, flattened; a declared field that holds no value (an `Option` that is `None`) is
//! written as `null`, so every access line has the same keys. The fields of the spans an event
//! happens in (the call's `request_id`) follow, unless the event declares them itself. No
//! secret is ever a field.

use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Log, LogFormat};

mod clock;
mod json;
pub mod output;

/// The subscriber could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.level` is not a level or filter directive.
    #[error("log.level: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber was already installed.
    #[error("logging is already initialised")]
    AlreadySet,
}

/// This process's name in a cluster: every event carries it (`instance`) once set.
static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process in every event from now on (`cluster.instance`); the first name set
/// stays.
pub fn set_instance(name: &str) {
    let _ = INSTANCE.set(name.to_string());
}

/// Changes the level filter of a running subscriber (`log.level` on reload).
pub type LevelHandle = std::sync::Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// A subscriber for `log` settings writing to `writer` (stdout in production, a buffer in
/// tests), and the handle that changes its level.
pub fn subscriber<W>(
    log: &Log,
    writer: W,
) -> Result<(tracing::Dispatch, LevelHandle), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&log.level)?;
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter);
    fn level<S: Send + Sync + 'static>(
        handle: tracing_subscriber::reload::Handle<EnvFilter, S>,
    ) -> LevelHandle {
        std::sync::Arc::new(move |level: &str| {
            let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
            handle.reload(filter).map_err(|e| e.to_string())
        })
    }
    Ok(match log.format {
        LogFormat::Json => {
            let builder = builder
                .fmt_fields(JsonFields)
                .event_format(JsonLines)
                .with_filter_reloading();
            let handle = level(builder.reload_handle());
            (builder.finish().into(), handle)
        }
        LogFormat::Text => {
            // Colours only for a person at a terminal: never escapes in a file or a pipe.
            let ansi = std::io::stdout().is_terminal();
            let builder = builder
                .with_ansi(ansi)
                .event_format(WithInstance(
                    tracing_subscriber::fmt::format()
                        .with_target(false)
                        .with_ansi(ansi),
                ))
                .with_filter_reloading();
            let handle = level(builder.reload_handle());
            (builder.finish().into(), handle)
        }
    })
}

/// Installs the process-wide subscriber writing to stdout; returns the handle that changes
/// its level.
pub fn init(log: &Log) -> Result<LevelHandle, TelemetryError> {
    let (dispatch, handle) = subscriber(log, output::stdout().clone())?;
    install(dispatch, log, output::stdout().clone())?;
    Ok(handle)
}

/// Where JSON access lines go without passing through tracing's machinery (set by
/// [`install`]): the same writer the subscriber writes to.
type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;
static DIRECT: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();

/// The target of the access event (`log.level = "warn,bcproxy::access=info"` keeps access
/// lines and quiets the rest).
pub const ACCESS_TARGET: &str = "bcproxy::access";

/// Makes `dispatch` (from [`subscriber`] for `log`, writing to `writer`) the process-wide
/// subscriber. With JSON lines, access lines are then written by [`access`] itself, straight
/// to `writer`, byte for byte as the subscriber would write them (the hit path's largest
/// cost otherwise), still subject to the level filter.
pub fn install<W>(dispatch: tracing::Dispatch, log: &Log, writer: W) -> Result<(), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing::dispatcher::set_global_default(dispatch).map_err(|_| TelemetryError::AlreadySet)?;
    if log.format == LogFormat::Json {
        let _ = DIRECT.set(Box::new(move |line: &[u8]| {
            use std::io::Write;
            // A log that cannot be written has nowhere to report it.
            let _ = writer.make_writer().write_all(line);
        }));
    }
    Ok(())
}

/// The fields of one access event. Everything here is safe to log: no credential is ever put
/// in a field.
#[derive(Debug, Clone, Default)]
pub struct AccessRecord {
    /// The call's `x-request-id`.
    pub request_id: String,
    /// The W3C trace id: the app's (`traceparent`), or one the proxy started.
    pub trace_id: TraceId,
    /// The `[[clients]]` name the app authenticated as.
    pub client: Option<Arc<str>>,
    /// Request method.
    pub method: String,
    /// Request path with query.
    pub path: String,
    /// Status sent to the app (499 when the app went away before an answer).
    pub status: u16,
    /// The `x-cache` value.
    pub cache: &'static str,
    /// The store's status, when the store was called.
    pub upstream_status: Option<u16>,
    /// Time from sending to the store's response headers.
    pub upstream_ms: Option<f64>,
    /// The store's own request id, when it sent one.
    pub upstream_request_id: Option<String>,
    /// Time spent waiting for budget or an upstream slot.
    pub wait_ms: f64,
    /// Time from arrival to the last body byte sent (or the app going away).
    pub total_ms: f64,
    /// Response body bytes sent to the app.
    pub bytes_out: u64,
    /// The proxy's view of the store's remaining budget.
    pub budget_remaining: Option<u64>,
    /// What went wrong, when something did.
    pub error: Option<String>,
}

impl AccessRecord {
    /// The JSON line [`JsonLines`] makes of the access event, written directly: the same
    /// keys in the same order, `null` for what is absent.
    fn write_json(&self, line: &mut String) {
        fn opt_str(line: &mut String, value: Option<&str>) {
            match value {
                Some(v) => json::push_str(line, v),
                None => line.push_str("null"),
            }
        }
        fn opt_u64(line: &mut String, value: Option<u64>) {
            match value {
                Some(v) => line.push_str(itoa::Buffer::new().format(v)),
                None => line.push_str("null"),
            }
        }
        line.push_str("{\"timestamp\":\"");
        clock::push_now(line);
        line.push_str("\",\"level\":\"INFO\",\"message\":\"access\"");
        if let Some(instance) = INSTANCE.get() {
            line.push_str(",\"instance\":");
            json::push_str(line, instance);
        }
        line.push_str(",\"request_id\":");
        json::push_str(line, &self.request_id);
        // Hex digits: nothing to escape.
        line.push_str(",\"trace_id\":\"");
        line.push_str(self.trace_id.as_str());
        line.push('"');
        line.push_str(",\"client\":");
        opt_str(line, self.client.as_deref());
        line.push_str(",\"method\":");
        json::push_str(line, &self.method);
        line.push_str(",\"path\":");
        json::push_str(line, &self.path);
        line.push_str(",\"status\":");
        line.push_str(itoa::Buffer::new().format(self.status));
        line.push_str(",\"cache\":");
        json::push_str(line, self.cache);
        line.push_str(",\"upstream_status\":");
        opt_u64(line, self.upstream_status.map(u64::from));
        line.push_str(",\"upstream_ms\":");
        match self.upstream_ms {
            Some(ms) => json::push_f64(line, ms),
            None => line.push_str("null"),
        }
        line.push_str(",\"upstream_request_id\":");
        opt_str(line, self.upstream_request_id.as_deref());
        line.push_str(",\"wait_ms\":");
        json::push_f64(line, self.wait_ms);
        line.push_str(",\"total_ms\":");
        json::push_f64(line, self.total_ms);
        line.push_str(",\"bytes_out\":");
        line.push_str(itoa::Buffer::new().format(self.bytes_out));
        line.push_str(",\"budget_remaining\":");
        opt_u64(line, self.budget_remaining);
        line.push_str(",\"error\":");
        opt_str(line, self.error.as_deref());
        line.push_str("}\n");
    }
}

/// A W3C trace id: 32 lower-case hex digits, held inline (no allocation per call); empty by
/// default.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceId(Option<[u8; 32]>);

impl TraceId {
    /// The id of 32 lower-case hex digits, not all zeros.
    pub fn parse(hex: &str) -> Option<TraceId> {
        let bytes: [u8; 32] = hex.as_bytes().try_into().ok()?;
        let valid = bytes
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
            && bytes.iter().any(|&c| c != b'0');
        valid.then_some(TraceId(Some(bytes)))
    }

    /// An id the proxy made (hex digits by construction: not checked again).
    pub fn made(hex: [u8; 32]) -> TraceId {
        TraceId(Some(hex))
    }

    /// The id as written (empty when there is none).
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Some(bytes) => std::str::from_utf8(bytes).unwrap_or(""),
            None => "",
        }
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rounds milliseconds to microsecond precision for the log.
pub fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

thread_local! {
    /// The line [`access`] writes into (one per thread, reused).
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
}

/// Writes the access event for one call.
pub fn access(r: &AccessRecord) {
    if let Some(sink) = DIRECT.get() {
        if tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            LINE.with(|line| {
                let mut line = line.borrow_mut();
                line.clear();
                r.write_json(&mut line);
                sink(line.as_bytes());
            });
        }
        return;
    }
    tracing::info!(
        target: ACCESS_TARGET,
        request_id = r.request_id.as_str(),
        trace_id = r.trace_id.as_str(),
        client = r.client.as_deref(),
        method = r.method.as_str(),
        path = r.path.as_str(),
        status = r.status,
        cache = r.cache,
        upstream_status = r.upstream_status,
        upstream_ms = r.upstream_ms,
        upstream_request_id = r.upstream_request_id.as_deref(),
        wait_ms = r.wait_ms,
        total_ms = r.total_ms,
        bytes_out = r.bytes_out,
        budget_remaining = r.budget_remaining,
        error = r.error.as_deref(),
        "access"
    );
}

/// The JSON lines event format.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

thread_local! {
    /// The fields of the event being formatted on this thread, written as JSON as they are
    /// visited (one buffer per thread, reused: no allocation per field or per event).
    static SCRATCH: std::cell::RefCell<Fields> = std::cell::RefCell::new(Fields::default());
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SCRATCH.with(|scratch| {
            let mut fields = scratch.borrow_mut();
            fields.clear();
            event.record(&mut *fields);
            let fields = &*fields;
            let mut line = String::with_capacity(256 + fields.json.len());
            line.push_str("{\"timestamp\":\"");
            clock::push_now(&mut line);
            line.push_str("\",\"level\":\"");
            line.push_str(event.metadata().level().as_str());
            line.push_str("\",\"message\":");
            line.push_str(fields.get("message").unwrap_or("null"));
            if let Some(instance) = INSTANCE.get()
                && event.metadata().fields().field("instance").is_none()
            {
                line.push_str(",\"instance\":");
                json::push_str(&mut line, instance);
            }
            // Fields are visited in the order they are declared; a declared field that holds no
            // value was not visited and is written as null.
            let mut recorded = fields.spans.iter().peekable();
            for field in event.metadata().fields() {
                let name = field.name();
                let value = match recorded.peek() {
                    Some((n, range)) if *n == name => {
                        let value = &fields.json[range.clone()];
                        recorded.next();
                        value
                    }
                    _ => fields.get(name).unwrap_or("null"),
                };
                if name == "message" {
                    continue;
                }
                line.push_str(",\"");
                line.push_str(name);
                line.push_str("\":");
                line.push_str(value);
            }
            let declared = event.metadata().fields();
            for span in ctx
                .event_scope()
                .into_iter()
                .flat_map(|scope| scope.from_root())
            {
                let own = span
                    .metadata()
                    .fields()
                    .iter()
                    .any(|f| declared.field(f.name()).is_some());
                let extensions = span.extensions();
                match extensions.get::<FormattedFields<N>>() {
                    Some(formatted) if !own && !formatted.fields.is_empty() => {
                        line.push(',');
                        line.push_str(&formatted.fields);
                    }
                    _ => {}
                }
            }
            line.push_str("}\n");
            writer.write_str(&line)
        })
    }
}

/// The text format, with this process's cluster instance first when it has one.
#[derive(Debug, Clone)]
pub struct WithInstance<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithInstance<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if let Some(instance) = INSTANCE.get() {
            write!(writer, "[{instance}] ")?;
        }
        self.0.format_event(ctx, writer.by_ref(), event)
    }
}

/// Span fields as JSON object members (`"request_id":"…"`), for [`JsonLines`] to add to the
/// events inside the span.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut recorded = Fields::default();
        fields.record(&mut recorded);
        let mut out = String::with_capacity(recorded.json.len() + 32);
        for (name, range) in &recorded.spans {
            if !out.is_empty() {
                out.push(',');
            }
            json::push_str(&mut out, name);
            out.push(':');
            out.push_str(&recorded.json[range.clone()]);
        }
        writer.write_str(&out)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        if !current.fields.is_empty() {
            current.fields.push(',');
        }
        self.format_fields(current.as_writer(), fields)
    }
}

/// An event's recorded fields, each already written as JSON into one buffer.
#[derive(Default)]
struct Fields {
    json: String,
    spans: Vec<(&'static str, std::ops::Range<usize>)>,
}

impl Fields {
    fn clear(&mut self) {
        self.json.clear();
        self.spans.clear();
    }

    /// The JSON of field `name`, if it was recorded.
    fn get(&self, name: &str) -> Option<&str> {
        self.spans
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, range)| &self.json[range.clone()])
    }

    fn push(&mut self, field: &Field, write: impl FnOnce(&mut String)) {
        let start = self.json.len();
        write(&mut self.json);
        self.spans.push((field.name(), start..self.json.len()));
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, |out| json::push_f64(out, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, |out| out.push_str(itoa::Buffer::new().format(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, |out| out.push_str(itoa::Buffer::new().format(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, |out| {
            out.push_str(if value { "true" } else { "false" })
        });
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, |out| json::push_str(out, value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, |out| json::push_display(out, value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, |out| json::push_debug(out, value));
    }
}

#[cfg(test)]
mod tests {
    use super::output::tests::Sink as Buf;
    use super::*;

    #[test]
    fn access_lines_are_flat_json_with_nulls() {
        let buf = Buf::default();
        let writer = buf.clone();
        let (dispatch, _) = subscriber(&Log::default(), move || writer.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            access(&AccessRecord {
                request_id: "r1".into(),
                method: "GET".into(),
                path: "/api/v2/time?x=1".into(),
                status: 200,
                cache: "BYPASS",
                upstream_status: Some(200),
                upstream_ms: Some(1.5),
                total_ms: 2.25,
                bytes_out: 12,
                ..Default::default()
            })
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "access");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["status"], 200);
        assert_eq!(line["upstream_status"], 200);
        assert_eq!(line["upstream_ms"], 1.5);
        assert_eq!(line["path"], "/api/v2/time?x=1");
        assert!(line["client"].is_null());
        assert!(line["upstream_request_id"].is_null());
        assert!(line["budget_remaining"].is_null());
        assert!(line.get("fields").is_none());
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    /// The access line written directly is, but for its timestamp, the one the subscriber
    /// writes for the event, whatever the record holds.
    #[test]
    fn the_direct_access_line_is_the_subscribers_line() {
        let records = [
            AccessRecord::default(),
            AccessRecord {
                request_id: "r\"1\\\n".into(),
                trace_id: TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                client: Some("erp \u{e9}\u{1f}".into()),
                method: "PUT".into(),
                path: "/api/v2/products/1?q=\"x\"&b=\t".into(),
                status: 509,
                cache: "STALE",
                upstream_status: Some(509),
                upstream_ms: Some(0.001),
                upstream_request_id: Some("sim-1".into()),
                wait_ms: 1234.5,
                total_ms: 1e-7,
                bytes_out: u64::MAX,
                budget_remaining: Some(0),
                error: Some("served stale: the store said \"no\"".into()),
            },
            AccessRecord {
                upstream_ms: Some(f64::NAN),
                total_ms: f64::INFINITY,
                ..AccessRecord::default()
            },
        ];
        for record in records {
            let buf = Buf::default();
            let writer = buf.clone();
            let (dispatch, _) = subscriber(&Log::default(), move || writer.clone()).unwrap();
            tracing::dispatcher::with_default(&dispatch, || access(&record));
            let through = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            let mut direct = String::new();
            record.write_json(&mut direct);
            let strip = |line: &str| line.split_once("\",\"level\"").unwrap().1.to_string();
            assert_eq!(strip(&direct), strip(&through));
            serde_json::from_str::<serde_json::Value>(&direct).unwrap();
        }
    }

    /// Events inside a call's span carry its request id; the access event keeps its own.
    #[test]
    fn span_fields_reach_the_events_inside() {
        let buf = Buf::default();
        let writer = buf.clone();
        let (dispatch, _) = subscriber(&Log::default(), move || writer.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("call", request_id = "r7");
            let _entered = span.enter();
            tracing::info!(send = 3, "budget.paused");
            access(&AccessRecord {
                request_id: "r7".into(),
                ..Default::default()
            });
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines[0]["message"], "budget.paused");
        assert_eq!(lines[0]["request_id"], "r7");
        assert_eq!(lines[0]["send"], 3);
        assert_eq!(lines[1]["message"], "access");
        assert_eq!(lines[1]["request_id"], "r7");
        assert_eq!(text.matches("\"request_id\"").count(), 2, "{text}");
    }
}
