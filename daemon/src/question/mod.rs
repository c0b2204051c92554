//! The path one question takes, from the message to the answer: [`router`] (allow-lists,
//! commands, the place a channel answers from), [`line`] (who is answered when),
//! [`pipeline`] (passages chosen, the prompt built, tokens streamed, the answer judged),
//! [`prompt`], [`evidence`] (quotes checked against their passage), [`confidence`] (the
//! signals and the fitted combiner), [`memory`] (conversations), [`single`] (one
//! generation outside a conversation), [`answer_text`] (reading an answer's words),
//! [`speaks`] (which languages the models speak).
//!
//! Floor 1: imports the config and the floor-0 helpers, never ingest, the wiring, the
//! service or the tools.

pub mod answer_text;
pub mod confidence;
pub mod evidence;
pub mod feedback;
pub mod line;
pub mod memory;
pub mod pipeline;
pub mod prompt;
pub mod router;
pub mod single;
pub mod speaks;
