//! Typed Vault errors, classified from the server's answer.
//!
//! Invariant: an error names the Vault path (or address) and the status, never a secret value.

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault {path}: not found (404)")]
    NotFound { path: String },
    #[error("vault {path}: check-and-set mismatch (400): the secret was written by someone else since it was read")]
    CasMismatch { path: String },
    #[error(
        "vault {path}: permission denied (403): the daemon's token has no policy allowing this"
    )]
    PermissionDenied { path: String },
    #[error("vault {address}: server is sealed (503); retrying later")]
    Sealed { address: String },
    #[error("vault {address}: unavailable ({reason}); retrying later")]
    Unavailable { address: String, reason: String },
    /// A write was sent and its reply was lost (timeout, connection reset, a 5xx that does not
    /// say the node skipped it): it may or may not have been applied. Never re-sent blindly:
    /// read the state back before acting on it.
    #[error("vault {path}: outcome unknown ({reason}): the write may or may not have landed; read it back before acting on it")]
    OutcomeUnknown { path: String, reason: String },
    #[error("vault login failed: {reason}")]
    Login { reason: String },
    #[error("vault {path}: {}{message}", status.map(|s| format!("status {s}: ")).unwrap_or_default())]
    Other {
        path: String,
        status: Option<u16>,
        message: String,
    },
}

impl VaultError {
    /// Worth trying again later: the server could not answer now, or (OutcomeUnknown) the
    /// answer was lost and the caller reads back before it tries again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            VaultError::Sealed { .. }
                | VaultError::Unavailable { .. }
                | VaultError::OutcomeUnknown { .. }
        )
    }

    /// A short stable name for metrics and history.
    pub fn kind(&self) -> &'static str {
        match self {
            VaultError::NotFound { .. } => "not_found",
            VaultError::CasMismatch { .. } => "cas_mismatch",
            VaultError::PermissionDenied { .. } => "permission_denied",
            VaultError::Sealed { .. } => "sealed",
            VaultError::Unavailable { .. } => "unavailable",
            VaultError::OutcomeUnknown { .. } => "outcome_unknown",
            VaultError::Login { .. } => "login",
            VaultError::Other { .. } => "other",
        }
    }
}

/// Classify an answer of the server (status + its `errors` list) for an operation on `path`.
pub fn classify_status(status: u16, errors: &[String], path: &str, address: &str) -> VaultError {
    let joined = errors.join("; ");
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    match status {
        400 if has("check-and-set parameter did not match") => VaultError::CasMismatch {
            path: path.to_string(),
        },
        // Raft failover: transient (a new leader is elected within seconds; tests/raft.rs).
        400 if has("Waiting for the primary") => VaultError::Unavailable {
            address: address.to_string(),
            reason: joined,
        },
        403 => VaultError::PermissionDenied {
            path: path.to_string(),
        },
        404 => VaultError::NotFound {
            path: path.to_string(),
        },
        503 if has("sealed") => VaultError::Sealed {
            address: address.to_string(),
        },
        429 | 500..=599 => VaultError::Unavailable {
            address: address.to_string(),
            reason: format!("status {status}: {joined}"),
        },
        _ => VaultError::Other {
            path: path.to_string(),
            status: Some(status),
            message: joined,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: u16, errors: &[&str], expected_kind: &str, retryable: bool) {
        let errors: Vec<String> = errors.iter().map(|s| s.to_string()).collect();
        let e = classify_status(status, &errors, "secret/x", "http://127.0.0.1:1");
        assert_eq!(e.kind(), expected_kind, "{status} {errors:?}");
        assert_eq!(e.is_retryable(), retryable, "{status} {errors:?}");
    }

    #[test]
    fn classifies_server_answers() {
        let cases: &[(u16, &[&str], &str, bool)] = &[
            (
                400,
                &["check-and-set parameter did not match the current version"],
                "cas_mismatch",
                false,
            ),
            (
                400,
                &["check-and-set parameter required for this call"],
                "other",
                false,
            ),
            (
                400,
                &["Waiting for the primary to upgrade from non-versioned to versioned data"],
                "unavailable",
                true,
            ),
            (403, &["permission denied"], "permission_denied", false),
            (404, &[], "not_found", false),
            (503, &["Vault is sealed"], "sealed", true),
            (503, &[], "unavailable", true),
            (
                500,
                &["local node not active but active cluster node not found"],
                "unavailable",
                true,
            ),
            (429, &[], "unavailable", true),
            (418, &["teapot"], "other", false),
        ];
        for (status, errors, kind, retryable) in cases {
            check(*status, errors, kind, *retryable);
        }
    }

    #[test]
    fn an_unknown_outcome_says_the_write_may_have_landed() {
        let e = VaultError::OutcomeUnknown {
            path: "secret/app/db".into(),
            reason: "http://127.0.0.1:8200: operation timed out".into(),
        };
        assert_eq!(e.kind(), "outcome_unknown");
        assert!(e.is_retryable());
        let text = e.to_string();
        assert!(text.contains("secret/app/db") && text.contains("may or may not have landed"));
    }
}
