//! Tokenizers (chapter 2): from text to token ids and back.
//!
//! Every tokenizer here keeps the same contract, the [`Tokenizer`] trait:
//! `encode` turns text into ids, `decode` turns ids back into text, and the
//! vocabulary can be queried in both directions. The implementations follow
//! the chapter:
//!
//! | type | book | what it is |
//! |---|---|---|
//! | [`SimpleTokenizerV1`] | §2.3 | split on punctuation and whitespace; a vocabulary of the words of one text |
//! | [`SimpleTokenizerV2`] | §2.4 | the same, plus `<\|endoftext\|>` and `<\|unk\|>` for unknown words |
//! | [`Gpt2Tokenizer`] | §2.5 | GPT-2's byte pair encoding, through Hugging Face's `tokenizers` crate (what `tiktoken` gives the book) |
//! | [`BpeTokenizerSimple`] | bonus | byte pair encoding from scratch, to read: `get_stats`, `merge`, train, encode, decode |
//! | [`BpeTokenizer`] | bonus | the same merges and ids, fast: incremental training, a cache, GPT-2's files |
//! | [`qwen_llama::Qwen3Tokenizer`], [`qwen_llama::Llama3Tokenizer`] | ch. 5 bonus | the open models' `tokenizer.json`, their special tokens and chat formats ([`qwen_llama::ChatFormat`]) |
//!
//! ```
//! use llm_core::text::tokenizer::{SimpleTokenizerV2, Tokenizer};
//!
//! let tokenizer = SimpleTokenizerV2::from_text("the cat sat on the mat.");
//! let ids = tokenizer.encode("the dog sat.")?;
//! assert_eq!(tokenizer.decode(&ids)?, "the <|unk|> sat.");
//! # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
//! ```

use crate::files::FileError;
use std::path::PathBuf;

pub mod bpe;
pub mod bpe_simple;
pub mod byte_level;
pub mod gpt2;
pub mod qwen_llama;
pub mod simple;

pub use bpe::BpeTokenizer;
pub use bpe_simple::BpeTokenizerSimple;
pub use gpt2::Gpt2Tokenizer;
pub use simple::{SimpleTokenizerV1, SimpleTokenizerV2};

/// The token that separates unrelated texts (GPT-2 id 50256).
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// The id of [`END_OF_TEXT`] in GPT-2's vocabulary (its last entry).
pub const GPT2_END_OF_TEXT_ID: u32 = 50256;
/// The token [`SimpleTokenizerV2`] puts in place of words it does not know.
pub const UNKNOWN: &str = "<|unk|>";

/// The result type of this module.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// The contract every tokenizer keeps (in the spirit of minbpe's `Tokenizer`).
///
/// ```
/// use llm_core::text::tokenizer::{SimpleTokenizerV1, Tokenizer};
///
/// fn round_trip(t: &dyn Tokenizer, text: &str) -> llm_core::text::tokenizer::Result<String> {
///     t.decode(&t.encode(text)?)
/// }
/// let t = SimpleTokenizerV1::from_text("Hello, world.");
/// assert_eq!(round_trip(&t, "world, Hello.")?, "world, Hello.");
/// assert_eq!(t.vocab_size(), 4);
/// assert_eq!(t.token_to_id("Hello"), Some(2));
/// assert_eq!(t.id_to_token(2).as_deref(), Some("Hello"));
/// # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
/// ```
pub trait Tokenizer {
    /// Text to token ids.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Token ids to text.
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// Number of ids in the vocabulary (the largest id plus one).
    fn vocab_size(&self) -> usize;
    /// The id of a token, if it is in the vocabulary. For the byte-level
    /// tokenizers a token is written as in GPT-2's `encoder.json` (a leading
    /// space shows as `Ġ`).
    fn token_to_id(&self, token: &str) -> Option<u32>;
    /// The token of an id, written as [`Tokenizer::token_to_id`] takes it.
    fn id_to_token(&self, id: u32) -> Option<String>;
}

/// What can go wrong while building, loading or using a tokenizer. Every
/// message names the token, id, file or line concerned.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A word the vocabulary does not hold ([`SimpleTokenizerV1`] has no `<|unk|>`).
    #[error("token {token:?} is not in the vocabulary{hint}")]
    UnknownToken { token: String, hint: &'static str },
    /// An id outside the vocabulary.
    #[error("token id {id} is not in the vocabulary (size {vocab_size}){}", if *id < 0 { "; a negative id such as the loss's ignore index marks a padded target: mask them out before decoding" } else { "" })]
    UnknownId { id: i64, vocab_size: usize },
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file's content is not what it should be.
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// A line of a merges file (`vocab.bpe`) is malformed.
    #[error("{path}:{line}: {reason}")]
    BadMerge {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A vocabulary given in memory is inconsistent.
    #[error("invalid vocabulary: {0}")]
    BadVocab(String),
    /// Training was asked for something impossible.
    #[error("cannot train: {0}")]
    Training(String),
    /// The pre-tokenization regex failed on a text (for example its
    /// backtracking limit was reached).
    #[error("regex {pattern:?}: {message}")]
    Regex { pattern: String, message: String },
    /// An error from Hugging Face's `tokenizers` crate.
    #[error("{context}: {message}")]
    Backend { context: String, message: String },
    /// A named data file could not be resolved.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
}

impl TokenizerError {
    pub(crate) fn bad_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        TokenizerError::BadFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Compile a regex, turning a failure into a [`TokenizerError::Regex`].
pub(crate) fn compile(pattern: &str) -> Result<fancy_regex::Regex> {
    fancy_regex::Regex::new(pattern).map_err(|e| TokenizerError::Regex {
        pattern: pattern.to_string(),
        message: e.to_string(),
    })
}

/// Turn a failed regex match into a [`TokenizerError::Regex`].
pub(crate) fn regex_err(
    re: &fancy_regex::Regex,
) -> impl Fn(fancy_regex::Error) -> TokenizerError + '_ {
    move |e| TokenizerError::Regex {
        pattern: re.as_str().to_string(),
        message: e.to_string(),
    }
}
