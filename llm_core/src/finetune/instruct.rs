//! Chapter 7: instruction data, prompt formats, and the padding collate
//! function of supervised instruction fine-tuning.
//!
//! | book (§) | here |
//! |---|---|
//! | 7.2 | [`load_instruction_data`], [`InstructionEntry`], [`format_input`] ([`PromptStyle`]), [`split_data`] |
//! | 7.3 | [`InstructionDataset`], [`custom_collate_fn`] ([`CollateOptions`]) |
//! | 7.4 | [`InstructionLoader`] (the book's `DataLoader(..., collate_fn=...)`) |
//! | 7.7 | [`extract_response`], [`generate_response`], [`save_instruction_data`] |
//! | ex. 7.1 | [`PromptStyle::Phi3`] |
//! | ex. 7.2 | [`CollateOptions::mask_instructions`] |
//!
//! Each training example is one text, the prompt followed by the response:
//!
//! ```
//! use llm_core::finetune::instruct::{format_input, InstructionEntry, PromptStyle};
//!
//! let entry = InstructionEntry::new("Identify the correct spelling of the following word.",
//!                                   "Ocassion", "The correct spelling is 'Occasion.'");
//! let text = format_input(&entry) + &PromptStyle::Alpaca.format_response(&entry);
//! assert_eq!(text, "Below is an instruction that describes a task. Write a response that \
//!                   appropriately completes the request.\n\n### Instruction:\nIdentify the \
//!                   correct spelling of the following word.\n\n### Input:\nOcassion\n\n### \
//!                   Response:\nThe correct spelling is 'Occasion.'");
//! ```
//!
//! The collate function pads a batch to one length with `<|endoftext|>`
//! (50256), shifts the targets by one, and replaces every padding target
//! after the first by −100, which the loss ignores. The book's toy batch:
//!
//! ```
//! use llm_core::finetune::instruct::{custom_collate_fn, CollateOptions};
//!
//! let batch = [vec![0i64, 1, 2, 3, 4], vec![5, 6], vec![7, 8, 9]];
//! let (inputs, targets) = custom_collate_fn(&batch, None, &CollateOptions::default());
//! assert_eq!(Vec::<Vec<i64>>::try_from(inputs)?,
//!            [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256], [7, 8, 9, 50256, 50256]]);
//! assert_eq!(Vec::<Vec<i64>>::try_from(targets)?,
//!            [[1, 2, 3, 4, 50256], [6, 50256, -100, -100, -100], [8, 9, 50256, -100, -100]]);
//! # Ok::<(), llm_core::tch::TchError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::files::{self, io_err, FileError};
use crate::model::generate::{text_to_token_ids, token_ids_to_text, try_generate};
use crate::model::gpt::LanguageModel;
use crate::text::loader::{BatchSampler, DataLoader};
use crate::text::tokenizer::{Tokenizer, TokenizerError};

/// GPT-2's `<|endoftext|>`: it ends every example and pads the batches.
pub const PAD_TOKEN_ID: i64 = crate::text::tokenizer::GPT2_END_OF_TEXT_ID as i64;
use crate::train::loss::IGNORE_INDEX;

/// One instruction example: what to do, an optional input, the desired
/// output; after §7.7 also the fine-tuned model's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionEntry {
    pub instruction: String,
    /// Empty when the instruction needs no input.
    pub input: String,
    pub output: String,
    /// The model's answer, added in §7.7 (absent before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_response: Option<String>,
}

impl InstructionEntry {
    /// An entry without a model response.
    pub fn new(instruction: &str, input: &str, output: &str) -> Self {
        InstructionEntry {
            instruction: instruction.to_string(),
            input: input.to_string(),
            output: output.to_string(),
            model_response: None,
        }
    }
}

