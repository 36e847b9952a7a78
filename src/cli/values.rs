//! Typed values for the command line's enum flags: clap lists them in `--help`, completes and checks them, so
//! no command parses a flag's text by hand. The library's enums keep their one list of names (`name()`); these
//! implementations hand those names to clap (a foreign trait on our types, so `analysis` and `optimize` stay free
//! of clap).

use clap::ValueEnum;
use clap::builder::PossibleValue;

use crate::analysis::Criterion;
use crate::analysis::certify::Risk;
use crate::model::OutputKind;
use crate::optimize::heads::HeadKind;
use crate::optimize::quantize::{Method, QuantType};
use crate::record::ProviderChoice;
use crate::report::Format;

/// Implements [`ValueEnum`] for a library enum from its variants and its `name()`, with optional aliases.
macro_rules! value_enum {
    ($ty:ty { $($variant:expr $(=> [$($alias:literal),*])?),+ $(,)? }) => {
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($variant),+]
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                #[allow(unused_mut)]
                let mut value = PossibleValue::new(self.name());
                $($(
                    if self.name() == $variant.name() {
                        value = value$(.alias($alias))*;
                    }
                )?)+
                Some(value)
            }
        }
    };
}

value_enum!(Criterion {
    Criterion::Entropy,
    Criterion::NormalizedEntropy,
    Criterion::MaxProbability,
    Criterion::Margin,
});
value_enum!(Risk { Risk::Loyalty, Risk::Accuracy });
value_enum!(OutputKind { OutputKind::Logits, OutputKind::Probabilities, OutputKind::LogProbabilities });
value_enum!(HeadKind { HeadKind::Linear, HeadKind::Mlp { hidden: HeadKind::DEFAULT_HIDDEN } });
value_enum!(Method { Method::Ptq => ["static"], Method::Dq => ["dynamic"] });
value_enum!(QuantType { QuantType::U8 => ["uint8", "quint8"], QuantType::I8 => ["int8", "qint8"] });
value_enum!(ProviderChoice { ProviderChoice::Cpu, ProviderChoice::Cuda, ProviderChoice::Tensorrt });
value_enum!(Format { Format::Text, Format::Csv, Format::Markdown => ["markdown"], Format::Json });

/// `--format` of the commands that print either a text summary or JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    /// Aligned text for people.
    Text,
    /// JSON for scripts.
    Json,
}

/// `certify --path`: how the certified thresholds are searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ThresholdPath {
    /// One threshold at every exit, on a data-free grid.
    Shared,
    /// The same confidence quantile at every exit, quantiles from a pilot part of the calibration data.
    Quantile,
}

/// `--format` of `samples`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CsvOrJson {
    /// One row per sample.
    Csv,
    /// An array of objects.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_value_round_trips_through_its_name_and_aliases_read() {
        for criterion in Criterion::ALL {
            assert_eq!(Criterion::from_str(criterion.name(), false), Ok(criterion));
        }
        assert_eq!(QuantType::from_str("qint8", true), Ok(QuantType::I8));
        assert_eq!(Method::from_str("dynamic", false), Ok(Method::Dq));
        assert_eq!(Format::from_str("md", false), Ok(Format::Markdown));
        assert_eq!(HeadKind::from_str("mlp", false), Ok(HeadKind::Mlp { hidden: HeadKind::DEFAULT_HIDDEN }));
        assert!(ProviderChoice::from_str("rocm", false).is_err());
    }
}
