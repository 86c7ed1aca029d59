//! Error bodies in the three shapes the API uses: v3 objects, v2 arrays, GraphQL errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::endpoints::Flavor;
use crate::storefront::FieldErrors;

pub const V3_ERROR_TYPE: &str =
    "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes";
/// The documented title of a 403 for a missing scope.
pub const MISSING_SCOPE: &str = "You don't have a required scope to access the endpoint";
/// The emulator's choice: the real API documents no 401 body.
pub const INVALID_TOKEN: &str = "The access token is invalid or has been revoked";
pub const NOT_FOUND: &str = "The requested resource was not found.";
pub const TOO_MANY_REQUESTS: &str = "Too many requests: the store's API quota is spent";
pub const INVALID_INPUT: &str = "Input is invalid";

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub fn v3_body(status: u16, title: &str, errors: &FieldErrors) -> Value {
    json!({"status": status, "title": title, "type": V3_ERROR_TYPE, "errors": errors})
}

pub fn v3(status: u16, title: &str, errors: &FieldErrors) -> Response {
    (status_code(status), Json(v3_body(status, title, errors))).into_response()
}

pub fn v2(status: u16, message: &str) -> Response {
    (
        status_code(status),
        Json(json!([{"status": status, "message": message}])),
    )
        .into_response()
}

pub fn graphql(status: u16, message: &str) -> Response {
    (
        status_code(status),
        Json(json!({"data": null, "errors": [{"message": message}]})),
    )
        .into_response()
}

/// An error in the shape of `flavor`.
pub fn for_flavor(flavor: Flavor, status: u16, message: &str) -> Response {
    match flavor {
        Flavor::V3 => v3(status, message, &FieldErrors::new()),
        Flavor::V2 => v2(status, message),
        Flavor::Graphql => graphql(status, message),
    }
}

/// A generic message for an injected status.
pub fn reason(status: u16) -> &'static str {
    match status {
        401 => INVALID_TOKEN,
        403 => MISSING_SCOPE,
        404 => NOT_FOUND,
        422 => INVALID_INPUT,
        429 => TOO_MANY_REQUESTS,
        _ => status_code(status).canonical_reason().unwrap_or("Error"),
    }
}

/// 422 for a write with a missing, empty or non-JSON body.
pub fn unprocessable_body(flavor: Flavor, detail: &str) -> Response {
    match flavor {
        Flavor::V3 => {
            let mut errors = FieldErrors::new();
            errors.insert("body".into(), detail.into());
            v3(422, INVALID_INPUT, &errors)
        }
        Flavor::V2 => v2(422, detail),
        Flavor::Graphql => graphql(422, detail),
    }
}
