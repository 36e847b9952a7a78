//! Per-operator latency: runs a variant with ONNX Runtime's profiler on (one session per segment, as a run
//! does) and aggregates the profiler's node events per segment and per operator type, next to the segment
//! latency measured around `Session::run`, so what the operators do not explain is shown as a remainder.
//!
//! ONNX Runtime writes a Chrome-trace JSON array per session: `cat = "Session"` events (`model_run` per
//! `Session::run`) and `cat = "Node"` events named `<node>_kernel_time` (plus `_fence_before` /
//! `_fence_after`) with `dur` in microseconds and `args.op_name`, `args.provider`. A node event belongs to the
//! `model_run` whose time span holds it; the warm-up runs are left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ort::session::Session;
use ort::value::{DynValue, TensorRef};
use serde::{Deserialize, Serialize};

use super::RuntimeError;
use super::environment::ort_environment;
use crate::data::Dataset;
use crate::model::Variant;

/// One node's kernel in one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// Node name.
    pub node: String,
    /// Operator type, e.g. `Conv`, `ConvInteger`.
    pub op_type: String,
    /// Execution provider that ran it.
    pub provider: String,
    /// Start, microseconds since the profiler started.
    pub ts_us: f64,
    /// Kernel time, microseconds.
    pub dur_us: f64,
}

/// The events of one profile file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedProfile {
    /// `(ts_us, dur_us)` of every `model_run`, in time order.
    pub runs: Vec<(f64, f64)>,
    /// Every node kernel event, in time order.
    pub nodes: Vec<NodeEvent>,
}

impl ParsedProfile {
    /// The node events of run `index` (by time span).
    pub fn nodes_of_run(&self, index: usize) -> impl Iterator<Item = &NodeEvent> {
        let (start, dur) = self.runs.get(index).copied().unwrap_or((f64::NAN, 0.0));
        self.nodes.iter().filter(move |n| n.ts_us >= start && n.ts_us <= start + dur)
    }
}

/// Parses ONNX Runtime's profile JSON; the error says what is wrong.
pub fn parse_profile(json: &str) -> Result<ParsedProfile, String> {
    #[derive(Deserialize)]
    struct Event {
        #[serde(default)]
        cat: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        ts: f64,
        #[serde(default)]
        dur: f64,
        #[serde(default)]
        args: BTreeMap<String, serde_json::Value>,
    }
    let events: Vec<Event> =
        serde_json::from_str(json).map_err(|e| format!("not an ONNX Runtime profile (a JSON array of events): {e}"))?;
    let mut profile = ParsedProfile::default();
    for event in events {
        match event.cat.as_str() {
            "Session" if event.name == "model_run" => profile.runs.push((event.ts, event.dur)),
            "Node" => {
                let Some(node) = event.name.strip_suffix("_kernel_time") else { continue };
                let text = |key: &str| event.args.get(key).and_then(|v| v.as_str()).unwrap_or("?").to_string();
                profile.nodes.push(NodeEvent {
                    node: node.to_string(),
                    op_type: text("op_name"),
                    provider: text("provider"),
                    ts_us: event.ts,
                    dur_us: event.dur,
                });
            }
            _ => {}
        }
    }
    profile.runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    profile.nodes.sort_by(|a, b| a.ts_us.total_cmp(&b.ts_us));
    Ok(profile)
}

/// Time per operator type (and provider) within a segment or the whole variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorTypeTime {
    /// Operator type.
    pub op_type: String,
    /// Execution provider.
    pub provider: String,
    /// Nodes of this type run per inference.
    pub nodes_per_run: f64,
    /// Mean kernel time per inference, microseconds.
    pub mean_us: f64,
}

/// One segment's profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentProfile {
    /// The segment's ONNX file.
    pub path: PathBuf,
    /// Mean latency measured around `Session::run`, microseconds (profiler on).
    pub measured_mean_us: f64,
    /// Mean of the operators' kernel times per run, microseconds.
    pub operator_sum_us: f64,
    /// Mean of ONNX Runtime's own `model_run` time, microseconds.
    pub model_run_us: f64,
    /// Per operator type, slowest first.
    pub op_types: Vec<OperatorTypeTime>,
}

impl SegmentProfile {
    /// What the operators do not explain: measured minus their sum, microseconds.
    pub fn remainder_us(&self) -> f64 {
        self.measured_mean_us - self.operator_sum_us
    }
}

