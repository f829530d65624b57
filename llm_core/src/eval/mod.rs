//! Chapter 7: scoring a model's responses.

pub mod metrics;
pub mod ollama;
