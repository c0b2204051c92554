//! Server-sent events as OpenAI-compatible servers stream them: `data: …` lines, events
//! separated by a blank line, arriving in arbitrary pieces.

/// Collects bytes and hands out each complete event's data.
#[derive(Default)]
pub(crate) struct Events {
    buffer: Vec<u8>,
}

impl Events {
    /// Adds `bytes`; returns the data of every event now complete, in order (the `data:`
    /// lines of one event joined with newlines, as the SSE format says).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some((end, separator)) = event_end(&self.buffer) {
            let event: Vec<u8> = self.buffer.drain(..end + separator).take(end).collect();
            let text = String::from_utf8_lossy(&event);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                .collect();
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
        }
        events
    }
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
            let mut events = Events::default();
            let mut out = events.push(&stream[..cut]);
            out.extend(events.push(&stream[cut..]));
            assert_eq!(out, vec!["{\"a\":1}", "[DONE]"], "cut at {cut}");
        }
    }

    #[test]
    fn several_data_lines_are_one_event() {
        let mut events = Events::default();
        assert_eq!(events.push(b"data: one\ndata:two\n\n"), vec!["one\ntwo"]);
    }
}
