//! The tokenizers of Qwen3 and Llama 3 (the book's `Qwen3Tokenizer`,
//! `Llama3Tokenizer` and `ChatFormat`), read from the model's
//! `tokenizer.json` through Hugging Face's `tokenizers` crate, with the chat
//! formats the instruction-tuned models were trained on.
//!
//! A chat model does not see bare text: each turn is wrapped in special
//! tokens that say who speaks. Qwen3 (ChatML):
//! ```text
//! <|im_start|>user
//! What is 2 + 2?<|im_end|>
//! <|im_start|>assistant
//! <think>
//!
//! </think>
//!
//! ```
//! (the empty `<think>` block switches Qwen3's reasoning off; with thinking
//! on, the model writes its reasoning there itself). Llama 3:
//! ```text
//! <|begin_of_text|><|start_header_id|>system<|end_header_id|>
//!
//! You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>
//!
//! What is 2 + 2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>
//!
//! ```
//! The ids equal those of the book's code (`tests/open_models.rs` checks
//! them against `llms_from_scratch` on a small tokenizer).
//!
//! ```
//! use llm_core::text::tokenizer::qwen_llama::{ChatMessage, Qwen3Tokenizer};
//!
//! let text = Qwen3Tokenizer::render_chat(&[ChatMessage::user("Hi!")], true, false);
//! assert_eq!(text, "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
//! ```

use std::collections::HashMap;
use std::path::Path;

use tokenizers::Tokenizer as HfTokenizer;

use super::{Result, Tokenizer, TokenizerError};

/// Who speaks in a chat turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The name the chat formats write.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

fn backend(context: impl std::fmt::Display) -> impl FnOnce(tokenizers::Error) -> TokenizerError {
    let context = context.to_string();
    move |e| TokenizerError::Backend {
        context,
        message: e.to_string(),
    }
}

/// A `tokenizer.json` and the ids of the special tokens it knows from `names`.
fn load(path: &Path, names: &[&str]) -> Result<(HfTokenizer, HashMap<String, u32>)> {
    if !path.is_file() {
        return Err(TokenizerError::bad_file(
            path,
            "no such file (the model's tokenizer.json)",
        ));
    }
    let inner = HfTokenizer::from_file(path).map_err(|e| {
        TokenizerError::bad_file(
            path,
            format!("not a tokenizer.json the tokenizers crate can read: {e}"),
        )
    })?;
    let special = names
        .iter()
        .filter_map(|t| inner.token_to_id(t).map(|id| (t.to_string(), id)))
        .collect();
    Ok((inner, special))
}

/// Encode `text` as the book's wrappers do: the special tokens in `special`
/// by their ids wherever they appear, the text between them with the BPE
/// (no special tokens added).
fn encode_with_specials(
    inner: &HfTokenizer,
    special: &HashMap<String, u32>,
    text: &str,
) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        // the earliest special token in the rest (the longest at a tie)
        let next = special
            .iter()
            .filter_map(|(tok, &id)| {
                rest.find(tok.as_str())
                    .map(|at| (at, std::cmp::Reverse(tok.len()), id))
            })
            .min();
        let (plain, after) = match next {
            Some((at, std::cmp::Reverse(len), _)) => (&rest[..at], Some(&rest[at + len..])),
            None => (rest, None),
        };
        if !plain.is_empty() {
            let enc = inner
                .encode(plain, false)
                .map_err(backend("encoding text"))?;
            ids.extend_from_slice(enc.get_ids());
        }
        match (next, after) {
            (Some((_, _, id)), Some(after)) => {
                ids.push(id);
                rest = after;
            }
            _ => break,
        }
    }
    Ok(ids)
}

fn decode(inner: &HfTokenizer, ids: &[u32]) -> Result<String> {
    let vocab = inner.get_vocab_size(true);
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(TokenizerError::UnknownId {
            id: bad as i64,
            vocab_size: vocab,
        });
    }
    inner.decode(ids, false).map_err(backend("decoding ids"))
}

