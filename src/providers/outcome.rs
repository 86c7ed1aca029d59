//! The outcome table ([`crate::outcome`]) as providers use it: a definite answer, or the
//! provider error of one that is not.

use std::time::Duration;

pub use crate::outcome::{classify, Outcome, Reply, Request};

use super::ProviderError;

/// A definite answer of the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Definite {
    Success,
    /// Judged by the provider's own lists (a 401 is `Rejected`, a 422 a configuration error).
    Refused,
}

/// The table, for a provider: a definite answer, or the error of one that is not
/// (`Transient` with the wait the origin asked for, or `UnknownOutcome`). `reason` says what
/// happened, without secrets.
pub fn definite(
    request: Request,
    reply: Reply,
    reason: impl FnOnce() -> String,
    retry_after: Option<Duration>,
) -> Result<Definite, ProviderError> {
    match classify(request, reply) {
        Outcome::Success => Ok(Definite::Success),
        Outcome::Refused => Ok(Definite::Refused),
        Outcome::Transient => Err(ProviderError::Transient {
            reason: reason(),
            retry_after,
        }),
        Outcome::Unknown => Err(unknown(reason())),
    }
}

fn unknown(reason: String) -> ProviderError {
    ProviderError::UnknownOutcome {
        reason: format!("{reason}; a credential may have been created"),
    }
}

/// A request sent without a whole answer (or with one that cannot be read): `Transient` for an
/// idempotent request, `UnknownOutcome` for one that is not.
pub fn no_answer(request: Request, reply: Reply, reason: String) -> ProviderError {
    match classify(request, reply) {
        Outcome::Transient => ProviderError::Transient {
            reason,
            retry_after: None,
        },
        // Success and Refused need a status: for a reply without one, the cautious answer.
        _ => unknown(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Request::*;

    fn status(status: u16) -> Reply {
        Reply::Status {
            status,
            origin_refused: false,
        }
    }

    fn refused_by_origin(status: u16) -> Reply {
        Reply::Status {
            status,
            origin_refused: true,
        }
    }

    #[test]
    fn a_mint_answered_by_anything_but_the_origin_may_have_created_a_credential() {
        let lost = [status(500), status(502), status(503), status(504)]
            .into_iter()
            .chain([Reply::Lost, Reply::Unreadable]);
        for reply in lost {
            let e = definite(NotIdempotent, reply, || "mint: x".into(), None);
            assert!(
                matches!(e, Err(ProviderError::UnknownOutcome { ref reason }) if reason.contains("may have been created")),
                "{reply:?}: {e:?}"
            );
        }
        let wait = Some(Duration::from_secs(7));
        let e = definite(NotIdempotent, status(429), || "x".into(), wait);
        assert!(
            matches!(e, Err(ProviderError::Transient { retry_after, .. }) if retry_after == wait)
        );
        let cases = [
            (status(201), Definite::Success),
            (status(401), Definite::Refused),
            (refused_by_origin(422), Definite::Refused),
        ];
        for (reply, expected) in cases {
            let got = definite(NotIdempotent, reply, || unreachable!("definite"), None);
            assert_eq!(got.ok(), Some(expected), "{reply:?}");
        }
    }

    #[test]
    fn no_answer_is_transient_only_for_an_idempotent_request() {
        let cases = [
            (Idempotent, Reply::Lost, "transient"),
            (Idempotent, Reply::Unreadable, "transient"),
            (Idempotent, Reply::NotSent, "transient"),
            (NotIdempotent, Reply::NotSent, "transient"),
            (NotIdempotent, Reply::Lost, "unknown_outcome"),
            (NotIdempotent, Reply::Unreadable, "unknown_outcome"),
        ];
        for (request, reply, kind) in cases {
            assert_eq!(
                no_answer(request, reply, "r".into()).kind(),
                kind,
                "{request:?} {reply:?}"
            );
        }
    }
}
