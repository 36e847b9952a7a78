//! The certified-threshold line of the explore view: Learn then Test on the variant's calibration run
//! ([`crate::analysis::certify`]), with epsilon and delta boxes, the statement ("certified: label loyalty >= 99 %
//! with probability >= 95 % (n = 1000)"), the certified region of the shared threshold, and a button that sets
//! the certified thresholds. The certificate is computed once per (variant, criterion, levels) and kept in
//! egui's temporary memory, so dragging a slider costs nothing.

use std::sync::Arc;

use eframe::egui;

use super::world::World;
use super::{Command, Commands};
use crate::analysis::certify::{
    CalibrationSet, Certificate, DEFAULT_PATH_STEPS, Levels, Reference, Risk, ThresholdPath, certify,
};
use crate::analysis::{Criterion, Policy};

/// What a certificate was computed for.
#[derive(Clone, Debug, PartialEq)]
struct Key {
    variant: String,
    criterion: Criterion,
    epsilon: f64,
    delta: f64,
}

/// A cached certificate, or why there is none.
type Cached = Arc<(Key, Result<Certificate, String>)>;

/// Levels as the user set them (temporary memory, per session of the app).
#[derive(Clone, Copy, Debug)]
struct UserLevels {
    epsilon: f64,
    delta: f64,
}

/// Where the levels live in egui's memory (global: the plots read the certificate too).
fn levels_id() -> egui::Id {
    egui::Id::unique("edgescope_certify_levels")
}

/// Where the last certificate lives in egui's memory.
fn cache_id() -> egui::Id {
    egui::Id::unique("edgescope_certify_cache")
}

/// The certified thresholds of `variant` under `criterion`, when the controls computed them (for the plots).
pub fn certified_policy(ctx: &egui::Context, variant: &str, criterion: Criterion) -> Option<Policy> {
    let cached: Cached = ctx.data(|d| d.get_temp(cache_id()))?;
    let (key, result) = &*cached;
    if key.variant != variant || key.criterion != criterion {
        return None;
    }
    result.as_ref().ok()?.certified.as_ref()?.policy.clone()
}

fn compute(world: &World, run_index: usize, key: &Key) -> Result<Certificate, String> {
    let run = &world.session.runs[run_index];
    let calibration = world
        .session
        .calibration_run(&run.info.variant, &run.info)
        .ok_or_else(|| "no calibration run for this variant".to_string())?;
    let levels = Levels::new(key.epsilon, key.delta).map_err(|e| e.to_string())?;
    // The calibration dataset has no base run in general: compare with the chain's own final exit.
    let set = CalibrationSet::new(&calibration.trace, None, key.criterion, Reference::FinalExit)
        .map_err(|e| e.to_string())?;
    let path = ThresholdPath::shared(key.criterion, set.num_classes(), set.early_exits(), DEFAULT_PATH_STEPS);
    certify(&set, &path, Risk::Loyalty, levels).map_err(|e| e.to_string())
}

