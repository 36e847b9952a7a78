//! Per-operator latency: runs a variant with ONNX Runtime's profiler on (one session per segment, as a run
//! does) and aggregates the profiler's node events per segment, per operator type and per node, next to the
//! segment latency measured around `Session::run`, so what the operators do not explain is shown as an
//! explicit "outside operators" row.
//!
//! ONNX Runtime writes a Chrome-trace JSON array per session: `cat = "Session"` events (`model_run` per
//! `Session::run`, and inside it `SequentialExecutor::Execute`) and `cat = "Node"` events named
//! `<node>_kernel_time` (plus `_fence_before` / `_fence_after` on some providers) with `dur` in microseconds
//! and `args.op_name`, `args.provider`. A node event belongs to the `model_run` whose time span holds it; the
//! warm-up runs are left out.
//!
//! Accounting. Kernels run one after another inside the executor; between two kernels the executor prepares
//! the next node (its inputs, its output allocation plan, the profiler's own bookkeeping for the node, fences).
//! That gap is charged to the node that follows as its *dispatch* time, so a node costs its kernel plus its
//! dispatch and the operators' sum is the executor's span from the first kernel to the last. What is left of
//! the latency measured around `Session::run` is shown, split into the executor's setup (before the first
//! kernel, after the last), the session's own work outside the executor (`model_run` minus the executor) and
//! the binding (measured minus `model_run`: input and output values crossing the C API). The profiler itself
//! slows a run down, most on small networks with many nodes: a second session without the profiler runs the
//! same samples, interleaved, and its latency is reported beside the profiled one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ort::session::Session;
use ort::value::{DynValue, TensorRef};
use serde::{Deserialize, Serialize};

use super::environment::ort_environment;
use super::{CancelToken, RuntimeError};
use crate::data::Dataset;
use crate::model::Variant;
use crate::record::{NodeTime, OperatorTypeTime, ProfileProgress, ProfileSettings, SegmentProfile, VariantProfile};

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
    /// `(ts_us, dur_us)` of every `SequentialExecutor::Execute` (the executor inside a `model_run`), in time
    /// order; empty when this ONNX Runtime does not record it.
    pub executions: Vec<(f64, f64)>,
    /// Every node kernel event, in time order.
    pub nodes: Vec<NodeEvent>,
}

impl ParsedProfile {
    /// The node events of run `index` (by time span), in time order.
    pub fn nodes_of_run(&self, index: usize) -> impl Iterator<Item = &NodeEvent> {
        let (start, dur) = self.runs.get(index).copied().unwrap_or((f64::NAN, 0.0));
        self.nodes.iter().filter(move |n| n.ts_us >= start && n.ts_us <= start + dur)
    }

    /// The executor's duration within run `index`, microseconds, when recorded.
    pub fn execution_of_run(&self, index: usize) -> Option<f64> {
        let (start, dur) = self.runs.get(index).copied()?;
        self.executions.iter().find(|(ts, _)| *ts >= start && *ts <= start + dur).map(|e| e.1)
    }

    /// Kernel and dispatch time of every node of run `index`: `(event, dispatch_us)`, where dispatch is the
    /// gap since the previous kernel ended (zero for the first kernel; see the module's accounting).
    pub fn timed_nodes_of_run(&self, index: usize) -> Vec<(&NodeEvent, f64)> {
        let mut previous_end: Option<f64> = None;
        self.nodes_of_run(index)
            .map(|event| {
                let dispatch_us = previous_end.map_or(0.0, |end| (event.ts_us - end).max(0.0));
                let end = event.ts_us + event.dur_us;
                previous_end = Some(previous_end.map_or(end, |p| p.max(end)));
                (event, dispatch_us)
            })
            .collect()
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
            "Session" if event.name.ends_with("Executor::Execute") => profile.executions.push((event.ts, event.dur)),
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
    profile.executions.sort_by(|a, b| a.0.total_cmp(&b.0));
    profile.nodes.sort_by(|a, b| a.ts_us.total_cmp(&b.ts_us));
    Ok(profile)
}

/// Per-type totals of `events` (with their dispatch) over `runs` runs, slowest first.
fn by_type<'a>(events: impl Iterator<Item = (&'a NodeEvent, f64)>, runs: usize) -> Vec<OperatorTypeTime> {
    let mut totals: BTreeMap<(String, String), (usize, f64, f64)> = BTreeMap::new();
    for (event, dispatch) in events {
        let entry = totals.entry((event.op_type.clone(), event.provider.clone())).or_default();
        entry.0 += 1;
        entry.1 += event.dur_us;
        entry.2 += dispatch;
    }
    let runs = runs.max(1) as f64;
    let mut out: Vec<OperatorTypeTime> = totals
        .into_iter()
        .map(|((op_type, provider), (count, kernel, dispatch))| OperatorTypeTime {
            op_type,
            provider,
            nodes_per_run: count as f64 / runs,
            mean_us: kernel / runs,
            dispatch_us: dispatch / runs,
        })
        .collect();
    out.sort_by(|a, b| b.total_us().total_cmp(&a.total_us()));
    out
}