/// A variant's profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantProfile {
    /// Variant name.
    pub variant: String,
    /// Runs profiled (after warm-up).
    pub runs: usize,
    /// Intra-op threads (0 = ONNX Runtime's default).
    pub intra_threads: usize,
    /// Segments in chain order.
    pub segments: Vec<SegmentProfile>,
    /// Per operator type over the whole chain, slowest first.
    pub op_types: Vec<OperatorTypeTime>,
}

impl VariantProfile {
    /// Mean measured latency of the whole chain, microseconds.
    pub fn measured_mean_us(&self) -> f64 {
        self.segments.iter().map(|s| s.measured_mean_us).sum()
    }

    /// Mean operator time of the whole chain, microseconds.
    pub fn operator_sum_us(&self) -> f64 {
        self.segments.iter().map(|s| s.operator_sum_us).sum()
    }
}

/// Per-type totals of `events` over `runs` runs, slowest first.
fn by_type<'a>(events: impl Iterator<Item = &'a NodeEvent>, runs: usize) -> Vec<OperatorTypeTime> {
    let mut totals: BTreeMap<(String, String), (usize, f64)> = BTreeMap::new();
    for event in events {
        let entry = totals.entry((event.op_type.clone(), event.provider.clone())).or_default();
        entry.0 += 1;
        entry.1 += event.dur_us;
    }
    let runs = runs.max(1) as f64;
    let mut out: Vec<OperatorTypeTime> = totals
        .into_iter()
        .map(|((op_type, provider), (count, total))| OperatorTypeTime {
            op_type,
            provider,
            nodes_per_run: count as f64 / runs,
            mean_us: total / runs,
        })
        .collect();
    out.sort_by(|a, b| b.mean_us.total_cmp(&a.mean_us));
    out
}

/// Runs `variant` on the first `runs` readable samples of `dataset` (after `warmup` runs on the first one)
/// with the profiler on, CPU provider, `intra_threads` threads (0 = default), and aggregates the profiles.
pub fn profile_variant(
    variant: &Variant,
    dataset: &Dataset,
    runs: usize,
    warmup: usize,
    intra_threads: usize,
) -> Result<VariantProfile, RuntimeError> {
    crate::runtime::check_compatible(variant, dataset)?;
    let environment = ort_environment()?;
    let folder =
        tempfile::tempdir().map_err(|e| RuntimeError::Ort(format!("cannot create a temporary folder: {e}")))?;
    let mut sessions = Vec::with_capacity(variant.segments.len());
    for (index, segment) in variant.segments.iter().enumerate() {
        let error = |e: ort::Error| RuntimeError::Session { path: segment.path.clone(), reason: e.to_string() };
        let mut builder = Session::builder(environment).map_err(error)?;
        if intra_threads > 0 {
            builder = builder.with_intra_threads(intra_threads).map_err(|e| error(e.into()))?;
        }
        builder = builder.with_profiling(folder.path().join(format!("segment{index}"))).map_err(|e| {
            RuntimeError::Ort(format!("this ONNX Runtime cannot profile ({e}); use a build with profiling enabled"))
        })?;
        sessions.push(builder.commit_from_file(&segment.path).map_err(error)?);
    }
    let input_shape = dataset.input_shape();
    let mut inputs = Vec::new();
    let mut buffer = Vec::new();
    for index in 0..dataset.len() {
        if inputs.len() == runs.max(1) {
            break;
        }
        if dataset.load_input(index, &mut buffer).is_ok() {
            inputs.push(buffer.clone());
        }
    }
    let Some(first) = inputs.first().cloned() else {
        return Err(RuntimeError::Incompatible(format!("no sample of {} could be read", dataset.source.display())));
    };
    let mut measured_us = vec![0f64; sessions.len()];
    let run_chain = |sessions: &mut Vec<Session>, input: &[f32], measured: Option<&mut Vec<f64>>| {
        let mut carried: Option<DynValue> = None;
        let mut times = vec![0f64; sessions.len()];
        for (index, (session, segment)) in sessions.iter_mut().zip(&variant.segments).enumerate() {
            let error = |e: ort::Error| RuntimeError::Inference { path: segment.path.clone(), reason: e.to_string() };
            let started = Instant::now();
            let mut outputs = match carried.take() {
                None => {
                    let tensor = TensorRef::from_array_view((input_shape, input)).map_err(error)?;
                    session.run(ort::inputs![segment.input.as_str() => tensor]).map_err(error)?
                }
                Some(value) => session.run(ort::inputs![segment.input.as_str() => value]).map_err(error)?,
            };
            times[index] = started.elapsed().as_secs_f64() * 1e6;
            if let Some(carry) = &segment.carry {
                carried = outputs.remove(carry.as_str());
            }
        }
        if let Some(measured) = measured {
            measured.iter_mut().zip(&times).for_each(|(sum, t)| *sum += t);
        }
        Ok::<(), RuntimeError>(())
    };
    for _ in 0..warmup {
        run_chain(&mut sessions, &first, None)?;
    }
    for input in &inputs {
        run_chain(&mut sessions, input, Some(&mut measured_us))?;
    }
    let profiled = inputs.len();
    let mut segments = Vec::with_capacity(sessions.len());
    let mut all_events = Vec::new();
    for ((session, segment), measured) in sessions.iter_mut().zip(&variant.segments).zip(&measured_us) {
        let file = session.end_profiling().map_err(|e| RuntimeError::Ort(format!("ending the profile: {e}")))?;
        let file = resolve(folder.path(), &file);
        let text = std::fs::read_to_string(&file)
            .map_err(|e| RuntimeError::Ort(format!("cannot read the profile {}: {e}", file.display())))?;
        let profile = parse_profile(&text).map_err(|e| RuntimeError::Ort(format!("{}: {e}", file.display())))?;
        if profile.runs.len() != warmup + profiled {
            return Err(RuntimeError::Ort(format!(
                "the profile of {} holds {} runs, expected {}",
                segment.path.display(),
                profile.runs.len(),
                warmup + profiled
            )));
        }
        let events: Vec<NodeEvent> =
            (warmup..warmup + profiled).flat_map(|r| profile.nodes_of_run(r).cloned()).collect();
        let runs = profiled.max(1) as f64;
        segments.push(SegmentProfile {
            path: segment.path.clone(),
            measured_mean_us: measured / runs,
            operator_sum_us: events.iter().map(|e| e.dur_us).sum::<f64>() / runs,
            model_run_us: profile.runs[warmup..].iter().map(|r| r.1).sum::<f64>() / runs,
            op_types: by_type(events.iter(), profiled),
        });
        all_events.extend(events);
    }
    Ok(VariantProfile {
        variant: variant.name.clone(),
        runs: profiled,
        intra_threads,
        op_types: by_type(all_events.iter(), profiled),
        segments,
    })
}

