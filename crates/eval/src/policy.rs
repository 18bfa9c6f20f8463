//! What an eval asks of the model under test (a [`Policy`]) and of a reward model
//! ([`Rewarder`]), and the checkpoint-backed policy.

use chatforge_core::backend::IGNORE;
use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_core::sample::{GenOptions, SamplingParams};
use chatforge_data::chat::{encode_prompt, keep_last, Conversation};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_data::tools::{CallRecord, Toolbox};
use chatforge_train::answer::answer_batch;

/// A prompt: a conversation (ChatML, for chat models), plain text whose answer is the rest of
/// the line (for base models), or raw text continued as it is.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    Chat(Conversation),
    Text(String),
    Raw(String),
}

/// An answer and the tool calls run on the way to it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reply {
    pub text: String,
    pub calls: Vec<CallRecord>,
}

/// The model under test.
pub trait Policy {
    /// One answer per prompt: up to `max_tokens` tokens at `temperature` (0: greedy), the sampler
    /// of prompt i seeded by `seeds[i]`. A chat answer ends at `<|im_end|>`; a plain-text answer
    /// is the rest of its line. `progress(k)` is called as answers finish. Without tools: a
    /// call the model makes is answered "tools are turned off", and its answer goes on.
    fn generate(
        &mut self,
        prompts: &[Prompt],
        max_tokens: usize,
        temperature: f32,
        seeds: &[u64],
        progress: &mut dyn FnMut(usize),
    ) -> Vec<String>;

    /// [`Policy::generate`] with `toolbox`'s tools: calls are run and the answer is the turn
    /// after them. `max_tokens` counts every token of the answer, the tools' results included.
    /// A policy without tools answers as [`Policy::generate`] does.
    fn generate_with_tools(
        &mut self,
        prompts: &[Prompt],
        max_tokens: usize,
        temperature: f32,
        seeds: &[u64],
        toolbox: &Toolbox,
        progress: &mut dyn FnMut(usize),
    ) -> Vec<Reply> {
        let _ = toolbox;
        self.generate(prompts, max_tokens, temperature, seeds, progress).into_iter().map(|text| Reply { text, calls: vec![] }).collect()
    }

    /// For each (prompt, continuation): the sum of the continuation's token log-probabilities
    /// after the prompt, and its number of tokens. A chat continuation is an assistant answer and
    /// ends with `<|im_end|>`; a plain-text one follows `A:` after a space.
    fn loglik(&mut self, items: &[(Prompt, String)]) -> Vec<(f64, usize)>;

    /// The checkpoint and tokenizer, for evals that score token streams (bits per byte).
    fn model(&mut self) -> Option<(&mut Llama<Cpu>, &Tokenizer)>;
}

/// A reward model: a scalar score of an answer to a conversation.
pub trait Rewarder {
    fn rewards(&mut self, items: &[(Conversation, String)]) -> Vec<f64>;
}

/// A [`Policy`] over a checkpoint.
pub struct ModelPolicy {
    pub model: Llama<Cpu>,
    pub tok: Tokenizer,
    /// Sequences decoded together.
    pub batch: usize,
}

impl ModelPolicy {
    pub fn new(model: Llama<Cpu>, tok: Tokenizer) -> ModelPolicy {
        ModelPolicy { model, tok, batch: 32 }
    }
}

impl Policy for ModelPolicy {
    fn generate(
        &mut self,
        prompts: &[Prompt],
        max_tokens: usize,
        temperature: f32,
        seeds: &[u64],
        progress: &mut dyn FnMut(usize),
    ) -> Vec<String> {
        Borrowed { model: &mut self.model, tok: &self.tok, batch: self.batch }.generate(prompts, max_tokens, temperature, seeds, progress)
    }

    fn generate_with_tools(
        &mut self,
        prompts: &[Prompt],
        max_tokens: usize,
        temperature: f32,
        seeds: &[u64],
        toolbox: &Toolbox,
        progress: &mut dyn FnMut(usize),
    ) -> Vec<Reply> {
        Borrowed { model: &mut self.model, tok: &self.tok, batch: self.batch }.generate_with_tools(
            prompts,
            max_tokens,
            temperature,
            seeds,
            toolbox,
            progress,
        )
    }

    fn loglik(&mut self, items: &[(Prompt, String)]) -> Vec<(f64, usize)> {
        Borrowed { model: &mut self.model, tok: &self.tok, batch: self.batch }.loglik(items)
    }

    fn model(&mut self) -> Option<(&mut Llama<Cpu>, &Tokenizer)> {
        Some((&mut self.model, &self.tok))
    }
}

/// A [`Policy`] over a borrowed checkpoint: the model being trained, evaluated every N steps.
pub struct Borrowed<'a> {
    pub model: &'a mut Llama<Cpu>,
    pub tok: &'a Tokenizer,
    pub batch: usize,
}

impl Borrowed<'_> {
    fn ids(&self, p: &Prompt) -> Vec<u32> {
        match p {
            Prompt::Chat(c) => encode_prompt(self.tok, c),
            Prompt::Text(t) | Prompt::Raw(t) => self.tok.encode(t),
        }
    }
}

