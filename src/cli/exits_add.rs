//! `edgescope exits add`: insert early exits into a plain classifier and train their heads.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::Args;

use crate::optimize::exits_add::{AddExitsEvent, AddExitsRequest, add_exits};
use crate::optimize::heads::{HeadKind, TrainConfig};

/// `edgescope exits add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The plain classifier (one ONNX file).
    #[arg(long)]
    pub model: PathBuf,
    /// Where the exits go: cut tensors listed by `exits candidates`, or early / middle / late for its suggestions.
    #[arg(long, value_delimiter = ',', required = true)]
    pub at: Vec<String>,
    /// Training dataset (spec, folder, IDX or NPY file).
    #[arg(long)]
    pub train: PathBuf,
    /// Validation dataset for early stopping (default: a seeded, stratified 10 % of the training set).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// linear (pooling + one fully connected layer) or mlp (one hidden layer of 128 ReLU units).
    #[arg(long, value_enum, default_value = "linear")]
    pub head: HeadKind,
    /// Most training epochs per head (training stops earlier when the validation accuracy stops improving).
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    /// Seed of the initialization, the batch order and the validation hold-out.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder to write the segments and the manifest into (created; an existing one must be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Variant name (default: STEM/ee+N).
    #[arg(long)]
    pub name: Option<String>,
    /// Name of the base variant the chain is compared with (default: the model's file stem).
    #[arg(long)]
    pub base: Option<String>,
    /// ONNX Runtime threads for the feature pass (0: its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Runs `exits add`.
pub fn exits_add(args: &AddArgs) -> Result<()> {
    let kind = args.head;
    if args.epochs == 0 {
        return Err(anyhow!("--epochs must be at least 1"));
    }
    let mut request = AddExitsRequest::new(args.model.clone(), args.at.clone(), args.train.clone(), args.out.clone());
    request.val = args.val.clone();
    request.config = TrainConfig { kind, epochs: args.epochs, seed: args.seed, ..TrainConfig::default() };
    request.name = args.name.clone();
    request.base = args.base.clone();
    request.intra_threads = args.threads;
    let cancel = super::cancel_on_signals();
    let terminal = std::io::stderr().is_terminal();
    let mut exits: Vec<String> = Vec::new();
    let mut on_event = |event: AddExitsEvent| match event {
        AddExitsEvent::Placed { tensors } => {
            eprintln!("exits at {}", tensors.join(", "));
            exits = tensors;
        }
        AddExitsEvent::Features { set, done, total } => {
            if terminal {
                eprint!("\r  {set} features: {done}/{total}");
                if done == total {
                    eprintln!();
                }
            } else if done == total {
                eprintln!("  {set} features: {total} samples");
            }
        }
        AddExitsEvent::Epoch { exit, report } => {
            if terminal {
                eprint!(
                    "\r  exit {} ({}): epoch {}/{} loss {:.4} val {:.2} %   ",
                    exit + 1,
                    exits.get(exit).map_or("", String::as_str),
                    report.epoch,
                    report.epochs,
                    report.train_loss,
                    100.0 * report.val_accuracy
                );
            }
        }
        AddExitsEvent::HeadTrained { exit, val_accuracy } => {
            if terminal {
                eprintln!();
            }
            eprintln!("  exit {} trained: validation accuracy {:.2} %", exit + 1, 100.0 * val_accuracy);
        }
        AddExitsEvent::Writing => eprintln!("  writing the chain"),
    };
    let outcome = add_exits(&request, &mut on_event, &cancel)?;
    println!(
        "{} -> {} ({} training / {} validation samples; features {:.1} s, total {:.1} s)",
        args.model.display(),
        outcome.chain.manifest.display(),
        outcome.samples.0,
        outcome.samples.1,
        outcome.features_s,
        outcome.total_s
    );
    let total_macs: u64 = outcome.chain.segment_macs.iter().sum();
    for (index, exit) in outcome.exits.iter().enumerate() {
        println!(
            "  exit {} {} after {} ({} features{}, {:.1} % of the MACs before): validation accuracy {:.2} % \
             (epoch {} of {}, {:.2} s)",
            index + 1,
            exit.output,
            exit.tensor,
            exit.features,
            if exit.pooled { ", pooled" } else { "" },
            100.0 * exit.mac_share,
            100.0 * exit.val_accuracy,
            exit.best_epoch,
            exit.epochs_run,
            exit.training_s
        );
    }
    for (index, segment) in outcome.chain.variant.segments.iter().enumerate() {
        let macs = outcome.chain.segment_macs.get(index).copied().unwrap_or(0);
        println!(
            "  segment {} {}: {} -> exit {}{}  ({:.1} % of the MACs)",
            index + 1,
            segment.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            segment.input,
            segment.exit.as_deref().unwrap_or("-"),
            segment.carry.as_deref().map_or_else(String::new, |c| format!(", carry {c}")),
            if total_macs == 0 { 0.0 } else { 100.0 * macs as f64 / total_macs as f64 }
        );
    }
    Ok(())
}