/// The profile file ONNX Runtime names (relative names are relative to the working directory, or to the
/// folder the prefix pointed into).
fn resolve(folder: &Path, file: &str) -> PathBuf {
    let path = PathBuf::from(file);
    if path.is_absolute() || path.exists() { path } else { folder.join(path.file_name().unwrap_or_default()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_and_run_events() {
        let json = r#"[
            {"cat":"Session","pid":1,"tid":1,"dur":500,"ts":10,"ph":"X","name":"session_initialization","args":{}},
            {"cat":"Session","pid":1,"tid":1,"dur":100,"ts":1000,"ph":"X","name":"model_run","args":{}},
            {"cat":"Node","pid":1,"tid":1,"dur":1,"ts":1001,"ph":"X","name":"conv1_fence_before","args":{"op_name":"Conv"}},
            {"cat":"Node","pid":1,"tid":1,"dur":60,"ts":1002,"ph":"X","name":"conv1_kernel_time",
             "args":{"op_name":"Conv","provider":"CPUExecutionProvider","activation_size":"3136"}},
            {"cat":"Node","pid":1,"tid":1,"dur":20,"ts":1070,"ph":"X","name":"relu_kernel_time",
             "args":{"op_name":"Relu","provider":"CPUExecutionProvider"}},
            {"cat":"Session","pid":1,"tid":1,"dur":90,"ts":2000,"ph":"X","name":"model_run","args":{}},
            {"cat":"Node","pid":1,"tid":1,"dur":55,"ts":2001,"ph":"X","name":"conv1_kernel_time",
             "args":{"op_name":"Conv","provider":"CPUExecutionProvider"}}
        ]"#;
        let profile = parse_profile(json).expect("profile");
        assert_eq!(profile.runs, vec![(1000.0, 100.0), (2000.0, 90.0)]);
        assert_eq!(profile.nodes.len(), 3, "fences are not kernels");
        assert_eq!(profile.nodes_of_run(0).count(), 2);
        let second: Vec<&NodeEvent> = profile.nodes_of_run(1).collect();
        assert_eq!((second[0].node.as_str(), second[0].op_type.as_str(), second[0].dur_us), ("conv1", "Conv", 55.0));
        let types = by_type(profile.nodes.iter(), 2);
        assert_eq!(types[0].op_type, "Conv");
        assert_eq!((types[0].nodes_per_run, types[0].mean_us), (1.0, 57.5));
        assert_eq!((types[1].op_type.as_str(), types[1].mean_us), ("Relu", 10.0));
        assert!(parse_profile("{}").is_err());
    }
}
