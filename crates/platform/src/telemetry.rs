//! Logging set-up (JSON lines or human-readable, `LOG_FORMAT`; spans exported too when
//! `crate::otel` says so) and masking of secrets that must never reach a log line in full.
//!
//! Lines are formatted on the thread that logs and appended to one buffer in memory; a writer
//! thread writes the buffer to standard output every [`FLUSH_EVERY`], or as soon as it holds
//! [`FLUSH_AT`] bytes or a warning or error (as nginx's `access_log … buffer= flush=` does), so
//! a busy service makes one `write` per many requests instead of one per request, and no
//! logging thread is woken per line. Nothing is dropped: a logging thread that finds
//! [`MAX_BUFFERED`] bytes waiting writes them itself. [`flush`] writes what is left; every
//! binary calls it on the way out (`crate::exit::finish`). A process killed outright loses at
//! most the last [`FLUSH_EVERY`] of lines.

use std::{
    io::Write,
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError},
    time::Duration,
};

use tracing::{Level, Metadata};
use tracing_subscriber::{EnvFilter, fmt, fmt::MakeWriter, prelude::*};

/// The longest a line waits in memory.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Bytes waiting that wake the writer thread before its time.
pub const FLUSH_AT: usize = 64 * 1024;
/// Bytes waiting past which a logging thread writes them out itself.
pub const MAX_BUFFERED: usize = 1024 * 1024;

/// Lines not yet written, and where they go.
struct Shared<W> {
    lines: Mutex<Vec<u8>>,
    /// Held while a batch is written, so batches reach `out` in the order they were taken.
    out: Mutex<W>,
    due: Condvar,
}

impl<W: Write> Shared<W> {
    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes what is waiting and writes it; a failed write is dropped (nowhere to report it).
    fn write_out(&self, spare: &mut Vec<u8>) {
        let mut out = Self::lock(&self.out);
        std::mem::swap(&mut *Self::lock(&self.lines), spare);
        if !spare.is_empty() {
            let _ = out.write_all(spare);
            let _ = out.flush();
            spare.clear();
        }
    }
}

/// The [`MakeWriter`] of every log line: appends to the shared buffer.
struct Buffered<W>(Arc<Shared<W>>);

impl<W> Clone for Buffered<W> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// One line's writer; `urgent` for warnings and errors.
struct Line<'a, W> {
    shared: &'a Shared<W>,
    urgent: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut lines = Shared::<W>::lock(&self.shared.lines);
        lines.extend_from_slice(buf);
        let waiting = lines.len();
        drop(lines);
        if waiting >= MAX_BUFFERED {
            self.shared.write_out(&mut Vec::new());
        } else if self.urgent || waiting >= FLUSH_AT {
            self.shared.due.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Buffered<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { shared: &self.0, urgent: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line { shared: &self.0, urgent: *meta.level() <= Level::WARN }
    }
}

/// Starts the writer thread for `out`.
fn buffered<W: Write + Send + 'static>(out: W) -> Buffered<W> {
    let shared = Arc::new(Shared { lines: Mutex::new(Vec::new()), out: Mutex::new(out), due: Condvar::new() });
    let writer = shared.clone();
    let started = std::thread::Builder::new().name("portcullis-log".to_owned()).spawn(move || {
        let mut spare = Vec::new();
        loop {
            let lines = Shared::<W>::lock(&writer.lines);
            let (lines, _) = writer.due.wait_timeout(lines, FLUSH_EVERY).unwrap_or_else(PoisonError::into_inner);
            drop(lines);
            writer.write_out(&mut spare);
        }
    });
    if let Err(err) = started {
        eprintln!("log writer thread not started ({err}); lines are written when the buffer fills or at exit");
    }
    Buffered(shared)
}

/// The process's log buffer, for [`flush`].
static STDOUT: OnceLock<Buffered<std::io::Stdout>> = OnceLock::new();

/// How every binary sets up logging and tracing: [`init`] with the tracing export the
/// standard `OTEL_*` variables of `env` ask for (`service_name` unless `OTEL_SERVICE_NAME`
/// says otherwise). A bad variable is a configuration error.
pub fn start(json: bool, env: &dyn crate::env::Env, service_name: &str) -> Result<(), crate::exit::Failure> {
    let export = crate::otel::Export::from_env(env, service_name).map_err(crate::exit::Failure::config)?;
    init(json, export.as_ref()).map_err(|e| crate::exit::Failure::run("cannot start tracing", e))
}

