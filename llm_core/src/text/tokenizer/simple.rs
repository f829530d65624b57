//! The chapter's first tokenizers (§2.3–2.4): split a text into words and
//! punctuation, number the distinct tokens, and look them up.
//!
//! The book splits with the regex `([,.:;?_!"()']|--|\s)` (keeping the
//! separators), strips every piece and drops the empty ones. [`split_text`]
//! does exactly that. The vocabulary of a text is its distinct tokens in
//! sorted order, numbered from 0 ([`vocab_from_text`]).
//!
//! ```
//! use llm_core::text::tokenizer::simple::{split_text, SimpleTokenizerV1};
//! use llm_core::text::tokenizer::Tokenizer;
//!
//! assert_eq!(split_text("Hello, world. Is this-- a test?"),
//!            ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]);
//!
//! let verdict = "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough--";
//! let tokenizer = SimpleTokenizerV1::from_text(verdict);
//! let ids = tokenizer.encode("a good fellow--")?;
//! assert_eq!(tokenizer.decode(&ids)?, "a good fellow --");
//! // V1 knows only the words of its text:
//! assert!(tokenizer.encode("Hello").is_err());
//! # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
//! ```

use std::collections::{BTreeSet, HashMap};

use super::{Result, Tokenizer, TokenizerError, END_OF_TEXT, UNKNOWN};

/// The characters the book's regex splits off as tokens of their own
/// (besides `--` and whitespace).
const SPLIT_CHARS: &[char] = &[',', '.', ':', ';', '?', '_', '!', '"', '(', ')', '\''];
/// The characters `decode` removes the space before.
const NO_SPACE_BEFORE: &[char] = &[',', '.', '?', '!', '"', '(', ')', '\''];

/// The book's preprocessing: `re.split(r'([,.:;?_!"()\']|--|\s)', text)`,
/// then `strip()` every piece and drop the empty ones.
///
/// Written out by hand (the regex has no alternative that needs
/// backtracking): at each position the punctuation class is tried first,
/// then `--`, then whitespace.
///
/// ```
/// use llm_core::text::tokenizer::simple::split_text;
/// assert_eq!(split_text("it's--\"(so)\"  ok"), ["it", "'", "s", "--", "\"", "(", "so", ")", "\"", "ok"]);
/// ```
pub fn split_text(text: &str) -> Vec<&str> {
    fn push<'a>(piece: &'a str, tokens: &mut Vec<&'a str>) {
        let piece = piece.trim();
        if !piece.is_empty() {
            tokens.push(piece);
        }
    }
    let mut tokens = Vec::new();
    let mut start = 0; // where the current word began
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let sep_len = if SPLIT_CHARS.contains(&c) {
            1
        } else if c == '-' && text[i + 1..].starts_with('-') {
            chars.next(); // the second '-'
            2
        } else if c.is_whitespace() {
            c.len_utf8()
        } else {
            continue;
        };
        push(&text[start..i], &mut tokens);
        push(&text[i..i + sep_len], &mut tokens);
        start = i + sep_len;
    }
    push(&text[start..], &mut tokens);
    tokens
}

/// The book's `decode` clean-up: `re.sub(r'\s+([,.?!"()\'])', r'\1', text)`,
/// which removes the whitespace before those punctuation marks.
///
/// ```
/// use llm_core::text::tokenizer::simple::remove_space_before_punctuation;
/// assert_eq!(remove_space_before_punctuation("Hello , world . ( yes )"), "Hello, world.( yes)");
/// ```
pub fn remove_space_before_punctuation(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending = String::new(); // a run of whitespace not yet written
    for c in text.chars() {
        if c.is_whitespace() {
            pending.push(c);
            continue;
        }
        if !NO_SPACE_BEFORE.contains(&c) {
            out.push_str(&pending);
        }
        pending.clear();
        out.push(c);
    }
    out.push_str(&pending);
    out
}

/// The vocabulary of a text as the book builds it: `sorted(set(tokens))`,
/// so token `i` of the result has id `i`.
///
/// ```
/// use llm_core::text::tokenizer::simple::vocab_from_text;
/// assert_eq!(vocab_from_text("b a, b."), [",", ".", "a", "b"]);
/// ```
pub fn vocab_from_text(text: &str) -> Vec<String> {
    let set: BTreeSet<&str> = split_text(text).into_iter().collect();
    set.into_iter().map(str::to_string).collect()
}

/// A vocabulary in both directions, ids `0..n`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vocab {
    str_to_int: HashMap<String, u32>,
    int_to_str: Vec<String>,
}

