//! Rotation: the pure state machine ([`state`]) and the driver that does its IO ([`driver`]).
pub mod driver;
pub mod state;
mod stored;

pub use driver::{
    what_to_do, Begin, Clock, Engine, EngineError, EngineSettings, Jitter, RunResult, Supplied,
    Wait,
};
pub use state::{Attempt, AttemptSummary, Outcome, Phase, StateRecord};
