//! The KV cache (the book's bonus `ch04/03_kv-cache`): keep the keys and
//! values of the tokens seen so far, so that each new token needs one
//! position of work instead of the whole context.
//!
//! Without a cache, generating token `t` runs the model over all `t`
//! tokens again, although the keys and values of the first `t − 1` are the
//! same as in the step before. With a cache the prompt runs once (filling
//! the cache), then every step feeds only the newest token: its query
//! attends to the cached keys, and its key and value are appended.
//!
//! | variant | keys and values | memory |
//! |---|---|---|
//! | [`KvCache::simple`] | concatenated to the cached ones at every step (the book's first version) | grows with the sequence |
//! | [`KvCache::preallocated`] | written into buffers of `capacity` positions allocated once (the book's optimized version) | fixed |
//! | [`KvCache::sliding_window`] | preallocated, keeping only the last `window` positions | fixed, smaller |
//!
//! The cache also keeps the position of the next token ([`KvCache::current_pos`],
//! the book's `current_pos`), so that positional embeddings continue where
//! the cache left off; [`KvCache::reset`] (the book's `reset_kv_cache`)
//! empties it for a new prompt. Keys and values are stored per layer as
//! `[batch, kv_heads, positions, head_dim]`, so a model whose keys have
//! fewer heads than its queries (grouped-query attention) stores only those.
//!
//! ```
//! use llm_core::model::kv_cache::KvCache;
//! use llm_core::model::gpt::{GptConfig, GptModel};
//! use llm_core::tch::{nn, Device, Tensor};
//!
//! let cfg = GptConfig { vocab_size: 50, context_length: 16, emb_dim: 16, n_heads: 2, n_layers: 2,
//!                       drop_rate: 0.0, qkv_bias: false };
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = GptModel::new(vs.root(), &cfg)?;
//! let mut cache = KvCache::simple(cfg.n_layers as usize);
//! let prompt = Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0);
//! let logits = model.forward_with_cache(&prompt, &mut cache, None)?; // fills 3 positions
//! assert_eq!(cache.current_pos(), 3);
//! let next = logits.select(1, -1).argmax(-1, true);
//! model.forward_with_cache(&next, &mut cache, None)?; // one position of work
//! assert_eq!(cache.current_pos(), 4);
//! // 2 (keys, values) x 2 layers x 1 batch x 2 heads x 8 head_dim x 4 positions x 4 bytes
//! assert_eq!(cache.memory_bytes(), 2 * 2 * 2 * 8 * 4 * 4);
//! # Ok::<(), llm_core::model::gpt::ModelError>(())
//! ```

use std::fmt;

use tch::{Device, Kind, Tensor};

/// Which variant of the cache (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheKind {
    /// Concatenate new keys and values to the cached ones.
    Simple,
    /// Buffers of `capacity` positions, allocated at the first step.
    Preallocated { capacity: i64 },
    /// Buffers of `window` positions keeping only the most recent ones: each
    /// new token attends to at most the last `window` tokens.
    SlidingWindow { window: i64 },
}

impl fmt::Display for KvCacheKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvCacheKind::Simple => write!(f, "simple cache"),
            KvCacheKind::Preallocated { capacity } => {
                write!(f, "preallocated cache ({capacity} positions)")
            }
            KvCacheKind::SlidingWindow { window } => {
                write!(f, "sliding-window cache (last {window} positions)")
            }
        }
    }
}

