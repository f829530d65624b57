//! GPT-2's byte-level alphabet and its two vocabulary files.
//!
//! GPT-2 works on bytes, not characters, so that any text can be encoded
//! without an unknown token. To store byte sequences as readable strings in
//! its files, GPT-2 maps each of the 256 byte values to one printable Unicode
//! character ([`bytes_to_unicode`]): printable Latin-1 bytes map to
//! themselves, the others (space, control bytes, ...) to characters from
//! U+0100 on. A space becomes `Ġ` (U+0120), a newline `Ċ` (U+010A).
//!
//! The two files in that alphabet:
//!
//! - `encoder.json`: a JSON object from token string to id (50257 entries for
//!   GPT-2, the last one `<|endoftext|>` = 50256);
//! - `vocab.bpe`: a `#version: 0.2` header, then one merge per line, two
//!   tokens separated by a space, in the order they were learned (50000 lines).
//!
//! ```
//! use llm_core::text::tokenizer::byte_level::{bytes_to_unicode, decode_token, encode_token};
//!
//! assert_eq!(bytes_to_unicode()[b' ' as usize], 'Ġ');
//! assert_eq!(encode_token(b" the\n"), "ĠtheĊ");
//! assert_eq!(decode_token("ĠtheĊ"), Some(b" the\n".to_vec()));
//! assert_eq!(decode_token("€"), None); // not in the byte alphabet
//! ```

use std::collections::HashMap;
use std::path::Path;

use super::{Result, TokenizerError};
use crate::files::io_err;

/// GPT-2's table from byte value to character (`bytes_to_unicode` in
/// OpenAI's `encoder.py`).
pub fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            // 256 + n - 1 is at most 323: always a valid char
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    table
}

/// The inverse of [`bytes_to_unicode`]: indexed by a character's code point
/// (all are below 324), the byte it stands for.
fn unicode_to_bytes() -> [Option<u8>; 324] {
    let mut table = [None; 324];
    for (b, c) in bytes_to_unicode().iter().enumerate() {
        table[*c as usize] = Some(b as u8);
    }
    table
}

/// A byte sequence written in GPT-2's alphabet.
pub fn encode_token(bytes: &[u8]) -> String {
    let table = bytes_to_unicode();
    bytes.iter().map(|&b| table[b as usize]).collect()
}

/// The bytes a token string in GPT-2's alphabet stands for, or `None` if a
/// character is outside the alphabet.
pub fn decode_token(token: &str) -> Option<Vec<u8>> {
    let table = unicode_to_bytes();
    token
        .chars()
        .map(|c| table.get(c as usize).copied().flatten())
        .collect()
}

/// Read an `encoder.json`: token string → id.
///
/// Errors name the file: missing, unreadable, not JSON, not an object of
/// non-negative integers that fit in `u32`, or two tokens with the same id.
pub fn read_encoder_json(path: impl AsRef<Path>) -> Result<HashMap<String, u32>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let value: serde_json::Value = serde_json::from_str(crate::data::strip_bom(&text))
        .map_err(|e| TokenizerError::bad_file(path, format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(TokenizerError::bad_file(
            path,
            "expected a JSON object from token to id",
        ));
    };
    let mut encoder = HashMap::with_capacity(map.len());
    let mut seen: HashMap<u32, String> = HashMap::with_capacity(map.len());
    for (token, id) in map {
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| {
                TokenizerError::bad_file(
                    path,
                    format!("token {token:?} has id {id}, expected a non-negative integer"),
                )
            })?;
        if let Some(other) = seen.insert(id, token.clone()) {
            return Err(TokenizerError::bad_file(
                path,
                format!("tokens {other:?} and {token:?} share id {id}"),
            ));
        }
        encoder.insert(token, id);
    }
    Ok(encoder)
}

/// One line of a `vocab.bpe`: merge `left` and `right` (token strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeLine {
    /// Line number in the file (from 1), for error messages.
    pub line: usize,
    /// The left token.
    pub left: String,
    /// The right token.
    pub right: String,
}

