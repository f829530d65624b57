//! GPT-2's tokenizer (§2.5), through Hugging Face's `tokenizers` crate.
//!
//! The book uses `tiktoken.get_encoding("gpt2")`. The same tokenizer is a
//! byte-level BPE model built from OpenAI's two files (`encoder.json` and
//! `vocab.bpe`, see [`byte_level`](super::byte_level)), GPT-2's
//! pre-tokenization regex without a prefix space, a byte-level decoder, and
//! `<|endoftext|>` (id 50256) recognised as a special token wherever it
//! appears in the text, as the book's `allowed_special={"<|endoftext|>"}`.
//! The ids equal tiktoken's (the tests check this on every case of
//! `oracles/gpt2_tokenizer_cases.json`, on the-verdict and on tiny
//! Shakespeare).
//!
//! **Speed.** Built from OpenAI's files, [`Tokenizer::encode`] runs on the
//! from-scratch [`BpeTokenizer`] loaded with the same merges, which makes the
//! same ids at about 7× the speed: the `tokenizers` crate's pipeline keeps
//! what we never use here — per-byte alignments of every piece through its
//! byte-level pre-tokenizer (6 MB/s on tiny Shakespeare, where the regex
//! alone runs at 23 MB/s), a token string and offsets for every id — and
//! encodes at 2.5 MB/s, 0.19× tiktoken; `BpeTokenizer` runs at 18 MB/s. The
//! crate's tokenizer stays inside ([`Gpt2Tokenizer::inner`]) for offsets and
//! for [`Gpt2Tokenizer::from_tokenizer_json`].
//!
//! ```no_run
//! use llm_core::text::tokenizer::{Gpt2Tokenizer, Tokenizer};
//!
//! let tokenizer = Gpt2Tokenizer::gpt2()?;
//! let text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace.";
//! let ids = tokenizer.encode(text)?;
//! assert_eq!(ids[..9], [15496, 11, 466, 345, 588, 8887, 30, 220, 50256]);
//! assert_eq!(tokenizer.decode(&ids)?, text);
//! assert_eq!(tokenizer.vocab_size(), 50257);
//! # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
//! ```

use std::path::Path;
use std::sync::Arc;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use super::byte_level::{check_vocabulary, read_encoder_json, read_vocab_bpe};
use super::{BpeTokenizer, Result, Tokenizer, TokenizerError};
use crate::files::io_err;

/// GPT-2's byte pair encoding (the book's `tiktoken.get_encoding("gpt2")`).
#[derive(Debug, Clone)]
pub struct Gpt2Tokenizer {
    inner: HfTokenizer,
    /// The same BPE, from scratch and fast (see the module docs); `None`
    /// when loaded from a `tokenizer.json`.
    fast: Option<Arc<BpeTokenizer>>,
}

fn backend(context: impl std::fmt::Display) -> impl FnOnce(tokenizers::Error) -> TokenizerError {
    let context = context.to_string();
    move |e| TokenizerError::Backend {
        context,
        message: e.to_string(),
    }
}

impl Gpt2Tokenizer {
    /// GPT-2's tokenizer from the data files `gpt2/encoder.json` and
    /// `gpt2/vocab.bpe` (resolved with [`crate::data::path`]: a local copy,
    /// the cache, or a verified download).
    pub fn gpt2() -> Result<Self> {
        let encoder = crate::data::path("gpt2/encoder.json")?;
        let vocab_bpe = crate::data::path("gpt2/vocab.bpe")?;
        Self::from_files(encoder, vocab_bpe)
    }

    /// Build the tokenizer from OpenAI's `encoder.json` and `vocab.bpe`.
    ///
    /// A missing or malformed file is an error that names it (and for
    /// `vocab.bpe` the line). Every entry of `encoder.json` that no merge
    /// produces and that is longer than one byte, such as `<|endoftext|>`,
    /// is registered as a special token.
    pub fn from_files(encoder_json: impl AsRef<Path>, vocab_bpe: impl AsRef<Path>) -> Result<Self> {
        let (encoder_json, vocab_bpe) = (encoder_json.as_ref(), vocab_bpe.as_ref());
        let encoder = read_encoder_json(encoder_json)?;
        let merges = read_vocab_bpe(vocab_bpe, Some(&encoder))?;
        let specials = check_vocabulary(&encoder, &merges, encoder_json, vocab_bpe)?;
        let fast =
            BpeTokenizer::from_parsed(&encoder, &merges, &specials, encoder_json, vocab_bpe)?;
        let specials: Vec<AddedToken> = specials
            .into_iter()
            .map(|(token, _)| AddedToken::from(token, true))
            .collect();
        let context = format!(
            "BPE from {} and {}",
            encoder_json.display(),
            vocab_bpe.display()
        );
        let merges: Vec<(String, String)> = merges.into_iter().map(|m| (m.left, m.right)).collect();
        let model = BPE::builder()
            .vocab_and_merges(encoder.into_iter().collect::<Vocab>(), merges)
            .build()
            .map_err(backend(&context))?;
        let mut inner = HfTokenizer::new(model);
        inner
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
            .with_decoder(Some(ByteLevelDecoder::default()))
            .with_post_processor(Some(ByteLevel::new(false, true, true)));
        inner
            .add_special_tokens(specials)
            .map_err(backend(&context))?;
        Ok(Gpt2Tokenizer {
            inner,
            fast: Some(Arc::new(fast)),
        })
    }

    /// Load a Hugging Face `tokenizer.json` (such as the data dir's
    /// `gpt2/tokenizer.json`, built from the same two files).
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            // the crate's own message would not name the file
            return Err(io_err(path)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file",
            ))
            .into());
        }
        let inner = HfTokenizer::from_file(path).map_err(backend(path.display()))?;
        Ok(Gpt2Tokenizer { inner, fast: None })
    }

    /// The Hugging Face tokenizer inside (for offsets, batches, ...).
    pub fn inner(&self) -> &HfTokenizer {
        &self.inner
    }
}

impl Tokenizer for Gpt2Tokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if let Some(fast) = &self.fast {
            return fast.encode(text);
        }
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(backend("GPT-2 encode"))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        // the crate skips ids it does not know; the contract says error
        if let Some(&id) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(TokenizerError::UnknownId {
                id: id.into(),
                vocab_size: self.vocab_size(),
            });
        }
        self.inner
            .decode(ids, false)
            .map_err(backend("GPT-2 decode"))
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
