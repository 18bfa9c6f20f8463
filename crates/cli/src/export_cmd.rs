//! `chatforge export`: a stage's checkpoint as GGUF (llama.cpp, Ollama, LM Studio) or as an HF
//! folder (`transformers`), with its tokenizer and the ChatML template (`chatforge_stages::export`).

use std::path::PathBuf;

use chatforge_stages::export::{self, Format};
use chatforge_stages::Run;
use clap::Args;

#[derive(Args)]
pub struct ExportArgs {
    /// The run folder (tokenizer.json and the stage's checkpoint folder).
    #[arg(long)]
    run: PathBuf,
    /// The checkpoint: base, sft, ppo, dpo (rm: hf only).
    #[arg(long, default_value_t = export::Config::default().stage)]
    stage: String,
    /// gguf (one file for llama.cpp / Ollama) or hf (a transformers folder).
    #[arg(long, default_value = "gguf")]
    format: Format,
    /// Where to write (a .gguf file, or a folder for hf). Default: R/export/<stage>.gguf or R/export/<stage>-hf/.
    #[arg(long)]
    out: Option<PathBuf>,
    /// GGUF: store the matrices as F16 (half the size; default F32, exact).
    #[arg(long)]
    f16: bool,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    let run = Run::open(&a.run);
    let cfg = export::Config { stage: a.stage.clone(), format: a.format, out: a.out.clone(), f16: a.f16 };
    let f = export::run(&run, &cfg)?;
    println!(
        "exported {}/{} ({:.2}M parameters, {} tensors) as {}: {} ({:.1} MB)",
        run.dir.name(),
        a.stage,
        f.params as f64 / 1e6,
        f.tensors,
        match a.format {
            Format::Gguf if a.f16 => "GGUF (F16)",
            Format::Gguf => "GGUF (F32)",
            Format::Hf => "an HF folder",
        },
        f.path.display(),
        f.bytes as f64 / 1e6
    );
    match a.format {
        Format::Gguf => {
            println!("run it: llama-cli -m {} -cnv  (or Ollama: a Modelfile with `FROM {}`)", f.path.display(), f.path.display())
        }
        Format::Hf => println!(
            "load it: AutoModelForCausalLM.from_pretrained({:?}), AutoTokenizer.from_pretrained({:?})",
            f.path.display().to_string(),
            f.path.display().to_string()
        ),
    }
    Ok(())
}
