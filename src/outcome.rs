//! One classification of what a request came to, for every provider (through
//! `providers::outcome`) and the Vault transport. Pure.
//!
//! | request | what came back | outcome |
//! |---|---|---|
//! | any | never sent (connection refused, DNS, no program to start) | `Transient` |
//! | any | 2xx with a readable answer | `Success` |
//! | any | 429 | `Transient` |
//! | any | 503 with the origin's own refusal (`Retry-After`, rate-limit headers, Vault's error body) | `Transient` |
//! | any | 408 | `Transient` |
//! | any | another 1xx, 3xx, 4xx | `Refused` |
//! | idempotent | another 5xx, a timeout, a reset, an unreadable answer | `Transient` |
//! | not idempotent | another 5xx, a timeout, a reset, an unreadable answer | `Unknown` |
//!
//! Why 429, 408 and a 503 with the origin's refusal are "nothing happened" even for a request
//! that is not idempotent: a 429 is the rate limiter's answer before the request is handled
//! (RFC 6585; BigCommerce sends it with its `X-Rate-Limit-*` headers, or bare for platform
//! overload, per its API reference on rate limits), and a 408 says the server never had the
//! whole request. A 503 is only the origin's refusal when it says so (a `Retry-After`, the
//! store's rate-limit headers, Vault's JSON `errors` body: sealed, standby): a bare 503 may come
//! from a proxy whose upstream reset after the request went through, so it counts as any other
//! 5xx. A 502 or 504 is always a gateway speaking for an origin that may have done the work.
//!
//! For a request that is not idempotent (a mint: a storefront, private or impersonation token,
//! the http provider's create, an AppRole secret-id, the exec provider's mint), `Unknown` means
//! a credential may exist that nobody holds: the rotation driver records it as a possible
//! orphan, with its expiry as the bound on its life, before anything else.

/// Whether sending the request again does what sending it once did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A read, a verify, a revoke, a check-and-set write: repeating it changes nothing more.
    Idempotent,
    /// Creates something each time (a token, a secret-id, a credential).
    NotIdempotent,
}

/// What came back for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Nothing reached the other side: the connection was refused, the name did not resolve,
    /// the program could not be started.
    NotSent,
    /// An HTTP status. `origin_refused`: the answer carries the origin's own word that it
    /// handled nothing (a `Retry-After`, the store's rate-limit headers, Vault's JSON errors).
    Status { status: u16, origin_refused: bool },
    /// Sent, and no whole answer: a timeout, a reset, a closed connection, a killed program.
    Lost,
    /// An answer that cannot be read: a body that does not parse, lacks what it must hold, or
    /// is larger than the cap.
    Unreadable,
}

/// What a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The origin did it and said so.
    Success,
    /// The origin said no: nothing happened, and sending it again changes nothing.
    Refused,
    /// Nothing happened (or, for an idempotent request, repeating it is harmless): try again.
    Transient,
    /// It may or may not have happened.
    Unknown,
}

/// The table (see the module's documentation).
pub fn classify(request: Request, reply: Reply) -> Outcome {
    let maybe_happened = match request {
        Request::Idempotent => Outcome::Transient,
        Request::NotIdempotent => Outcome::Unknown,
    };
    match reply {
        Reply::NotSent => Outcome::Transient,
        Reply::Status { status, .. } if (200..300).contains(&status) => Outcome::Success,
        Reply::Status {
            status: 408 | 429, ..
        } => Outcome::Transient,
        Reply::Status {
            status: 503,
            origin_refused: true,
        } => Outcome::Transient,
        Reply::Status { status, .. } if status >= 500 => maybe_happened,
        Reply::Status { .. } => Outcome::Refused,
        Reply::Lost | Reply::Unreadable => maybe_happened,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;
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
    fn the_table_case_by_case() {
        // (request, reply, outcome): each row of the module's table.
        let cases = [
            (Idempotent, Reply::NotSent, Transient),
            (NotIdempotent, Reply::NotSent, Transient),
            (Idempotent, status(200), Success),
            (NotIdempotent, status(200), Success),
            (NotIdempotent, status(201), Success),
            (NotIdempotent, status(204), Success),
            (Idempotent, status(429), Transient),
            (NotIdempotent, status(429), Transient),
            (NotIdempotent, refused_by_origin(429), Transient),
            (NotIdempotent, status(408), Transient),
            (NotIdempotent, refused_by_origin(503), Transient),
            (Idempotent, refused_by_origin(503), Transient),
            (NotIdempotent, status(301), Refused),
            (NotIdempotent, status(307), Refused),
            (NotIdempotent, status(400), Refused),
            (NotIdempotent, status(401), Refused),
            (Idempotent, status(403), Refused),
            (NotIdempotent, status(404), Refused),
            (NotIdempotent, status(422), Refused),
            (NotIdempotent, refused_by_origin(422), Refused),
            (Idempotent, status(500), Transient),
            (NotIdempotent, status(500), Unknown),
            (Idempotent, status(502), Transient),
            (NotIdempotent, status(502), Unknown),
            // A gateway's status is never the origin's refusal, whatever headers it carries.
            (NotIdempotent, refused_by_origin(502), Unknown),
            (NotIdempotent, status(503), Unknown),
            (Idempotent, status(503), Transient),
            (NotIdempotent, status(504), Unknown),
            (NotIdempotent, refused_by_origin(504), Unknown),
            (NotIdempotent, status(599), Unknown),
            (Idempotent, Reply::Lost, Transient),
            (NotIdempotent, Reply::Lost, Unknown),
            (Idempotent, Reply::Unreadable, Transient),
            (NotIdempotent, Reply::Unreadable, Unknown),
        ];
        for (request, reply, expected) in cases {
            assert_eq!(classify(request, reply), expected, "{request:?} {reply:?}");
        }
    }
}