impl fmt::Display for InstructionEntry {
    /// The entry as the book prints `data[50]`: one field per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "instruction: {:?}", self.instruction)?;
        writeln!(f, "input:       {:?}", self.input)?;
        write!(f, "output:      {:?}", self.output)?;
        if let Some(r) = &self.model_response {
            write!(f, "\nmodel_response: {r:?}")?;
        }
        Ok(())
    }
}

/// A file of instruction data that could not be read; every message names
/// the file and, where it applies, the entry and field.
#[derive(Debug, thiserror::Error)]
pub enum InstructionDataError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// Not JSON, or not an array of entries with the three string fields:
    /// names the entry and field where there is one.
    #[error("{path}: {location}{source}")]
    Json {
        path: PathBuf,
        /// `"entry 1, field \"input\": "`, or empty for the whole file.
        location: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: entry {index}: field {field:?} {problem}")]
    Field {
        path: PathBuf,
        index: usize,
        field: &'static str,
        problem: String,
    },
}

/// Where in the file serde stopped: `"entry 1, field \"input\": "`.
pub(crate) fn location(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let parts: Vec<String> = path
        .iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(format!("entry {index}")),
            Segment::Map { key } => Some(format!("field {key:?}")),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("{}: ", parts.join(", "))
    }
}

/// Parse instruction data (a JSON array of `{"instruction", "input",
/// "output"}` objects; other fields are ignored except `model_response`).
/// `path` only names the source in errors, which also name the entry and
/// the field.
///
/// ```
/// use llm_core::finetune::instruct::parse_instruction_data;
///
/// let good = r#"[{"instruction": "Say hi.", "input": "", "output": "Hi!"}]"#;
/// assert_eq!(parse_instruction_data(good, "data.json")?[0].output, "Hi!");
/// let bad = r#"[{"instruction": "Say hi.", "input": "", "output": "Hi!"},
///               {"instruction": "Count.", "input": 3}]"#;
/// let err = parse_instruction_data(bad, "data.json").unwrap_err().to_string();
/// assert!(err.starts_with(r#"data.json: entry 1, field "input": invalid type: integer `3`, expected a string"#));
/// # Ok::<(), llm_core::finetune::instruct::InstructionDataError>(())
/// ```
pub fn parse_instruction_data(
    json: &str,
    path: impl AsRef<Path>,
) -> Result<Vec<InstructionEntry>, InstructionDataError> {
    let path = path.as_ref().to_path_buf();
    let mut deserializer = serde_json::Deserializer::from_str(crate::data::strip_bom(json));
    let entries: Vec<InstructionEntry> = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| InstructionDataError::Json {
            path: path.clone(),
            location: location(e.path()),
            source: e.into_inner(),
        })?;
    deserializer
        .end()
        .map_err(|source| InstructionDataError::Json {
            path: path.clone(),
            location: String::new(),
            source,
        })?;
    // the one rule serde cannot say: an instruction must say something
    if let Some(index) = entries.iter().position(|e| e.instruction.trim().is_empty()) {
        return Err(InstructionDataError::Field {
            path,
            index,
            field: "instruction",
            problem: "is empty".to_string(),
        });
    }
    Ok(entries)
}

/// The book's `download_and_load_file` without the download (the data
/// module does that: `llm_core::data::path("instruction-data.json")`): read
/// and check a file of instruction data.
pub fn load_instruction_data(
    path: impl AsRef<Path>,
) -> Result<Vec<InstructionEntry>, InstructionDataError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    parse_instruction_data(&text, path)
}

/// Write entries (with their `model_response`s) as an indented JSON array,
/// crash-safely (write, then rename), as the book's
/// `instruction-data-with-response.json`.
pub fn save_instruction_data(
    path: impl AsRef<Path>,
    entries: &[InstructionEntry],
) -> Result<(), InstructionDataError> {
    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut bytes, formatter);
    entries
        .serialize(&mut ser)
        .map_err(|source| InstructionDataError::Json {
            path: path.as_ref().to_path_buf(),
            location: String::new(),
            source,
        })?;
    files::write_bytes(path, &bytes)?;
    Ok(())
}

