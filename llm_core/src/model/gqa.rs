//! Grouped-query attention, GQA (the book's bonus `ch04/04_gqa` and the
//! attention of its Llama 3 and Qwen3 code): the queries keep all
//! `num_heads` heads, but keys and values have only `num_kv_groups` heads,
//! each shared by `num_heads / num_kv_groups` query heads. The key and
//! value projections shrink by that factor, and so does the KV cache, which
//! dominates memory in long generations. `num_kv_groups == num_heads` is
//! ordinary multi-head attention, `1` is multi-query attention.
//!
//! As in Llama and Qwen there are no biases, the positions enter through
//! [RoPE](crate::model::rope) applied to queries and keys, and Qwen3 also
//! normalises each query and key head with an [`RmsNorm`] before RoPE
//! (`qk_norm`), which keeps the attention logits in range. The head size
//! need not be `d_in / num_heads` (Qwen3 0.6B: 16 heads of 128 on 1024
//! features).
//!
//! The attention itself is libtorch's `scaled_dot_product_attention`
//! with `enable_gqa`, which computes what the book writes out:
//! ```text
//! keys = keys.repeat_interleave(group_size, dim=1)      # share each kv head
//! values = values.repeat_interleave(group_size, dim=1)
//! attn_weights = softmax((queries @ keys.T).masked_fill(mask, -inf) / sqrt(head_dim))
//! context = attn_weights @ values
//! ```
//! (`tests/open_models.rs` checks it against both the written-out form and
//! Hugging Face's models.)
//!
//! ```
//! use llm_core::model::gqa::GroupedQueryAttention;
//! use llm_core::model::rope::compute_rope_params;
//! use llm_core::tch::{nn, Device, Kind, Tensor};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! // 8 query heads share 2 key/value heads
//! let att = GroupedQueryAttention::new(vs.root() / "att", 64, 8, 2, None, false);
//! assert_eq!(att.w_key.out_features(), 2 * 8); // 2 kv heads of 8
//! let (cos, sin) = compute_rope_params(8, 10_000.0, 32, None);
//! let x = Tensor::randn([1, 5, 64], (Kind::Float, Device::Cpu));
//! assert_eq!(att.forward(&x, &cos, &sin).size(), [1, 5, 64]);
//! ```

use std::borrow::Borrow;

use tch::nn::{Module, Path};
use tch::Tensor;

use crate::model::kv_cache::KvCache;
use crate::model::linear::Linear;
use crate::model::rms_norm::RmsNorm;
use crate::model::rope::{rope_rows, rotate};

/// The book's `GroupedQueryAttention(d_in, num_heads, num_kv_groups,
/// head_dim, qk_norm)`.
#[derive(Debug)]
pub struct GroupedQueryAttention {
    pub w_query: Linear,
    pub w_key: Linear,
    pub w_value: Linear,
    pub out_proj: Linear,
    /// Qwen3's RMS norms of each query and key head (`qk_norm`).
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub num_heads: i64,
    pub num_kv_groups: i64,
    pub head_dim: i64,
}

impl GroupedQueryAttention {
    /// The projections `W_query` (`d_in → num_heads·head_dim`), `W_key` and
    /// `W_value` (`d_in → num_kv_groups·head_dim`), `out_proj` back to
    /// `d_in`, and with `qk_norm` the two norms (eps 1e-6), under `path`.
    /// `head_dim` defaults to `d_in / num_heads`.
    ///
    /// # Panics
    /// When `num_heads` is not a multiple of `num_kv_groups`, or `head_dim`
    /// is not given and `d_in` is not a multiple of `num_heads` (model
    /// configurations are checked before they get here).
    pub fn new<'a, P: Borrow<Path<'a>>>(
        path: P,
        d_in: i64,
        num_heads: i64,
        num_kv_groups: i64,
        head_dim: Option<i64>,
        qk_norm: bool,
    ) -> Self {
        assert!(
            num_kv_groups > 0 && num_heads % num_kv_groups == 0,
            "num_heads ({num_heads}) must be a multiple of num_kv_groups ({num_kv_groups})"
        );
        let head_dim = head_dim.unwrap_or_else(|| {
            assert!(d_in % num_heads == 0, "d_in ({d_in}) must be a multiple of num_heads ({num_heads}) when head_dim is not set");
            d_in / num_heads
        });
        let p = path.borrow();
        let d_out = num_heads * head_dim;
        GroupedQueryAttention {
            w_query: Linear::new(p / "W_query", d_in, d_out, false),
            w_key: Linear::new(p / "W_key", d_in, num_kv_groups * head_dim, false),
            w_value: Linear::new(p / "W_value", d_in, num_kv_groups * head_dim, false),
            out_proj: Linear::new(p / "out_proj", d_out, d_in, false),
            q_norm: qk_norm.then(|| RmsNorm::new(p / "q_norm", head_dim, 1e-6)),
            k_norm: qk_norm.then(|| RmsNorm::new(p / "k_norm", head_dim, 1e-6)),
            num_heads,
            num_kv_groups,
            head_dim,
        }
    }

