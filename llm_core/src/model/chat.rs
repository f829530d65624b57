//! Chatting with an instruction-tuned open model: a conversation's history
//! in the model's chat format, answers generated through the KV cache and
//! streamed as text while they are generated.
//!
//! ```no_run
//! use llm_core::model::chat::Chat;
//! use llm_core::model::hf_weights::load_open_model;
//! use llm_core::text::tokenizer::qwen_llama::Qwen3Tokenizer;
//! use llm_core::tch::{Device, Kind};
//!
//! let dir = llm_core::data::open_model_dir("Qwen/Qwen3-0.6B")?;
//! let (_vs, model) = load_open_model(&dir, Device::Cpu, Kind::BFloat16)?;
//! let tokenizer = Qwen3Tokenizer::from_file(dir.join("tokenizer.json"), Some("Qwen/Qwen3-0.6B"))?;
//! let mut chat = Chat::qwen3(&model, tokenizer);
//! let reply = chat.send("Give me a short introduction to large language models.", |text| print!("{text}"))?;
//! println!("\n{reply}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::Instant;

use crate::model::generate::{generate_stream, GenerateError, GenerationConfig};
use crate::model::kv_cache::KvCache;
use crate::model::open_model::OpenModel;
use crate::text::tokenizer::qwen_llama::{ChatFormat, ChatMessage, Qwen3Tokenizer};
use crate::text::tokenizer::{Tokenizer, TokenizerError};

/// The chat format of a conversation.
#[derive(Debug, Clone)]
pub enum ChatTokenizer {
    /// Qwen3's ChatML, with or without thinking.
    Qwen3(Qwen3Tokenizer),
    /// Llama 3's instruct headers.
    Llama3(ChatFormat),
}

/// What can stop a chat turn.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
}

/// One answer and how it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReply {
    pub text: String,
    /// Tokens of the prompt (the whole conversation so far).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub new_tokens: usize,
    /// Seconds from the prompt to the last token.
    pub seconds: f64,
}

impl ChatReply {
    /// Generated tokens per second (the prompt's time included).
    pub fn tokens_per_second(&self) -> f64 {
        self.new_tokens as f64 / self.seconds.max(1e-9)
    }
}

impl fmt::Display for ChatReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{} prompt tokens, {} new tokens in {:.2} s: {:.1} tokens/s]",
            self.prompt_tokens,
            self.new_tokens,
            self.seconds,
            self.tokens_per_second()
        )
    }
}

/// A conversation with a model: the history, the format, the sampling
/// settings, and the KV cache.
pub struct Chat<'m> {
    pub model: &'m OpenModel,
    pub tokenizer: ChatTokenizer,
    /// The turns so far (a system message first, if any).
    pub history: Vec<ChatMessage>,
    /// Sampling and length; the stop tokens are set from the format.
    pub settings: GenerationConfig,
    /// Qwen3: let the model think before it answers.
    pub thinking: bool,
    cache: KvCache,
}

impl<'m> Chat<'m> {
    /// A chat with a Qwen3 model: stops at `<|im_end|>` or
    /// `<|endoftext|>`, thinking off, greedy, 512 new tokens at most.
    pub fn qwen3(model: &'m OpenModel, tokenizer: Qwen3Tokenizer) -> Self {
        let stop_ids = ["<|im_end|>", "<|endoftext|>"]
            .iter()
            .filter_map(|t| tokenizer.special_id(t))
            .map(i64::from)
            .collect();
        Self::with(model, ChatTokenizer::Qwen3(tokenizer), stop_ids)
    }

    /// A chat with a Llama 3 instruct model: stops at `<|eot_id|>` or
    /// `<|end_of_text|>`.
    pub fn llama3(model: &'m OpenModel, format: ChatFormat) -> Self {
        let stop_ids = ["<|eot_id|>", "<|end_of_text|>"]
            .iter()
            .filter_map(|t| format.tokenizer.special_id(t))
            .map(i64::from)
            .collect();
        Self::with(model, ChatTokenizer::Llama3(format), stop_ids)
    }

    fn with(model: &'m OpenModel, tokenizer: ChatTokenizer, stop_ids: Vec<i64>) -> Self {
        let known = match &tokenizer {
            ChatTokenizer::Qwen3(t) => t.vocab_size(),
            ChatTokenizer::Llama3(f) => f.tokenizer.vocab_size(),
        } as i64;
        Chat {
            model,
            tokenizer,
            history: Vec::new(),
            settings: GenerationConfig {
                max_new_tokens: 512,
                stop_ids,
                // the tokenizer may know fewer ids than the model has rows
                vocab_limit: Some(known.min(model.cfg.vocab_size)),
                ..Default::default()
            },
            thinking: false,
            cache: KvCache::simple(model.trf_blocks.len()),
        }
    }

    /// The ids of the conversation so far, ending with the assistant's header.
    pub fn prompt_ids(&self) -> Result<Vec<u32>, TokenizerError> {
        match &self.tokenizer {
            ChatTokenizer::Qwen3(t) => t.encode_chat(&self.history, true, self.thinking),
            ChatTokenizer::Llama3(f) => f.encode_chat(&self.history),
        }
    }

    fn decode_stream_step(&self, ids: &[u32], shown: &mut usize) -> Result<String, TokenizerError> {
        // decode everything so far and pass on what is new, holding back an
        // incomplete UTF-8 character (shown as U+FFFD) until it is complete
        let text = match &self.tokenizer {
            ChatTokenizer::Qwen3(t) => t.decode(ids)?,
            ChatTokenizer::Llama3(f) => f.decode(ids)?,
        };
        if text.ends_with('\u{FFFD}') || text.len() < *shown {
            return Ok(String::new());
        }
        let new = text[*shown..].to_string();
        *shown = text.len();
        Ok(new)
    }

    /// Add `message` as the user's turn, generate the answer (calling
    /// `on_text` with each new piece of text as it is decoded), add the
    /// answer to the history and return it.
    pub fn send(
        &mut self,
        message: &str,
        mut on_text: impl FnMut(&str),
    ) -> Result<ChatReply, ChatError> {
        self.history.push(ChatMessage::user(message));
        let prompt: Vec<i64> = self.prompt_ids()?.into_iter().map(i64::from).collect();
        let start = Instant::now();
        let mut ids: Vec<u32> = Vec::new();
        let mut shown = 0;
        let mut failed = None;
        let mut cache = std::mem::replace(&mut self.cache, KvCache::simple(0));
        let result = generate_stream(self.model, &prompt, &self.settings, &mut cache, |id| {
            ids.push(id as u32);
            match self.decode_stream_step(&ids, &mut shown) {
                Ok(piece) if !piece.is_empty() => on_text(&piece),
                Ok(_) => {}
                Err(e) => failed = Some(e),
            }
        });
        self.cache = cache;
        let new = result?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        let ids: Vec<u32> = new.iter().map(|&i| i as u32).collect();
        let text = match &self.tokenizer {
            ChatTokenizer::Qwen3(t) => t.decode(&ids)?,
            ChatTokenizer::Llama3(f) => f.decode(&ids)?,
        };
        self.history.push(ChatMessage::assistant(text.clone()));
        Ok(ChatReply {
            text,
            prompt_tokens: prompt.len(),
            new_tokens: new.len(),
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Forget the conversation (a system message at the start stays).
    pub fn clear(&mut self) {
        self.history
            .retain(|m| m.role == crate::text::tokenizer::qwen_llama::Role::System);
    }
}