/// How an entry becomes a prompt: the book's Alpaca style, or the Phi-3
/// style of exercise 7.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptStyle {
    /// `Below is an instruction … ### Instruction: … ### Input: … ### Response: …`
    #[default]
    Alpaca,
    /// `<|user|>` instruction and input, `<|assistant|>:` response.
    Phi3,
}

impl PromptStyle {
    /// The prompt: instruction and (if any) input, without the response.
    pub fn format_input(&self, entry: &InstructionEntry) -> String {
        match self {
            PromptStyle::Alpaca => {
                let mut text = format!(
                    "Below is an instruction that describes a task. \
                     Write a response that appropriately completes the request.\
                     \n\n### Instruction:\n{}",
                    entry.instruction
                );
                if !entry.input.is_empty() {
                    text.push_str(&format!("\n\n### Input:\n{}", entry.input));
                }
                text
            }
            PromptStyle::Phi3 => {
                let mut text = format!("<|user|>\n{}", entry.instruction);
                if !entry.input.is_empty() {
                    text.push_str(&format!("\n{}", entry.input));
                }
                text
            }
        }
    }

    /// The response part of a training text (it follows [`Self::format_input`]).
    pub fn format_response(&self, entry: &InstructionEntry) -> String {
        let separator = match self {
            PromptStyle::Alpaca => "\n\n",
            PromptStyle::Phi3 => "\n",
        };
        format!("{separator}{}\n{}", self.response_marker(), entry.output)
    }

    /// The marker that introduces the response (removed by [`extract_response`]).
    pub fn response_marker(&self) -> &'static str {
        match self {
            PromptStyle::Alpaca => "### Response:",
            PromptStyle::Phi3 => "<|assistant|>:",
        }
    }
}

impl fmt::Display for PromptStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PromptStyle::Alpaca => "alpaca",
            PromptStyle::Phi3 => "phi3",
        })
    }
}

impl FromStr for PromptStyle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "alpaca" => Ok(PromptStyle::Alpaca),
            "phi3" => Ok(PromptStyle::Phi3),
            _ => Err(format!(
                "unknown prompt style {s:?}; expected \"alpaca\" or \"phi3\""
            )),
        }
    }
}

/// The book's `format_input`: the Alpaca-style prompt of an entry.
pub fn format_input(entry: &InstructionEntry) -> String {
    PromptStyle::Alpaca.format_input(entry)
}

/// The book's three parts: the first 85 % for training, the next 10 % for
/// testing, the rest (5 %) for validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSplit<T = InstructionEntry> {
    pub train_data: Vec<T>,
    pub val_data: Vec<T>,
    pub test_data: Vec<T>,
}

impl<T> fmt::Display for DataSplit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Training set length: {}", self.train_data.len())?;
        writeln!(f, "Validation set length: {}", self.val_data.len())?;
        write!(f, "Test set length: {}", self.test_data.len())
    }
}

/// Split as the book (§7.2): `int(0.85 n)` training entries, then
/// `int(0.1 n)` test entries, the rest for validation — 935 / 110 / 55 of
/// the 1,100. The book keeps the file's order (it is shuffled already);
/// with `seed` the entries are first shuffled by NumPy's
/// `RandomState(seed).permutation`.
///
/// ```
/// use llm_core::finetune::instruct::{split_data, InstructionEntry};
///
/// let data: Vec<_> = (0..1100).map(|i| InstructionEntry::new(&format!("task {i}"), "", "ok")).collect();
/// let split = split_data(&data, None);
/// assert_eq!((split.train_data.len(), split.val_data.len(), split.test_data.len()), (935, 55, 110));
/// assert_eq!(split.test_data[0].instruction, "task 935");
/// assert_ne!(split_data(&data, Some(123)).test_data[0].instruction, "task 935");
/// ```
pub fn split_data<T: Clone>(data: &[T], seed: Option<u32>) -> DataSplit<T> {
    let order: Vec<usize> = match seed {
        Some(s) => crate::rng::numpy_permutation(data.len(), s),
        None => (0..data.len()).collect(),
    };
    let n = data.len();
    let train_portion = (n as f64 * 0.85) as usize;
    let test_portion = (n as f64 * 0.1) as usize;
    let pick = |r: std::ops::Range<usize>| -> Vec<T> {
        order[r].iter().map(|&i| data[i].clone()).collect()
    };
    DataSplit {
        train_data: pick(0..train_portion),
        test_data: pick(train_portion..train_portion + test_portion),
        val_data: pick(train_portion + test_portion..n),
    }
}

