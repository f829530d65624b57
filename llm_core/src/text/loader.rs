//! Mini-batch order drawn exactly as PyTorch's `DataLoader` draws it.
//!
//! The book seeds with `torch.manual_seed(123)` and then iterates
//! `DataLoader(..., shuffle=True)`. To see the same batches, and to leave
//! libtorch's global generator in the same state (dropout and sampling later
//! depend on it), every epoch here makes the same draws in the same order as
//! PyTorch 2.13's single-process `DataLoader` with a `RandomSampler`
//! (`torch/utils/data/dataloader.py` and `sampler.py`):
//!
//! 1. creating the epoch's iterator draws a "base seed":
//!    `torch.empty((), dtype=torch.int64).random_()` on the global generator.
//!    This happens for **every** loader, shuffled or not — so even evaluating
//!    on a validation loader advances the global generator;
//! 2. with `shuffle`, the sampler draws a second such number, seeds a fresh
//!    CPU generator (a Mersenne Twister) with it, and takes
//!    `torch.randperm(n, generator=...)` from that generator.
//!
//! Step 1 and the seed in step 2 use libtorch itself; the `randperm` on the
//! private generator is reproduced in [`crate::rng::randperm`] because tch does not
//! expose generators. A test checks it against libtorch's `randperm` on the
//! global generator after `manual_seed`.
//!
//! ```
//! use llm_core::text::loader::BatchSampler;
//!
//! tch::manual_seed(123);
//! let sampler = BatchSampler::new(5, 2).shuffle(true).drop_last(true);
//! let batches = sampler.epoch(); // two batches of two indices; one left over is dropped
//! assert_eq!(batches.len(), 2);
//! assert!(batches.iter().all(|b| b.len() == 2));
//! ```

use tch::{Device, Kind, Tensor};

use crate::rng::randperm;

/// One draw of `torch.empty((), dtype=torch.int64).random_()` from libtorch's
/// global generator (how `DataLoader` and `RandomSampler` draw their seeds).
pub fn draw_seed() -> i64 {
    Tensor::empty([], (Kind::Int64, Device::Cpu))
        .random_()
        .int64_value(&[])
}

/// The indices of each mini-batch of an epoch, drawn as PyTorch's
/// `DataLoader(dataset, batch_size, shuffle, drop_last)` draws them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSampler {
    /// Number of examples in the data set.
    pub len: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// Reshuffle at the start of every epoch.
    pub shuffle: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Only this rank's share of each epoch, as PyTorch's
    /// `DistributedSampler` ([`BatchSampler::distributed`]).
    pub shard: Option<Shard>,
}

/// A rank's share of the data (PyTorch's `DistributedSampler(dataset,
/// num_replicas, rank, shuffle, seed, drop_last=False)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world_size: usize,
    /// The shuffle of epoch `e` is `randperm(len)` of a generator seeded
    /// with `seed + e` (the same on every rank).
    pub seed: u64,
}

impl Shard {
    /// The indices of `epoch` for this rank, as `DistributedSampler`'s
    /// `__iter__` after `set_epoch(epoch)`: the (shuffled) indices, padded
    /// by repeating them from the start to a multiple of the world size,
    /// then every `world_size`-th from `rank`.
    pub fn indices(&self, len: usize, shuffle: bool, epoch: u64) -> Vec<usize> {
        let mut indices: Vec<usize> = if shuffle {
            randperm(len, self.seed.wrapping_add(epoch))
        } else {
            (0..len).collect()
        };
        let total = len.div_ceil(self.world_size) * self.world_size;
        let original = indices.clone();
        while indices.len() < total && !original.is_empty() {
            let need = total - indices.len();
            indices.extend_from_slice(&original[..need.min(original.len())]);
        }
        indices
            .into_iter()
            .skip(self.rank)
            .step_by(self.world_size)
            .collect()
    }
}

/// A loader setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoaderError {
    #[error("batch_size = 0 is out of range; accepted: 1 or more")]
    ZeroBatchSize,
}

impl BatchSampler {
    /// Batches in order, keeping a smaller last batch (PyTorch's defaults).
    ///
    /// # Panics
    /// If `batch_size` is 0 (PyTorch's `DataLoader` raises too);
    /// [`BatchSampler::try_new`] returns the error instead.
    pub fn new(len: usize, batch_size: usize) -> Self {
        Self::try_new(len, batch_size).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`BatchSampler::new`], or an error when `batch_size` is 0.
    pub fn try_new(len: usize, batch_size: usize) -> Result<Self, LoaderError> {
        if batch_size == 0 {
            return Err(LoaderError::ZeroBatchSize);
        }
        Ok(BatchSampler {
            len,
            batch_size,
            shuffle: false,
            drop_last: false,
            shard: None,
        })
    }