/// Installs the global subscriber once; later calls (tests, embedded services) are no-ops.
/// With `export`, spans are also exported over OTLP (`crate::otel`); call it then inside the
/// Tokio runtime.
pub fn init(json: bool, export: Option<&crate::otel::Export>) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = STDOUT.get_or_init(|| buffered(std::io::stdout())).clone();
    let lines = if json {
        fmt::layer().json().flatten_event(true).with_current_span(true).with_writer(writer).boxed()
    } else {
        fmt::layer().compact().with_writer(writer).boxed()
    };
    // The log filter is the log lines' own, so `RUST_LOG=warn` still exports every span.
    let mut layers = vec![lines.with_filter(filter).boxed()];
    if let Some(export) = export {
        layers.push(crate::otel::layer(export)?);
    }
    let result = tracing_subscriber::registry().with(layers).try_init();
    if result.is_ok() && export.is_some() {
        crate::otel::started();
    }
    if result.is_ok() && json {
        JSON_LINES.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Set when [`init`] installed the JSON format: [`JsonLine`]s then go straight to the buffer.
static JSON_LINES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One JSON log line written without going through `tracing`'s formatter: the hot path's
/// lines (the gateway's access log), in the layout the JSON format gives every other line
/// (`timestamp`, `level`, the fields, `message`, `target`). Only for lines whose level the
/// caller has checked is enabled (`tracing::enabled!`).
pub struct JsonLine {
    buf: Vec<u8>,
}

impl JsonLine {
    /// A line at `level` of `target`, stamped `now`; `None` unless logs are JSON lines (then
    /// the caller logs through `tracing` as usual).
    pub fn start(now: time::OffsetDateTime, level: Level, target: &str, message: &str) -> Option<Self> {
        if !JSON_LINES.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        Some(Self::begin(now, level, target, message))
    }

    fn begin(now: time::OffsetDateTime, level: Level, target: &str, message: &str) -> Self {
        let mut line = Self { buf: Vec::with_capacity(384) };
        let now = now.to_offset(time::UtcOffset::UTC);
        // `{"timestamp":"YYYY-MM-DDTHH:MM:SS.ffffffZ"`, digits written directly: this runs for
        // every access line.
        line.buf.extend_from_slice(b"{\"timestamp\":\"");
        let parts: [(u32, usize, u8); 7] = [
            (u32::try_from(now.year()).unwrap_or(0), 4, b'-'),
            (u32::from(u8::from(now.month())), 2, b'-'),
            (u32::from(now.day()), 2, b'T'),
            (u32::from(now.hour()), 2, b':'),
            (u32::from(now.minute()), 2, b':'),
            (u32::from(now.second()), 2, b'.'),
            (now.microsecond(), 6, b'Z'),
        ];
        for (value, width, after) in parts {
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(value).as_bytes();
            line.buf.extend(std::iter::repeat_n(b'0', width.saturating_sub(digits.len())));
            line.buf.extend_from_slice(digits);
            line.buf.push(after);
        }
        line.buf.extend_from_slice(b"\",\"level\":\"");
        line.buf.extend_from_slice(level.as_str().as_bytes());
        line.buf.push(b'"');
        line.str("message", message).str("target", target)
    }

    /// A text field, escaped as JSON.
    pub fn str(mut self, name: &str, value: &str) -> Self {
        self.buf.extend_from_slice(b",\"");
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b"\":");
        // Most values (methods, paths, ids, addresses, labels) need no escape: copied as they
        // are, which is what the escaper would write too.
        if !needs_escape(value.as_bytes()) {
            self.buf.push(b'"');
            self.buf.extend_from_slice(value.as_bytes());
            self.buf.push(b'"');
            return self;
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, value);
        self
    }

    /// A number field.
    pub fn u64(mut self, name: &str, value: u64) -> Self {
        self.buf.extend_from_slice(b",\"");
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b"\":");
        self.buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    /// Ends the line and queues it with the others.
    pub fn write(self) {
        let text = self.close();
        if let Some(Buffered(shared)) = STDOUT.get() {
            let mut line = Line { shared, urgent: false };
            let _ = line.write_all(&text);
        }
    }

    /// The whole line, newline included.
    fn close(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"}\n");
        self.buf
    }
}

/// Whether JSON needs any byte of `text` escaped (a control byte, `"` or `\\`). Looked at 16
/// bytes at a time without stopping early, which the compiler turns into vector compares.
fn needs_escape(text: &[u8]) -> bool {
    let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut chunks = text.chunks_exact(16);
    let mut found = false;
    for chunk in &mut chunks {
        found |= chunk.iter().fold(false, |any, &b| any | special(b));
    }
    found || chunks.remainder().iter().any(|&b| special(b))
}

/// Writes every line still waiting, and exports the spans still waiting.
pub fn flush() {
    crate::otel::shutdown();
    if let Some(Buffered(shared)) = STDOUT.get() {
        shared.write_out(&mut Vec::new());
    }
}

