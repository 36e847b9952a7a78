//! Probability loyalty: how close a variant's output distribution stays to the base's
//! (Xu et al., EMNLP 2021): `1 - sqrt(JSD(p_base, p_variant))` with the Jensen-Shannon divergence in bits.

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
    fn truncated_distributions_spread_the_tail() {
        // Top-1 of 4 classes: tails 0.4/3 each; the other's class 1 is in p's tail.
        let p = dist(&[0], &[0.6], 4);
        let q = dist(&[1], &[0.6], 4);
        let full_p = dist(&[0, 1, 2, 3], &[0.6, 0.4 / 3.0, 0.4 / 3.0, 0.4 / 3.0], 4);
        let full_q = dist(&[1, 0, 2, 3], &[0.6, 0.4 / 3.0, 0.4 / 3.0, 0.4 / 3.0], 4);
        assert!((jsd_bits(p, q) - jsd_bits(full_p, full_q)).abs() < 1e-6);
    }
}
