//! Text generation with continuous batching.
//!
//! One worker thread owns the model's context. Up to `parallel` requests are active at once,
//! each in its own sequence of one unified KV cache. Every step decodes ONE batch that holds
//! the next token of every generating sequence plus a chunk of the prompt of sequences
//! still reading theirs (chunked prefill), like llama.cpp's own server: a new question never
//! waits for another conversation's answer to finish.
//!
//! LoRA adapters apply to the whole context, so a step decodes only sequences that share
//! one adapter set (none, or one adapter at one scale), as llama.cpp's server batches by
//! adapter set: bots with different adapters take turns of a few steps, the set whose
//! sequences have waited longest next.
//!
//! Text-to-text models (T5, Flan-T5, mT5: encoder-decoder) read the prompt through the
//! encoder once, then decode the answer from the decoder start token. llama.cpp keeps one
//! encoder output for the whole context (a second prompt's encoding would replace the
//! first's), so they run one conversation at a time: `parallel` is 1 for them.
//!
//! A finished sequence keeps its prompt in the cache. A new request goes to the free
//! sequence whose kept prompt shares the longest prefix with its own (the system prompt,
//! a follow-up's earlier turns) and decodes only the rest, as llama.cpp's server does.
//!
//! - `handle`: [`Generator`], the async side's handle: loads, tokenises, queues requests.
//! - `queue`: the waiting requests and flags the handles and the worker share.
//! - `worker`: the thread that owns the context and steps the batch.
//! - `schedule`: the worker's decisions as pure functions (no llama.cpp types).
//! - `stop_strings`: holding back text that may start a stop string.
//! - `prompt`: prompts to tokens and back, chat templates.

mod handle;
mod prompt;
mod prompt_cache;
mod queue;
mod schedule;
mod stop_strings;
mod worker;

pub use handle::Generator;