/// The book's `InstructionDataset` (§7.3): every entry tokenized once, as
/// prompt plus response; with the length of the prompt alone, for
/// instruction masking (exercise 7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionDataset {
    /// Token ids of prompt + response, one list per entry.
    pub encoded_texts: Vec<Vec<i64>>,
    /// Number of tokens of the prompt (instruction and input) of each entry.
    pub instruction_lengths: Vec<usize>,
}

impl InstructionDataset {
    /// Tokenize `data` in the given prompt style.
    pub fn new<T: Tokenizer + ?Sized>(
        data: &[InstructionEntry],
        tokenizer: &T,
        style: PromptStyle,
    ) -> Result<Self, TokenizerError> {
        let mut encoded_texts = Vec::with_capacity(data.len());
        let mut instruction_lengths = Vec::with_capacity(data.len());
        for entry in data {
            let instruction_plus_input = style.format_input(entry);
            let full_text = instruction_plus_input.clone() + &style.format_response(entry);
            let to_i64 = |ids: Vec<u32>| ids.into_iter().map(i64::from).collect::<Vec<_>>();
            encoded_texts.push(to_i64(tokenizer.encode(&full_text)?));
            instruction_lengths.push(tokenizer.encode(&instruction_plus_input)?.len());
        }
        Ok(InstructionDataset {
            encoded_texts,
            instruction_lengths,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.encoded_texts.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.encoded_texts.is_empty()
    }

    /// The longest example, in tokens.
    pub fn max_length(&self) -> usize {
        self.encoded_texts.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// A loader that collates batches with `collate`, as the book's
    /// `DataLoader(dataset, batch_size, collate_fn, shuffle, drop_last)`.
    ///
    /// # Panics
    /// If `batch_size` is 0 or `collate.allowed_max_length` is `Some(0)`;
    /// [`InstructionDataset::try_into_loader`] returns the error.
    pub fn into_loader(
        self,
        batch_size: usize,
        shuffle: bool,
        drop_last: bool,
        collate: CollateOptions,
    ) -> InstructionLoader {
        self.try_into_loader(batch_size, shuffle, drop_last, collate)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`InstructionDataset::into_loader`], or an error for a `batch_size`
    /// of 0 or an `allowed_max_length` of 0.
    pub fn try_into_loader(
        self,
        batch_size: usize,
        shuffle: bool,
        drop_last: bool,
        collate: CollateOptions,
    ) -> Result<InstructionLoader, LoaderSettingError> {
        if collate.allowed_max_length == Some(0) {
            return Err(CollateError::ZeroMaxLength.into());
        }
        Ok(InstructionLoader {
            sampler: BatchSampler::try_new(self.len(), batch_size)?
                .shuffle(shuffle)
                .drop_last(drop_last),
            dataset: self,
            collate,
        })
    }
}

/// The keyword arguments of the book's `custom_collate_fn`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollateOptions {
    /// Pads the batch and ends every example (50256).
    pub pad_token_id: i64,
    /// Replaces the padding targets after the first (−100).
    pub ignore_index: i64,
    /// Cut inputs and targets to this many tokens (the model's context length).
    pub allowed_max_length: Option<usize>,
    /// Exercise 7.2: also give the prompt's targets `ignore_index`, so that
    /// only the response carries loss.
    pub mask_instructions: bool,
    /// Where the batches go.
    pub device: Device,
}

impl Default for CollateOptions {
    fn default() -> Self {
        CollateOptions {
            pad_token_id: PAD_TOKEN_ID,
            ignore_index: IGNORE_INDEX,
            allowed_max_length: None,
            mask_instructions: false,
            device: Device::Cpu,
        }
    }
}

/// The book's `custom_collate_fn` (§7.3): pad every item with
/// `pad_token_id` to the batch's longest item plus one, take inputs as all
/// but the last token and targets as all but the first, replace every
/// padding target after the first by `ignore_index`, and cut both to
/// `allowed_max_length`. With `instruction_lengths` and
/// [`CollateOptions::mask_instructions`], the targets that predict prompt
/// tokens (the first `instruction_length − 1`) are also `ignore_index`
/// (exercise 7.2). Returns `(inputs, targets)`, both `[batch, length]` int64.
///
/// ```
/// use llm_core::finetune::instruct::{custom_collate_fn, CollateOptions};
///
/// // prompts of 3 and 2 tokens; only the response tokens keep their targets
/// let batch = [vec![10i64, 11, 12, 20, 21], vec![13, 14, 22]];
/// let opts = CollateOptions { mask_instructions: true, ..CollateOptions::default() };
/// let (inputs, targets) = custom_collate_fn(&batch, Some(&[3, 2]), &opts);
/// assert_eq!(Vec::<Vec<i64>>::try_from(inputs)?,
///            [[10, 11, 12, 20, 21], [13, 14, 22, 50256, 50256]]);
/// assert_eq!(Vec::<Vec<i64>>::try_from(targets)?,
///            [[-100, -100, 20, 21, 50256], [-100, 22, 50256, -100, -100]]);
/// # Ok::<(), llm_core::tch::TchError>(())
/// ```
///
/// # Panics
/// On a batch it cannot pad, with the message of [`try_custom_collate_fn`],
/// which returns the error instead.
pub fn custom_collate_fn<S: AsRef<[i64]>>(
    batch: &[S],
    instruction_lengths: Option<&[usize]>,
    opts: &CollateOptions,
) -> (Tensor, Tensor) {
    try_custom_collate_fn(batch, instruction_lengths, opts).unwrap_or_else(|e| panic!("{e}"))
}

/// A batch [`custom_collate_fn`] cannot pad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollateError {
    #[error("the batch is empty: custom_collate_fn needs at least one item")]
    EmptyBatch,
    #[error("instruction_lengths has {lengths} entries for a batch of {items} items; give one length per item")]
    Lengths { lengths: usize, items: usize },
    #[error("allowed_max_length = 0 is out of range; accepted: 1 or more, or None for no limit")]
    ZeroMaxLength,
}

/// A loader setting out of range (see [`InstructionDataset::try_into_loader`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoaderSettingError {
    #[error(transparent)]
    Loader(#[from] crate::text::loader::LoaderError),
    #[error(transparent)]
    Collate(#[from] CollateError),
}

/// [`custom_collate_fn`], or an error for an empty batch, an
/// `allowed_max_length` of 0, or `instruction_lengths` that do not give one
/// length per item.
///
/// ```
/// use llm_core::finetune::instruct::{try_custom_collate_fn, CollateOptions};
///
/// let batch = [vec![10i64, 11, 12], vec![13, 14]];
/// let err = try_custom_collate_fn(&batch, Some(&[3]), &CollateOptions::default()).unwrap_err();
/// assert_eq!(err.to_string(),
///            "instruction_lengths has 1 entries for a batch of 2 items; give one length per item");
/// ```
pub fn try_custom_collate_fn<S: AsRef<[i64]>>(
    batch: &[S],
    instruction_lengths: Option<&[usize]>,
    opts: &CollateOptions,
) -> Result<(Tensor, Tensor), CollateError> {
    if batch.is_empty() {
        return Err(CollateError::EmptyBatch);
    }
    if opts.allowed_max_length == Some(0) {
        return Err(CollateError::ZeroMaxLength);
    }
    if let Some(lengths) = instruction_lengths.filter(|l| l.len() != batch.len()) {
        return Err(CollateError::Lengths {
            lengths: lengths.len(),
            items: batch.len(),
        });
    }
    let batch_max_length = batch
        .iter()
        .map(|item| item.as_ref().len() + 1)
        .max()
        .unwrap_or(0);
    let full_length = batch_max_length.saturating_sub(1);
    let length = opts
        .allowed_max_length
        .map_or(full_length, |a| a.min(full_length));
    let mut inputs_lst = Vec::with_capacity(batch.len() * length);
    let mut targets_lst = Vec::with_capacity(batch.len() * length);
    for (i, item) in batch.iter().enumerate() {
        let item = item.as_ref();
        let mut padded = item.to_vec();
        padded.resize(batch_max_length, opts.pad_token_id);
        let inputs = &padded[..full_length];
        let mut targets = padded[1..].to_vec();
        // every padding target but the first is ignored
        for t in targets
            .iter_mut()
            .filter(|t| **t == opts.pad_token_id)
            .skip(1)
        {
            *t = opts.ignore_index;
        }
        if opts.mask_instructions {
            if let Some(lengths) = instruction_lengths {
                let n = lengths[i].saturating_sub(1).min(targets.len());
                targets[..n].fill(opts.ignore_index);
            }
        }
        inputs_lst.extend_from_slice(&inputs[..length]);
        targets_lst.extend_from_slice(&targets[..length]);
    }
    let shape = [batch.len() as i64, length as i64];
    Ok((
        Tensor::from_slice(&inputs_lst)
            .view(shape)
            .to_device(opts.device),
        Tensor::from_slice(&targets_lst)
            .view(shape)
            .to_device(opts.device),
    ))
}

/// The book's `DataLoader` over an [`InstructionDataset`] with the custom
/// collate function: batches of different lengths, drawn from libtorch's
/// generator as PyTorch draws them, so a seeded run sees the book's batches.
#[derive(Debug, Clone)]
pub struct InstructionLoader {
    pub dataset: InstructionDataset,
    pub sampler: BatchSampler,
    pub collate: CollateOptions,
}

impl InstructionLoader {
    /// Number of batches per epoch.
    pub fn len(&self) -> usize {
        self.sampler.num_batches()
    }

    /// True when an epoch has no batches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One epoch's `(inputs, targets)` batches.
    pub fn epoch(&self) -> Vec<(Tensor, Tensor)> {
        self.sampler
            .epoch()
            .into_iter()
            .map(|idx| {
                let items: Vec<&[i64]> = idx
                    .iter()
                    .map(|&i| self.dataset.encoded_texts[i].as_slice())
                    .collect();
                let lengths: Vec<usize> = idx
                    .iter()
                    .map(|&i| self.dataset.instruction_lengths[i])
                    .collect();
                custom_collate_fn(&items, Some(&lengths), &self.collate)
            })
            .collect()
    }
}

impl DataLoader for InstructionLoader {
    fn num_batches(&self) -> usize {
        self.len()
    }
    fn batches(&self) -> Vec<(Tensor, Tensor)> {
        self.epoch()
    }
}

/// The book's response extraction (§7.7): the generated text after the
/// prompt, without the response marker, trimmed.
///
/// ```
/// use llm_core::finetune::instruct::{extract_response, PromptStyle};
///
/// let prompt = "### Instruction:\nName a colour.";
/// let generated = "### Instruction:\nName a colour.\n\n### Response:\nBlue. ";
/// assert_eq!(extract_response(generated, prompt, PromptStyle::Alpaca), "Blue.");
/// ```
pub fn extract_response(generated_text: &str, input_text: &str, style: PromptStyle) -> String {
    let rest = generated_text.strip_prefix(input_text).unwrap_or_else(|| {
        // the decoded prompt differs from the prompt: skip as many characters
        let skip = input_text.chars().count();
        generated_text
            .char_indices()
            .nth(skip)
            .map_or("", |(i, _)| &generated_text[i..])
    });
    rest.replace(style.response_marker(), "").trim().to_string()
}

/// Why a response could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Generate(#[from] crate::model::generate::GenerateError),
}

/// §7.7 for one entry: the prompt, greedy generation of up to
/// `max_new_tokens` tokens that stops at `<|endoftext|>`, and the response
/// cut out of the text.
pub fn generate_response<M: LanguageModel + ?Sized, T: Tokenizer + ?Sized>(
    model: &M,
    tokenizer: &T,
    entry: &InstructionEntry,
    style: PromptStyle,
    max_new_tokens: i64,
    context_size: i64,
    device: Device,
) -> Result<String, ResponseError> {
    let input_text = style.format_input(entry);
    let idx = text_to_token_ids(&input_text, tokenizer)?.to_device(device);
    let token_ids = try_generate(
        model,
        &idx,
        max_new_tokens,
        context_size,
        0.0,
        None,
        Some(PAD_TOKEN_ID),
    )?;
    let generated_text = token_ids_to_text(&token_ids, tokenizer)?;
    Ok(extract_response(&generated_text, &input_text, style))
}

/// [`generate_response`] for every entry, stored in its `model_response`,
/// with a progress line.
pub fn generate_responses<M: LanguageModel + ?Sized, T: Tokenizer + ?Sized>(
    model: &M,
    tokenizer: &T,
    entries: &mut [InstructionEntry],
    style: PromptStyle,
    max_new_tokens: i64,
    context_size: i64,
    device: Device,
) -> Result<(), ResponseError> {
    let mut bar = crate::progress::Progress::new("responses", entries.len());
    for (i, entry) in entries.iter_mut().enumerate() {
        let response = generate_response(
            model,
            tokenizer,
            entry,
            style,
            max_new_tokens,
            context_size,
            device,
        )?;
        entry.model_response = Some(response);
        bar.set_position(i + 1);
    }
    bar.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: Tensor) -> Vec<Vec<i64>> {
        Vec::<Vec<i64>>::try_from(t).unwrap()
    }

