//! The data model shared by every layer: series identity (labels), sample values
//! (floats and exact money), and the rules that make input acceptable.

mod labels;
mod money;
pub(crate) mod sample;

pub use labels::{
    is_label_name_syntax, is_valid_label_name, is_valid_metric_name, Label, LabelLimits, LabelStr, Labels,
    LabelsBuilder, ModelError, METRIC_NAME, TENANT,
};
pub use money::{Money, MoneyError, MoneySum, NANOS_PER_UNIT};
pub use sample::{DupPolicy, Sample, SeriesKind, Value, ValueKind};
