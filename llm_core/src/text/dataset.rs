//! The chapter 2 data set: input–target pairs cut from a text with a sliding
//! window (§2.6), and the loader over them.
//!
//! An LLM learns to predict the next token. From the token ids of a text,
//! [`GptDatasetV1`] cuts windows of `max_length` ids, one every `stride`
//! ids; each window's target is the same window shifted one token to the
//! right. [`create_dataloader_v1`] tokenizes a text with GPT-2's tokenizer
//! and returns a [`TensorLoader`] that draws batches as PyTorch's
//! `DataLoader` does (the same order after the same `tch::manual_seed`).
//!
//! ```
//! use llm_core::text::dataset::GptDatasetV1;
//!
//! let ids: Vec<u32> = (10..20).collect();
//! let dataset = GptDatasetV1::from_ids(&ids, 4, 4)?;
//! assert_eq!(dataset.len(), 2); // windows at 0 and 4 (a window at 8 would lack targets)
//! let (input, target) = dataset.get(1);
//! assert_eq!(Vec::<i64>::try_from(&input).unwrap(), [14, 15, 16, 17]);
//! assert_eq!(Vec::<i64>::try_from(&target).unwrap(), [15, 16, 17, 18]);
//! # Ok::<(), llm_core::text::dataset::DatasetError>(())
//! ```

use tch::Tensor;

use crate::text::loader::TensorLoader;
use crate::text::tokenizer::{Gpt2Tokenizer, Tokenizer, TokenizerError};

/// What can go wrong building a data set.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The text is too short for a single input–target pair.
    #[error(
        "the text has {tokens} tokens, but one input of max_length {max_length} \
         and its target need at least {} tokens",
        max_length + 1
    )]
    TooShort { tokens: usize, max_length: usize },
    /// `max_length`, `stride` or `batch_size` is zero.
    #[error("{name} must be at least 1")]
    Zero { name: &'static str },
    /// Tokenizing the text failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// The book's `GPTDatasetV1`: row `i` of `input_ids` is the window of
/// `max_length` token ids starting at `i * stride`, and row `i` of
/// `target_ids` the same window shifted by one token.
#[derive(Debug)]
pub struct GptDatasetV1 {
    /// `[N, max_length]`, int64.
    pub input_ids: Tensor,
    /// `[N, max_length]`, int64.
    pub target_ids: Tensor,
}

impl GptDatasetV1 {
    /// Tokenize `text` (special tokens such as `<|endoftext|>` allowed) and
    /// cut it into windows (the book's `GPTDatasetV1(txt, tokenizer,
    /// max_length, stride)`).
    ///
    /// ```no_run
    /// use llm_core::text::dataset::GptDatasetV1;
    /// use llm_core::text::tokenizer::Gpt2Tokenizer;
    ///
    /// let text = llm_core::data::read_to_string("the-verdict.txt")?;
    /// let dataset = GptDatasetV1::new(&text, &Gpt2Tokenizer::gpt2()?, 256, 128)?;
    /// assert_eq!(dataset.input_ids.size(), [40, 256]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(
        text: &str,
        tokenizer: &dyn Tokenizer,
        max_length: usize,
        stride: usize,
    ) -> Result<Self, DatasetError> {
        let ids = tokenizer.encode(text)?;
        Self::from_ids(&ids, max_length, stride)
    }

    /// Cut token ids into windows: starts `0, stride, 2·stride, …` below
    /// `len - max_length` (as the book's `range(0, len(token_ids) -
    /// max_length, stride)`), so every window has its full target.
    ///
    /// At least `max_length + 1` ids are needed; fewer is
    /// [`DatasetError::TooShort`], not an empty data set.
    pub fn from_ids(ids: &[u32], max_length: usize, stride: usize) -> Result<Self, DatasetError> {
        if max_length == 0 {
            return Err(DatasetError::Zero { name: "max_length" });
        }
        if stride == 0 {
            return Err(DatasetError::Zero { name: "stride" });
        }
        if ids.len() <= max_length {
            return Err(DatasetError::TooShort {
                tokens: ids.len(),
                max_length,
            });
        }
        let starts: Vec<usize> = (0..ids.len() - max_length).step_by(stride).collect();
        let mut inputs = Vec::with_capacity(starts.len() * max_length);
        let mut targets = Vec::with_capacity(starts.len() * max_length);
        for &i in &starts {
            inputs.extend(ids[i..i + max_length].iter().map(|&t| i64::from(t)));
            targets.extend(ids[i + 1..i + max_length + 1].iter().map(|&t| i64::from(t)));
        }
        let shape = [starts.len() as i64, max_length as i64];
        Ok(GptDatasetV1 {
            input_ids: Tensor::from_slice(&inputs).view(shape),
            target_ids: Tensor::from_slice(&targets).view(shape),
        })
    }

    /// Number of input–target pairs (`len(dataset)`).
    pub fn len(&self) -> usize {
        self.input_ids.size()[0] as usize
    }

    /// True when there are no pairs (never, for a data set that was built).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pair `i` as `(input, target)`, each `[max_length]` (`dataset[i]`).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> (Tensor, Tensor) {
        let i = i as i64;
        (self.input_ids.get(i), self.target_ids.get(i))
    }

    /// A loader over the pairs (PyTorch's `DataLoader(dataset, batch_size,
    /// shuffle, drop_last)`).
    ///
    /// # Panics
    /// If `batch_size` is 0; [`GptDatasetV1::try_into_loader`] returns the
    /// error (as [`create_dataloader_v1`] does).
    pub fn into_loader(self, batch_size: usize, shuffle: bool, drop_last: bool) -> TensorLoader {
        self.try_into_loader(batch_size, shuffle, drop_last)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`GptDatasetV1::into_loader`], or an error when `batch_size` is 0.
    pub fn try_into_loader(
        self,
        batch_size: usize,
        shuffle: bool,
        drop_last: bool,
    ) -> Result<TensorLoader, DatasetError> {
        if batch_size == 0 {
            return Err(DatasetError::Zero { name: "batch_size" });
        }
        Ok(
            TensorLoader::new(self.input_ids, self.target_ids, batch_size)
                .shuffle(shuffle)
                .drop_last(drop_last),
        )
    }
}