/// Per-node means of `events` over `runs` runs, slowest first.
fn by_node<'a>(events: impl Iterator<Item = (&'a NodeEvent, f64)>, runs: usize) -> Vec<NodeTime> {
    let mut totals: BTreeMap<&str, NodeTime> = BTreeMap::new();
    for (event, dispatch) in events {
        let entry = totals.entry(event.node.as_str()).or_insert_with(|| NodeTime {
            node: event.node.clone(),
            op_type: event.op_type.clone(),
            provider: event.provider.clone(),
            kernel_us: 0.0,
            dispatch_us: 0.0,
        });
        entry.kernel_us += event.dur_us;
        entry.dispatch_us += dispatch;
    }
    let runs = runs.max(1) as f64;
    let mut out: Vec<NodeTime> = totals
        .into_values()
        .map(|mut n| {
            n.kernel_us /= runs;
            n.dispatch_us /= runs;
            n
        })
        .collect();
    out.sort_by(|a, b| b.total_us().total_cmp(&a.total_us()));
    out
}

/// How much slower than the median a run must be to count as disturbed.
pub const DISTURBED_FACTOR: f64 = 2.0;

/// The runs (indices into `times`, per run and segment) whose whole-chain latency is at most
/// [`DISTURBED_FACTOR`] times the median: on a loaded machine a run the scheduler preempted costs milliseconds
/// more, landing in one operator or one gap at random; every mean of a profile is over the same undisturbed
/// runs, and the report says how many were left out. The rule looks only at the latency, never at how the
/// operators explain it.
pub fn undisturbed_runs(times: &[Vec<f64>]) -> Vec<usize> {
    let totals: Vec<f64> = times.iter().map(|run| run.iter().sum()).collect();
    let mut sorted = totals.clone();
    sorted.sort_by(f64::total_cmp);
    let Some(&median) = sorted.get(sorted.len() / 2) else { return Vec::new() };
    (0..totals.len()).filter(|&r| totals[r] <= DISTURBED_FACTOR * median).collect()
}

/// The message for an ONNX Runtime that cannot profile.
pub fn cannot_profile(reason: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Ort(format!(
        "this ONNX Runtime cannot profile ({reason}); point ORT_DYLIB_PATH at a build with profiling (the official \
         release builds have it)"
    ))
}

