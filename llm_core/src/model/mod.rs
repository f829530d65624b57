//! Chapters 3 and 4 (and their bonus material): attention, the GPT model,
//! generation and weights; then the open-weight models that followed GPT-2
//! (Llama 3, Qwen3) and their parts.

pub mod attention;
pub mod chat;
pub mod generate;
pub mod gpt;
pub mod gpt2_weights;
pub mod gqa;
pub mod hf_weights;
pub mod init;
pub mod kv_cache;
pub mod linear;
pub mod lora;
pub mod open_model;
pub mod precision;
pub mod rms_norm;
pub mod rope;
pub mod swiglu;
