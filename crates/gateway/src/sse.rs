//! Server-sent events as Streamable HTTP carries them: an upstream's `text/event-stream`
//! answer is split into events as its bytes arrive, each event passed on at once
//! (never the whole stream buffered), and the one event that carries the JSON-RPC
//! response to the forwarded request may be rewritten (list filtering, renaming).

use bytes::{Bytes, BytesMut};

/// One event: its raw text (without the blank line that ends it) and its `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub raw: String,
    /// The `data:` lines joined with `\n` (empty for comments and id-only primers).
    pub data: String,
}

impl Event {
    fn parse(raw: String) -> Event {
        let mut data: Vec<&str> = Vec::new();
        for line in raw.lines() {
            if let Some(rest) = line.strip_prefix("data:") {
                data.push(rest.strip_prefix(' ').unwrap_or(rest));
            }
        }
        let data = data.join("\n");
        Event { raw, data }
    }

    /// A new `message` event carrying `data` (one line of JSON), without an id.
    pub fn message(data: &str) -> Event {
        Event::parse(format!("event: message\ndata: {data}"))
    }

    /// The event's `id` field, if it has one.
    pub fn id(&self) -> Option<&str> {
        self.raw
            .lines()
            .filter_map(|l| l.strip_prefix("id:"))
            .map(|v| v.strip_prefix(' ').unwrap_or(v))
            .next_back()
    }

    /// The same event with its `id` replaced (`None`: removed) and, when `data` is
    /// given, its data replaced; every other field (`event`, `retry`, comments) kept.
    /// `data` must be one line, as JSON text from `serde_json` is.
    pub fn rewritten(&self, id: Option<&str>, data: Option<&str>) -> Event {
        let mut lines: Vec<String> = Vec::new();
        let mut data_written = false;
        for line in self.raw.lines() {
            if line.starts_with("id:") {
                continue;
            }
            if line.starts_with("data:")
                && let Some(d) = data
            {
                if !data_written {
                    lines.push(format!("data: {d}"));
                    data_written = true;
                }
                continue;
            }
            lines.push(line.to_string());
        }
        if let Some(d) = data
            && !data_written
        {
            lines.push(format!("data: {d}"));
        }
        if let Some(id) = id {
            lines.insert(0, format!("id: {id}"));
        }
        Event::parse(lines.join("\n"))
    }

    /// The event as sent on: its raw text and the blank line.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(format!("{}\n\n", self.raw))
    }
}

/// Splits a byte stream into events, bounded: an event larger than `max_event` bytes
/// is an error rather than a growing buffer.
#[derive(Debug)]
pub struct Splitter {
    buf: BytesMut,
    max_event: usize,
}

/// An upstream event over the size limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream event larger than {0} bytes")]
pub struct EventTooLarge(pub usize);

impl Splitter {
    pub fn new(max_event: usize) -> Splitter {
        Splitter {
            buf: BytesMut::new(),
            max_event,
        }
    }

    /// Adds bytes; returns the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((end, sep)) = find_boundary(&self.buf) {
            let block = self.buf.split_to(end + sep);
            let text = String::from_utf8_lossy(block.get(..end).unwrap_or_default())
                .replace("\r\n", "\n")
                .replace('\r', "\n");
            if !text.trim().is_empty() {
                out.push(Event::parse(text));
            }
        }
        if self.buf.len() > self.max_event {
            return Err(EventTooLarge(self.max_event));
        }
        Ok(out)
    }

    /// What is left when the stream ends (an event without its final blank line).
    pub fn finish(&mut self) -> Option<Event> {
        let rest = std::mem::take(&mut self.buf);
        let text = String::from_utf8_lossy(&rest).replace("\r\n", "\n");
        (!text.trim().is_empty()).then(|| Event::parse(text.trim_end().to_string()))
    }
}

/// The first blank line: `(index where it starts, length of the separator)`.
fn find_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        match (buf.get(i), buf.get(i + 1), buf.get(i + 2), buf.get(i + 3)) {
            (Some(b'\r'), Some(b'\n'), Some(b'\r'), Some(b'\n')) => return Some((i, 4)),
            (Some(b'\n'), Some(b'\n'), _, _) | (Some(b'\r'), Some(b'\r'), _, _) => {
                return Some((i, 2));
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let mut s = Splitter::new(1024);
        assert!(s.push(b"id: 1\ndata:").unwrap().is_empty());
        let ev = s
            .push(b" {\"a\":1}\n\nevent: message\r\ndata: x\r\ndata: y\r\n\r\n: c")
            .unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[0].raw, "id: 1\ndata: {\"a\":1}");
        assert_eq!(ev[1].data, "x\ny");
        assert_eq!(s.finish().unwrap().raw, ": c");
        assert_eq!(ev[1].to_bytes(), "event: message\ndata: x\ndata: y\n\n");
    }

    #[test]
    fn ids_and_data_are_rewritten_and_other_fields_kept() {
        let mut s = Splitter::new(1024);
        let ev = s
            .push(b"event: message\nid: up-7\nretry: 3000\ndata: {\"a\":\ndata: 1}\n\n")
            .unwrap()
            .remove(0);
        assert_eq!(ev.id(), Some("up-7"));
        let r = ev.rewritten(Some("gw-1"), Some("{\"a\":2}"));
        assert_eq!(
            r.raw,
            "id: gw-1\nevent: message\nretry: 3000\ndata: {\"a\":2}"
        );
        assert_eq!(r.id(), Some("gw-1"));
        assert_eq!(r.data, "{\"a\":2}");
        let no_id = ev.rewritten(None, None);
        assert_eq!(no_id.id(), None);
        assert_eq!(no_id.data, "{\"a\":\n1}");
        // A priming event (id, empty data) keeps its empty data line.
        let prime = s.push(b"id: p\ndata:\n\n").unwrap().remove(0);
        assert_eq!(prime.rewritten(Some("q"), None).raw, "id: q\ndata:");
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut s = Splitter::new(8);
        assert_eq!(s.push(b"data: 0123456789").unwrap_err(), EventTooLarge(8));
    }
}
