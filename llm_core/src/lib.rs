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
//! The folders follow the book's pipeline; each module holds one concept:
//!
//! | module | what it holds |
//! |---|---|
//! | **ground floor** | |
//! | [`settings`] | a notebook's tunable settings, overridable from the environment |
//! | [`data`] | named data files: a local directory, the cache, or a verified download |
//! | [`files`] | crash-safe (write, then rename) files, safetensors weights and directories |
//! | [`rng`] | libtorch's generator state (exact resumes) and the PyTorch/NumPy shuffles (`randperm`, `Mt19937`, `numpy_permutation`) |
//! | [`plot`] | line charts and heatmaps as SVG, inline in Jupyter or saved to a file |
//! | [`progress`] | a progress line for long loops |
//! | [`distributed`] | data-parallel training on torch.distributed's engine (c10d: TCPStore, Gloo), launched by torchrun |
//! | [`display`] | rich output (SVG, HTML) in a Jupyter cell |
//! | **[`text`]: ch. 2** | |
//! | [`text::tokenizer`] | `SimpleTokenizerV1`/`V2`, GPT-2's BPE (`Gpt2Tokenizer`) and BPE from scratch (`BpeTokenizerSimple` to read, `BpeTokenizer` to use) |
//! | [`text::dataset`] | `GptDatasetV1` (sliding windows of token ids) and `create_dataloader_v1` |
//! | [`text::loader`] | mini-batches in the order PyTorch's `DataLoader` draws them |
//! | [`text::shards`] | pre-tokenized `uint16` shards (nanoGPT's `train.bin`), memory-mapped for corpora bigger than memory; encoding on every core |
//! | **[`model`]: ch. 3–4** | |
//! | [`model::init`] | layers initialised exactly as PyTorch's defaults (so seeded runs match the book) |
//! | [`model::lora`] | appendix E: `LoraLayer`, the low-rank update `(alpha/rank) x A B` |
//! | [`model::linear`] | `Linear`, the models' `nn.Linear`, which may carry a `LoraLayer` (the book's `LinearWithLoRA`) |
//! | [`model::attention`] | ch. 3: self-attention, causal and multi-head attention (and a fused variant) |
//! | [`model::gpt`] | ch. 4: `GptConfig`, `LayerNorm`, GELU, `TransformerBlock`, `GptModel`, `generate_text_simple` |
//! | [`model::kv_cache`] | ch. 3–4 bonus: the KV cache (simple, preallocated, sliding window) for fast generation |
//! | [`model::generate`] | ch. 5: `generate` with temperature, top-k and an end-of-text id; cached and batched generation |
//! | [`model::gpt2_weights`] | ch. 5: OpenAI's GPT-2 weights in the Hugging Face layout, loaded and exported |
//! | **ch. 5 bonus: Llama 3.2 and Qwen3** | |
//! | [`model::rms_norm`] | `RmsNorm`, the layer norm of Llama and Qwen |
//! | [`model::rope`] | rotary position embeddings: `compute_rope_params`, `apply_rope`, Llama 3's frequency scaling |
//! | [`model::swiglu`] | the SwiGLU `FeedForward` (`fc1`, `fc2`, `fc3`) |
//! | [`model::gqa`] | `GroupedQueryAttention` (`n_kv_groups`, Qwen3's QK-norm), with the KV cache |
//! | [`model::open_model`] | `OpenModelConfig` (presets, Hugging Face `config.json`), `Llama3Model` / `Qwen3Model` |
//! | [`model::hf_weights`] | open weights from Hugging Face safetensors (single or sharded), float32 or bfloat16 |
//! | [`model::chat`] | `Chat`: a conversation in the model's chat format, streamed answers |
//! | **[`train`]: ch. 5, appendix D** | |
//! | [`train::loss`] | `calc_loss_batch`, `calc_loss_loader`, perplexity |
//! | [`train::optim`] | `AdamW` (its state can be saved) and gradient clipping |
//! | [`train::history`] | `TrainHistory`: what a run records (losses, tokens seen, learning rates, samples) |
//! | [`train::pretrain`] | `train_model_simple`, appendix D's `train_model` and its learning-rate schedule |
//! | [`train::checkpoint`] | training checkpoints: weights, optimizer, generator and history, for exact resumes |
//! | **[`finetune`]: ch. 6–7, appendix E** | |
//! | [`finetune::spam`] | ch. 6: the SMS Spam Collection, the book's balanced split, `SpamDataset` |
//! | [`finetune::classifier`] | ch. 6: the classification head, frozen layers, last-token loss and accuracy, `train_classifier_simple`, `classify_review` |
//! | [`finetune::lora`] | appendix E: `replace_linear_with_lora`, merging, adapter files |
//! | [`finetune::instruct`] | ch. 7: instruction data, the Alpaca and Phi-3 prompt formats, `InstructionDataset`, the padding `custom_collate_fn`, response generation |
//! | [`finetune::dpo`] | ch. 7 bonus: preference data, `PreferenceDataset`, its collate function, the DPO loss, `train_model_dpo_simple` |
//! | **[`eval`]: ch. 7** | |
//! | [`eval::metrics`] | exact match and ROUGE-L of responses against references (offline) |
//! | [`eval::ollama`] | an LLM judge through a local Ollama server (`query_model`, `generate_model_scores`) |
//!
//! No module imports one from a later chapter (`tests/layering.rs` checks).

pub use plotters;
pub use serde_json;
pub use tch;
pub use tokenizers;

pub mod data;
pub mod display;
pub mod distributed;
pub mod files;
pub mod plot;
pub mod progress;
pub mod rng;
pub mod settings;

pub mod eval;
pub mod finetune;
pub mod model;
pub mod text;
pub mod train;

pub use settings::Settings;

/// Tests that seed or draw from libtorch's global generator must not interleave: take this
/// lock first (cargo runs tests on several threads).
#[cfg(test)]
pub(crate) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
