//! `chatforge chat`: a terminal chat with a run's model, streamed; and `chatforge complete` for
//! base models.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use std::cell::RefCell;

use chatforge_core::sample::{generate_batch_with, GenOptions, SamplingParams};
use chatforge_data::chat::{encode_prompt_capped, Conversation, Message, Role};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_data::tools::{Session, Toolbox, CALL_OPEN};
use chatforge_stages::Run;
use clap::Args;

#[derive(Args)]
pub struct ChatArgs {
    #[arg(long)]
    run: PathBuf,
    /// Which checkpoint: sft (default), ppo, dpo, ...
    #[arg(long, default_value = "sft")]
    stage: String,
    /// An initial system message (change it with /system).
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 160)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub struct CompleteArgs {
    #[arg(long)]
    run: PathBuf,
    #[arg(long, default_value = "base")]
    stage: String,
    /// The text to continue.
    text: String,
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn load(run: &std::path::Path, stage: &str) -> anyhow::Result<(Tokenizer, Llama<Cpu>)> {
    let run = Run::open(run);
    Ok((run.tokenizer()?.clone(), run.model(stage)?))
}

/// Answers `prompt` with the built-in tools, printing text as it comes (holding back an
/// incomplete UTF-8 tail, and a turn's `<tool_call>` block), and each call the engine runs as a
/// line `[calculator: {...} → 19]`. Returns the messages of the answer (calls, results, reply).
fn stream(model: &Llama<Cpu>, tok: &Tokenizer, prompt: Vec<u32>, opts: &GenOptions, seed: u64) -> Vec<Message> {
    struct Shown {
        ids: Vec<u32>,
        turn_start: usize,
        shown: usize,
    }
    let session = RefCell::new(Session::new(tok, Toolbox::builtins(), 1).ground(std::slice::from_ref(&prompt)));
    let state = RefCell::new(Shown { ids: Vec::new(), turn_start: 0, shown: 0 });
    let show = |st: &mut Shown, end: bool| {
        let text = tok.decode(&st.ids[st.turn_start.min(st.ids.len())..], true);
        let visible = text.split(CALL_OPEN).next().unwrap_or("");
        let visible = if end { visible } else { visible.trim_end_matches('\u{FFFD}') };
        if visible.len() > st.shown && visible.is_char_boundary(st.shown) {
            print!("{}", &visible[st.shown..]);
            let _ = std::io::stdout().flush();
            st.shown = visible.len();
        }
    };
    let gens = generate_batch_with(
        model,
        &[prompt],
        opts,
        &[seed],
        |_, t| {
            let mut st = state.borrow_mut();
            st.ids.push(t);
            if st.ids.len() > st.turn_start {
                show(&mut st, false);
            }
            true
        },
        |i, out| {
            let put = session.borrow_mut().on_stop(i, out);
            if let Some(put) = &put {
                let mut st = state.borrow_mut();
                show(&mut st, true);
                let answer = session.borrow().answer(i, out);
                let turn_calls = answer.messages.iter().rev().find(|m| !m.tool_calls.is_empty()).map_or(0, |m| m.tool_calls.len());
                for c in &answer.calls[answer.calls.len() - turn_calls..] {
                    println!("{}[{}]", if st.shown > 0 { "\n" } else { "" }, c.line());
                }
                st.turn_start = out.len() + 1 + put.len();
                st.shown = 0;
            }
            put
        },
        |i, out, logits| {
            session.borrow().mask(i, out, logits);
        },
    );
    show(&mut state.borrow_mut(), true);
    println!();
    session.into_inner().answer(0, &gens[0].tokens).messages
}

pub fn chat(a: ChatArgs) -> anyhow::Result<()> {
    let (tok, model) = load(&a.run, &a.stage)?;
    let mut system = a.system.clone();
    let mut temperature = a.temperature;
    let mut history: Vec<Message> = Vec::new();
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    if interactive {
        println!("chatforge chat: {} ({}). Commands: /system TEXT, /reset, /temperature X, /quit", a.run.display(), a.stage);
    }
    let stdin = std::io::stdin();
    let mut turn = 0u64;
    loop {
        if interactive {
            print!("> ");
            std::io::stdout().flush()?;
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix('/') {
            let (name, arg) = cmd.split_once(' ').map_or((cmd, ""), |(n, r)| (n, r.trim()));
            match name {
                "quit" | "exit" => break,
                "reset" => {
                    history.clear();
                    println!("(conversation cleared)");
                }
                "system" => {
                    system = (!arg.is_empty()).then(|| arg.to_string());
                    history.clear();
                    println!("(system message {}; conversation cleared)", if system.is_some() { "set" } else { "removed" });
                }
                "temperature" => match arg.parse::<f32>() {
                    Ok(t) if t >= 0.0 => {
                        temperature = t;
                        println!("(temperature {t})");
                    }
                    _ => println!("(usage: /temperature X with X >= 0)"),
                },
                other => println!("(unknown command /{other}; try /system, /reset, /temperature, /quit)"),
            }
            continue;
        }
        history.push(Message::user(line));
        let mut messages: Vec<Message> = system.iter().map(|s| Message::new(Role::System, s.clone())).collect();
        messages.extend(history.iter().cloned());
        // Keep the most recent context that fits, leaving room for the answer.
        let cap = model.cfg.max_position_embeddings.saturating_sub(a.max_tokens.min(model.cfg.max_position_embeddings / 2));
        let prompt = encode_prompt_capped(&tok, &Conversation::new(messages), cap);
        let opts = GenOptions {
            max_new: a.max_tokens,
            params: SamplingParams { temperature, top_k: 0, top_p: a.top_p },
            stop_ids: tok.chat_stop_ids(),
        };
        history.extend(stream(&model, &tok, prompt, &opts, a.seed + turn));
        turn += 1;
    }
    Ok(())
}

pub fn complete(a: CompleteArgs) -> anyhow::Result<()> {
    let (tok, model) = load(&a.run, &a.stage)?;
    let mut prompt = tok.encode(&a.text);
    if prompt.is_empty() {
        prompt.push(tok.eot_id());
    }
    let opts = GenOptions {
        max_new: a.max_tokens,
        params: SamplingParams { temperature: a.temperature, top_k: 40, top_p: 1.0 },
        stop_ids: vec![tok.eot_id()],
    };
    print!("{}", a.text);
    stream(&model, &tok, prompt, &opts, a.seed);
    Ok(())
}
