//! `chatforge chat`: a terminal chat with a run's model, streamed; and `chatforge complete` for
//! base models.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_core::sample::{generate_batch, GenOptions, SamplingParams};
use chatforge_data::chat::{encode_prompt_capped, Conversation, Message, Role};
use chatforge_data::tokenizer::Tokenizer;
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

/// Generates from `prompt`, printing text as it comes (holding back an incomplete UTF-8 tail).
fn stream(model: &Llama<Cpu>, tok: &Tokenizer, prompt: Vec<u32>, opts: &GenOptions, seed: u64) -> String {
    let mut ids = Vec::new();
    let mut shown = 0;
    let mut out = std::io::stdout();
    generate_batch(model, &[prompt], opts, &[seed], |_, t| {
        ids.push(t);
        let text = tok.decode(&ids, true);
        if !text.ends_with('\u{FFFD}') && text.len() > shown {
            let _ = write!(out, "{}", &text[shown..]);
            let _ = out.flush();
            shown = text.len();
        }
        true
    });
    let text = tok.decode(&ids, true);
    if text.len() > shown {
        print!("{}", &text[shown..]);
    }
    println!();
    text
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
        let reply = stream(&model, &tok, prompt, &opts, a.seed + turn);
        history.push(Message::assistant(reply.trim()));
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
