//! Probability loyalty: how close a variant's output distribution stays to the base's
//! (Xu et al., EMNLP 2021): `1 - sqrt(JSD(p_base, p_variant))` with the Jensen-Shannon divergence in bits.
//!
//! Exact from full distributions ([`jsd_bits_full`], what a run records beyond the top-k classes) or from top-k
//! records ([`jsd_bits_bounded`]), which are exact when both list every class and otherwise come with a bound.
//!
//! The bound: each class contributes `0 <= f(p_c, q_c) <= (p_c + q_c) / 2` bits. On the classes both records
//! list, `K`, the terms are exact; outside `K` both the true and the estimated contributions lie in
//! `[0, B]` with `B = (2 - p(K) - q(K)) / 2`, so the true JSD lies in `[J_K, J_K + B]`, and so does the estimate.

/// A distribution known on a few classes, with the rest of the mass spread evenly over the other classes.
#[derive(Clone, Copy, Debug)]
pub struct TopKDistribution<'a> {
    /// Known classes.
    pub classes: &'a [u16],
    /// Their probabilities.
    pub probs: &'a [f32],
    /// Total number of classes.
    pub num_classes: usize,
}

impl TopKDistribution<'_> {
    fn tail_mass(&self) -> f64 {
        (1.0 - self.probs.iter().map(|&p| f64::from(p)).sum::<f64>()).max(0.0)
    }

    fn tail_share(&self) -> f64 {
        let unknown = self.num_classes.saturating_sub(self.classes.len());
        if unknown == 0 { 0.0 } else { self.tail_mass() / unknown as f64 }
    }

    fn prob_of(&self, class: u16) -> f64 {
        match self.classes.iter().position(|&c| c == class) {
            Some(i) => f64::from(self.probs[i]),
            None => self.tail_share(),
        }
    }
}

/// Contribution of one class to JSD in bits: `0.5 p log2(p/m) + 0.5 q log2(q/m)` with `m = (p+q)/2`.
fn jsd_term(p: f64, q: f64) -> f64 {
    let m = 0.5 * (p + q);
    let half_kl = |x: f64| if x > 0.0 { 0.5 * x * (x / m).log2() } else { 0.0 };
    if m > 0.0 { half_kl(p) + half_kl(q) } else { 0.0 }
}

/// Jensen-Shannon divergence in bits, in [0, 1]. Exact when both distributions list every class.
pub fn jsd_bits(p: TopKDistribution<'_>, q: TopKDistribution<'_>) -> f64 {
    let mut total = 0.0;
    let mut seen = 0usize;
    for &class in p.classes {
        total += jsd_term(p.prob_of(class), q.prob_of(class));
        seen += 1;
    }
    for &class in q.classes {
        if !p.classes.contains(&class) {
            total += jsd_term(p.prob_of(class), q.prob_of(class));
            seen += 1;
        }
    }
    let unseen = p.num_classes.saturating_sub(seen);
    if unseen > 0 {
        total += unseen as f64 * jsd_term(p.tail_share(), q.tail_share());
    }
    total.clamp(0.0, 1.0)
}

/// Probability loyalty of one sample: `1 - sqrt(JSD)`.
pub fn probability_loyalty(base: TopKDistribution<'_>, variant: TopKDistribution<'_>) -> f64 {
    1.0 - jsd_bits(base, variant).sqrt()
}

/// Jensen-Shannon divergence in bits of two full distributions over the same classes (computed in f64).
pub fn jsd_bits_full(p: &[f32], q: &[f32]) -> f64 {
    p.iter().zip(q).map(|(&a, &b)| jsd_term(f64::from(a), f64::from(b))).sum::<f64>().clamp(0.0, 1.0)
}

/// The JSD estimate of [`jsd_bits`] with the interval that holds the true value (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoundedJsd {
    /// The estimate (tails spread evenly), bits.
    pub estimate: f64,
    /// The true JSD is at least this (the classes both records list), bits.
    pub low: f64,
    /// The true JSD is at most this, bits.
    pub high: f64,
}

impl BoundedJsd {
    /// An exactly known JSD.
    pub fn exact(jsd: f64) -> Self {
        Self { estimate: jsd, low: jsd, high: jsd }
    }

    /// Probability loyalty of the estimate and the most it can be off from the true loyalty.
    pub fn loyalty_and_error(&self) -> (f64, f64) {
        let loyalty = 1.0 - self.estimate.sqrt();
        let error = (self.estimate.sqrt() - self.low.sqrt()).max(self.high.sqrt() - self.estimate.sqrt());
        (loyalty, error.max(0.0))
    }
}

