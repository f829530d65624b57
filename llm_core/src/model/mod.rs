//! Chapters 3 and 4 (and their bonus material): attention, the GPT model, generation and weights.

pub mod attention;
pub mod generate;
pub mod gpt;
pub mod gpt2_weights;
pub mod init;
pub mod kv_cache;
pub mod linear;
pub mod lora;