    /// Causal attention over `x` (`[batch, tokens, d_in]`) at positions
    /// `0..tokens`, RoPE from the tables `cos`, `sin` (as the book's
    /// `forward(x, mask, cos, sin)`).
    pub fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let tokens = x.size()[1];
        let positions = Tensor::arange(tokens, (tch::Kind::Int64, x.device())).unsqueeze(0);
        let (cos_rows, sin_rows) = rope_rows(cos, sin, &positions);
        self.forward_at(x, (&cos_rows, &sin_rows), None, None)
    }

    /// The general forward pass: `rope` holds the cosines and sines at the
    /// new tokens' positions ([`rope_rows`]); `mask` (`[batch or 1, 1,
    /// tokens, keys]`, true where a query may not look) or, without one, a
    /// causal mask; and with `cache` (the cache and this layer's index) the
    /// new keys and values are appended to the cached ones and attention
    /// runs over all.
    pub fn forward_at(
        &self,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: Option<&Tensor>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor {
        let (b, tokens) = (x.size()[0], x.size()[1]);
        let heads = |t: Tensor, n: i64| t.view([b, tokens, n, self.head_dim]).transpose(1, 2);
        let mut queries = heads(self.w_query.forward(x), self.num_heads);
        let mut keys = heads(self.w_key.forward(x), self.num_kv_groups);
        let mut values = heads(self.w_value.forward(x), self.num_kv_groups);
        if let Some(norm) = &self.q_norm {
            queries = norm.forward(&queries);
        }
        if let Some(norm) = &self.k_norm {
            keys = norm.forward(&keys);
        }
        queries = rotate(&queries, rope.0, rope.1);
        keys = rotate(&keys, rope.0, rope.1);
        if let Some((cache, layer)) = cache {
            (keys, values) = cache.append(layer, &keys, &values);
        }
        // libtorch's mask marks where a query may look: the opposite of ours
        let allowed = mask.map(|m| m.logical_not());
        let is_causal = allowed.is_none();
        let context = Tensor::scaled_dot_product_attention(
            &queries,
            &keys,
            &values,
            allowed.as_ref(),
            0.0,
            is_causal,
            None::<f64>,
            true,
        );
        let context = context
            .transpose(1, 2)
            .reshape([b, tokens, self.num_heads * self.head_dim]);
        self.out_proj.forward(&context)
    }

    /// The linear layers with their names (for LoRA and weight loading).
    pub fn linear_layers(&self) -> [(&'static str, &Linear); 4] {
        [
            ("W_query", &self.w_query),
            ("W_key", &self.w_key),
            ("W_value", &self.w_value),
            ("out_proj", &self.out_proj),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rope::{apply_rope_at, compute_rope_params};
    use tch::{nn, Device, Kind};

    /// The book's written-out attention (repeat_interleave, matmul, mask,
    /// softmax) gives what the fused call gives.
    #[test]
    fn fused_equals_written_out() {
        let _rng = crate::rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let att = GroupedQueryAttention::new(vs.root(), 32, 4, 2, Some(16), true);
        let (cos, sin) = compute_rope_params(16, 10_000.0, 8, None);
        let x = Tensor::randn([2, 6, 32], (Kind::Float, Device::Cpu));
        let fused = tch::no_grad(|| att.forward(&x, &cos, &sin));

        let heads = |t: Tensor, n: i64| t.view([2, 6, n, 16]).transpose(1, 2);
        let pos = Tensor::arange(6, (Kind::Int64, Device::Cpu)).unsqueeze(0);
        let q = apply_rope_at(
            &att.q_norm
                .as_ref()
                .unwrap()
                .forward(&heads(att.w_query.forward(&x), 4)),
            &cos,
            &sin,
            &pos,
        );
        let k = apply_rope_at(
            &att.k_norm
                .as_ref()
                .unwrap()
                .forward(&heads(att.w_key.forward(&x), 2)),
            &cos,
            &sin,
            &pos,
        );
        let v = heads(att.w_value.forward(&x), 2);
        let k = k.repeat_interleave_self_int(2, 1, None);
        let v = v.repeat_interleave_self_int(2, 1, None);
        let mask = Tensor::ones([6, 6], (Kind::Bool, Device::Cpu)).triu(1);
        let scores = q
            .matmul(&k.transpose(2, 3))
            .masked_fill(&mask, f64::NEG_INFINITY);
        let weights = (scores / 4.0).softmax(-1, Kind::Float);
        let context = weights.matmul(&v).transpose(1, 2).reshape([2, 6, 64]);
        let written_out = tch::no_grad(|| att.out_proj.forward(&context));
        assert!(fused.allclose(&written_out, 1e-5, 1e-6, false));
    }
}