impl Policy for Borrowed<'_> {
    fn generate(
        &mut self,
        prompts: &[Prompt],
        max_tokens: usize,
        temperature: f32,
        seeds: &[u64],
        progress: &mut dyn FnMut(usize),
    ) -> Vec<String> {
        let replies = self.generate_with_tools(prompts, max_tokens, temperature, seeds, &Toolbox::off(), progress);
        replies.into_iter().map(|r| r.text).collect()
    }

    fn generate_with_tools(
        &mut self,
        prompts: &[Prompt],
        max_tokens: usize,
        temperature: f32,
        seeds: &[u64],
        toolbox: &Toolbox,
        progress: &mut dyn FnMut(usize),
    ) -> Vec<Reply> {
        let params = SamplingParams { temperature, top_k: 0, top_p: 1.0 };
        let opts = GenOptions { max_new: max_tokens, params, stop_ids: self.tok.chat_stop_ids() };
        // Keep the end of a long prompt, leaving room for the answer.
        let cap = self.model.cfg.max_position_embeddings.saturating_sub(max_tokens).max(1);
        // A plain-text answer is one line: its sequence stops at the first token with a newline.
        let newline: Vec<bool> = if prompts.iter().any(|p| matches!(p, Prompt::Text(_))) {
            (0..self.tok.vocab_size() as u32).map(|i| self.tok.token_bytes(i).is_some_and(|b| b.contains(&b'\n'))).collect()
        } else {
            vec![]
        };
        let mut out = Vec::with_capacity(prompts.len());
        for (chunk, seeds) in prompts.chunks(self.batch.max(1)).zip(seeds.chunks(self.batch.max(1))) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|p| keep_last(self.ids(p), cap)).collect();
            let one_line: Vec<bool> = chunk.iter().map(|p| matches!(p, Prompt::Text(_))).collect();
            let keep_going = |i: usize, t: u32| !(one_line[i] && newline.get(t as usize).copied().unwrap_or(false));
            for (p, a) in chunk.iter().zip(answer_batch(self.model, self.tok, &ids, &opts, seeds, toolbox, keep_going)) {
                let text = match p {
                    Prompt::Chat(_) => a.answer.text.clone(),
                    Prompt::Text(_) => {
                        let text = self.tok.decode(&a.gen.tokens, true);
                        text.trim_start_matches([' ', '\t']).split('\n').next().unwrap_or("").trim().to_string()
                    }
                    Prompt::Raw(_) => self.tok.decode(&a.gen.tokens, true),
                };
                out.push(Reply { text, calls: a.answer.calls });
            }
            progress(chunk.len());
        }
        out
    }

    fn loglik(&mut self, items: &[(Prompt, String)]) -> Vec<(f64, usize)> {
        let t = self.model.cfg.max_position_embeddings;
        let b = 8usize;
        let rows: Vec<(Vec<u32>, usize)> = items
            .iter()
            .map(|(prompt, c)| {
                let pids = self.ids(prompt);
                let mut cont = match prompt {
                    Prompt::Chat(_) | Prompt::Raw(_) => self.tok.encode(c),
                    Prompt::Text(_) => self.tok.encode(&format!(" {}", c.trim_start())),
                };
                if matches!(prompt, Prompt::Chat(_)) {
                    cont.push(self.tok.im_end_id());
                }
                let n = cont.len().min(t);
                let mut ids = pids;
                ids.extend(cont);
                // The window's end: keep the whole continuation and as much prompt as fits.
                if ids.len() > t + 1 {
                    ids.drain(..ids.len() - (t + 1));
                }
                (ids, n)
            })
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(b) {
            // As many rows as the chunk has and as long as its longest (rounded up to 16): causal
            // attention makes the padding after a row's end change nothing before it.
            let (b, t) = (chunk.len(), chunk.iter().map(|(row, _)| row.len() - 1).max().unwrap_or(1).max(1).next_multiple_of(16).min(t));
            let mut ids = vec![self.tok.eot_id(); b * t];
            let mut targets = vec![IGNORE; b * t];
            for (r, (row, n)) in chunk.iter().enumerate() {
                let len = row.len() - 1;
                ids[r * t..r * t + len].copy_from_slice(&row[..len]);
                for i in len - (*n).min(len)..len {
                    targets[r * t + i] = row[i + 1];
                }
            }
            let lp = self.model.logprobs(&ids, &targets, b, t);
            for r in 0..chunk.len() {
                let counted: Vec<usize> = (0..t).filter(|&i| targets[r * t + i] != IGNORE).collect();
                out.push((counted.iter().map(|&i| lp[r * t + i] as f64).sum(), counted.len()));
            }
        }
        out
    }

    fn model(&mut self) -> Option<(&mut Llama<Cpu>, &Tokenizer)> {
        Some((self.model, self.tok))
    }
}

/// The run's reward model (`R/rm`, [`chatforge_train::rm::RewardModel`]): the reward of an
/// answer is its score head's value at the `<|im_end|>` that ends the answer.
pub struct CheckpointReward {
    pub rm: chatforge_train::rm::RewardModel,
    pub tok: Tokenizer,
}

impl Rewarder for CheckpointReward {
    fn rewards(&mut self, items: &[(Conversation, String)]) -> Vec<f64> {
        let refs: Vec<(&Conversation, &str)> = items.iter().map(|(c, a)| (c, a.as_str())).collect();
        self.rm.score(&self.tok, &refs).into_iter().map(f64::from).collect()
    }
}