/// Draws the certified line for the explore view's selected early-exit run.
pub fn certified_ui(
    ui: &mut egui::Ui,
    world: &World,
    run_index: usize,
    criterion: Criterion,
    commands: &mut Commands<'_>,
) {
    let run = &world.session.runs[run_index];
    if run.trace.early_exit_count() == 0 || world.session.calibration_run(&run.info.variant, &run.info).is_none() {
        return;
    }
    let levels_id = levels_id();
    let mut levels: UserLevels =
        ui.data(|d| d.get_temp(levels_id)).unwrap_or(UserLevels { epsilon: 0.01, delta: 0.05 });
    ui.horizontal(|ui| {
        let label = ui.label("Certify: epsilon");
        let epsilon = egui::DragValue::new(&mut levels.epsilon).range(0.001..=0.5).speed(0.001).max_decimals(3);
        let mut changed = ui.add(epsilon).labelled_by(label.id).changed();
        let label = ui.label("delta");
        let delta = egui::DragValue::new(&mut levels.delta).range(0.001..=0.5).speed(0.001).max_decimals(3);
        changed |= ui.add(delta).labelled_by(label.id).changed();
        if changed {
            ui.data_mut(|d| d.insert_temp(levels_id, levels));
        }
    });
    let key = Key { variant: run.info.variant.clone(), criterion, epsilon: levels.epsilon, delta: levels.delta };
    let cache_id = cache_id();
    let cached: Option<Cached> = ui.data(|d| d.get_temp(cache_id)).filter(|c: &Cached| c.0 == key);
    let cached = cached.unwrap_or_else(|| {
        let fresh: Cached = Arc::new((key.clone(), compute(world, run_index, &key)));
        ui.data_mut(|d| d.insert_temp(cache_id, Arc::clone(&fresh)));
        fresh
    });
    match &cached.1 {
        Err(reason) => {
            ui.label(format!("not certified: {reason}"));
        }
        Ok(certificate) => {
            ui.label(certificate.summary()).on_hover_text(
                "Learn then Test on the calibration run: with this probability over the calibration draw, label \
                 loyalty against the final exit on new data from the same distribution is at least this \
                 (one threshold shared by every exit)",
            );
            let policy: Option<&Policy> = certificate.certified.as_ref().and_then(|p| p.policy.as_ref());
            if let Some(policy) = policy {
                let threshold = policy.thresholds.first().copied().unwrap_or_default();
                let verb = if criterion.exits_below() { "<=" } else { ">=" };
                ui.horizontal(|ui| {
                    ui.weak(format!(
                        "certified region: every exit's {} threshold {verb} {threshold:.4}",
                        criterion.name()
                    ));
                    if ui.button("Set certified").clicked() {
                        commands.send(Command::SetPolicy(run.info.variant.clone(), policy.clone()));
                    }
                });
            }
        }
    }
}

/// Shades the certified part of an exit's threshold slider (the thresholds from "no early exit" up to the
/// certified one, which the guarantee covers), once the certify line has computed a certificate for this
/// variant and criterion. `slider` is the slider's response; `range` its `(low, high, logarithmic)`.
pub fn shade_certified_ui(
    ui: &egui::Ui,
    slider: &egui::Response,
    variant: &str,
    criterion: Criterion,
    exit: usize,
    range: (f64, f64, bool),
) {
    let Some(policy) = certified_policy(ui.ctx(), variant, criterion) else { return };
    let Some(&certified) = policy.thresholds.get(exit) else { return };
    let (low, high, logarithmic) = range;
    // Where egui's slider puts a value: its rail is `slider_width` wide at the left of the response, the
    // handle's centre inset by its radius (the rail's thickness / 2.5), linear or log10 in between.
    let thickness = ui.text_style_height(&egui::TextStyle::Body).max(ui.spacing().interact_size.y);
    let inset = thickness / 2.5;
    let left = slider.rect.left() + inset;
    let width = (ui.spacing().slider_width - 2.0 * inset).max(1.0);
    let normalized = |value: f64| -> f32 {
        let value = value.clamp(low, high);
        let t = if logarithmic && low > 0.0 {
            (value.log10() - low.log10()) / (high.log10() - low.log10())
        } else {
            (value - low) / (high - low)
        };
        t.clamp(0.0, 1.0) as f32
    };
    // The path runs from no exit towards more exits: below the certified threshold for criteria that exit
    // below it (entropy), above it for the others.
    let (from, to) = if criterion.exits_below() { (low, certified) } else { (certified, high) };
    let x = |value: f64| left + width * normalized(value);
    // A band just under the rail (apart from the slider's own fill), and a tick at the certified threshold.
    let rail_half = ui.spacing().slider_rail_height / 2.0;
    let y = slider.rect.center().y;
    let band =
        egui::Rect::from_min_max(egui::pos2(x(from), y + rail_half + 2.0), egui::pos2(x(to), y + rail_half + 6.0));
    let color = egui::Color32::from_rgb(60, 170, 90);
    ui.painter().rect_filled(band, 1.0, color);
    ui.painter().line_segment(
        [egui::pos2(x(certified), y - rail_half - 3.0), egui::pos2(x(certified), y + rail_half + 6.0)],
        egui::Stroke::new(2.0, egui::Color32::from_rgb(40, 140, 70)),
    );
}
