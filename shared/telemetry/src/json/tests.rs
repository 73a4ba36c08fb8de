//! The line is the JSON value `tracing-subscriber`'s own JSON format
//! writes, for the same events in the same spans.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format;
use tracing_subscriber::layer::SubscriberExt as _;

use super::{JsonLine, SpanFields};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;

    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

impl Buffer {
    /// Each line as JSON, without its timestamp (checked to be there).
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let mut value: Value = serde_json::from_str(line).unwrap();
                let timestamp = value.as_object_mut().unwrap().remove("timestamp");
                assert!(
                    timestamp.unwrap().as_str().unwrap().ends_with('Z'),
                    "{line}"
                );
                value
            })
            .collect()
    }
}

/// Events in and out of spans: every kind of field value, text that must
/// be escaped, a field recorded after the span began, nested spans, an
/// event with an explicit parent, a span without fields.
fn events() {
    let error = io::Error::other("disk \"full\"\nreally");
    tracing::info!(count = 3_u64, "outside any span");
    let request = tracing::info_span!(
        "http_request",
        http.method = "GET",
        request_id = "r-1",
        http.status_code = tracing::field::Empty,
    );
    let _entered = request.enter();
    tracing::warn!(
        signed = -7_i64,
        ratio = 0.25_f64,
        huge = f64::NAN,
        ok = true,
        text = "quote \" backslash \\ tab \t bell \u{7} é",
        debug = ?vec!["a", "b"],
        error = &error as &dyn std::error::Error,
        "a message with {} inside",
        "formatting"
    );
    request.record("http.status_code", 200_u64);
    let step = tracing::info_span!("saga step", step = "reserve");
    step.in_scope(|| {
        tracing::error!(attempt = 2_u64, "nested");
        let bare = tracing::info_span!("bare");
        bare.in_scope(|| tracing::info!("in a span without fields"));
    });
    tracing::info!(parent: &step, "explicit parent");
    // Fields recorded later: into a span that had none yet, next to one it
    // had, and one recorded again (its later value wins, written once).
    let late = tracing::info_span!(
        "late",
        first = tracing::field::Empty,
        second = tracing::field::Empty,
        again = "once",
    );
    late.record("first", "one \"quoted\" \"again\":");
    late.record("second", 2_u64);
    late.record("again", "twice");
    late.in_scope(|| tracing::info!("after later fields"));
    let empty = tracing::info_span!("empty", only = tracing::field::Empty);
    empty.record("only", true);
    empty.in_scope(|| tracing::info!("in a span given its only field later"));
}

fn run(layer: impl tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync) {
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, events);
}

#[test]
fn the_line_is_the_json_format_s_value() {
    let theirs = Buffer::default();
    run(tracing_subscriber::fmt::layer()
        .json()
        .event_format(
            format::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true),
        )
        .with_writer(theirs.clone()));
    let ours = Buffer::default();
    run(tracing_subscriber::fmt::layer()
        .fmt_fields(SpanFields)
        .event_format(JsonLine)
        .with_writer(ours.clone()));
    let text = String::from_utf8(ours.0.lock().unwrap().clone()).unwrap();
    let (theirs, ours) = (theirs.lines(), ours.lines());
    assert_eq!(theirs.len(), 7);
    assert_eq!(ours, theirs);
    assert_eq!(ours[5]["span"]["again"], "twice");
    assert_eq!(ours[5]["span"]["second"], 2);
    assert_eq!(ours[6]["span"]["only"], true);
    let late = text.lines().nth(5).unwrap();
    // Once in `span`, once in `spans`: the key recorded again is not doubled.
    assert_eq!(late.matches("\"again\":").count(), 2, "{late}");
    // What the comparison covers, so that it cannot pass on empty lines.
    assert_eq!(ours[1]["span"]["request_id"], "r-1");
    assert_eq!(ours[1]["text"], "quote \" backslash \\ tab \t bell \u{7} é");
    assert_eq!(ours[2]["spans"][0]["http.status_code"], 200);
    assert_eq!(ours[3]["span"]["name"], "bare");
}

/// Escaping in runs: every control character, quotes and backslashes at
/// the ends and between multi-byte characters read back as the same text.
#[test]
fn escaped_text_reads_back_as_itself() {
    let controls: String = (0u8..0x20).map(char::from).collect();
    let texts = [
        String::new(),
        "plain".to_owned(),
        controls.clone(),
        format!("é{controls}ü\"\\"),
        "\"starts and ends\"".to_owned(),
        "\\\\ \u{7f} 日本語 \u{1f600} \r\n".to_owned(),
    ];
    for text in texts {
        let mut line = String::new();
        super::string(&mut line, &text);
        let read: String = serde_json::from_str(&line).unwrap();
        assert_eq!(read, text, "{line}");
        assert!(
            !line.trim_matches('"').chars().any(|c| u32::from(c) < 0x20),
            "{line}"
        );
    }
}

/// The eight-byte test agrees with a byte-by-byte one: every byte value in
/// every position among clean neighbours, and pseudo-random words.
#[test]
fn a_word_is_clean_exactly_when_each_of_its_bytes_is() {
    let by_bytes = |word: u64| {
        word.to_ne_bytes()
            .iter()
            .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
    };
    let mut words = Vec::new();
    for position in 0..8 {
        for value in 0..=255u8 {
            for filler in [b'a', 0x7f, 0x80, 0xff, 0x21] {
                let mut bytes = [filler; 8];
                bytes[position] = value;
                words.push(u64::from_ne_bytes(bytes));
            }
        }
    }
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..200_000 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        words.push(state);
    }
    for word in words {
        assert_eq!(super::clean(word), by_bytes(word), "{:016x}", word);
    }
}

/// The timestamp is the library's `SystemTime` format: the same text up to
/// the second when taken within one second, microseconds in order.
#[test]
fn the_timestamp_is_the_system_time_format() {
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};

    let mut compared = 0;
    for _ in 0..2_000 {
        let mut before = String::new();
        super::timestamp(&mut before).unwrap();
        let mut theirs = String::new();
        SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        let mut after = String::new();
        super::timestamp(&mut after).unwrap();
        for ours in [&before, &after] {
            assert_eq!(ours.len(), theirs.len(), "{ours} against {theirs}");
            assert_eq!(&ours[19..20], ".", "{ours}");
            assert!(ours.ends_with('Z'), "{ours}");
            assert!(ours[20..26].bytes().all(|b| b.is_ascii_digit()), "{ours}");
        }
        if before[..19] == after[..19] {
            assert_eq!(before[..19], theirs[..19]);
            assert!(
                before <= theirs && theirs <= after,
                "{before} {theirs} {after}"
            );
            compared += 1;
        }
    }
    assert!(compared > 1_000, "{compared}");
}