/// What a forward pass through the cache may not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvCacheError {
    #[error("the {kind} holds {cached} positions; {new} more do not fit in its capacity of {capacity}: reset it, or make it larger")]
    Full {
        kind: KvCacheKind,
        cached: i64,
        new: i64,
        capacity: i64,
    },
    #[error("{new} tokens at once do not fit in a {kind}: feed at most {window} tokens per step, or use a larger window")]
    ChunkLargerThanWindow {
        kind: KvCacheKind,
        new: i64,
        window: i64,
    },
    #[error("the cache was filled with a batch of {cached}, this step has {new} rows: reset it for a new batch")]
    Batch { cached: i64, new: i64 },
    #[error(
        "the cache has {cached} layers, the model {model}: build it with the model's n_layers"
    )]
    Layers { cached: usize, model: usize },
    #[error("the capacity or window of a KV cache must be at least 1, got {0}")]
    Size(i64),
    #[error("the cache is at position {current_pos}: {new} more tokens would pass the model's context length {context_length}, where its positional embeddings end. Reset the cache, or generate without a cache (which crops the context)")]
    BeyondContext {
        current_pos: i64,
        new: i64,
        context_length: i64,
    },
}

/// The cached keys and values of every layer, the position of the next
/// token, and (for batched generation) which cached positions are padding.
#[derive(Debug)]
pub struct KvCache {
    kind: KvCacheKind,
    /// Per layer: keys and values, `[batch, kv_heads, positions, head_dim]`
    /// (for the preallocated kinds, buffers of which the first `len`
    /// positions are in use).
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Positions held.
    len: i64,
    /// The position of the next token (the book's `current_pos`).
    current_pos: i64,
    /// `[batch, len]`, true where a held position is padding.
    pad: Option<Tensor>,
    /// `[batch, 1]`: padding tokens seen so far per row (also those a
    /// sliding window dropped), to number the real tokens from 0.
    pads_seen: Option<Tensor>,
    /// Positions dropped from the front in the current step (sliding window).
    drop: i64,
}

/// The mask and positions of one step, shared by every layer.
#[derive(Debug)]
pub struct CacheStep {
    /// `[batch or 1, 1, new, held + new]`, true where a query may not look.
    pub mask: Tensor,
    /// `[batch or 1, new]`: the position of each new token, for the
    /// positional embedding (padding does not count).
    pub positions: Tensor,
}

impl KvCache {
    fn with_kind(n_layers: usize, kind: KvCacheKind) -> Self {
        KvCache {
            kind,
            layers: (0..n_layers).map(|_| None).collect(),
            len: 0,
            current_pos: 0,
            pad: None,
            pads_seen: None,
            drop: 0,
        }
    }

    /// The book's first cache: new keys and values are concatenated to the
    /// cached ones at every step.
    pub fn simple(n_layers: usize) -> Self {
        Self::with_kind(n_layers, KvCacheKind::Simple)
    }

    /// The book's optimized cache: buffers of `capacity` positions,
    /// allocated at the first step and written in place.
    pub fn preallocated(n_layers: usize, capacity: i64) -> Result<Self, KvCacheError> {
        if capacity < 1 {
            return Err(KvCacheError::Size(capacity));
        }
        Ok(Self::with_kind(
            n_layers,
            KvCacheKind::Preallocated { capacity },
        ))
    }

    /// A preallocated cache that keeps only the last `window` positions
    /// (older keys and values are dropped, so memory stays fixed however
    /// long the generation). While the sequence fits in the window it
    /// computes exactly what the other caches compute.
    pub fn sliding_window(n_layers: usize, window: i64) -> Result<Self, KvCacheError> {
        if window < 1 {
            return Err(KvCacheError::Size(window));
        }
        Ok(Self::with_kind(
            n_layers,
            KvCacheKind::SlidingWindow { window },
        ))
    }

    /// A cache of `kind`.
    pub fn new(n_layers: usize, kind: KvCacheKind) -> Result<Self, KvCacheError> {
        match kind {
            KvCacheKind::Simple => Ok(Self::simple(n_layers)),
            KvCacheKind::Preallocated { capacity } => Self::preallocated(n_layers, capacity),
            KvCacheKind::SlidingWindow { window } => Self::sliding_window(n_layers, window),
        }
    }

    /// Which variant this is.
    pub fn kind(&self) -> KvCacheKind {
        self.kind
    }

