//! `chatforge bench decode`: chatforge's decoding against llama.cpp's, on the same model and the
//! same number of threads, in one invocation. Timings drift by up to 2x over minutes on a shared
//! VM, so both engines are measured back to back in each of `--rounds` rounds (llama.cpp first in
//! every other one) and a ratio is the median of the rounds' ratios. In order:
//!
//! 1. the stage is exported to GGUF (F32, exact) in a temporary folder;
//! 2. per round, chatforge, engine-level (the core API, each figure after a warm-up, the median of
//!    `--reps`): prefill tokens/s of one ~240-token prompt (`Llama::decode`); single-stream decode
//!    tokens/s of 200 forced tokens; aggregate decode tokens/s of 1 / 8 / 32 / 64 sequences of
//!    equal-length answers (`generate_batch` with no stop ids). Decode figures count only the
//!    tokens of decode steps and the time after the prompts are in, as llama.cpp's do;
//! 3. per round, llama.cpp: `llama-bench` (pp and tg, JSON output) and `llama-batched-bench` (the same
//!    prompt and answer lengths and sequence counts, JSONL output), with `-t` threads, otherwise
//!    at llama.cpp's defaults (F16 KV cache, flash attention auto; llama-bench takes no F32 cache);
//! 4. per round, through each server: `bench serve`'s load test, 32 streaming clients with equal answers
//!    (`ignore_eos`), against `chatforge serve` (in-process) and `llama-server -np 32
//!    --cont-batching`;
//! 5. a table of every figure (each side's median over the rounds) with the median ratio
//!    chatforge / llama.cpp, and the last
//!    line `decode vs llama.cpp: prefill X, single Y, batched32 Z, server32 W` for scripts.
//!
//! Without a llama.cpp build (tools/build_llama_cpp.sh) the chatforge figures are printed, with
//! how to build it, and the ratios are `n/a`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chatforge_core::backend::Backend;
use chatforge_core::model::Llama;
use chatforge_core::sample::{generate_batch, GenOptions, SamplingParams};
use chatforge_serve::loadtest::{bench, LoadConfig};
use chatforge_serve::ServeConfig;
use chatforge_stages::export::{self, Format};
use chatforge_stages::Run;
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct BenchDecodeArgs {
    /// The run (default: the speedrun's).
    #[arg(long, default_value = "runs/speedrun")]
    run: PathBuf,
    #[arg(long, default_value = "sft")]
    stage: String,
    /// Threads for both engines (the global --threads, if given, wins).
    #[arg(long, default_value_t = 2)]
    pub bench_threads: usize,
    /// The llama.cpp build (its bin/ holds llama-bench, llama-batched-bench, llama-server).
    #[arg(long, env = "LLAMA_CPP_DIR")]
    llama_cpp: Option<PathBuf>,
    /// Prompt tokens of the prefill figure.
    #[arg(long, default_value_t = 240)]
    prefill_tokens: usize,
    /// Forced answer length of the single-stream figure.
    #[arg(long, default_value_t = 200)]
    single_tokens: usize,
    /// Sequence counts of the aggregate figures.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    sequences: Vec<usize>,
    /// Prompt and answer tokens of each sequence in the aggregate and server figures.
    #[arg(long, default_value_t = 32)]
    batch_prompt: usize,
    #[arg(long, default_value_t = 64)]
    answer_tokens: usize,
    /// Concurrent clients of the server figure (0: skip the servers).
    #[arg(long, default_value_t = 32)]
    server_streams: usize,
    /// Timed repetitions of each chatforge figure within a round (their median is the round's).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Rounds, each measuring both engines back to back, llama.cpp first in every other one.
    /// This machine's speed drifts by up to 2x over minutes, so a ratio is the median of the
    /// rounds' ratios, not the ratio of figures taken minutes apart.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// The folder of the llama.cpp build: --llama-cpp, $LLAMA_CPP_DIR, or tools/build_llama_cpp.sh's default.
fn llama_cpp_dir(given: Option<&Path>) -> PathBuf {
    given
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/chatforge/llama.cpp"))
}

pub(super) fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The CPU's name and the vector / matrix extensions it has that matter to the kernels.
pub(super) fn cpu_line() -> String {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = flags.lines().find(|l| l.starts_with("flags")).unwrap_or_default();
    let has: Vec<&str> =
        ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"].into_iter().filter(|f| flags.split_whitespace().any(|x| x == *f)).collect();
    format!("{} ({})", cpu_name(), if has.is_empty() { "no AVX2".to_string() } else { has.join(" ") })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Token ids of a long English text, cycled: prompts of any length from the run's tokenizer.
fn text_ids(tok: &chatforge_data::tokenizer::Tokenizer, n: usize, offset: usize) -> Vec<u32> {
    const TEXT: &str = "The history of the printing press begins with movable type, which let a printer set a page \
        from small reusable letters instead of carving a whole block. Books became cheaper, more people learned to read, \
        and ideas travelled faster between cities. Scholars compared editions, merchants kept better accounts, and \
        governments printed laws so that everyone could know them. Within a century, printing shops had opened in \
        hundreds of towns, and the number of books in circulation grew from thousands to millions. ";
    let ids = tok.encode(&TEXT.repeat(4));
    (0..n).map(|i| ids[(i + offset) % ids.len()]).collect()
}

/// chatforge's engine-level figures.
struct Ours {
    prefill: f64,
    single: f64,
    batched: Vec<(usize, f64)>,
}

/// Decode tokens/s of `prompts` each answered with exactly `len` tokens: the time from the first
/// sampled token (all prompts are in) to the end, over the `n·(len−1)` tokens of decode steps.
fn forced_decode<B: Backend>(model: &Llama<B>, prompts: &[Vec<u32>], len: usize) -> f64 {
    let opts = GenOptions { max_new: len, params: SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 }, stop_ids: vec![] };
    let seeds: Vec<u64> = (0..prompts.len() as u64).collect();
    let mut first: Option<Instant> = None;
    let out = generate_batch(model, prompts, &opts, &seeds, |_, _| {
        first.get_or_insert_with(Instant::now);
        true
    });
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let decoded: usize = out.iter().map(|o| o.len().saturating_sub(1)).sum();
    assert!(out.iter().all(|o| o.len() == len), "a forced answer ended early (the context is too small?)");
    decoded as f64 / secs.max(1e-9)
}

fn measure_ours<B: Backend>(model: &Llama<B>, tok: &chatforge_data::tokenizer::Tokenizer, a: &BenchDecodeArgs) -> Ours {
    let reps = a.reps.max(1);
    let prompt = text_ids(tok, a.prefill_tokens, 0);
    // As the engine prefills: into a fresh cache with the workspace it keeps between requests
    // (llama-bench's pp also reuses its context's buffers).
    let mut ws = model.decode_ws();
    // Ten prompts back to back per timing: one ~15 ms prefill is too short to time alone.
    let mut caches: Vec<_> = (0..10).map(|_| model.new_cache(prompt.len() + 1)).collect();
    let mut prefill_once = || {
        for c in caches.iter_mut() {
            c.len = 0;
        }
        let t = Instant::now();
        for c in caches.iter_mut() {
            model.decode_into(c, &prompt, &mut ws);
            std::hint::black_box(&ws.host);
        }
        (caches.len() * prompt.len()) as f64 / t.elapsed().as_secs_f64()
    };
    prefill_once();
    let prefill = median((0..reps).map(|_| prefill_once()).collect());
    let short = vec![text_ids(tok, 8, 0)];
    forced_decode(model, &short, a.single_tokens.min(16));
    let single = median((0..reps).map(|_| forced_decode(model, &short, a.single_tokens)).collect());
    let mut batched = vec![];
    for &n in &a.sequences {
        let prompts: Vec<Vec<u32>> = (0..n).map(|i| text_ids(tok, a.batch_prompt, 7 * i)).collect();
        forced_decode(model, &prompts, a.answer_tokens.min(8));
        batched.push((n, median((0..reps).map(|_| forced_decode(model, &prompts, a.answer_tokens)).collect())));
    }
    Ours { prefill, single, batched }
}

/// llama.cpp's figures (tokens/s), where they could be measured.
#[derive(Default)]
struct Theirs {
    prefill: Option<f64>,
    single: Option<f64>,
    batched: Vec<(usize, f64)>,
    server: Option<f64>,
}

fn run_tool(bin: &Path, args: &[String]) -> anyhow::Result<String> {
    let out = Command::new(bin).args(args).output().with_context(|| format!("running {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{} failed ({}):\n{}",
            bin.display(),
            out.status,
            err.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(stdout + &String::from_utf8_lossy(&out.stderr))
}

fn llama_bench(bin: &Path, gguf: &Path, threads: usize, a: &BenchDecodeArgs) -> anyhow::Result<(f64, f64)> {
    let args: Vec<String> = [
        "-m",
        &gguf.to_string_lossy(),
        "-t",
        &threads.to_string(),
        "-p",
        &a.prefill_tokens.to_string(),
        "-n",
        &a.single_tokens.to_string(),
        "-r",
        &a.reps.max(1).to_string(),
        "-o",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = run_tool(bin, &args)?;
    let start = out.find('[').context("no JSON array in llama-bench's output")?;
    let end = out.rfind(']').context("no JSON array in llama-bench's output")?;
    let rows: Vec<Value> = serde_json::from_str(&out[start..=end]).context("parsing llama-bench's JSON")?;
    let ts = |prompt: bool| {
        rows.iter()
            .find(|r| (r["n_prompt"].as_u64().unwrap_or(0) > 0) == prompt && (r["n_gen"].as_u64().unwrap_or(0) > 0) != prompt)
            .and_then(|r| r["avg_ts"].as_f64())
    };
    Ok((ts(true).context("no pp row from llama-bench")?, ts(false).context("no tg row from llama-bench")?))
}

fn llama_batched(bin: &Path, gguf: &Path, threads: usize, a: &BenchDecodeArgs) -> anyhow::Result<Vec<(usize, f64)>> {
    let max = a.sequences.iter().copied().max().unwrap_or(1);
    let ctx = (max * (a.batch_prompt + a.answer_tokens)).next_multiple_of(256);
    let npl = a.sequences.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let args: Vec<String> = [
        "-m",
        &gguf.to_string_lossy(),
        "-t",
        &threads.to_string(),
        "-tb",
        &threads.to_string(),
        "-c",
        &ctx.to_string(),
        "-b",
        "2048",
        "-ub",
        "512",
        "-npp",
        &a.batch_prompt.to_string(),
        "-ntg",
        &a.answer_tokens.to_string(),
        "-npl",
        &npl,
        "-kvu",
        "--output-format",
        "jsonl",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = run_tool(bin, &args)?;
    let rows: Vec<(usize, f64)> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter_map(|v| Some((v["pl"].as_u64()? as usize, v["speed_tg"].as_f64()?)))
        .collect();
    if rows.is_empty() {
        bail!("no JSONL rows in llama-batched-bench's output:\n{out}");
    }
    Ok(rows)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed when dropped (a llama-server).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts llama-server on a free port and waits until `/health` answers 200.
fn start_llama_server(bin: &Path, gguf: &Path, threads: usize, parallel: usize, ctx: usize) -> anyhow::Result<(Killed, String)> {
    let port = free_port()?;
    let child = Command::new(bin)
        .arg("-m")
        .arg(gguf)
        .args(["-t", &threads.to_string(), "-tb", &threads.to_string(), "-np", &parallel.to_string(), "--cont-batching"])
        .args(["-c", &ctx.to_string(), "--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut child = Killed(child);
    let addr = format!("127.0.0.1:{port}");
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait()? {
            bail!("llama-server exited ({status}) before it was ready");
        }
        if health(&addr) {
            return Ok((child, addr));
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("llama-server was not ready after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `GET /health` answers 200 (plain HTTP/1.0 over std).
fn health(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).split_whitespace().nth(1) == Some("200")
}

/// `bench serve`'s load test: aggregate tokens/s of `streams` clients with equal answers.
fn load(serve: Option<&ServeConfig>, addr: Option<String>, streams: usize, max_tokens: usize) -> anyhow::Result<f64> {
    let base =
        LoadConfig { addr: String::new(), api_key: None, model: None, streams: 0, max_tokens, disconnect_every: 0, ignore_eos: true };
    // One warm-up run, then the measured one.
    let rows = bench(serve, addr, &[streams.min(4), streams], &base, |_| {})?;
    let r = &rows[1].report;
    if !r.errors.is_empty() {
        bail!("the load test had errors: {:?}", &r.errors[..r.errors.len().min(3)]);
    }
    if r.tokens != streams * max_tokens {
        bail!("the answers were not all {max_tokens} tokens long ({} tokens from {streams} clients)", r.tokens);
    }
    Ok(r.tokens_per_second())
}

/// chatforge's figures of one round: the engine's, then its server's (None where it failed).
fn measure_ours_all<B: Backend + Sync>(
    model: &Llama<B>,
    tok: &chatforge_data::tokenizer::Tokenizer,
    a: &BenchDecodeArgs,
    notes: &mut Vec<String>,
) -> (Ours, Option<f64>) {
    eprintln!("  chatforge (engine) ...");
    let ours = chatforge_core::pool::on_pool(|| measure_ours(model, tok, a));
    let mut server = None;
    if a.server_streams > 0 {
        eprintln!("  load test: chatforge serve, {} clients ...", a.server_streams);
        let cfg = ServeConfig {
            stage: a.stage.clone(),
            engine: chatforge_serve::engine::EngineConfig { max_batch: a.server_streams.max(32), ..Default::default() },
            ..ServeConfig::new(&a.run)
        };
        match load(Some(&cfg), None, a.server_streams, a.answer_tokens) {
            Ok(t) => server = Some(t),
            Err(e) => notes.push(format!("chatforge serve: {e:#}")),
        }
    }
    (ours, server)
}

/// llama.cpp's figures of one round (`llama-bench`, `llama-batched-bench`, `llama-server`).
fn measure_theirs(
    bin: &dyn Fn(&str) -> PathBuf,
    gguf: &Path,
    threads: usize,
    server_ctx: usize,
    a: &BenchDecodeArgs,
    notes: &mut Vec<String>,
) -> Theirs {
    let mut theirs = Theirs::default();
    eprintln!("  llama.cpp (llama-bench, llama-batched-bench) ...");
    match llama_bench(&bin("llama-bench"), gguf, threads, a) {
        Ok((pp, tg)) => (theirs.prefill, theirs.single) = (Some(pp), Some(tg)),
        Err(e) => notes.push(format!("llama-bench: {e:#}")),
    }
    match llama_batched(&bin("llama-batched-bench"), gguf, threads, a) {
        Ok(rows) => theirs.batched = rows,
        Err(e) => notes.push(format!("llama-batched-bench: {e:#}")),
    }
    if a.server_streams > 0 {
        eprintln!("  load test: llama-server -np {} --cont-batching ...", a.server_streams);
        // Each slot gets the model's whole context.
        let r = start_llama_server(&bin("llama-server"), gguf, threads, a.server_streams, server_ctx).and_then(|(server, addr)| {
            let t = load(None, Some(addr), a.server_streams, a.answer_tokens);
            drop(server);
            t
        });
        match r {
            Ok(t) => theirs.server = Some(t),
            Err(e) => notes.push(format!("llama-server: {e:#}")),
        }
    }
    theirs
}

/// One figure of one round: chatforge's tokens/s and llama.cpp's, where measured.
type Pair = (Option<f64>, Option<f64>);

/// One figure over the rounds: the median of each side's tokens/s, and the median of the
/// rounds' ratios (rounds where both sides measured).
fn over_rounds(pairs: &[Pair]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let med = |v: Vec<f64>| (!v.is_empty()).then(|| median(v));
    let ours = med(pairs.iter().filter_map(|p| p.0).collect());
    let theirs = med(pairs.iter().filter_map(|p| p.1).collect());
    let ratio = med(pairs.iter().filter_map(|&(o, t)| Some(o? / t?)).collect());
    (ours, theirs, ratio)
}

pub fn bench_decode(a: BenchDecodeArgs) -> anyhow::Result<()> {
    // Both engines get the same threads: `main` built the global pool with --bench-threads
    // unless --threads was given.
    let threads = rayon::current_num_threads();
    let run = Run::open(&a.run);
    if !run.dir.has_model(&a.stage) {
        bail!("{} has no {} model: run `chatforge speedrun` (or pass --run R --stage S of a run that has one)", a.run.display(), a.stage);
    }
    let tok = run.tokenizer()?;
    let model = run.model(&a.stage)?;
    let c = &model.cfg;
    let ctx = c.max_position_embeddings;
    if a.prefill_tokens >= ctx || 8 + a.single_tokens > ctx || a.batch_prompt + a.answer_tokens > ctx {
        bail!(
            "the model's context ({ctx}) is too short for --prefill-tokens {}, --single-tokens {} (+8) or --batch-prompt {} + --answer-tokens {}",
            a.prefill_tokens,
            a.single_tokens,
            a.batch_prompt,
            a.answer_tokens
        );
    }
    println!(
        "bench decode: {}/{} ({:.2}M parameters, vocab {}, context {ctx}), {} threads, CPU: {}",
        run.dir.name(),
        a.stage,
        c.num_params() as f64 / 1e6,
        c.vocab_size,
        threads,
        cpu_name()
    );

    let dir = llama_cpp_dir(a.llama_cpp.as_deref());
    let bin = |name: &str| dir.join("bin").join(name);
    let have_llama = ["llama-bench", "llama-batched-bench", "llama-server"].iter().all(|b| bin(b).is_file());
    let tmp = std::env::temp_dir().join(format!("chatforge-bench-decode-{}", std::process::id()));
    let gguf = tmp.join(format!("{}.gguf", a.stage));
    if have_llama {
        let f = export::run(&run, &export::Config { stage: a.stage.clone(), format: Format::Gguf, out: Some(gguf.clone()), f16: false })?;
        let version = std::fs::read_to_string(dir.join("VERSION")).unwrap_or_default();
        println!(
            "GGUF (F32): {} ({:.1} MB); llama.cpp: {} ({}), at its defaults (F16 KV cache, flash attention auto)",
            f.path.display(),
            f.bytes as f64 / 1e6,
            dir.display(),
            version.trim()
        );
    } else {
        println!(
            "llama.cpp is missing (no llama-bench, llama-batched-bench, llama-server in {}): build it with `tools/build_llama_cpp.sh` \
             (about 5 minutes on 2 cores; LLAMA_CPP_DIR to put it elsewhere). Printing chatforge's figures only.",
            dir.join("bin").display()
        );
    }

    let ctx_all = a.server_streams * ctx;
    let rounds = a.rounds.max(1);
    let (mut our_rounds, mut their_rounds, mut notes) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        eprintln!("round {} of {rounds} ...", round + 1);
        let llama = |notes: &mut Vec<String>| have_llama.then(|| measure_theirs(&bin, &gguf, threads, ctx_all, &a, notes));
        let theirs_first = round % 2 == 1;
        let early = if theirs_first { llama(&mut notes) } else { None };
        let ours = measure_ours_all(&model, tok, &a, &mut notes);
        let theirs = if theirs_first { early } else { llama(&mut notes) };
        our_rounds.push(ours);
        their_rounds.push(theirs.unwrap_or_default());
    }
    notes.dedup();
    let _ = std::fs::remove_dir_all(&tmp);

    let fmt = |x: Option<f64>| x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}"));
    let fmt_r = |x: Option<f64>| x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"));
    println!("tokens/s, median of {rounds} rounds; ratio: median of the rounds' ratios");
    println!("{:<52} {:>10} {:>10} {:>7}", "", "chatforge", "llama.cpp", "ratio");
    let line = |what: String, pairs: Vec<Pair>| {
        let (o, t, r) = over_rounds(&pairs);
        println!("{what:<52} {:>10} {:>10} {:>7}", fmt(o), fmt(t), fmt_r(r));
        r
    };
    let both =
        |f: &dyn Fn(&Ours, &Theirs) -> Pair| -> Vec<Pair> { our_rounds.iter().zip(&their_rounds).map(|((o, _), t)| f(o, t)).collect() };
    let prefill =
        line(format!("prefill, one {}-token prompt (llama-bench pp)", a.prefill_tokens), both(&|o, t| (Some(o.prefill), t.prefill)));
    let single =
        line(format!("single-stream decode, {} tokens (llama-bench tg)", a.single_tokens), both(&|o, t| (Some(o.single), t.single)));
    let mut b32 = None;
    for &n in &a.sequences {
        let pick = |v: &[(usize, f64)]| v.iter().find(|(m, _)| *m == n).map(|x| x.1);
        let r = line(
            format!("aggregate decode, {n} x {} tokens (llama-batched-bench)", a.answer_tokens),
            both(&|o, t| (pick(&o.batched), pick(&t.batched))),
        );
        if n == 32 {
            b32 = r;
        }
    }
    let mut server = None;
    if a.server_streams > 0 {
        let pairs = our_rounds.iter().zip(&their_rounds).map(|((_, s), t)| (*s, t.server)).collect();
        server = line(format!("server, {} clients x {} tokens (HTTP, streamed)", a.server_streams, a.answer_tokens), pairs);
    }
    for n in &notes {
        println!("note: {n}");
    }
    println!(
        "decode vs llama.cpp: prefill {}, single {}, batched32 {}, server32 {}",
        fmt_r(prefill),
        fmt_r(single),
        fmt_r(b32),
        fmt_r(server)
    );
    Ok(())
}