/// Read a `vocab.bpe` (GPT-2's merges file): the merges in order.
///
/// The first line may be a `#version` header; a last empty line is allowed.
/// When `encoder` is given, both tokens of every merge and their
/// concatenation must be in it. Errors name the file and the line number.
pub fn read_vocab_bpe(
    path: impl AsRef<Path>,
    encoder: Option<&HashMap<String, u32>>,
) -> Result<Vec<MergeLine>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let text = crate::data::strip_bom(&text);
    let bad = |line: usize, reason: String| TokenizerError::BadMerge {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut merges = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let number = i + 1;
        if i == 0 && line.starts_with("#version") {
            continue;
        }
        if line.is_empty() && number == lines.len() {
            break; // the newline at the end of the file
        }
        let mut parts = line.split(' ');
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(
                number,
                format!("expected two tokens separated by one space, found {line:?}"),
            ));
        };
        if a.is_empty() || b.is_empty() {
            return Err(bad(
                number,
                format!("expected two tokens separated by one space, found {line:?}"),
            ));
        }
        if let Some(encoder) = encoder {
            for token in [a, b] {
                if !encoder.contains_key(token) {
                    return Err(bad(
                        number,
                        format!("token {token:?} of merge {line:?} is not in the vocabulary"),
                    ));
                }
            }
            let merged = format!("{a}{b}");
            if !encoder.contains_key(&merged) {
                return Err(bad(
                    number,
                    format!("the result {merged:?} of merge {line:?} is not in the vocabulary"),
                ));
            }
        }
        merges.push(MergeLine {
            line: number,
            left: a.to_string(),
            right: b.to_string(),
        });
    }
    Ok(merges)
}

/// Whether `token` is written as special tokens are: `<…>` (such as
/// `<|endoftext|>`) or `[…]` (such as `[PAD]`).
pub fn looks_special(token: &str) -> bool {
    token.len() > 2
        && ((token.starts_with('<') && token.ends_with('>'))
            || (token.starts_with('[') && token.ends_with(']')))
}

/// Check that `encoder.json` and `vocab.bpe` belong together: the ids are
/// `0..n` without gaps, every byte has a token, and every entry is a byte,
/// the result of a merge, or a special token written as one (`<…>` or
/// `[…]`, see [`looks_special`]), so 256 bytes + merges + special tokens add
/// up to the vocabulary. A `vocab.bpe` cut short leaves thousands of
/// ordinary tokens that no merge produces (and that would otherwise turn
/// into "special tokens" and change every encoding); the error says so.
///
/// Returns the special tokens ([`special_tokens`]).
pub fn check_vocabulary(
    encoder: &HashMap<String, u32>,
    merges: &[MergeLine],
    encoder_path: &Path,
    vocab_bpe_path: &Path,
) -> Result<Vec<(String, u32)>> {
    let n = encoder.len();
    if let Some((token, &id)) = encoder.iter().find(|(_, &id)| id as usize >= n) {
        let mut seen = vec![false; n];
        for &i in encoder.values().filter(|&&i| (i as usize) < n) {
            seen[i as usize] = true;
        }
        let missing = seen.iter().position(|&s| !s);
        return Err(TokenizerError::bad_file(
            encoder_path,
            format!(
                "ids must run from 0 to {} without gaps, but token {token:?} has id {id}{}",
                n - 1,
                missing.map_or(String::new(), |m| format!(" and id {m} is missing"))
            ),
        ));
    }
    if let Some(b) = (0..=255u8).find(|&b| !encoder.contains_key(&encode_token(&[b]))) {
        return Err(TokenizerError::bad_file(
            encoder_path,
            format!(
                "byte 0x{b:02x} (written {:?}) has no token",
                encode_token(&[b])
            ),
        ));
    }
    let specials = special_tokens(encoder, merges);
    let orphans: Vec<&(String, u32)> = specials
        .iter()
        .filter(|(token, _)| !looks_special(token))
        .collect();
    if let Some((token, id)) = orphans.first() {
        let merged: std::collections::HashSet<String> = merges
            .iter()
            .map(|m| format!("{}{}", m.left, m.right))
            .collect();
        return Err(TokenizerError::bad_file(
            vocab_bpe_path,
            format!(
                "{} tokens of {} (such as {token:?}, id {id}) are neither a byte, nor made by one of the {} merges here, nor a special token like <|endoftext|>: the two files do not add up (256 bytes + {} merge results + special tokens != {n} entries). Is this file cut short, or from another tokenizer?",
                orphans.len(),
                encoder_path.display(),
                merges.len(),
                merged.len(),
            ),
        ));
    }
    Ok(specials)
}