    /// The number of layers.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// The position of the next token (the book's `current_pos`).
    pub fn current_pos(&self) -> i64 {
        self.current_pos
    }

    /// The positions whose keys and values are held.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// True before the first step (and after [`KvCache::reset`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys and values held for layer `layer`, each `[batch, kv_heads,
    /// positions, head_dim]` (`None` before the first step).
    pub fn keys_values(&self, layer: usize) -> Option<(Tensor, Tensor)> {
        let (k, v) = self.layers.get(layer)?.as_ref()?;
        Some((k.narrow(2, 0, self.len), v.narrow(2, 0, self.len)))
    }

    /// Empty the cache for a new prompt (the book's `reset_kv_cache`).
    /// Preallocated buffers are kept for reuse when the next batch has the
    /// same shape.
    pub fn reset(&mut self) {
        if self.kind == KvCacheKind::Simple {
            self.layers.iter_mut().for_each(|l| *l = None);
        }
        self.len = 0;
        self.current_pos = 0;
        self.pad = None;
        self.pads_seen = None;
        self.drop = 0;
    }

    /// Bytes the stored keys and values take: 2 · layers · batch · heads ·
    /// head_dim · positions · bytes per element, where positions is the
    /// length held for the simple cache and the buffers' size for the
    /// preallocated ones.
    pub fn memory_bytes(&self) -> i64 {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| ((k.numel() + v.numel()) * k.kind().elt_size_in_bytes()) as i64)
            .sum()
    }

    /// The capacity in positions (`None`: the simple cache grows).
    pub fn capacity(&self) -> Option<i64> {
        match self.kind {
            KvCacheKind::Simple => None,
            KvCacheKind::Preallocated { capacity } => Some(capacity),
            KvCacheKind::SlidingWindow { window } => Some(window),
        }
    }

    /// Begin a step of `new` tokens in a batch of `batch` rows:
    /// `pad_new` (`[batch, new]`, true for padding) marks left padding.
    /// Checks that they fit, and returns the attention mask and the
    /// positions of the new tokens. Called by the model once per forward
    /// pass, before the layers' [`KvCache::append`].
    pub fn begin_step(
        &mut self,
        batch: i64,
        new: i64,
        pad_new: Option<&Tensor>,
        device: Device,
    ) -> Result<CacheStep, KvCacheError> {
        // `pad` is set at every step (and cleared by `reset`): its rows are
        // the batch the held keys and values belong to
        if let Some(cached) = self
            .pad
            .as_ref()
            .map(|p| p.size()[0])
            .filter(|&c| c != batch)
        {
            return Err(KvCacheError::Batch { cached, new: batch });
        }
        self.drop = match self.kind {
            KvCacheKind::Simple => 0,
            KvCacheKind::Preallocated { capacity } => {
                if self.len + new > capacity {
                    return Err(KvCacheError::Full {
                        kind: self.kind,
                        cached: self.len,
                        new,
                        capacity,
                    });
                }
                0
            }
            KvCacheKind::SlidingWindow { window } => {
                if new > window {
                    return Err(KvCacheError::ChunkLargerThanWindow {
                        kind: self.kind,
                        new,
                        window,
                    });
                }
                (self.len + new - window).max(0)
            }
        };
        let kept = self.len - self.drop;
        // the slots (absolute positions in the stream) of keys and queries
        let first_key = self.current_pos - kept;
        let opts = (Kind::Int64, device);
        let key_slots = Tensor::arange_start(first_key, self.current_pos + new, opts);
        let query_slots = Tensor::arange_start(self.current_pos, self.current_pos + new, opts);
        // causal: a query never looks at a later position
        let causal = key_slots.unsqueeze(0).gt_tensor(&query_slots.unsqueeze(1));
        let new_pad = match pad_new {
            Some(p) => p.to_device(device).to_kind(Kind::Bool),
            None => Tensor::zeros([batch, new], (Kind::Bool, device)),
        };
        let pad_all = match &self.pad {
            Some(p) => Tensor::cat(
                &[
                    p.narrow(1, self.drop, kept).to_device(device),
                    new_pad.shallow_clone(),
                ],
                1,
            ),
            None => new_pad.shallow_clone(),
        };
        // padding is never looked at, except by itself (so that a padded
        // query has one finite score and never turns into NaN)
        let is_self = key_slots.unsqueeze(0).eq_tensor(&query_slots.unsqueeze(1));
        let mask = causal.unsqueeze(0).logical_or(
            &pad_all
                .unsqueeze(1)
                .logical_and(&is_self.logical_not().unsqueeze(0)),
        );
        // positions: slots minus the padding before them
        let pads_before = match &self.pads_seen {
            Some(p) => p.to_device(device),
            None => Tensor::zeros([batch, 1], opts),
        };
        let new_pads_before = new_pad.to_kind(Kind::Int64).cumsum(1, Kind::Int64);
        let positions = (query_slots.unsqueeze(0) - &pads_before - &new_pads_before).clamp_min(0);
        self.pads_seen = Some(pads_before + new_pads_before.narrow(1, new - 1, 1));
        self.pad = Some(pad_all);
        Ok(CacheStep {
            mask: mask.unsqueeze(1),
            positions,
        })
    }

    /// Store the new `keys` and `values` of layer `layer` (`[batch,
    /// kv_heads, new, head_dim]`) and return all held ones, the new last.
    pub fn append(&mut self, layer: usize, keys: &Tensor, values: &Tensor) -> (Tensor, Tensor) {
        let new = keys.size()[2];
        let kept = self.len - self.drop;
        let slot = &mut self.layers[layer];
        match self.kind {
            KvCacheKind::Simple => {
                let (k, v) = match slot.take() {
                    Some((k, v)) => (
                        Tensor::cat(&[k, keys.shallow_clone()], 2),
                        Tensor::cat(&[v, values.shallow_clone()], 2),
                    ),
                    None => (keys.shallow_clone(), values.shallow_clone()),
                };
                *slot = Some((k.shallow_clone(), v.shallow_clone()));
                (k, v)
            }
            KvCacheKind::Preallocated { capacity: size }
            | KvCacheKind::SlidingWindow { window: size } => {
                let fits = slot.as_ref().is_some_and(|(k, _)| {
                    let (s, n) = (k.size(), keys.size());
                    s[0] == n[0]
                        && s[1] == n[1]
                        && s[3] == n[3]
                        && k.kind() == keys.kind()
                        && k.device() == keys.device()
                });
                if !fits {
                    let shape = [keys.size()[0], keys.size()[1], size, keys.size()[3]];
                    let opts = (keys.kind(), keys.device());
                    *slot = Some((Tensor::zeros(shape, opts), Tensor::zeros(shape, opts)));
                }
                let (kb, vb) = slot.as_mut().expect("allocated above");
                for (buf, src) in [(&mut *kb, keys), (&mut *vb, values)] {
                    if self.drop > 0 && kept > 0 {
                        // slide the kept positions to the front
                        let tail = buf.narrow(2, self.drop, kept).copy();
                        buf.narrow(2, 0, kept).copy_(&tail);
                    }
                    buf.narrow(2, kept, new).copy_(src);
                }
                (kb.narrow(2, 0, kept + new), vb.narrow(2, 0, kept + new))
            }
        }
    }

    /// Finish a step of `new` tokens (after every layer's [`KvCache::append`]).
    pub fn end_step(&mut self, new: i64) {
        self.len = self.len - self.drop + new;
        self.current_pos += new;
        self.drop = 0;
    }
}

impl fmt::Display for KvCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} layers, {} positions held, next position {}, {:.2} MB",
            self.kind,
            self.layers.len(),
            self.len,
            self.current_pos,
            self.memory_bytes() as f64 / 1e6
        )
    }
}
