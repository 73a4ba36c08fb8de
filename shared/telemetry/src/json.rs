//! The JSON log line: the same object `tracing-subscriber`'s JSON format
//! writes (`timestamp`, `level`, the event's fields, `target`, the current
//! `span` and the `spans` from the root, each with its `name`), plus
//! `trace_id` and `span_id` when traces are on.
//!
//! Written here rather than by that format because of one cost: it keeps
//! each span's fields as a JSON object string and parses that string back
//! (twice for a line in one span: `span` and `spans`) to write it again.
//! This writes the stored object as it is, with the span's name spliced in.
//! The `tests` below hold the two formats to the same JSON value.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// The JSON line format (see the module doc).
pub(crate) struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        timestamp(&mut line)?;
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push('"');
        event.record(&mut Fields(&mut line));
        key(&mut line, "target");
        string(&mut line, meta.target());
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = &current {
            key(&mut line, "span");
            self::span::<S, N>(&mut line, span);
            key(&mut line, "spans");
            line.push('[');
            if let Some(leaf) = ctx.lookup_current() {
                for (i, span) in leaf.scope().from_root().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    self::span::<S, N>(&mut line, &span);
                }
            }
            line.push(']');
        }
        if let Some((trace_id, span_id)) = crate::trace::current_ids() {
            key(&mut line, "trace_id");
            string(&mut line, &trace_id);
            key(&mut line, "span_id");
            string(&mut line, &span_id);
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// The time as `tracing-subscriber`'s `SystemTime` writes it (UTC to the
/// microsecond: `2026-12-05T19:42:08.123456Z`). The part up to the second
/// is kept per thread and made again only when the second changes:
/// formatting the date through `core::fmt` cost some 2,000 instructions a
/// line, about a quarter of the line's formatting. Before 1970, or past
/// what chrono can hold, the library's own formatting writes it.
fn timestamp(line: &mut String) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|since| Some((i64::try_from(since.as_secs()).ok()?, since.subsec_micros())));
    let Some((second, micros)) = since_epoch else {
        return SystemTime.format_time(&mut Writer::new(line));
    };
    let known = SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != second {
            let Some(time) = chrono::DateTime::from_timestamp(second, 0) else {
                return false;
            };
            prefix.clear();
            if write!(prefix, "{}", time.format("%Y-%m-%dT%H:%M:%S")).is_err() {
                return false;
            }
            *cached = second;
        }
        line.push_str(prefix);
        true
    });
    if !known {
        return SystemTime.format_time(&mut Writer::new(line));
    }
    line.push('.');
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros);
    for _ in digits.len()..6 {
        line.push('0');
    }
    line.push_str(digits);
    line.push('Z');
    Ok(())
}

/// How the log layer keeps a span's fields: one JSON object, the value
/// `tracing-subscriber`'s `JsonFields` keeps, written without its map of
/// `serde_json` values. A field recorded later (the root span's status
/// code, once per request) is appended in place, where `JsonFields` parses
/// the object and writes it again, which cost about as much as the line.
/// A field recorded again replaces its value, as with `JsonFields`: the
/// object is then merged the slow way, so a key never appears twice.
pub(crate) struct SpanFields;

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut members = String::with_capacity(256);
        fields.record(&mut Fields(&mut members));
        write_object(&mut writer, &members)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        fields.record(&mut Fields(&mut added));
        if added.is_empty() {
            return Ok(());
        }
        let stored = current.fields.trim_end();
        let mut stored_keys = StoredKeys {
            object: stored,
            found: false,
        };
        fields.record(&mut stored_keys);
        let again = stored_keys.found;
        match stored.strip_suffix('}') {
            Some(open) if !again => {
                let empty = open.trim_end() == "{";
                current.fields.truncate(open.len());
                current
                    .fields
                    .push_str(if empty { &added[1..] } else { &added });
                current.fields.push('}');
                Ok(())
            }
            _ => {
                let parse = |text: &str| {
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
                        .map_err(|_| fmt::Error)
                };
                let mut merged = if stored.is_empty() {
                    serde_json::Map::new()
                } else {
                    parse(stored)?
                };
                let mut object = String::with_capacity(added.len() + 1);
                write_object(&mut object, &added)?;
                merged.extend(parse(&object)?);
                current.fields = serde_json::to_string(&merged).map_err(|_| fmt::Error)?;
                Ok(())
            }
        }
    }
}

/// Writes `members` (`,"name":value` each, as [`Fields`] writes them) as
/// an object, without building it in a string of its own first.
fn write_object(out: &mut impl fmt::Write, members: &str) -> fmt::Result {
    match members.strip_prefix(',') {
        Some(members) => {
            out.write_char('{')?;
            out.write_str(members)?;
            out.write_char('}')
        }
        None => out.write_str("{}"),
    }
}