    #[test]
    fn the_books_toy_batch() {
        let _rng = crate::rng_lock();
        let batch = [vec![0i64, 1, 2, 3, 4], vec![5, 6], vec![7, 8, 9]];
        let (inputs, targets) = custom_collate_fn(&batch, None, &CollateOptions::default());
        assert_eq!(
            rows(inputs),
            [
                [0, 1, 2, 3, 4],
                [5, 6, 50256, 50256, 50256],
                [7, 8, 9, 50256, 50256]
            ]
        );
        assert_eq!(
            rows(targets),
            [
                [1, 2, 3, 4, 50256],
                [6, 50256, -100, -100, -100],
                [8, 9, 50256, -100, -100]
            ]
        );
    }

    #[test]
    fn truncation_and_masking() {
        let _rng = crate::rng_lock();
        let batch = [vec![0i64, 1, 2, 3, 4], vec![5, 6], vec![7, 8, 9]];
        let opts = CollateOptions {
            allowed_max_length: Some(3),
            ..CollateOptions::default()
        };
        let (inputs, targets) = custom_collate_fn(&batch, None, &opts);
        assert_eq!(rows(inputs), [[0, 1, 2], [5, 6, 50256], [7, 8, 9]]);
        assert_eq!(rows(targets), [[1, 2, 3], [6, 50256, -100], [8, 9, 50256]]);
        // lengths are ignored unless masking is on
        let (_, unmasked) = custom_collate_fn(&batch, Some(&[3, 1, 2]), &opts);
        assert_eq!(rows(unmasked), [[1, 2, 3], [6, 50256, -100], [8, 9, 50256]]);
        let masking = CollateOptions {
            mask_instructions: true,
            ..CollateOptions::default()
        };
        let (_, masked) = custom_collate_fn(&batch, Some(&[3, 1, 2]), &masking);
        assert_eq!(
            rows(masked),
            [
                [-100, -100, 3, 4, 50256],
                [6, 50256, -100, -100, -100],
                [-100, 9, 50256, -100, -100]
            ]
        );
        // a prompt longer than the item masks every target
        let (_, all) = custom_collate_fn(&[vec![1i64, 2]], Some(&[9]), &masking);
        assert_eq!(rows(all), [[-100, -100]]);
        // an allowed length beyond the batch keeps the batch's length
        let long = CollateOptions {
            allowed_max_length: Some(1024),
            ..CollateOptions::default()
        };
        assert_eq!(custom_collate_fn(&batch, None, &long).0.size(), [3, 5]);
    }