/// Shows only the recognisable start of a secret: `pcr_ab…` or `***` when it is short.
pub fn mask(secret: &str) -> String {
    let visible: String = secret.chars().take(6).collect();
    if secret.chars().count() <= 12 { "***".to_owned() } else { format!("{visible}…") }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        sync::{Arc, Mutex},
        time::Duration,
    };

    /// A sink the test reads back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn line(writer: &super::Buffered<Sink>, level: tracing::Level, text: &str) {
        let mut line = super::Line { shared: &writer.0, urgent: level <= tracing::Level::WARN };
        line.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_wait_in_memory_and_reach_the_output_in_order() {
        let sink = Sink::default();
        let started = std::time::Instant::now();
        let writer = super::buffered(sink.clone());
        line(&writer, tracing::Level::INFO, "one\n");
        line(&writer, tracing::Level::INFO, "two\n");
        if started.elapsed() < super::FLUSH_EVERY / 2 {
            assert_eq!(sink.text(), "", "an info line is written with the next batch, not at once");
        }
        // Within the flush period every line is out, in order.
        let deadline = std::time::Instant::now() + super::FLUSH_EVERY * 20;
        while sink.text().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.text(), "one\ntwo\n");
    }

    #[test]
    fn a_warning_wakes_the_writer_at_once() {
        let shared = Arc::new(super::Shared {
            lines: Mutex::new(Vec::new()),
            out: Mutex::new(Sink::default()),
            due: std::sync::Condvar::new(),
        });
        let writer = super::Buffered(shared.clone());
        // The waiter stands in for the writer thread, with a period far longer than the test.
        let (ready, waiting) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let lines = shared.lines.lock().unwrap();
            ready.send(()).unwrap();
            let (_lines, timeout) = shared.due.wait_timeout(lines, Duration::from_secs(30)).unwrap();
            !timeout.timed_out()
        });
        waiting.recv().unwrap();
        line(&writer, tracing::Level::INFO, "quiet\n");
        line(&writer, tracing::Level::WARN, "loud\n");
        assert!(waiter.join().unwrap(), "the warning did not wake the writer");
    }

    #[test]
    fn nothing_is_dropped_past_the_limit_and_a_flush_writes_the_rest() {
        let sink = Sink::default();
        let writer = super::buffered(sink.clone());
        let lines = super::MAX_BUFFERED / 8 * 3;
        for i in 0..lines {
            line(&writer, tracing::Level::INFO, &format!("{i:07}\n"));
        }
        writer.0.write_out(&mut Vec::new());
        let numbers: Vec<usize> = sink.text().lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(numbers, (0..lines).collect::<Vec<_>>());
    }

    #[test]
    fn a_json_line_is_one_object_with_every_field_escaped() {
        let now = time::macros::datetime!(2026-12-03 21:05:09.0123456 UTC);
        let line = super::JsonLine::begin(now, tracing::Level::INFO, "gateway::access", "request")
            .str("path", "/a\"b\\c\n\u{1}ü")
            .u64("status", 200);
        let text = String::from_utf8(line.close()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["timestamp"], "2026-12-03T21:05:09.012345Z");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "gateway::access");
        assert_eq!(value["message"], "request");
        assert_eq!(value["path"], "/a\"b\\c\n\u{1}ü");
        assert_eq!(value["status"], 200);
        assert_eq!(text.find('\n'), Some(text.len() - 1), "one line: {text}");
    }

    #[test]
    fn a_text_field_is_written_as_the_json_escaper_writes_it() {
        let now = time::macros::datetime!(2026-12-03 21:05:09 UTC);
        // Past 16 bytes the scan goes a block at a time: a byte to escape in the first block,
        // a later block and the remainder, and long text with none.
        let long = [
            "a".repeat(64),
            format!("{}\"{}", "a".repeat(3), "b".repeat(30)),
            format!("{}\\{}", "a".repeat(20), "b".repeat(20)),
            format!("{}\n", "a".repeat(33)),
        ];
        let short =
            ["", "/v1/user/bench", "GET", "::1", "ü€😀", "a\"b", "back\\slash", "tab\there", "\u{1f}", "\u{7f}", " "];
        for value in short.into_iter().chain(long.iter().map(String::as_str)) {
            let text = super::JsonLine::begin(now, tracing::Level::INFO, "t", "m").str("f", value).close();
            let text = String::from_utf8(text).unwrap();
            let expected = format!(",\"f\":{}}}\n", serde_json::to_string(value).unwrap());
            assert!(text.ends_with(&expected), "{value:?}: {text}");
        }
    }

    #[test]
    fn mask_hides_the_body() {
        let token = "pcr_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        let masked = super::mask(token);
        assert_eq!(masked, "pcr_Ab…");
        assert!(!masked.contains("Ij"));
        assert_eq!(super::mask("short"), "***");
    }
}