/// Whether a record holds a field that is a key of `object` already.
struct StoredKeys<'a> {
    object: &'a str,
    found: bool,
}

impl Visit for StoredKeys<'_> {
    fn record_debug(&mut self, field: &Field, _: &dyn fmt::Debug) {
        // Keys are written escaped, so `"name":` outside a key would read
        // `\"name\":` inside a string value: this finds keys only.
        let (object, name) = (self.object.as_bytes(), field.name().as_bytes());
        self.found |= memchr::memmem::find_iter(object, name).any(|at| {
            at.checked_sub(1).and_then(|before| object.get(before)) == Some(&b'"')
                && object
                    .get(at + name.len()..)
                    .is_some_and(|after| after.starts_with(b"\":"))
        });
    }
}

/// A span as an object: its stored fields (already a JSON object, written
/// by [`SpanFields`]) and its `name`.
fn span<S, N>(line: &mut String, span: &SpanRef<'_, S>)
where
    S: for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let extensions = span.extensions();
    let stored = extensions
        .get::<FormattedFields<N>>()
        .map_or("", |fields| fields.fields.as_str())
        .trim();
    match stored.strip_suffix('}') {
        Some(open) if open.trim_end() != "{" => {
            line.push_str(open);
            line.push(',');
        }
        _ => line.push('{'),
    }
    line.push_str("\"name\":");
    string(line, span.metadata().name());
    line.push('}');
}

/// `,"name":` before a value.
fn key(line: &mut String, name: &str) {
    line.push(',');
    string(line, name);
    line.push(':');
}

/// `text` as a JSON string.
fn string(line: &mut String, text: &str) {
    line.push('"');
    // Writing to a String cannot fail.
    let _ = Escaped(line).write_str(text);
    line.push('"');
}

/// Writes what it is given escaped for the inside of a JSON string.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    /// Text with nothing to escape, most of it, is found so eight bytes at
    /// a time ([`clean`]) and copied whole. Otherwise it is copied in runs
    /// between the characters that need escaping, all of them ASCII: a byte
    /// below 0x80 is always a whole character in UTF-8, so every cut falls
    /// on a character boundary. (One `push` per character was the largest
    /// single cost of a log line.)
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let clean_text = text.as_bytes().chunks(8).all(|chunk| {
            // The last chunk padded with spaces, which need no escaping.
            let mut word = [b' '; 8];
            for (to, from) in word.iter_mut().zip(chunk) {
                *to = *from;
            }
            clean(u64::from_ne_bytes(word))
        });
        if clean_text {
            self.0.push_str(text);
            return Ok(());
        }
        let mut run = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escaped = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.push_str(text.get(run..at).unwrap_or_default());
            if escaped.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.push_str(escaped);
            }
            run = at + 1;
        }
        self.0.push_str(text.get(run..).unwrap_or_default());
        Ok(())
    }
}

/// Whether none of the eight bytes of `word` needs escaping in a JSON
/// string (a control character, a quote or a backslash), by the bit tricks
/// of "Bit Twiddling Hacks" (S. E. Anderson): `x - 0x01.. * n & !x & 0x80..`
/// is non-zero exactly when some byte of `x` is below `n` (for `n <= 0x80`;
/// a borrow marks higher bytes only after a byte that was below), and a
/// byte equal to `c` is a zero byte of `x ^ c..`.
fn clean(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x;
    let control = below(word, 0x20);
    let quote = below(word ^ (ONES * u64::from(b'"')), 1);
    let backslash = below(word ^ (ONES * u64::from(b'\\')), 1);
    (control | quote | backslash) & HIGHS == 0
}

/// The event's fields, each as `,"name":value`.
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        key(self.0, field.name());
        match serde_json::Number::from_f64(value) {
            Some(number) => {
                let _ = write!(self.0, "{number}");
            }
            None => self.0.push_str("null"),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        key(self.0, field.name());
        self.0.push_str(itoa::Buffer::new().format(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        key(self.0, field.name());
        self.0.push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        key(self.0, field.name());
        self.0.push_str(if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        key(self.0, field.name());
        string(self.0, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        key(self.0, field.name());
        self.0.push('"');
        let _ = write!(Escaped(self.0), "{value}");
        self.0.push('"');
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        key(self.0, field.name());
        self.0.push('"');
        let _ = write!(Escaped(self.0), "{value:?}");
        self.0.push('"');
    }
}

#[cfg(test)]
mod tests;
