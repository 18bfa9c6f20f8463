//! The hf export: a folder `transformers` loads with `AutoModelForCausalLM` /
//! `AutoModelForSequenceClassification` (a reward model) and `AutoTokenizer`.
//!
//! The weights and `config.json` are written by the checkpoint writer (HF's names and layout
//! already; a policy's value head is dropped), with the special-token ids filled in. The
//! tokenizer files: the run's `tokenizer.json` as it is, and a `tokenizer_config.json` naming
//! `PreTrainedTokenizerFast`, the special tokens (`<|endoftext|>` as BOS and padding,
//! `<|im_end|>` as EOS; no BOS or EOS is added when encoding) and the ChatML template. An
//! imported model (`chatforge import`) goes out with its own template, BOS/EOS and stop tokens.

use std::path::Path;

use chatforge_core::checkpoint::save_model;
use chatforge_data::chat::CHATML_TEMPLATE;
use chatforge_data::tokenizer::{Tokenizer, SPECIAL_TOKENS};
use chatforge_rundir::fs::write_atomic;
use chatforge_rundir::layout::{CONFIG, GENERATION_CONFIG};
use serde_json::{json, Value};

use super::Figures;
use crate::{Error, Result, Run};

fn write_json(dir: &Path, name: &str, v: &Value) -> Result<()> {
    Ok(write_atomic(&dir.join(name), serde_json::to_string_pretty(v).expect("JSON serialises").as_bytes())?)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

pub(super) fn write(run: &Run, stage: &str, tok: &Tokenizer, out: &Path) -> Result<Figures> {
    let mut model = run.model(stage)?;
    if !model.cfg.is_classifier() {
        model.score = None;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    if let Some(t) = tok.template() {
        return write_imported(run, stage, tok, t, model, out);
    }
    model.cfg.bos_token_id = Some(tok.eot_id());
    model.cfg.eos_token_id = Some(chatforge_core::config::TokenIds::One(tok.im_end_id()));
    model.cfg.pad_token_id = Some(tok.eot_id());
    save_model(&model, out)?;

    // generation_config.json: the stage's sampling settings, with the stop tokens named.
    let src = run.dir.stage(stage).join(GENERATION_CONFIG);
    let mut gen = if src.is_file() { read_json(&src)? } else { json!({}) };
    let g = gen.as_object_mut().ok_or_else(|| Error::Input(format!("{}: not a JSON object", src.display())))?;
    g.insert("bos_token_id".into(), json!(tok.eot_id()));
    g.insert("eos_token_id".into(), json!(tok.chat_stop_ids()));
    g.insert("pad_token_id".into(), json!(tok.eot_id()));
    write_json(out, GENERATION_CONFIG, &gen)?;

    write_atomic(&out.join("tokenizer.json"), tok.to_json().as_bytes())?;
    let mut added = serde_json::Map::new();
    for s in SPECIAL_TOKENS {
        let id = tok.token_to_id(s).expect("a chatforge tokenizer has its special tokens");
        added.insert(
            id.to_string(),
            json!({"content": s, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true}),
        );
    }
    let [eot, im_start, im_end] = SPECIAL_TOKENS;
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": eot,
        "eos_token": im_end,
        "pad_token": eot,
        "unk_token": null,
        "additional_special_tokens": [im_start],
        "add_bos_token": false,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model.cfg.max_position_embeddings,
        "chat_template": CHATML_TEMPLATE,
    });
    write_json(out, "tokenizer_config.json", &config)?;
    let map = json!({"bos_token": eot, "eos_token": im_end, "pad_token": eot, "additional_special_tokens": [im_start]});
    write_json(out, "special_tokens_map.json", &map)?;

    figures(out, &model)
}

fn figures<B: chatforge_core::backend::Backend>(out: &Path, model: &chatforge_core::model::Llama<B>) -> Result<Figures> {
    let mut bytes = 0;
    for e in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        bytes += e.map_err(|e| Error::io(out, e))?.metadata().map_err(|e| Error::io(out, e))?.len();
    }
    debug_assert!(out.join(CONFIG).is_file());
    Ok(Figures { path: out.to_path_buf(), bytes, tensors: model.params().len(), params: model.cfg.num_params() })
}

/// An imported model goes back out with its own tokenizer files, template and stop tokens.
fn write_imported<B: chatforge_core::backend::Backend>(
    run: &Run,
    stage: &str,
    tok: &Tokenizer,
    t: &chatforge_data::template::ChatTemplate,
    mut model: chatforge_core::model::Llama<B>,
    out: &Path,
) -> Result<Figures> {
    let stops = tok.chat_stop_ids();
    model.cfg.eos_token_id = Some(chatforge_core::config::TokenIds::Many(stops.clone()));
    save_model(&model, out)?;
    let src = run.dir.stage(stage).join(GENERATION_CONFIG);
    let mut gen = if src.is_file() { read_json(&src)? } else { json!({}) };
    gen["eos_token_id"] = json!(stops);
    write_json(out, GENERATION_CONFIG, &gen)?;
    write_atomic(&out.join("tokenizer.json"), tok.to_json().as_bytes())?;
    let bos = (!t.bos_token.is_empty()).then(|| t.bos_token.clone());
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": t.eos_token,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model.cfg.max_position_embeddings,
        "chat_template": t.source,
    });
    write_json(out, "tokenizer_config.json", &config)?;
    write_json(out, "special_tokens_map.json", &json!({"bos_token": bos, "eos_token": t.eos_token}))?;
    figures(out, &model)
}
