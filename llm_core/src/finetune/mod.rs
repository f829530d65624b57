//! Chapters 6 and 7: fine-tuning for classification and for following instructions.

pub mod classifier;
pub mod instruct;
pub mod spam;
