//! Rotary position embeddings, RoPE (the book's bonus `ch05/07_gpt_to_llama`):
//! instead of adding a learned position vector to each token (GPT-2's
//! `pos_emb`), Llama and Qwen rotate every query and key by an angle that
//! grows with the token's position. Pairs of features `(i, i + head_dim/2)`
//! turn at their own frequency `θ_i = base^(−2i/head_dim)`, fast for the
//! first pairs and slow for the last; the dot product of a rotated query and
//! key then depends only on how far apart the two tokens are.
//!
//! [`compute_rope_params`] tabulates `cos` and `sin` of every angle once
//! (`[context_length, head_dim]`), [`apply_rope`] rotates a
//! `[batch, heads, tokens, head_dim]` tensor with them. Llama 3 stretches
//! the slowest frequencies for long contexts ([`RopeScaling`]: divided by
//! `factor` where the wavelength exceeds `original_context_length /
//! low_freq_factor`, kept where it is below `original_context_length /
//! high_freq_factor`, blended in between).
//!
//! ```
//! use llm_core::model::rope::{apply_rope, compute_rope_params};
//! use llm_core::tch::{Device, Kind, Tensor};
//!
//! let (cos, sin) = compute_rope_params(8, 10_000.0, 16, None);
//! assert_eq!(cos.size(), [16, 8]);
//! // a rotation keeps each vector's length
//! let x = Tensor::randn([1, 2, 5, 8], (Kind::Float, Device::Cpu));
//! let y = apply_rope(&x, &cos, &sin, 0);
//! let norms = |t: &Tensor| t.square().sum_dim_intlist(-1, false, None::<Kind>);
//! assert!(norms(&y).allclose(&norms(&x), 1e-5, 1e-5, false));
//! ```

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Llama 3's frequency scaling of RoPE (the book's `rope_freq`, Hugging
/// Face's `rope_scaling` with `rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    /// The context length the model was first trained with (8192 for Llama 3).
    #[serde(rename = "original_max_position_embeddings")]
    pub original_context_length: f64,
}

impl RopeScaling {
    /// Llama 3.1 and 3.2's values.
    pub fn llama3() -> Self {
        RopeScaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context_length: 8192.0,
        }
    }
}

/// The inverse frequencies `θ_i` (`[head_dim / 2]`, float32), Llama 3's
/// scaling applied when given.
pub fn inverse_frequencies(
    head_dim: i64,
    theta_base: f64,
    freq_config: Option<&RopeScaling>,
) -> Tensor {
    assert!(
        head_dim % 2 == 0,
        "RoPE needs an even head_dim, got {head_dim}"
    );
    let opts = (Kind::Float, Device::Cpu);
    let exponents = Tensor::arange_start_step(0, head_dim, 2, opts) / head_dim as f64;
    let inv_freq = Tensor::from(theta_base as f32).pow(&exponents).reciprocal();
    let Some(s) = freq_config else {
        return inv_freq;
    };
    let low_freq_wavelen = s.original_context_length / s.low_freq_factor;
    let high_freq_wavelen = s.original_context_length / s.high_freq_factor;
    let wavelen = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
    // long wavelengths (low frequencies) are slowed down by `factor`
    let scaled = inv_freq.where_self(&wavelen.le(low_freq_wavelen), &(&inv_freq / s.factor));
    // in between, a blend of the two
    let smooth = (s.original_context_length / &wavelen - s.low_freq_factor)
        / (s.high_freq_factor - s.low_freq_factor);
    let smoothed: Tensor = (-&smooth + 1.0) * (&inv_freq / s.factor) + &smooth * &inv_freq;
    let is_medium = wavelen
        .le(low_freq_wavelen)
        .logical_and(&wavelen.ge(high_freq_wavelen));
    smoothed.where_self(&is_medium, &scaled)
}

