//! What every sink (webhook, file, exec) reports for one delivery.

/// What a sink reports for one delivery. It never retries by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// `retryable`: whether trying again later may succeed. `reason` is fit for a log line and
    /// never holds a secret.
    Failed {
        retryable: bool,
        reason: String,
    },
}

impl Delivery {
    pub(crate) fn failed(retryable: bool, reason: impl Into<String>) -> Delivery {
        Delivery::Failed {
            retryable,
            reason: reason.into(),
        }
    }
}