    #[test]
    fn prompt_formats() {
        let _rng = crate::rng_lock();
        let with_input = InstructionEntry::new("Translate to French.", "Hello", "Bonjour");
        let without = InstructionEntry::new("Name a prime.", "", "Seven.");
        assert_eq!(
            format_input(&without),
            "Below is an instruction that describes a task. Write a response that appropriately \
             completes the request.\n\n### Instruction:\nName a prime."
        );
        assert!(format_input(&with_input)
            .ends_with("\n\n### Instruction:\nTranslate to French.\n\n### Input:\nHello"));
        assert_eq!(
            PromptStyle::Alpaca.format_response(&without),
            "\n\n### Response:\nSeven."
        );
        assert_eq!(
            PromptStyle::Phi3.format_input(&with_input),
            "<|user|>\nTranslate to French.\nHello"
        );
        assert_eq!(
            PromptStyle::Phi3.format_input(&without),
            "<|user|>\nName a prime."
        );
        assert_eq!(
            PromptStyle::Phi3.format_response(&without),
            "\n<|assistant|>:\nSeven."
        );
        let p = PromptStyle::Phi3.format_input(&without);
        let generated = p.clone() + "\n<|assistant|>:\nSeven.";
        assert_eq!(
            extract_response(&generated, &p, PromptStyle::Phi3),
            "Seven."
        );
        assert_eq!("Phi-3".parse::<PromptStyle>(), Ok(PromptStyle::Phi3));
        assert_eq!("alpaca".parse::<PromptStyle>(), Ok(PromptStyle::Alpaca));
        assert!("chatml"
            .parse::<PromptStyle>()
            .unwrap_err()
            .contains("phi3"));
    }