/// The special tokens of a vocabulary in GPT-2's format: the entries of
/// `encoder` that are neither a single byte nor the result of a merge (for
/// GPT-2 only `<|endoftext|>`), sorted by id.
///
/// ```
/// use std::collections::HashMap;
/// use llm_core::text::tokenizer::byte_level::{special_tokens, MergeLine};
///
/// let encoder: HashMap<String, u32> =
///     [("a", 0), ("b", 1), ("ab", 2), ("<|endoftext|>", 3)].into_iter().map(|(t, i)| (t.to_string(), i)).collect();
/// let merges = vec![MergeLine { line: 1, left: "a".to_string(), right: "b".to_string() }];
/// assert_eq!(special_tokens(&encoder, &merges), [("<|endoftext|>".to_string(), 3)]);
/// ```
pub fn special_tokens(encoder: &HashMap<String, u32>, merges: &[MergeLine]) -> Vec<(String, u32)> {
    let merged: std::collections::HashSet<String> = merges
        .iter()
        .map(|m| format!("{}{}", m.left, m.right))
        .collect();
    let mut specials: Vec<(String, u32)> = encoder
        .iter()
        .filter(|(token, _)| {
            !merged.contains(*token) && decode_token(token).is_none_or(|bytes| bytes.len() != 1)
        })
        .map(|(token, &id)| (token.clone(), id))
        .collect();
    specials.sort_by_key(|(_, id)| *id);
    specials
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection_onto_printable_chars() {
        let _rng = crate::rng_lock();
        let table = bytes_to_unicode();
        let mut chars: Vec<char> = table.to_vec();
        chars.sort();
        chars.dedup();
        assert_eq!(chars.len(), 256);
        assert!(table.iter().all(|c| !c.is_whitespace() && !c.is_control()));
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[0], 'Ā');
        assert_eq!(table[255], 'ÿ');
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_token(&encode_token(&all)), Some(all));
    }

    #[test]
    fn merges_file_errors_name_file_and_line() {
        let _rng = crate::rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.bpe");
        std::fs::write(&path, "#version: 0.2\nĠ t\nh e x\n").unwrap();
        let err = read_vocab_bpe(&path, None).unwrap_err().to_string();
        assert!(err.contains("vocab.bpe:3:"), "{err}");
        let encoder: HashMap<String, u32> = [("a", 0), ("b", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        std::fs::write(&path, "#version: 0.2\na b\n").unwrap();
        let err = read_vocab_bpe(&path, Some(&encoder))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vocab.bpe:2:") && err.contains("\"ab\""),
            "{err}"
        );
    }

    #[test]
    fn encoder_errors_name_the_file() {
        let _rng = crate::rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encoder.json");
        let err = read_encoder_json(&path).unwrap_err().to_string();
        assert!(err.contains("encoder.json"), "{err}");
        std::fs::write(&path, "{\"a\": 0, \"b\": ").unwrap();
        let err = read_encoder_json(&path).unwrap_err().to_string();
        assert!(
            err.contains("encoder.json") && err.contains("JSON"),
            "{err}"
        );
        std::fs::write(&path, "{\"a\": 0, \"b\": -1}").unwrap();
        let err = read_encoder_json(&path).unwrap_err().to_string();
        assert!(err.contains("\"b\""), "{err}");
    }
}
