//! Measurement and preparation tools, run from the command line, never by the daemon's
//! product path: [`eval`] (`lore eval`, SQuAD 2.0), [`gold`] (a bot's gold questions:
//! `lore eval --gold`, the regression gate), [`calibrate`] (`lore calibrate`),
//! [`synth`] (`lore synth`: question/answer pairs for fine-tuning), [`bench`]
//! (`lore bench`).
//!
//! Floor 5: may import everything below; nothing below imports it.

pub mod bench;
pub mod calibrate;
pub mod eval;
pub mod gold;
pub mod synth;