/// The book's `Qwen3Tokenizer`: Qwen3's byte-level BPE with its special
/// tokens, and optionally the chat wrapping of a single user message.
#[derive(Debug, Clone)]
pub struct Qwen3Tokenizer {
    inner: HfTokenizer,
    special: HashMap<String, u32>,
    /// Wrap the text given to [`Qwen3Tokenizer::encode`] as a user turn.
    pub apply_chat_template: bool,
    /// End the wrapped text with the assistant's header.
    pub add_generation_prompt: bool,
    /// Leave the assistant free to think (no empty `<think>` block).
    pub add_thinking: bool,
    /// `<|im_end|>` for the chat models, `<|endoftext|>` for the base ones.
    pub eos_token_id: u32,
    /// `<|endoftext|>`.
    pub pad_token_id: u32,
}

/// Qwen3's special tokens, as the book lists them.
pub const QWEN3_SPECIALS: [&str; 16] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<think>",
    "</think>",
];

impl Qwen3Tokenizer {
    /// Read `tokenizer.json`; `repo_id` (e.g. `"Qwen/Qwen3-0.6B"`) picks the
    /// end token as the book does: `<|im_end|>` unless the name says `Base`.
    /// The chat wrapping is on, with the generation prompt, thinking off.
    pub fn from_file(path: impl AsRef<Path>, repo_id: Option<&str>) -> Result<Self> {
        let path = path.as_ref();
        let (inner, special) = load(path, &QWEN3_SPECIALS)?;
        let pad = *special.get("<|endoftext|>").ok_or_else(|| {
            TokenizerError::bad_file(
                path,
                "no <|endoftext|> token: is this a Qwen3 tokenizer.json?",
            )
        })?;
        let base = repo_id.is_none_or(|r| r.contains("Base"));
        let eos_name = if base { "<|endoftext|>" } else { "<|im_end|>" };
        Ok(Qwen3Tokenizer {
            eos_token_id: special.get(eos_name).copied().unwrap_or(pad),
            pad_token_id: pad,
            inner,
            special,
            apply_chat_template: true,
            add_generation_prompt: true,
            add_thinking: false,
        })
    }

    /// The id of a special token (`"<|im_end|>"`, `"<think>"`, …).
    pub fn special_id(&self, token: &str) -> Option<u32> {
        self.special.get(token).copied()
    }

    /// A conversation in Qwen3's chat format (ChatML), ending with the
    /// assistant's header when `add_generation_prompt`, and with an empty
    /// `<think>` block unless `thinking`.
    pub fn render_chat(
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        thinking: bool,
    ) -> String {
        let mut s = String::new();
        for m in messages {
            s += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role.as_str(), m.content);
        }
        if add_generation_prompt {
            s += "<|im_start|>assistant";
            s += if thinking {
                "\n"
            } else {
                "\n<think>\n\n</think>\n\n"
            };
        }
        s
    }

    /// The ids of a conversation in the chat format (see
    /// [`Qwen3Tokenizer::render_chat`]).
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        thinking: bool,
    ) -> Result<Vec<u32>> {
        encode_with_specials(
            &self.inner,
            &self.special,
            &Self::render_chat(messages, add_generation_prompt, thinking),
        )
    }

    /// The book's `encode`: a lone special token is its id; otherwise the
    /// text is wrapped as one user turn when `apply_chat_template` (with the
    /// generation prompt and thinking switch of this tokenizer), then
    /// encoded with the special tokens recognised.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        let stripped = text.trim();
        if let Some(&id) = self
            .special
            .get(stripped)
            .filter(|_| !stripped.contains('\n'))
        {
            return Ok(vec![id]);
        }
        let text = if self.apply_chat_template {
            Self::render_chat(
                &[ChatMessage::user(text)],
                self.add_generation_prompt,
                self.add_thinking,
            )
        } else {
            text.to_string()
        };
        encode_with_specials(&self.inner, &self.special, &text)
    }

    /// The underlying `tokenizers` tokenizer (e.g. for `decode_stream`).
    pub fn inner(&self) -> &HfTokenizer {
        &self.inner
    }
}