/// The book's `create_dataloader_v1`: tokenize `text` with GPT-2's tokenizer
/// ([`Gpt2Tokenizer::gpt2`]), cut it into windows ([`GptDatasetV1`]) and
/// return a loader of `batch_size` pairs per batch.
///
/// Each `loader.epoch()` draws from libtorch's global generator exactly as a
/// `for` loop over the book's `DataLoader` (see [`crate::text::loader`]), so after
/// `tch::manual_seed(123)` a shuffled loader gives the book's batches.
///
/// ```no_run
/// use llm_core::text::dataset::create_dataloader_v1;
///
/// let text = llm_core::data::read_to_string("the-verdict.txt")?;
/// let loader = create_dataloader_v1(&text, 8, 4, 4, false, true)?;
/// let (inputs, targets) = &loader.epoch()[0];
/// assert_eq!(inputs.size(), [8, 4]);
/// assert_eq!(Vec::<i64>::try_from(inputs.get(0)).unwrap(), [40, 367, 2885, 1464]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn create_dataloader_v1(
    text: &str,
    batch_size: usize,
    max_length: usize,
    stride: usize,
    shuffle: bool,
    drop_last: bool,
) -> Result<TensorLoader, DatasetError> {
    if batch_size == 0 {
        return Err(DatasetError::Zero { name: "batch_size" });
    }
    let tokenizer = Gpt2Tokenizer::gpt2()?;
    let dataset = GptDatasetV1::new(text, &tokenizer, max_length, stride)?;
    Ok(dataset.into_loader(batch_size, shuffle, drop_last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_shifted_targets() {
        let _rng = crate::rng_lock();
        let ids: Vec<u32> = (0..10).collect();
        let d = GptDatasetV1::from_ids(&ids, 3, 2).unwrap();
        // starts 0, 2, 4, 6 (range(0, 7, 2))
        assert_eq!(d.len(), 4);
        assert_eq!(d.input_ids.size(), [4, 3]);
        let (x, y) = d.get(3);
        assert_eq!(Vec::<i64>::try_from(&x).unwrap(), [6, 7, 8]);
        assert_eq!(Vec::<i64>::try_from(&y).unwrap(), [7, 8, 9]);
        assert!(d
            .target_ids
            .slice(1, 0, 2, 1)
            .equal(&d.input_ids.slice(1, 1, 3, 1)));
    }

    #[test]
    fn exactly_max_length_plus_one_gives_one_pair() {
        let _rng = crate::rng_lock();
        let d = GptDatasetV1::from_ids(&[1, 2, 3, 4, 5], 4, 1).unwrap();
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn too_short_and_zero_sizes_are_errors() {
        let _rng = crate::rng_lock();
        let err = GptDatasetV1::from_ids(&[1, 2, 3, 4], 4, 1).unwrap_err();
        assert!(matches!(
            err,
            DatasetError::TooShort {
                tokens: 4,
                max_length: 4
            }
        ));
        assert!(err.to_string().contains("at least 5 tokens"), "{err}");
        assert!(GptDatasetV1::from_ids(&[1, 2, 3], 0, 1).is_err());
        assert!(GptDatasetV1::from_ids(&[1, 2, 3], 1, 0).is_err());
    }
}