/// The book's `compute_rope_params`: `cos` and `sin` of the angle of every
/// position `0..context_length` and feature, each `[context_length,
/// head_dim]` in float32 (the two halves of a row hold the same angles).
pub fn compute_rope_params(
    head_dim: i64,
    theta_base: f64,
    context_length: i64,
    freq_config: Option<&RopeScaling>,
) -> (Tensor, Tensor) {
    let inv_freq = inverse_frequencies(head_dim, theta_base, freq_config);
    let positions = Tensor::arange(context_length, (Kind::Float, Device::Cpu));
    let angles = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
    let angles = Tensor::cat(&[&angles, &angles], 1);
    (angles.cos(), angles.sin())
}

/// The book's `apply_rope`: rotate `x` (`[batch, heads, tokens, head_dim]`)
/// as tokens at positions `offset, offset + 1, …` (the offset is where a KV
/// cache left off).
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, offset: i64) -> Tensor {
    let tokens = x.size()[2];
    let positions = Tensor::arange_start(offset, offset + tokens, (Kind::Int64, x.device()));
    apply_rope_at(x, cos, sin, &positions.unsqueeze(0))
}

/// [`apply_rope`] with each row's own positions (`[batch or 1, tokens]`
/// int64), as batched generation with left padding needs.
pub fn apply_rope_at(x: &Tensor, cos: &Tensor, sin: &Tensor, positions: &Tensor) -> Tensor {
    let (cos_rows, sin_rows) = rope_rows(cos, sin, positions);
    rotate(x, &cos_rows, &sin_rows)
}

/// The rows of the `cos` and `sin` tables at `positions` (`[batch or 1,
/// tokens]`), shaped `[batch or 1, 1, tokens, head_dim]` to broadcast over
/// the heads. A model looks them up once per forward pass and hands them
/// to every layer's [`rotate`].
pub fn rope_rows(cos: &Tensor, sin: &Tensor, positions: &Tensor) -> (Tensor, Tensor) {
    let (b, t) = (positions.size()[0], positions.size()[1]);
    let head_dim = cos.size()[1];
    let flat = positions.flatten(0, -1);
    let rows = |table: &Tensor| table.index_select(0, &flat).view([b, 1, t, head_dim]);
    (rows(cos), rows(sin))
}

/// Rotate `x` (`[batch, heads, tokens, head_dim]`) by the angles whose
/// cosines and sines [`rope_rows`] looked up: `x · cos + rotate_half(x) ·
/// sin`, where `rotate_half` turns `(x1, x2)` into `(−x2, x1)`.
pub fn rotate(x: &Tensor, cos_rows: &Tensor, sin_rows: &Tensor) -> Tensor {
    let head_dim = x.size()[3];
    let x1 = x.narrow(3, 0, head_dim / 2);
    let x2 = x.narrow(3, head_dim / 2, head_dim / 2);
    let rotated = Tensor::cat(&[&x2.neg(), &x1], 3);
    // in float32 (cos and sin are), then back to x's dtype
    let x_rotated = x * cos_rows + rotated * sin_rows;
    x_rotated.to_kind(x.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_leaves_high_frequencies_and_slows_low_ones() {
        let _rng = crate::rng_lock();
        let plain = inverse_frequencies(64, 500_000.0, None);
        let scaled = inverse_frequencies(64, 500_000.0, Some(&RopeScaling::llama3()));
        let (p, s) = (
            Vec::<f32>::try_from(&plain).unwrap(),
            Vec::<f32>::try_from(&scaled).unwrap(),
        );
        assert_eq!(p[0], s[0]); // fastest: unchanged
        assert!((p[31] / s[31] - 32.0).abs() < 1e-3); // slowest: divided by factor
    }

    #[test]
    fn offset_equals_later_rows() {
        let _rng = crate::rng_lock();
        let (cos, sin) = compute_rope_params(8, 10_000.0, 16, None);
        let x = Tensor::randn([1, 2, 6, 8], (Kind::Float, Device::Cpu));
        let all = apply_rope(&x, &cos, &sin, 0);
        let tail = apply_rope(&x.narrow(2, 4, 2), &cos, &sin, 4);
        assert!(all.narrow(2, 4, 2).allclose(&tail, 1e-6, 1e-6, false));
    }
}
