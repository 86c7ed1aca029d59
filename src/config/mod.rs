//! Typed configuration: raw TOML structs, validation with located errors, the validated model.
mod model;
pub use model::*;
