//! Chapter 6.2–6.3: the SMS Spam Collection, its balanced split, and the
//! padded data set of token ids the classifier trains on.
//!
//! | book (§) | here |
//! |---|---|
//! | 6.2 | [`read_sms_collection`], [`create_balanced_dataset`], [`random_split`], [`read_split_csv`] |
//! | 6.3 | [`SpamDataset`] |
//!
//! **5,574 lines, 5,572 messages.** The UCI file has one message per line,
//! `ham` or `spam`, a tab, the text. The book reads it with pandas
//! (`read_csv(sep="\t", header=None)`), whose parser treats a field that
//! *starts* with a double quote as quoted until the closing quote — across
//! line ends. Two messages in the file start with a quote that closes only on
//! a later line, so pandas merges two pairs of lines and sees 5,572 messages
//! (4,825 ham), where a line reader sees 5,574 (4,827 ham). We follow pandas,
//! so that the seeded balancing and split below reproduce the book's
//! `train.csv`, `validation.csv` and `test.csv` row for row; pass
//! [`Quoting::None`] to read line by line instead.
//!
//! The book's sampling uses NumPy's legacy `RandomState(123)` (through
//! pandas' `sample`); [`crate::rng::numpy_permutation`] reproduces it.
//!
//! ```no_run
//! use llm_core::finetune::spam::{create_balanced_dataset, random_split, read_sms_collection, Quoting};
//!
//! let path = llm_core::data::path("sms_spam_collection/SMSSpamCollection.tsv")?;
//! let messages = read_sms_collection(&path, Quoting::Pandas)?;
//! assert_eq!(messages.len(), 5572);
//! let balanced = create_balanced_dataset(&messages, 123);
//! let (train, validation, test) = random_split(&balanced, 0.7, 0.1, 123);
//! assert_eq!((train.len(), validation.len(), test.len()), (1045, 149, 300));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::files::{io_err, FileError};
use crate::rng::numpy_permutation;
use crate::text::loader::TensorLoader;
use crate::text::tokenizer::{Tokenizer, TokenizerError};

/// GPT-2's `<|endoftext|>`, the book's padding token.
pub const PAD_TOKEN_ID: u32 = crate::text::tokenizer::GPT2_END_OF_TEXT_ID;

/// Errors reading the spam data; each names the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum SpamDataError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// One message: `label` 0 for ham, 1 for spam (the book's encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsMessage {
    pub label: i64,
    pub text: String,
}

impl fmt::Display for SmsMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.label == 1 { "spam" } else { "ham" };
        write!(f, "{name}\t{}", self.text)
    }
}

/// How quotes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// As pandas' `read_csv`: a field starting with `"` runs to the closing
    /// `"` (a doubled `""` is one quote), across line ends.
    Pandas,
    /// Quotes are ordinary characters; one record per line.
    None,
}

/// A record and the 1-based line it starts on.
type Record = (usize, Vec<String>);

/// Split `text` into records of fields separated by `sep`, as pandas' C
/// parser does with its default quoting (or with none). Blank lines are
/// skipped, `\r\n` ends a line like `\n`. Two things are errors, each
/// with its line: a quote that is never closed (pandas: "EOF inside
/// string"), and a last line without a line break, the mark of a file cut
/// short (every file of the data set ends with one; pandas would read the
/// cut message as if it were whole).
fn parse_records(text: &str, sep: char, quoting: Quoting) -> Result<Vec<Record>, ParseError> {
    #[derive(PartialEq)]
    enum State {
        StartField,
        InField,
        InQuoted,
        QuoteInQuoted,
    }
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut state = State::StartField;
    let mut line = 1;
    let mut start_line = 1;
    let mut quote_line = 1;
    let mut chars = text.chars().peekable();
    let end_record =
        |fields: &mut Vec<String>, field: &mut String, records: &mut Vec<Record>, at: usize| {
            fields.push(std::mem::take(field));
            let row = std::mem::take(fields);
            if !(row.len() == 1 && row[0].is_empty()) {
                records.push((at, row));
            }
        };
    while let Some(c) = chars.next() {
        let newline = c == '\n' || (c == '\r' && chars.peek() == Some(&'\n'));
        if c == '\r' && newline {
            chars.next();
        }
        match state {
            State::InQuoted => {
                if c == '"' {
                    state = State::QuoteInQuoted;
                } else {
                    field.push(if newline { '\n' } else { c });
                }
            }
            _ if state == State::StartField && c == '"' && quoting == Quoting::Pandas => {
                state = State::InQuoted;
                quote_line = line;
            }
            State::QuoteInQuoted if c == '"' => {
                field.push('"');
                state = State::InQuoted;
            }
            _ => {
                if c == sep {
                    fields.push(std::mem::take(&mut field));
                    state = State::StartField;
                } else if newline {
                    end_record(&mut fields, &mut field, &mut records, start_line);
                    state = State::StartField;
                } else {
                    field.push(c);
                    state = State::InField;
                }
            }
        }
        if newline {
            line += 1;
            if state == State::StartField && fields.is_empty() {
                start_line = line;
            }
        }
    }
    if state == State::InQuoted {
        return Err(ParseError::UnclosedQuote { line: quote_line });
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(ParseError::NoFinalNewline { line });
    }
    if state != State::StartField || !fields.is_empty() || !field.is_empty() {
        end_record(&mut fields, &mut field, &mut records, start_line);
    }
    Ok(records)
}