/// [`jsd_bits`] with the interval that must hold the true JSD; the interval is a point when both records
/// list every class.
pub fn jsd_bits_bounded(p: TopKDistribution<'_>, q: TopKDistribution<'_>) -> BoundedJsd {
    let estimate = jsd_bits(p, q);
    let (mut known, mut p_known, mut q_known) = (0.0f64, 0.0f64, 0.0f64);
    let mut both = 0usize;
    for (i, &class) in p.classes.iter().enumerate() {
        if let Some(j) = q.classes.iter().position(|&c| c == class) {
            let (a, b) = (f64::from(p.probs[i]), f64::from(q.probs[j]));
            known += jsd_term(a, b);
            p_known += a;
            q_known += b;
            both += 1;
        }
    }
    if both >= p.num_classes {
        return BoundedJsd::exact(estimate);
    }
    let outside = (0.5 * (2.0 - p_known - q_known)).max(0.0);
    let low = known.min(estimate);
    let high = (known + outside).clamp(estimate, 1.0);
    BoundedJsd { estimate, low, high }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist<'a>(classes: &'a [u16], probs: &'a [f32], n: usize) -> TopKDistribution<'a> {
        TopKDistribution { classes, probs, num_classes: n }
    }

    #[test]
    fn identical_distributions_are_fully_loyal() {
        let d = dist(&[2, 0, 1], &[0.7, 0.2, 0.1], 3);
        assert!(jsd_bits(d, d).abs() < 1e-12);
        assert!((probability_loyalty(d, d) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn disjoint_one_hot_distributions_have_one_bit() {
        let p = dist(&[0, 1], &[1.0, 0.0], 2);
        let q = dist(&[1, 0], &[1.0, 0.0], 2);
        assert!((jsd_bits(p, q) - 1.0).abs() < 1e-12);
        assert!(probability_loyalty(p, q).abs() < 1e-12);
    }

    #[test]
    fn hand_computed_case() {
        // p = (0.5, 0.5), q = (0.9, 0.1): m = (0.7, 0.3).
        let p = dist(&[0, 1], &[0.5, 0.5], 2);
        let q = dist(&[0, 1], &[0.9, 0.1], 2);
        let expected = 0.5 * (0.5 * (0.5f64 / 0.7).log2() + 0.5 * (0.5f64 / 0.3).log2())
            + 0.5 * (0.9 * (0.9f64 / 0.7).log2() + 0.1 * (0.1f64 / 0.3).log2());
        assert!((jsd_bits(p, q) - expected).abs() < 1e-7);
    }

    #[test]
    fn the_bound_holds_the_true_divergence_of_random_truncations() {
        // Deterministic pseudo-random distributions over 40 classes, truncated to their top 6.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..300 {
            let mut draw = || {
                let sharp = 1.0 + 8.0 * next();
                let raw: Vec<f64> = (0..40).map(|_| next().powf(sharp)).collect();
                let sum: f64 = raw.iter().sum();
                raw.iter().map(|v| (v / sum) as f32).collect::<Vec<f32>>()
            };
            let (p, q) = (draw(), draw());
            let exact = jsd_bits_full(&p, &q);
            let top = |d: &[f32]| {
                let mut order: Vec<u16> = (0..40).collect();
                order.sort_by(|&a, &b| d[usize::from(b)].total_cmp(&d[usize::from(a)]));
                order.truncate(6);
                let probs: Vec<f32> = order.iter().map(|&c| d[usize::from(c)]).collect();
                (order, probs)
            };
            let ((pc, pp), (qc, qp)) = (top(&p), top(&q));
            let bounded = jsd_bits_bounded(dist(&pc, &pp, 40), dist(&qc, &qp, 40));
            assert!(bounded.low - 1e-9 <= exact && exact <= bounded.high + 1e-9, "{bounded:?} vs {exact}");
            let (loyalty, error) = bounded.loyalty_and_error();
            assert!(((1.0 - exact.sqrt()) - loyalty).abs() <= error + 1e-9);
        }
    }

    #[test]
    fn full_records_are_exact() {
        let p = dist(&[0, 1, 2], &[0.5, 0.3, 0.2], 3);
        let q = dist(&[1, 0, 2], &[0.6, 0.3, 0.1], 3);
        let bounded = jsd_bits_bounded(p, q);
        assert_eq!(bounded.low, bounded.high);
        let exact = jsd_bits_full(&[0.5, 0.3, 0.2], &[0.3, 0.6, 0.1]);
        assert!((bounded.estimate - exact).abs() < 1e-7);
        assert_eq!(bounded.loyalty_and_error().1, 0.0);
    }

    #[test]
    fn truncated_distributions_spread_the_tail() {
        // Top-1 of 4 classes: tails 0.4/3 each; the other's class 1 is in p's tail.
        let p = dist(&[0], &[0.6], 4);
        let q = dist(&[1], &[0.6], 4);
        let full_p = dist(&[0, 1, 2, 3], &[0.6, 0.4 / 3.0, 0.4 / 3.0, 0.4 / 3.0], 4);
        let full_q = dist(&[1, 0, 2, 3], &[0.6, 0.4 / 3.0, 0.4 / 3.0, 0.4 / 3.0], 4);
        assert!((jsd_bits(p, q) - jsd_bits(full_p, full_q)).abs() < 1e-6);
    }
}