    #[test]
    fn bad_files_name_entry_and_field() {
        let _rng = crate::rng_lock();
        let cases = [
            ("{}", "data.json: invalid type: map, expected a sequence"),
            (
                "[1]",
                "data.json: entry 0: invalid type: integer `1`, expected struct InstructionEntry",
            ),
            (
                r#"[{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": ""}]"#,
                r#"data.json: entry 1: missing field `output`"#,
            ),
            (
                r#"[{"instruction": "a", "input": "", "output": "b"}] x"#,
                "data.json: trailing characters",
            ),
            (
                r#"[{"instruction": " ", "input": "", "output": "b"}]"#,
                r#"data.json: entry 0: field "instruction" is empty"#,
            ),
            (
                "[{",
                "data.json: entry 0: EOF while parsing an object at line 1 column 2",
            ),
        ];
        for (json, expected) in cases {
            let err = parse_instruction_data(json, "data.json")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err}");
        }
    }

    #[test]
    fn saved_responses_read_back() {
        let _rng = crate::rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("with-response.json");
        let mut e = InstructionEntry::new("Say \"hi\".", "", "Hi — there");
        e.model_response = Some("Hello.".to_string());
        let entries = vec![e, InstructionEntry::new("x", "y", "z")];
        save_instruction_data(&path, &entries).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\n        \"model_response\": \"Hello.\""),
            "{text}"
        );
        assert_eq!(load_instruction_data(&path).unwrap(), entries);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