    /// Set `shuffle`.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Set `drop_last`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Number of batches per epoch (`len(loader)` in PyTorch).
    pub fn num_batches(&self) -> usize {
        let len = match self.shard {
            Some(s) => self.len.div_ceil(s.world_size),
            None => self.len,
        };
        if self.drop_last {
            len / self.batch_size
        } else {
            len.div_ceil(self.batch_size)
        }
    }

    /// Only `rank`'s share of every epoch, shuffled (with `shuffle`) by
    /// `seed` + the epoch as PyTorch's `DistributedSampler`: the loader of
    /// one rank in data-parallel training ([`crate::distributed`]).
    pub fn distributed(mut self, rank: usize, world_size: usize, seed: u64) -> Self {
        self.shard = Some(Shard {
            rank,
            world_size: world_size.max(1),
            seed,
        });
        self
    }

    /// Start an epoch: make the global-generator draws PyTorch makes when a
    /// `for batch in loader` loop starts, and return every batch's indices.
    pub fn epoch(&self) -> Vec<Vec<usize>> {
        self.epoch_at(0)
    }

    /// [`BatchSampler::epoch`] for epoch `epoch` of a distributed sampler
    /// (`sampler.set_epoch(epoch)` in PyTorch; other samplers ignore it).
    /// The `DataLoader` still draws its base seed from the global generator;
    /// the shard's shuffle draws nothing from it.
    pub fn epoch_at(&self, epoch: u64) -> Vec<Vec<usize>> {
        let _base_seed = draw_seed();
        let order: Vec<usize> = match self.shard {
            Some(shard) => shard.indices(self.len, self.shuffle, epoch),
            None if self.shuffle => {
                let seed = draw_seed();
                randperm(self.len, seed as u64)
            }
            None => (0..self.len).collect(),
        };
        let mut batches: Vec<Vec<usize>> = order
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        if self.drop_last && batches.last().is_some_and(|b| b.len() < self.batch_size) {
            batches.pop();
        }
        batches
    }
}

/// What the training and evaluation loops need from a data loader: the
/// number of batches per epoch and one epoch's `(inputs, targets)` batches,
/// drawn from libtorch's global generator as a `for` loop over a PyTorch
/// `DataLoader` draws. [`TensorLoader`] is one; chapter 7's loader, whose
/// batches differ in length, is another.
pub trait DataLoader {
    /// Number of batches per epoch.
    fn num_batches(&self) -> usize;
    /// One epoch's batches.
    fn batches(&self) -> Vec<(Tensor, Tensor)>;
    /// One epoch's batches, made one at a time: the generator draws happen
    /// when this is called (as [`DataLoader::batches`]), the tensors only
    /// when a batch is reached. The training and evaluation loops use this,
    /// so a loader over a corpus bigger than memory
    /// ([`crate::text::shards::ShardLoader`]) never holds an epoch at once.
    fn batch_iter(&self) -> Box<dyn Iterator<Item = (Tensor, Tensor)> + '_> {
        Box::new(self.batches().into_iter())
    }
    /// The epoch a distributed sampler shuffles for (PyTorch's
    /// `sampler.set_epoch(epoch)`, which the training loop calls at each
    /// epoch's start); nothing for other loaders.
    fn set_epoch(&self, _epoch: usize) {}
}

impl DataLoader for TensorLoader {
    fn num_batches(&self) -> usize {
        self.len()
    }
    fn batches(&self) -> Vec<(Tensor, Tensor)> {
        self.epoch()
    }
    fn batch_iter(&self) -> Box<dyn Iterator<Item = (Tensor, Tensor)> + '_> {
        let epoch = self.epoch.get();
        Box::new(
            self.sampler
                .epoch_at(epoch)
                .into_iter()
                .map(|idx| self.select(idx)),
        )
    }
    fn set_epoch(&self, epoch: usize) {
        self.epoch.set(epoch as u64);
    }
}