impl Vocab {
    fn from_tokens(tokens: Vec<String>) -> Self {
        let str_to_int = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Vocab {
            str_to_int,
            int_to_str: tokens,
        }
    }

    fn from_map(vocab: HashMap<String, u32>) -> Result<Self> {
        let n = vocab.len();
        let mut int_to_str = vec![None; n];
        for (token, &id) in &vocab {
            let slot = int_to_str.get_mut(id as usize).ok_or_else(|| {
                TokenizerError::BadVocab(format!(
                    "token {token:?} has id {id}, but {n} tokens need ids 0..{n}"
                ))
            })?;
            if let Some(other) = slot.replace(token.clone()) {
                return Err(TokenizerError::BadVocab(format!(
                    "tokens {other:?} and {token:?} share id {id}"
                )));
            }
        }
        Ok(Vocab {
            str_to_int: vocab,
            // every slot is filled: n distinct ids below n
            int_to_str: int_to_str.into_iter().flatten().collect(),
        })
    }

    /// Number of tokens.
    fn len(&self) -> usize {
        self.int_to_str.len()
    }

    /// The id of a token, if it is in the vocabulary.
    fn id(&self, token: &str) -> Option<u32> {
        self.str_to_int.get(token).copied()
    }

    /// The token of an id, if the id is in range.
    fn token(&self, id: u32) -> Option<String> {
        self.int_to_str.get(id as usize).cloned()
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let words = ids
            .iter()
            .map(|&id| {
                self.int_to_str.get(id as usize).map(String::as_str).ok_or(
                    TokenizerError::UnknownId {
                        id: id.into(),
                        vocab_size: self.int_to_str.len(),
                    },
                )
            })
            .collect::<Result<Vec<&str>>>()?;
        Ok(remove_space_before_punctuation(&words.join(" ")))
    }
}

/// The book's `SimpleTokenizerV1`: encodes only words of its vocabulary;
/// any other word is an error ([`TokenizerError::UnknownToken`]).
///
/// ```
/// use llm_core::text::tokenizer::{SimpleTokenizerV1, Tokenizer};
/// let t = SimpleTokenizerV1::from_text("\"It's the last he painted, you know,\" Mrs. Gisburn said with pardonable pride.");
/// let ids = t.encode("\"It's the last he painted, you know,\"")?;
/// assert_eq!(t.decode(&ids)?, "\" It' s the last he painted, you know,\"");
/// # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleTokenizerV1 {
    vocab: Vocab,
}

impl SimpleTokenizerV1 {
    /// A tokenizer over a vocabulary `token → id`; the ids must be `0..n`,
    /// each used once.
    pub fn new(vocab: HashMap<String, u32>) -> Result<Self> {
        Ok(SimpleTokenizerV1 {
            vocab: Vocab::from_map(vocab)?,
        })
    }

    /// A tokenizer whose vocabulary is the distinct tokens of `text`
    /// ([`vocab_from_text`]).
    pub fn from_text(text: &str) -> Self {
        SimpleTokenizerV1 {
            vocab: Vocab::from_tokens(vocab_from_text(text)),
        }
    }

    /// The vocabulary, token `i` having id `i`.
    pub fn tokens(&self) -> &[String] {
        &self.vocab.int_to_str
    }
}

impl Tokenizer for SimpleTokenizerV1 {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        split_text(text)
            .into_iter()
            .map(|t| {
                self.vocab.id(t).ok_or_else(|| TokenizerError::UnknownToken {
                        token: t.to_string(),
                        hint: " (SimpleTokenizerV1 knows only the words of its text; SimpleTokenizerV2 maps unknown words to <|unk|>)",
                    })
            })
            .collect()
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.vocab.decode(ids)
    }

    fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.vocab.token(id)
    }
}

/// The book's `SimpleTokenizerV2`: a vocabulary that ends with
/// `<|endoftext|>` and `<|unk|>`; words it does not know become `<|unk|>`.
///
/// ```
/// use llm_core::text::tokenizer::{SimpleTokenizerV2, Tokenizer};
/// let t = SimpleTokenizerV2::from_text("In the sunlit terraces of the palace.");
/// assert_eq!(t.vocab_size(), 7 + 2);
/// let text = "Hello, the palace. <|endoftext|> In the sunlit terraces";
/// assert_eq!(t.decode(&t.encode(text)?)?, "<|unk|> <|unk|> the palace. <|endoftext|> In the sunlit terraces");
/// # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleTokenizerV2 {
    vocab: Vocab,
    unk: u32,
}

