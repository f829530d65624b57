//! Chapter 2: from text to token ids to training batches.

pub mod dataset;
pub mod loader;
pub mod shards;
pub mod tokenizer;