/// What [`parse_records`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParseError {
    UnclosedQuote { line: usize },
    NoFinalNewline { line: usize },
}

fn parse_err(path: &Path, e: ParseError) -> SpamDataError {
    match e {
        ParseError::UnclosedQuote { line } => line_err(
            path,
            line,
            "a field starting with a double quote (\") here is never closed: the rest of the file would be one message (pandas stops with \"EOF inside string\"). Close the quote, or read the file with Quoting::None",
        ),
        ParseError::NoFinalNewline { line } => line_err(
            path,
            line,
            "the last line does not end with a line break: the file looks cut short (an interrupted copy or download?). If it is complete, add a line break at its end",
        ),
    }
}

fn read(path: &Path) -> Result<String, SpamDataError> {
    std::fs::read_to_string(path)
        .map(|text| crate::data::strip_bom(&text).to_string())
        .map_err(|e| io_err(path)(e).into())
}

fn line_err(path: &Path, line: usize, message: impl Into<String>) -> SpamDataError {
    SpamDataError::Line {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

fn message(path: &Path, line: usize, label: i64, text: &str) -> Result<SmsMessage, SpamDataError> {
    if text.trim().is_empty() {
        return Err(line_err(path, line, "the message text is empty"));
    }
    Ok(SmsMessage {
        label,
        text: text.to_string(),
    })
}

/// Read the UCI `SMSSpamCollection` file (`ham`/`spam`, a tab, the text).
/// A line with another label, without a tab, with more than one tab or with
/// an empty text is an error naming its line.
pub fn read_sms_collection(
    path: impl AsRef<Path>,
    quoting: Quoting,
) -> Result<Vec<SmsMessage>, SpamDataError> {
    let path = path.as_ref();
    let text = read(path)?;
    parse_records(&text, '\t', quoting)
        .map_err(|e| parse_err(path, e))?
        .into_iter()
        .map(|(line, fields)| {
            if fields.len() != 2 {
                return Err(line_err(
                    path,
                    line,
                    format!(
                        "expected 2 tab-separated fields (label, text), found {}",
                        fields.len()
                    ),
                ));
            }
            let label = match fields[0].as_str() {
                "ham" => 0,
                "spam" => 1,
                other => {
                    return Err(line_err(
                        path,
                        line,
                        format!("label {other:?} is neither \"ham\" nor \"spam\""),
                    ))
                }
            };
            message(path, line, label, &fields[1])
        })
        .collect()
}

/// Read one of the book's split files (`train.csv` …: a header `Label,Text`,
/// then `0` or `1`, a comma, the text, quoted as pandas' `to_csv` quotes).
pub fn read_split_csv(path: impl AsRef<Path>) -> Result<Vec<SmsMessage>, SpamDataError> {
    let path = path.as_ref();
    let text = read(path)?;
    let mut records = parse_records(&text, ',', Quoting::Pandas)
        .map_err(|e| parse_err(path, e))?
        .into_iter();
    match records.next() {
        Some((_, header)) if header == ["Label", "Text"] => {}
        Some((line, header)) => {
            return Err(line_err(
                path,
                line,
                format!("expected the header Label,Text, found {}", header.join(",")),
            ))
        }
        None => return Err(line_err(path, 1, "the file is empty")),
    }
    records
        .map(|(line, fields)| {
            if fields.len() != 2 {
                return Err(line_err(
                    path,
                    line,
                    format!("expected 2 fields (Label, Text), found {}", fields.len()),
                ));
            }
            let label = match fields[0].as_str() {
                "0" => 0,
                "1" => 1,
                other => {
                    return Err(line_err(
                        path,
                        line,
                        format!("label {other:?} is neither 0 nor 1"),
                    ))
                }
            };
            message(path, line, label, &fields[1])
        })
        .collect()
}

/// The book's `create_balanced_dataset`: as many ham messages as there are
/// spam ones, drawn as `df[ham].sample(num_spam, random_state=seed)`, then
/// all the spam messages.
pub fn create_balanced_dataset(messages: &[SmsMessage], seed: u32) -> Vec<SmsMessage> {
    let ham: Vec<&SmsMessage> = messages.iter().filter(|m| m.label == 0).collect();
    let spam: Vec<&SmsMessage> = messages.iter().filter(|m| m.label == 1).collect();
    let mut out: Vec<SmsMessage> = numpy_permutation(ham.len(), seed)
        .into_iter()
        .take(spam.len())
        .map(|i| ham[i].clone())
        .collect();
    out.extend(spam.into_iter().cloned());
    out
}

/// The book's `random_split`: shuffle (`df.sample(frac=1,
/// random_state=seed)`), then the first `train_frac` for training, the next
/// `validation_frac` for validation, the rest for testing (each size
/// rounded down as `int(len * frac)`).
pub fn random_split(
    messages: &[SmsMessage],
    train_frac: f64,
    validation_frac: f64,
    seed: u32,
) -> (Vec<SmsMessage>, Vec<SmsMessage>, Vec<SmsMessage>) {
    let shuffled: Vec<SmsMessage> = numpy_permutation(messages.len(), seed)
        .into_iter()
        .map(|i| messages[i].clone())
        .collect();
    let train_end = (messages.len() as f64 * train_frac) as usize;
    let validation_end = train_end + (messages.len() as f64 * validation_frac) as usize;
    let validation_end = validation_end.min(messages.len());
    (
        shuffled[..train_end].to_vec(),
        shuffled[train_end..validation_end].to_vec(),
        shuffled[validation_end..].to_vec(),
    )
}

/// The book's `SpamDataset` (§6.3): every message tokenized, cut to
/// `max_length` tokens (by default the longest message's length) and padded
/// with `pad_token_id` (50256) to that length.
#[derive(Debug)]
pub struct SpamDataset {
    /// `[N, max_length]` token ids, int64.
    pub encoded_texts: Tensor,
    /// `[N]` labels (0 ham, 1 spam), int64.
    pub labels: Tensor,
    /// The padded length.
    pub max_length: usize,
}

impl SpamDataset {
    /// Tokenize and pad `messages`. With `max_length: None` the length is
    /// that of the longest message (the book passes the training set's
    /// length to the validation and test sets, truncating longer ones).
    ///
    /// ```
    /// use llm_core::finetune::spam::{SmsMessage, SpamDataset};
    /// use llm_core::text::tokenizer::SimpleTokenizerV1;
    ///
    /// let tokenizer = SimpleTokenizerV1::from_text("win a prize now hello there");
    /// let messages = vec![SmsMessage { label: 1, text: "win a prize now".into() },
    ///                     SmsMessage { label: 0, text: "hello there".into() }];
    /// let ds = SpamDataset::new(&messages, &tokenizer, None, 99)?;
    /// assert_eq!(ds.max_length, 4);
    /// // the vocabulary is sorted: a=0, hello=1, now=2, prize=3, there=4, win=5
    /// assert_eq!(Vec::<i64>::try_from(ds.encoded_texts.get(1))?, [1, 4, 99, 99]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new<T: Tokenizer + ?Sized>(
        messages: &[SmsMessage],
        tokenizer: &T,
        max_length: Option<usize>,
        pad_token_id: u32,
    ) -> Result<Self, TokenizerError> {
        let encoded: Vec<Vec<u32>> = messages
            .iter()
            .map(|m| tokenizer.encode(&m.text))
            .collect::<Result<_, _>>()?;
        let max_length =
            max_length.unwrap_or_else(|| encoded.iter().map(Vec::len).max().unwrap_or(0));
        let mut ids: Vec<i64> = Vec::with_capacity(encoded.len() * max_length);
        for e in &encoded {
            let kept = &e[..e.len().min(max_length)];
            ids.extend(kept.iter().map(|&i| i as i64));
            ids.extend(std::iter::repeat_n(
                pad_token_id as i64,
                max_length - kept.len(),
            ));
        }
        let labels: Vec<i64> = messages.iter().map(|m| m.label).collect();
        Ok(SpamDataset {
            encoded_texts: Tensor::from_slice(&ids).view([encoded.len() as i64, max_length as i64]),
            labels: Tensor::from_slice(&labels),
            max_length,
        })
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    /// True when there are no messages.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A loader of `(token ids [batch, max_length], labels [batch])` batches,
    /// as the book's `DataLoader(dataset, batch_size, shuffle, drop_last)`.
    ///
    /// # Panics
    /// If `batch_size` is 0; [`SpamDataset::try_into_loader`] returns the error.
    pub fn into_loader(self, batch_size: usize, shuffle: bool, drop_last: bool) -> TensorLoader {
        self.try_into_loader(batch_size, shuffle, drop_last)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`SpamDataset::into_loader`], or an error when `batch_size` is 0.
    pub fn try_into_loader(
        self,
        batch_size: usize,
        shuffle: bool,
        drop_last: bool,
    ) -> Result<TensorLoader, crate::text::loader::LoaderError> {
        Ok(
            TensorLoader::try_new(self.encoded_texts, self.labels, batch_size)?
                .shuffle(shuffle)
                .drop_last(drop_last),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data.tsv");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn pandas_quoting_joins_lines_inside_quotes() {
        let _rng = crate::rng_lock();
        let text = "ham\tplain \"quote\" inside\nham\t\"starts quoted\nand goes on\" then more\nspam\tlast\n";
        let (_d, p) = write(text);
        let pandas = read_sms_collection(&p, Quoting::Pandas).unwrap();
        assert_eq!(pandas.len(), 3);
        assert_eq!(pandas[0].text, "plain \"quote\" inside");
        assert_eq!(pandas[1].text, "starts quoted\nand goes on then more");
        let lines = read_sms_collection(&p, Quoting::None);
        // line 3 has no tab when read line by line
        let err = lines.unwrap_err().to_string();
        assert!(
            err.contains("data.tsv:3: expected 2 tab-separated fields"),
            "{err}"
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let _rng = crate::rng_lock();
        let (_d, p) = write("ham\tfine\nspamm\toops\n");
        let err = read_sms_collection(&p, Quoting::Pandas)
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.tsv:2: label \"spamm\""), "{err}");
        let (_d, p) = write("ham\tfine\n\nspam\t  \n");
        let err = read_sms_collection(&p, Quoting::Pandas)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.tsv:3: the message text is empty"),
            "{err}"
        );
        let (_d, p) = write("Label,Text\n0,ok\n2,bad\n");
        let err = read_split_csv(&p).unwrap_err().to_string();
        assert!(
            err.contains("data.tsv:3: label \"2\" is neither 0 nor 1"),
            "{err}"
        );
        let (_d, p) = write("label;text\n");
        let err = read_split_csv(&p).unwrap_err().to_string();
        assert!(
            err.contains("data.tsv:1: expected the header Label,Text"),
            "{err}"
        );
    }

    #[test]
    fn csv_quotes_and_commas() {
        let _rng = crate::rng_lock();
        let (_d, p) = write("Label,Text\n1,\"Win, now! \"\"Free\"\"\"\n0,\"two\nlines\"\n");
        let rows = read_split_csv(&p).unwrap();
        assert_eq!(
            rows[0],
            SmsMessage {
                label: 1,
                text: "Win, now! \"Free\"".into()
            }
        );
        assert_eq!(rows[1].text, "two\nlines");
    }

    #[test]
    fn truncation_and_padding() {
        let _rng = crate::rng_lock();
        let tokenizer = crate::text::tokenizer::SimpleTokenizerV1::from_text("a b c d e");
        let messages = vec![
            SmsMessage {
                label: 0,
                text: "a b c d e".into(),
            },
            SmsMessage {
                label: 1,
                text: "b".into(),
            },
        ];
        let ds = SpamDataset::new(&messages, &tokenizer, Some(3), 7).unwrap();
        assert_eq!(ds.encoded_texts.size(), [2, 3]);
        assert_eq!(
            Vec::<i64>::try_from(ds.encoded_texts.get(0)).unwrap(),
            [0, 1, 2]
        );
        assert_eq!(
            Vec::<i64>::try_from(ds.encoded_texts.get(1)).unwrap(),
            [1, 7, 7]
        );
        assert_eq!(Vec::<i64>::try_from(&ds.labels).unwrap(), [0, 1]);
    }
}