/// Runs `variant` on the first `settings.samples` readable samples of `dataset` (after `settings.warmup` runs
/// on the first one) with the profiler on, CPU provider, and aggregates the profiles; a session without the
/// profiler runs the same samples in turn. Local measurements queue behind each other (one at a time per
/// process). Cancelled after some samples, the profile of those is returned with `complete == false`.
pub fn profile_variant(
    variant: &Variant,
    dataset: &Dataset,
    settings: &ProfileSettings,
    progress: &mut dyn FnMut(ProfileProgress),
    cancel: &CancelToken,
) -> Result<VariantProfile, RuntimeError> {
    crate::runtime::check_compatible(variant, dataset)?;
    let environment = ort_environment()?;
    let folder =
        tempfile::tempdir().map_err(|e| RuntimeError::Ort(format!("cannot create a temporary folder: {e}")))?;
    let mut sessions = Vec::with_capacity(variant.segments.len());
    let mut plain_sessions = Vec::with_capacity(variant.segments.len());
    for (index, segment) in variant.segments.iter().enumerate() {
        let error = |e: ort::Error| RuntimeError::Session { path: segment.path.clone(), reason: e.to_string() };
        let builder = || {
            let builder = Session::builder(environment).map_err(error)?;
            if settings.intra_threads > 0 {
                return builder.with_intra_threads(settings.intra_threads).map_err(|e| error(e.into()));
            }
            Ok(builder)
        };
        let mut profiled =
            builder()?.with_profiling(folder.path().join(format!("segment{index}"))).map_err(cannot_profile)?;
        sessions.push(profiled.commit_from_file(&segment.path).map_err(error)?);
        plain_sessions.push(builder()?.commit_from_file(&segment.path).map_err(error)?);
    }
    let input_shape = dataset.input_shape();
    let mut inputs = Vec::new();
    let mut buffer = Vec::new();
    for index in 0..dataset.len() {
        if inputs.len() == settings.samples.max(1) {
            break;
        }
        if dataset.load_input(index, &mut buffer).is_ok() {
            inputs.push(buffer.clone());
        }
    }
    let Some(first) = inputs.first().cloned() else {
        return Err(RuntimeError::Incompatible(format!("no sample of {} could be read", dataset.source.display())));
    };
    let run_chain = |sessions: &mut Vec<Session>, input: &[f32], measured: Option<&mut Vec<Vec<f64>>>| {
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
            measured.push(times);
        }
        Ok::<(), RuntimeError>(())
    };
    let _turn = super::runner::wait_for_measurement_turn(&mut |_| {}, cancel)?;
    for _ in 0..settings.warmup {
        if cancel.is_cancelled() {
            return Err(RuntimeError::Cancelled);
        }
        run_chain(&mut sessions, &first, None)?;
        run_chain(&mut plain_sessions, &first, None)?;
    }
    // Per run, per segment.
    let mut measured_us: Vec<Vec<f64>> = Vec::with_capacity(inputs.len());
    let mut plain_us: Vec<Vec<f64>> = Vec::with_capacity(inputs.len());
    let total = inputs.len();
    let mut profiled = 0;
    for input in &inputs {
        if cancel.is_cancelled() {
            break;
        }
        run_chain(&mut sessions, input, Some(&mut measured_us))?;
        run_chain(&mut plain_sessions, input, Some(&mut plain_us))?;
        profiled += 1;
        if profiled % 10 == 0 || profiled == total {
            progress(ProfileProgress { done: profiled, total });
        }
    }
    if profiled == 0 {
        return Err(RuntimeError::Cancelled);
    }
    let kept = undisturbed_runs(&measured_us);
    let plain_kept = undisturbed_runs(&plain_us);
    let runs = kept.len() as f64;
    let segment_mean = |times: &[Vec<f64>], runs: &[usize], index: usize| {
        runs.iter().map(|&r| times[r][index]).sum::<f64>() / runs.len().max(1) as f64
    };
    let mut segments = Vec::with_capacity(sessions.len());
    let mut all_events: Vec<(NodeEvent, f64)> = Vec::new();
    for (index, (session, segment)) in sessions.iter_mut().zip(&variant.segments).enumerate() {
        let file = session.end_profiling().map_err(|e| RuntimeError::Ort(format!("ending the profile: {e}")))?;
        if file.is_empty() {
            return Err(cannot_profile("it wrote no profile file"));
        }
        let file = resolve(folder.path(), &file);
        let text = std::fs::read_to_string(&file)
            .map_err(|e| RuntimeError::Ort(format!("cannot read the profile {}: {e}", file.display())))?;
        let profile = parse_profile(&text).map_err(|e| RuntimeError::Ort(format!("{}: {e}", file.display())))?;
        let expected = settings.warmup + profiled;
        if profile.runs.len() != expected {
            return Err(RuntimeError::Ort(format!(
                "the profile of {} holds {} runs, expected {expected}",
                segment.path.display(),
                profile.runs.len(),
            )));
        }
        let run_indices: Vec<usize> = kept.iter().map(|r| settings.warmup + r).collect();
        let events: Vec<(&NodeEvent, f64)> = run_indices.iter().flat_map(|&r| profile.timed_nodes_of_run(r)).collect();
        let kernel_us = events.iter().map(|(e, _)| e.dur_us).sum::<f64>() / runs;
        let dispatch_us = events.iter().map(|(_, d)| d).sum::<f64>() / runs;
        let executions: Vec<f64> = run_indices.iter().filter_map(|&r| profile.execution_of_run(r)).collect();
        let executor_us = if executions.len() == kept.len() { executions.iter().sum::<f64>() / runs } else { 0.0 };
        segments.push(SegmentProfile {
            path: segment.path.clone(),
            measured_mean_us: segment_mean(&measured_us, &kept, index),
            plain_mean_us: segment_mean(&plain_us, &plain_kept, index),
            operator_sum_us: kernel_us + dispatch_us,
            kernel_us,
            dispatch_us,
            executor_us,
            model_run_us: run_indices.iter().map(|&r| profile.runs[r].1).sum::<f64>() / runs,
            op_types: by_type(events.iter().copied(), kept.len()),
            nodes: by_node(events.iter().copied(), kept.len()),
        });
        all_events.extend(events.into_iter().map(|(e, d)| (e.clone(), d)));
    }
    Ok(VariantProfile {
        variant: variant.name.clone(),
        device: String::new(),
        runs: kept.len(),
        disturbed_runs: profiled - kept.len(),
        intra_threads: settings.intra_threads,
        complete: profiled == total,
        op_types: by_type(all_events.iter().map(|(e, d)| (e, *d)), kept.len()),
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
            {"cat":"Session","pid":1,"tid":1,"dur":95,"ts":1001,"ph":"X","name":"SequentialExecutor::Execute","args":{}},
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
        let types = by_type(profile.nodes.iter().map(|n| (n, 0.0)), 2);
        assert_eq!(types[0].op_type, "Conv");
        assert_eq!((types[0].nodes_per_run, types[0].mean_us), (1.0, 57.5));
        assert_eq!((types[1].op_type.as_str(), types[1].mean_us), ("Relu", 10.0));
        assert!(parse_profile("{}").is_err());
        // The relu kernel starts 8 us after the conv kernel ended: that gap is its dispatch.
        let timed = profile.timed_nodes_of_run(0);
        assert_eq!(
            timed.iter().map(|(n, d)| (n.node.as_str(), *d)).collect::<Vec<_>>(),
            [("conv1", 0.0), ("relu", 8.0)]
        );
        assert_eq!(profile.execution_of_run(0), Some(95.0));
        assert_eq!(profile.execution_of_run(1), None);
        let nodes = by_node(timed.into_iter(), 1);
        assert_eq!((nodes[0].node.as_str(), nodes[0].total_us()), ("conv1", 60.0));
        assert_eq!((nodes[1].node.as_str(), nodes[1].kernel_us, nodes[1].dispatch_us), ("relu", 20.0, 8.0));
    }
}
