//! # llm_core
//!
//! The library behind the notebooks of *llm-from-scratch-rs*, the Rust companion
//! to "Build a Large Language Model (From Scratch)" (S. Raschka). Each module
//! holds one concept of the book, under the book's names, on libtorch through
//! [`tch`].
//!
//! A notebook's first cell is the single line
//!
//! ```text
//! :dep llm_core = { path = "../llm_core" }
//! ```
//!
//! and everything else a notebook needs is re-exported from here: [`tch`],
//! [`plotters`], [`serde_json`] and [`tokenizers`].
//!
//! | module | what it holds |
//! |---|---|
//! | [`settings`] | a notebook's tunable settings, overridable from the environment |
//! | [`data`] | named data files: a local directory, the cache, or a verified download |
//! | [`init`] | layers initialised exactly as PyTorch's defaults (so seeded runs match the book) |
//! | [`loader`] | mini-batch index order drawn from libtorch's RNG as PyTorch's `DataLoader` does |
//! | [`checkpoint`] | crash-safe (write, then rename) safetensors files and training checkpoints |
//! | [`plot`] | line charts as SVG, inline in Jupyter or saved to a file |
//! | [`progress`] | an in-place progress line for long loops |
//! | [`rng`] | libtorch's generator state, saved and restored (exact resumes) |
//! | [`tokenizer`] | ch. 2: `SimpleTokenizerV1`/`V2`, GPT-2's BPE (`Gpt2Tokenizer`) and BPE from scratch (`BpeTokenizer`) |
//! | [`dataset`] | ch. 2: `GptDatasetV1` (sliding windows of token ids) and `create_dataloader_v1` |
//! | [`attention`] | ch. 3: self-attention, causal and multi-head attention (and a fused variant) |
//! | [`model`] | ch. 4: `GptConfig`, `LayerNorm`, GELU, `TransformerBlock`, `GptModel`, `generate_text_simple` |
//! | [`kv_cache`] | ch. 3–4 bonus: the KV cache (simple, preallocated, sliding window) for fast generation |
//! | [`loss`] | ch. 5: `calc_loss_batch`, `calc_loss_loader`, perplexity |
//! | [`generate`] | ch. 5: `generate` with temperature, top-k and an end-of-text id; `text_to_token_ids`, `token_ids_to_text` |
//! | [`optim`] | ch. 5: `AdamW` (its state can be saved) and gradient clipping |
//! | [`train`] | ch. 5 and appendix D: `train_model_simple`, `train_model`, the learning-rate schedule |
//! | [`classifier`] | ch. 6: the classification head, frozen layers, last-token loss and accuracy, `train_classifier_simple`, `classify_review` |
//! | [`spam`] | ch. 6: the SMS Spam Collection, the book's balanced split, `SpamDataset` |
//! | [`instruct`] | ch. 7: instruction data, the Alpaca and Phi-3 prompt formats, `InstructionDataset`, the padding `custom_collate_fn`, response generation |
//! | [`metrics`] | ch. 7: exact match and ROUGE-L of responses against references (offline) |
//! | [`ollama`] | ch. 7: an LLM judge through a local Ollama server (`query_model`, `generate_model_scores`) |
//! | [`gpt2_weights`] | ch. 5: OpenAI's GPT-2 weights in the Hugging Face layout, loaded and exported |

pub use plotters;
pub use serde_json;
pub use tch;
pub use tokenizers;

pub mod attention;
pub mod checkpoint;
pub mod classifier;
pub mod data;
pub mod dataset;
pub mod display;
pub mod generate;
pub mod gpt2_weights;
pub mod init;
pub mod instruct;
pub mod kv_cache;
pub mod loader;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod ollama;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod rng;
pub mod settings;
pub mod spam;
pub mod tokenizer;
pub mod train;

pub use settings::Settings;

/// Tests that seed libtorch's global generator must not interleave: take this
/// lock first (cargo runs tests on several threads).
#[cfg(test)]
pub(crate) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
