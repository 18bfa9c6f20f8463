//! How a chat model answers a batch of prompts with its tools: batched decoding
//! (`generate_batch_with`) with a tools `Session` as the hook where a turn ends, so a call is
//! run and its result read before decoding goes on in the same KV cache. Every stage whose
//! model answers (evals, the SFT figures, labels, PPO rollouts, win rates) goes through here,
//! so tools behave the same wherever the model speaks.

use std::cell::RefCell;

use chatforge_core::backend::Backend;
use chatforge_core::model::Llama;
use chatforge_core::sample::{generate_batch_with, GenOptions, Generated};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_data::tools::{Answer, Session, Toolbox};

/// One answer: the tokens (sampled and put in) and what they say.
#[derive(Clone, Debug, Default)]
pub struct Answered {
    pub gen: Generated,
    pub answer: Answer,
}

impl Answered {
    /// The final turn's text: what is graded and shown.
    pub fn text(&self) -> &str {
        &self.answer.text
    }
}

/// Answers `prompts` (token ids ending with the assistant header) together, with `toolbox`'s
/// tools; `on_token(i, t)` sees every output token and may stop sequence i.
pub fn answer_batch<B: Backend>(
    model: &Llama<B>,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    opts: &GenOptions,
    seeds: &[u64],
    toolbox: &Toolbox,
    on_token: impl FnMut(usize, u32) -> bool,
) -> Vec<Answered> {
    let session = RefCell::new(Session::new(tok, toolbox.clone(), prompts.len()).ground(prompts));
    let gens = generate_batch_with(
        model,
        prompts,
        opts,
        seeds,
        on_token,
        |i, out| session.borrow_mut().on_stop(i, out),
        |i, out, logits| {
            session.borrow().mask(i, out, logits);
        },
    );
    let session = session.into_inner();
    gens.into_iter().enumerate().map(|(i, gen)| Answered { answer: session.answer(i, &gen.tokens), gen }).collect()
}
