//! One source of defaults: every stage's command, parsed with no flags but `--run`, gives exactly
//! that stage's `Config::default()` (compared as JSON, every field).

use chatforge_data::clean::CleanConfig;
use chatforge_stages::{compare, dpo, eval, headroom, label, pairs_curve, ppo, pretrain, rm, scale, sft};
use clap::Parser;
use serde::Serialize;

use crate::{Cli, Cmd};

fn parse(args: &[&str]) -> Cmd {
    Cli::try_parse_from(std::iter::once("chatforge").chain(args.iter().copied())).unwrap().cmd
}

fn same<T: Serialize>(parsed: T, default: T) {
    assert_eq!(serde_json::to_value(parsed).unwrap(), serde_json::to_value(default).unwrap());
}

#[test]
fn data() {
    let Cmd::Data(a) = parse(&["data"]) else { unreachable!() };
    same(a.config().unwrap(), CleanConfig::default());
}

#[test]
fn pretrain() {
    let Cmd::Pretrain(a) = parse(&["pretrain", "--run", "r"]) else { unreachable!() };
    same(a.config().unwrap(), pretrain::Config::default());
}

#[test]
fn scale() {
    let Cmd::Scale(a) = parse(&["scale", "--run", "r"]) else { unreachable!() };
    same(a.config().unwrap(), scale::Config::default());
}

#[test]
fn sft() {
    let Cmd::Sft(a) = parse(&["sft", "--run", "r"]) else { unreachable!() };
    same(a.config().unwrap(), sft::Config::default());
}

#[test]
fn label() {
    let Cmd::Label(a) = parse(&["label", "--run", "r", "--simulated"]) else { unreachable!() };
    same(a.config(), label::Config::default());
}

#[test]
fn rm() {
    let Cmd::Rm(a) = parse(&["rm", "--run", "r"]) else { unreachable!() };
    same(a.config(), rm::Config::default());
}

#[test]
fn ppo() {
    let Cmd::Ppo(a) = parse(&["ppo", "--run", "r"]) else { unreachable!() };
    same(a.ppo.config(), ppo::Config::default());
    // The graders' reward has its own recipe (RLVR's), overridden the same way.
    let Cmd::Ppo(a) = parse(&["ppo", "--run", "r", "--reward", "graders"]) else { unreachable!() };
    same(a.ppo.config(), ppo::Config::rlvr());
    let Cmd::Ppo(a) = parse(&["ppo", "--run", "r", "--reward", "graders", "--lr", "0.001"]) else { unreachable!() };
    let mut want = ppo::Config::rlvr();
    want.optim.lr = 0.001;
    same(a.ppo.config(), want);
}

#[test]
fn dpo() {
    let Cmd::Dpo(a) = parse(&["dpo", "--run", "r"]) else { unreachable!() };
    same(a.config(), dpo::Config::default());
}

#[test]
fn compare() {
    let Cmd::Compare(a) = parse(&["compare", "--run", "r"]) else { unreachable!() };
    same(a.config(), compare::Config::default());
}

#[test]
fn headroom() {
    let Cmd::Headroom(a) = parse(&["headroom", "--run", "r"]) else { unreachable!() };
    same(a.config(), headroom::Config::default());
}

#[test]
fn pairs_curve() {
    let Cmd::PairsCurve(a) = parse(&["pairs-curve", "--run", "r"]) else { unreachable!() };
    same(a.config(), pairs_curve::Config::default());
}

#[test]
fn eval() {
    let Cmd::Eval(a) = parse(&["eval", "--run", "r"]) else { unreachable!() };
    same(a.config(), eval::Config::default());
}

#[test]
fn sample() {
    let Cmd::Sample(a) = parse(&["sample", "--run", "r"]) else { unreachable!() };
    same(a.config(), chatforge_stages::sample::Config::default());
}

/// A flag is an override of the recipe, not a second recipe: changing one changes only its field.
#[test]
fn a_flag_overrides_one_field() {
    let Cmd::Ppo(a) = parse(&["ppo", "--run", "r", "--kl-target", "0", "--iterations", "7"]) else { unreachable!() };
    let c = a.ppo.config();
    same(c.clone(), ppo::Config { iterations: 7, kl_target: None, ..Default::default() });
}
