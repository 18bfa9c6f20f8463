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
    /// `masked[k]`: whether `gen.tokens[k]` was sampled under a grounding mask (a built-in
    /// tool's argument or the reply after its result: `Session::mask` left only the
    /// conversation's numbers and words), so not from the model's own distribution.
    pub masked: Vec<bool>,
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
    let masked = RefCell::new(vec![Vec::new(); prompts.len()]);
    let gens = generate_batch_with(
        model,
        prompts,
        opts,
        seeds,
        on_token,
        |i, out| session.borrow_mut().on_stop(i, out),
        |i, out, logits| {
            let m = session.borrow().mask(i, out, logits);
            // The token sampled next sits at position out.len().
            let v = &mut masked.borrow_mut()[i];
            v.resize(out.len() + 1, false);
            v[out.len()] = m;
        },
    );
    let (session, mut masked) = (session.into_inner(), masked.into_inner());
    gens.into_iter()
        .enumerate()
        .map(|(i, gen)| {
            let mut m = std::mem::take(&mut masked[i]);
            m.resize(gen.tokens.len(), false);
            Answered { answer: session.answer(i, &gen.tokens), gen, masked: m }
        })
        .collect()
}
