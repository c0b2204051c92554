//! Server-sent events as OpenAI-compatible servers stream them: `data: …` lines, events
//! separated by a blank line, arriving in arbitrary pieces.
//!
//! Bounded: bytes are scanned once (a piece is searched for the blank line only where the
//! last search stopped), and a server that sends [`MAX_EVENT_BYTES`] without ending an
//! event is failing, not slow.

use crate::error::RemoteError;

/// The most an event may hold before its blank line (a chunk of a streamed completion is a
/// few hundred bytes).
pub(crate) const MAX_EVENT_BYTES: usize = 1 << 20;

/// Collects bytes and hands out each complete event's data.
#[derive(Default)]
pub(crate) struct Events {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already searched for a blank line (none ends before here).
    scanned: usize,
}

impl Events {
    /// Adds `bytes`; returns the data of every event now complete, in order (the `data:`
    /// lines of one event joined with newlines, as the SSE format says), or why the stream
    /// is not one Lore will read.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, RemoteError> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        // A separator may straddle the previous piece and this one: look back 3 bytes.
        let mut from = self.scanned.saturating_sub(3);
        while let Some((end, separator)) = event_end(&self.buffer[from..]) {
            let (end, next) = (from + end, from + end + separator);
            if let Some(data) = event_data(&self.buffer[start..end]) {
                events.push(data);
            }
            start = next;
            from = next;
        }
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
        if self.buffer.len() > MAX_EVENT_BYTES {
            return Err(RemoteError::EventTooLarge { limit_bytes: MAX_EVENT_BYTES });
        }
        Ok(events)
    }
}

/// The `data:` lines of one event, joined; `None` for an event without data (a comment).
fn event_data(event: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(event);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| data.strip_prefix(' ').unwrap_or(data))
        .collect();
    (!data.is_empty()).then(|| data.join("\n"))
}

/// Where the first complete event ends, and the length of the blank line after it.
fn event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole_and_in_order() {
        let stream = b"data: {\"a\":1}\n\n: a comment\n\ndata: [DONE]\r\n\r\n";
        for cut in 0..stream.len() {
            for second_cut in cut..stream.len() {
                let mut events = Events::default();
                let mut out = events.push(&stream[..cut]).unwrap();
                out.extend(events.push(&stream[cut..second_cut]).unwrap());
                out.extend(events.push(&stream[second_cut..]).unwrap());
                assert_eq!(out, vec!["{\"a\":1}", "[DONE]"], "cut at {cut} and {second_cut}");
            }
        }
    }

    #[test]
    fn several_data_lines_are_one_event() {
        let mut events = Events::default();
        assert_eq!(events.push(b"data: one\ndata:two\n\n").unwrap(), vec!["one\ntwo"]);
    }

    #[test]
    fn an_event_that_never_ends_is_refused_at_the_bound() {
        let mut events = Events::default();
        assert_eq!(events.push(b"data: ").unwrap(), Vec::<String>::new());
        let piece = vec![b'a'; 64 << 10];
        let mut pushed = 6;
        let error = loop {
            match events.push(&piece) {
                Ok(out) => assert!(out.is_empty()),
                Err(error) => break error,
            }
            pushed += piece.len();
            assert!(pushed <= MAX_EVENT_BYTES, "still reading past the bound");
        };
        assert!(matches!(error, RemoteError::EventTooLarge { limit_bytes: MAX_EVENT_BYTES }), "{error}");
        assert!(events.buffer.len() <= MAX_EVENT_BYTES + piece.len());
    }

    #[test]
    fn each_byte_is_searched_once_however_small_the_pieces() {
        // A long event sent a byte at a time: with a search from the start every time this
        // is quadratic (about 10^11 comparisons); searched once, it is immediate.
        let mut events = Events::default();
        let event = format!("data: {}\n\n", "x".repeat(MAX_EVENT_BYTES - 16));
        let mut out = Vec::new();
        for byte in event.as_bytes() {
            out.extend(events.push(std::slice::from_ref(byte)).unwrap());
            assert_eq!(events.scanned, events.buffer.len());
        }
        assert_eq!(out.len(), 1);
    }
}