impl SimpleTokenizerV2 {
    /// A tokenizer over a vocabulary `token → id` (ids `0..n`, each used
    /// once) that holds `<|unk|>`.
    pub fn new(vocab: HashMap<String, u32>) -> Result<Self> {
        let unk = vocab.get(UNKNOWN).copied().ok_or_else(|| {
            TokenizerError::BadVocab(format!(
                "SimpleTokenizerV2 needs {UNKNOWN:?} in its vocabulary"
            ))
        })?;
        Ok(SimpleTokenizerV2 {
            vocab: Vocab::from_map(vocab)?,
            unk,
        })
    }

    /// The distinct tokens of `text` in sorted order, then `<|endoftext|>`
    /// and `<|unk|>` (as the book's `all_tokens.extend([...])`; if the text
    /// itself holds either, it is only listed at the end).
    pub fn from_text(text: &str) -> Self {
        let mut tokens: Vec<String> = vocab_from_text(text)
            .into_iter()
            .filter(|t| t != END_OF_TEXT && t != UNKNOWN)
            .collect();
        tokens.push(END_OF_TEXT.to_string());
        tokens.push(UNKNOWN.to_string());
        let unk = (tokens.len() - 1) as u32;
        SimpleTokenizerV2 {
            vocab: Vocab::from_tokens(tokens),
            unk,
        }
    }

    /// The vocabulary, token `i` having id `i`.
    pub fn tokens(&self) -> &[String] {
        &self.vocab.int_to_str
    }
}

impl Tokenizer for SimpleTokenizerV2 {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(split_text(text)
            .into_iter()
            .map(|t| self.vocab.id(t).unwrap_or(self.unk))
            .collect())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.vocab.decode(ids)
    }

    fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.vocab.token(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The book's regex, applied the way Python's `re.split` applies it.
    fn split_with_regex(text: &str) -> Vec<String> {
        let re = fancy_regex::Regex::new(r#"([,.:;?_!"()']|--|\s)"#).unwrap();
        let mut pieces = Vec::new();
        let mut last = 0;
        for m in re.find_iter(text) {
            let m = m.unwrap();
            pieces.push(&text[last..m.start()]);
            pieces.push(m.as_str());
            last = m.end();
        }
        pieces.push(&text[last..]);
        pieces
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn sub_with_regex(text: &str) -> String {
        let re = fancy_regex::Regex::new(r#"\s+([,.?!"()'])"#).unwrap();
        re.replace_all(text, "$1").into_owned()
    }

    #[test]
    fn split_matches_the_books_example() {
        let _rng = crate::rng_lock();
        let text = "Hello, world. Is this-- a test?";
        assert_eq!(
            split_text(text),
            ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]
        );
        assert_eq!(split_text("a---b -- c"), ["a", "--", "-b", "--", "c"]);
        assert_eq!(split_text(""), Vec::<&str>::new());
    }

    proptest! {
        #[test]
        fn split_equals_the_books_regex(text in r#"([a-c \n\t,.:;?_!"()'-]|é|\u{3000}){0,40}"#) {
            let _rng = crate::rng_lock();
            prop_assert_eq!(split_text(&text), split_with_regex(&text));
        }

        #[test]
        fn decode_cleanup_equals_the_books_regex(text in r#"([a-c \n\t,.:;?_!"()'-]|\u{3000}){0,40}"#) {
            let _rng = crate::rng_lock();
            prop_assert_eq!(remove_space_before_punctuation(&text), sub_with_regex(&text));
        }
    }

    #[test]
    fn vocab_from_a_map_must_be_dense() {
        let _rng = crate::rng_lock();
        let map = |pairs: &[(&str, u32)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<HashMap<_, _>>()
        };
        assert!(SimpleTokenizerV1::new(map(&[("a", 0), ("b", 1)])).is_ok());
        let err = SimpleTokenizerV1::new(map(&[("a", 0), ("b", 2)])).unwrap_err();
        assert!(err.to_string().contains("\"b\""), "{err}");
        let err = SimpleTokenizerV2::new(map(&[("a", 0)])).unwrap_err();
        assert!(err.to_string().contains("<|unk|>"), "{err}");
    }

    #[test]
    fn unknown_word_and_id_are_named() {
        let _rng = crate::rng_lock();
        let t = SimpleTokenizerV1::from_text("the cat");
        let err = t.encode("the dog").unwrap_err().to_string();
        assert!(err.contains("\"dog\""), "{err}");
        let err = t.decode(&[0, 7]).unwrap_err().to_string();
        assert!(err.contains("id 7"), "{err}");
    }
}