/// A loader over in-memory tensors: `inputs[i]` and `targets[i]` are example
/// `i`. Each call to [`TensorLoader::epoch`] draws like one `for` loop over a
/// PyTorch `DataLoader` of a `TensorDataset`.
#[derive(Debug)]
pub struct TensorLoader {
    pub inputs: Tensor,
    pub targets: Tensor,
    pub sampler: BatchSampler,
    /// The epoch of a distributed sampler ([`DataLoader::set_epoch`]).
    pub epoch: std::cell::Cell<u64>,
}

impl TensorLoader {
    /// A loader; `inputs` and `targets` must have the same first dimension.
    ///
    /// # Panics
    /// If the first dimensions differ (the message gives both shapes) or
    /// `batch_size` is 0; [`TensorLoader::try_new`] returns the latter as an
    /// error.
    pub fn new(inputs: Tensor, targets: Tensor, batch_size: usize) -> Self {
        Self::try_new(inputs, targets, batch_size).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`TensorLoader::new`], or an error when `batch_size` is 0.
    ///
    /// # Panics
    /// If the first dimensions differ (a bug in the calling code, not input).
    pub fn try_new(
        inputs: Tensor,
        targets: Tensor,
        batch_size: usize,
    ) -> Result<Self, LoaderError> {
        let (n, m) = (inputs.size()[0], targets.size()[0]);
        assert_eq!(
            n,
            m,
            "inputs {:?} and targets {:?} must have the same number of examples",
            inputs.size(),
            targets.size()
        );
        Ok(TensorLoader {
            inputs,
            targets,
            sampler: BatchSampler::try_new(n as usize, batch_size)?,
            epoch: std::cell::Cell::new(0),
        })
    }

    /// Only `rank`'s share of each epoch ([`BatchSampler::distributed`]).
    pub fn distributed(mut self, rank: usize, world_size: usize, seed: u64) -> Self {
        self.sampler = self.sampler.distributed(rank, world_size, seed);
        self
    }

    /// Set `shuffle`.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.sampler.shuffle = shuffle;
        self
    }

    /// Set `drop_last`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.sampler.drop_last = drop_last;
        self
    }

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
            .epoch_at(self.epoch.get())
            .into_iter()
            .map(|idx| self.select(idx))
            .collect()
    }

    /// The examples at `idx`, as one batch.
    fn select(&self, idx: Vec<usize>) -> (Tensor, Tensor) {
        let idx: Vec<i64> = idx.into_iter().map(|i| i as i64).collect();
        let idx = Tensor::from_slice(&idx).to_device(self.inputs.device());
        (
            self.inputs.index_select(0, &idx),
            self.targets
                .index_select(0, &idx.to_device(self.targets.device())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_batches_and_generator_state() {
        let _rng = crate::rng_lock();
        let s = BatchSampler::new(10, 3).shuffle(true);
        tch::manual_seed(123);
        let a = (s.epoch(), s.epoch());
        let after_a = draw_seed();
        tch::manual_seed(123);
        let b = (s.epoch(), s.epoch());
        let after_b = draw_seed();
        assert_eq!(a, b);
        assert_eq!(after_a, after_b);
        assert_ne!(a.0, a.1, "each epoch reshuffles");
        let mut all: Vec<usize> = a.0.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(a.0.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
    }

    #[test]
    fn every_epoch_draws_from_the_global_generator() {
        let _rng = crate::rng_lock();
        // an unshuffled loader still consumes one draw per epoch, as in PyTorch
        tch::manual_seed(1);
        let _ = draw_seed();
        let expected = draw_seed();
        tch::manual_seed(1);
        let batches = BatchSampler::new(4, 2).epoch();
        assert_eq!(batches, vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(draw_seed(), expected);
        // a shuffled one consumes two
        tch::manual_seed(1);
        let _ = (draw_seed(), draw_seed());
        let expected = draw_seed();
        tch::manual_seed(1);
        let _ = BatchSampler::new(4, 2).shuffle(true).epoch();
        assert_eq!(draw_seed(), expected);
    }

    #[test]
    fn drop_last_and_tensor_batches() {
        let _rng = crate::rng_lock();
        let x = Tensor::arange(10, (Kind::Float, Device::Cpu)).view([5, 2]);
        let y = Tensor::from_slice(&[0i64, 0, 0, 1, 1]);
        let loader = TensorLoader::new(x, y, 2).drop_last(true);
        assert_eq!(loader.len(), 2);
        let batches = loader.epoch();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].0.size(), [2, 2]);
        assert_eq!(Vec::<i64>::try_from(&batches[1].1).unwrap(), [0, 1]);
    }
}