impl Tokenizer for Qwen3Tokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_text(text)
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        decode(&self.inner, ids)
    }
    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

/// Llama 3's special tokens that the chat format uses.
pub const LLAMA3_SPECIALS: [&str; 5] = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
];

/// The book's `Llama3Tokenizer`: Llama 3's BPE from its `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct Llama3Tokenizer {
    inner: HfTokenizer,
    special: HashMap<String, u32>,
}

impl Llama3Tokenizer {
    /// Read `tokenizer.json` (it must know Llama 3's chat tokens).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (inner, special) = load(path, &LLAMA3_SPECIALS)?;
        if let Some(missing) = LLAMA3_SPECIALS.iter().find(|t| !special.contains_key(**t)) {
            return Err(TokenizerError::bad_file(
                path,
                format!("no {missing} token: is this a Llama 3 tokenizer.json?"),
            ));
        }
        Ok(Llama3Tokenizer { inner, special })
    }

    /// The id of one of [`LLAMA3_SPECIALS`].
    pub fn special_id(&self, token: &str) -> Option<u32> {
        self.special.get(token).copied()
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &HfTokenizer {
        &self.inner
    }
}

impl Tokenizer for Llama3Tokenizer {
    /// Text to ids, special tokens recognised, none added.
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        encode_with_specials(&self.inner, &self.special, text)
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        decode(&self.inner, ids)
    }
    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

/// The book's `ChatFormat` for Llama 3's instruct models: each turn is a
/// header (`<|start_header_id|>role<|end_header_id|>\n\n`, its parts
/// encoded one by one as the book does), the content and `<|eot_id|>`.
#[derive(Debug, Clone)]
pub struct ChatFormat {
    pub tokenizer: Llama3Tokenizer,
    /// The system message when none is given.
    pub default_system: String,
}

impl ChatFormat {
    /// The format over `tokenizer`, with the book's default system message.
    pub fn new(tokenizer: Llama3Tokenizer) -> Self {
        ChatFormat {
            tokenizer,
            default_system: "You are a helpful assistant.".into(),
        }
    }

    fn special(&self, token: &str) -> u32 {
        self.tokenizer.special[token]
    }

    fn header(&self, role: Role) -> Result<Vec<u32>> {
        let mut ids = vec![self.special("<|start_header_id|>")];
        ids.extend(self.tokenizer.encode(role.as_str())?);
        ids.push(self.special("<|end_header_id|>"));
        ids.extend(self.tokenizer.encode("\n\n")?);
        Ok(ids)
    }

    /// The book's `encode`: begin-of-text, the system turn (`system` or the
    /// default), the user turn, and the assistant's header.
    pub fn encode(&self, user_message: &str, system_message: Option<&str>) -> Result<Vec<u32>> {
        let system = system_message.unwrap_or(&self.default_system);
        self.encode_chat(&[ChatMessage::system(system), ChatMessage::user(user_message)])
    }

    /// A whole conversation, then the assistant's header. Without a system
    /// turn first, the default system message is put in front.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let mut ids = vec![self.special("<|begin_of_text|>")];
        let mut turns: Vec<ChatMessage> = messages.to_vec();
        if turns.first().is_none_or(|m| m.role != Role::System) {
            turns.insert(0, ChatMessage::system(self.default_system.clone()));
        }
        for m in &turns {
            ids.extend(self.header(m.role)?);
            ids.extend(self.tokenizer.encode(&m.content)?);
            ids.push(self.special("<|eot_id|>"));
        }
        ids.extend(self.header(Role::Assistant)?);
        Ok(ids)
    }

    /// Ids to text.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }
}
