//! The certified-threshold line of the explore view: Learn then Test on the variant's calibration run
//! ([`crate::analysis::certify`]), with epsilon and delta boxes, the statement ("certified: label loyalty >= 99 %
//! with probability >= 95 % (n = 1000)"), the certified region of the shared threshold, and a button that sets
//! the certified thresholds. The certificate is computed on a background worker (a [`Command::NeedCertificate`])
//! once per (variant, criterion, levels, runs revision) and kept in the world, so drawing only reads it and
//! dragging a slider costs nothing.

use std::sync::Arc;

use eframe::egui;

use super::world::World;
use super::{Command, Commands};
use crate::analysis::certify::{
    CalibrationSet, Certificate, DEFAULT_PATH_STEPS, Levels, Reference, Risk, ThresholdPath, certify,
};
use crate::analysis::{Criterion, Policy};
use crate::session::Session;

/// What a certificate is computed for: its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct CertifyKey {
    /// The variant.
    pub variant: String,
    /// The run explored (index into the session's runs at `runs_revision`).
    pub run_index: usize,
    /// The exit criterion.
    pub criterion: Criterion,
    /// Loyalty loss allowed (0 to 1).
    pub epsilon: f64,
    /// Probability the guarantee may fail (0 to 1).
    pub delta: f64,
    /// The runs the certificate was computed from.
    pub runs_revision: u64,
}

/// The last certificate computed (or why there is none), with its inputs.
pub type Certified = (CertifyKey, Arc<Result<Certificate, String>>);

/// Levels as the user set them (form state in egui's temporary memory, per session of the app).
#[derive(Clone, Copy, Debug)]
struct UserLevels {
    epsilon: f64,
    delta: f64,
}

/// Where the levels live in egui's memory.
fn levels_id() -> egui::Id {
    egui::Id::unique("edgescope_certify_levels")
}

/// The certified thresholds of `variant` under `criterion`, once computed (for the plots).
pub fn certified_policy(world: &World, variant: &str, criterion: Criterion) -> Option<Policy> {
    let (key, result) = world.certified.as_ref()?;
    if key.variant != variant || key.criterion != criterion || key.runs_revision != world.runs_revision {
        return None;
    }
    result.as_ref().as_ref().ok()?.certified.as_ref()?.policy.clone()
}

/// Computes a certificate (on the loader's worker).
pub fn compute(session: &Session, key: &CertifyKey) -> Result<Certificate, String> {
    let run = session.runs.get(key.run_index).ok_or("the run is no longer in the session")?;
    let calibration = session
        .calibration_run(&run.info.variant, &run.info)
        .ok_or_else(|| "no calibration run for this variant".to_string())?;
    let levels = Levels::new(key.epsilon, key.delta).map_err(|e| e.to_string())?;
    // The calibration dataset has no base run in general: compare with the chain's own final exit.
    let set = CalibrationSet::new(&calibration.trace, None, key.criterion, Reference::FinalExit)
        .map_err(|e| e.to_string())?;
    let path = ThresholdPath::shared(key.criterion, set.num_classes(), set.early_exits(), DEFAULT_PATH_STEPS);
    certify(&set, &path, Risk::Loyalty, levels).map_err(|e| e.to_string())
}

/// Computes the certificate for `key` on a worker unless it is the one held (or on its way).
pub fn request(world: &mut World, key: CertifyKey) {
    if world.certified.as_ref().is_some_and(|(held, _)| *held == key) || key.runs_revision != world.runs_revision {
        return;
    }
    let session = world.snapshot();
    let spawned = world.loader.spawn(super::loader::key::CERTIFY.into(), move || {
        let result = compute(&session, &key);
        super::loader::Loaded::Certificate(key, Arc::new(result))
    });
    if let Err(e) = spawned {
        world.error(e);
    }
}

/// Stores a certificate a worker computed, unless the runs changed since.
pub fn store(world: &mut World, key: CertifyKey, result: Arc<Result<Certificate, String>>) {
    world.loader.finished(super::loader::key::CERTIFY);
    if key.runs_revision == world.runs_revision {
        world.certified = Some((key, result));
    }
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
        let mut changed = ui
            .add(epsilon)
            .labelled_by(label.id)
            .on_hover_text("loyalty loss allowed: 0.01 certifies label loyalty >= 99 %")
            .changed();
        let label = ui.label("delta");
        let delta = egui::DragValue::new(&mut levels.delta).range(0.001..=0.5).speed(0.001).max_decimals(3);
        changed |= ui
            .add(delta)
            .labelled_by(label.id)
            .on_hover_text("chance the guarantee fails over the calibration draw: 0.05 means 95 % confidence")
            .changed();
        if changed {
            ui.data_mut(|d| d.insert_temp(levels_id, levels));
        }
    });
    let key = CertifyKey {
        variant: run.info.variant.clone(),
        run_index,
        criterion,
        epsilon: levels.epsilon,
        delta: levels.delta,
        runs_revision: world.runs_revision,
    };
    let Some((_, result)) = world.certified.as_ref().filter(|(held, _)| *held == key) else {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.weak("certifying on the calibration run…");
        });
        commands.send(Command::NeedCertificate(key));
        return;
    };
    match result.as_ref() {
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
                    if ui
                        .button("Set certified")
                        .on_hover_text("set every exit's threshold to the certified one")
                        .clicked()
                    {
                        commands.send(Command::SetPolicy(run.info.variant.clone(), policy.clone()));
                    }
                });
            }
        }
    }
}

/// Shades the certified part of an exit's threshold slider (the thresholds from "no early exit" up to the
/// certified one, which the guarantee covers), once the worker has computed a certificate for this
/// variant and criterion. `slider` is the slider's response; `range` its `(low, high, logarithmic)`.
pub fn shade_certified_ui(
    ui: &egui::Ui,
    world: &World,
    slider: &egui::Response,
    (variant, criterion): (&str, Criterion),
    exit: usize,
    range: (f64, f64, bool),
) {
    let Some(policy) = certified_policy(world, variant, criterion) else { return };
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
