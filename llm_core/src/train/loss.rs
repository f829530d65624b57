//! Chapter 5.1: the training loss of a GPT — cross-entropy of the next-token
//! logits against the targets, for one batch and averaged over a loader —
//! and perplexity.
//!
//! | book (§) | here |
//! |---|---|
//! | 5.1.2 | [`perplexity`] |
//! | 5.1.3 | [`calc_loss_batch`], [`calc_loss_loader`] |
//!
//! ```
//! use llm_core::text::loader::TensorLoader;
//! use llm_core::train::loss::{calc_loss_loader, perplexity};
//! use llm_core::model::gpt::{GptConfig, GptModel};
//! use llm_core::tch::{self, nn, Device, Kind, Tensor};
//!
//! let cfg = GptConfig { vocab_size: 50, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 1,
//!                       ..GptConfig::gpt2_small() };
//! tch::manual_seed(123);
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = GptModel::new(vs.root(), &cfg)?;
//! let ids = Tensor::randint(50, [6, 9], (Kind::Int64, Device::Cpu));
//! let loader = TensorLoader::new(ids.narrow(1, 0, 8), ids.narrow(1, 1, 8), 2);
//! let loss = calc_loss_loader(&loader, &model, Device::Cpu, None);
//! // an untrained model is close to uniform: loss ≈ ln(50), perplexity ≈ 50
//! assert!((loss - 50f64.ln()).abs() < 1.0);
//! assert!(perplexity(loss) > 10.0);
//! # Ok::<(), llm_core::model::gpt::ModelError>(())
//! ```

use tch::nn::ModuleT;
use tch::{Device, Reduction, Tensor};

use crate::text::loader::DataLoader;

/// Targets with this value carry no loss (PyTorch's `cross_entropy`
/// default `ignore_index`; chapter 7 pads its targets with it).
pub const IGNORE_INDEX: i64 = -100;

/// The book's `calc_loss_batch`: the model's logits for `input_batch`
/// (`[batch, num_tokens]` token ids) flattened to `[batch * num_tokens,
/// vocab]`, and their mean cross-entropy against `target_batch` (same shape
/// as the input), both moved to `device` first. Targets equal to −100 are
/// ignored, as in PyTorch's `cross_entropy` (chapter 7 pads with them).
///
/// `train` plays the part of the book's `model.train()` / `model.eval()`:
/// `true` applies dropout. The result is a scalar tensor that keeps its
/// graph, so `loss.backward()` trains the model.
///
/// ```
/// use llm_core::train::loss::calc_loss_batch;
/// use llm_core::model::gpt::{GptConfig, GptModel};
/// use llm_core::tch::{self, nn, Device, Tensor};
///
/// let cfg = GptConfig { vocab_size: 50, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 1,
///                       ..GptConfig::gpt2_small() };
/// tch::manual_seed(123);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let input = Tensor::from_slice(&[1i64, 2, 3, 4]).view([2, 2]);
/// let target = Tensor::from_slice(&[2i64, 3, 4, 5]).view([2, 2]);
/// let loss = calc_loss_batch(&input, &target, &model, Device::Cpu, false);
/// assert_eq!(loss.size(), Vec::<i64>::new());
/// assert!(loss.requires_grad());
/// # Ok::<(), llm_core::model::gpt::ModelError>(())
/// ```
pub fn calc_loss_batch<M: ModuleT + ?Sized>(
    input_batch: &Tensor,
    target_batch: &Tensor,
    model: &M,
    device: Device,
    train: bool,
) -> Tensor {
    let input_batch = input_batch.to_device(device);
    let target_batch = target_batch.to_device(device);
    let logits = model.forward_t(&input_batch, train);
    logits.flatten(0, 1).cross_entropy_loss::<Tensor>(
        &target_batch.flatten(0, -1),
        None,
        Reduction::Mean,
        IGNORE_INDEX,
        0.0,
    )
}

/// The book's `calc_loss_loader`: the mean of [`calc_loss_batch`] over the
/// first `num_batches` batches of one epoch of `data_loader` (all of them
/// when `None`; at most `data_loader.len()`), in evaluation mode (no
/// dropout) and without gradients.
///
/// The batches come from [`DataLoader::batches`] (for a
/// [`crate::text::loader::TensorLoader`], its `epoch`), so a call draws from
/// libtorch's global generator exactly as a `for` loop over a PyTorch
/// `DataLoader` does (once, or twice when shuffled), and seeded runs keep
/// matching the book's afterwards.
///
/// An empty loader gives `f64::NAN`, as the book's `float("nan")`, and then
/// draws nothing (the book returns before iterating). `Some(0)` batches also
/// gives NaN (0/0; the book raises `ZeroDivisionError`), after the epoch's
/// draws.
///
/// ```
/// use llm_core::text::loader::TensorLoader;
/// use llm_core::train::loss::calc_loss_loader;
/// use llm_core::model::gpt::{GptConfig, GptModel};
/// use llm_core::tch::{nn, Device, Kind, Tensor};
///
/// let cfg = GptConfig { vocab_size: 50, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 1,
///                       ..GptConfig::gpt2_small() };
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let empty = Tensor::zeros([0, 8], (Kind::Int64, Device::Cpu));
/// let loader = TensorLoader::new(empty.copy(), empty, 2);
/// assert!(calc_loss_loader(&loader, &model, Device::Cpu, None).is_nan());
/// # Ok::<(), llm_core::model::gpt::ModelError>(())
/// ```
pub fn calc_loss_loader<M: ModuleT + ?Sized, L: DataLoader + ?Sized>(
    data_loader: &L,
    model: &M,
    device: Device,
    num_batches: Option<usize>,
) -> f64 {
    mean_over_batches(data_loader, num_batches, |input_batch, target_batch| {
        calc_loss_batch(input_batch, target_batch, model, device, false).double_value(&[])
    })
}

/// The mean of `batch_value` over the first `num_batches` batches of one
/// epoch of `data_loader` (all of them when `None`), without gradients: the
/// loop of every `calc_loss_loader` (chapter 5's and chapter 6's). NaN for
/// an empty loader, which then draws nothing from the generator.
pub fn mean_over_batches<L, F>(
    data_loader: &L,
    num_batches: Option<usize>,
    mut batch_value: F,
) -> f64
where
    L: DataLoader + ?Sized,
    F: FnMut(&Tensor, &Tensor) -> f64,
{
    let len = data_loader.num_batches();
    if len == 0 {
        return f64::NAN;
    }
    let num_batches = num_batches.map_or(len, |n| n.min(len));
    let total: f64 = tch::no_grad(|| {
        data_loader
            .batch_iter()
            .take(num_batches)
            .map(|(input_batch, target_batch)| batch_value(&input_batch, &target_batch))
            .sum()
    });
    total / num_batches as f64
}

/// Perplexity, `exp(loss)` (§5.1.2): the effective number of tokens the model
/// is unsure between. A loss of `ln(50257)` (uniform over GPT-2's vocabulary)
/// has perplexity 50257.
///
/// ```
/// use llm_core::train::loss::perplexity;
///
/// assert!((perplexity(50257f64.ln()) - 50257.0).abs() < 1e-6);
/// assert_eq!(perplexity(0.0), 1.0);
/// ```
pub fn perplexity(loss: f64) -> f64 {
    loss.exp()
}
