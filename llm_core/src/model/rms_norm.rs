//! RMSNorm (the book's bonus `ch05/07_gpt_to_llama`): the layer norm of
//! Llama and Qwen. It drops LayerNorm's mean subtraction and its shift, and
//! divides each vector by its root mean square instead of its standard
//! deviation:
//!
//! `y = x / sqrt(mean(x²) + eps) · scale`
//!
//! One parameter per feature instead of two, one reduction instead of two.
//! As the book's Qwen3 code (and Hugging Face's), the statistics are
//! computed in float32 whatever the input's dtype, and the result is cast
//! back, so bfloat16 models keep their precision where it matters.
//!
//! ```
//! use llm_core::model::rms_norm::RmsNorm;
//! use llm_core::tch::{nn, nn::Module, Device, Kind, Tensor};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let norm = RmsNorm::new(vs.root() / "norm", 4, 1e-6);
//! let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, -4.0]).view([1, 4]);
//! let y = norm.forward(&x);
//! // the root mean square of the output is 1
//! let rms = y.pow_tensor_scalar(2).mean(Kind::Float).sqrt().double_value(&[]);
//! assert!((rms - 1.0).abs() < 1e-5);
//! ```

use std::borrow::Borrow;
use std::fmt;

use tch::nn::{Init, Module, Path};
use tch::{Kind, Tensor};

/// `RMSNorm(emb_dim, eps)`: one `scale` per feature (ones at first).
#[derive(Debug)]
pub struct RmsNorm {
    pub eps: f64,
    /// `[emb_dim]`
    pub scale: Tensor,
}

impl RmsNorm {
    /// Create `scale` (ones, of the var store's kind) under `path`.
    pub fn new<'a, P: Borrow<Path<'a>>>(path: P, emb_dim: i64, eps: f64) -> Self {
        RmsNorm {
            eps,
            scale: path.borrow().var("scale", &[emb_dim], Init::Const(1.0)),
        }
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let input_kind = x.kind();
        let x = x.to_kind(Kind::Float);
        let variance = x.pow_tensor_scalar(2).mean_dim(-1, true, None::<Kind>);
        let norm_x = x * (variance + self.eps).rsqrt();
        (norm_x * &self.scale).to_kind(input_kind)
    }
}

impl fmt::Display for RmsNorm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RMSNorm(({},), eps={:e})",
            self.scale.size()[0],
            self.eps
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    #[test]
    fn matches_the_formula_and_keeps_the_dtype() {
        let _rng = crate::rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let norm = RmsNorm::new(vs.root(), 8, 1e-5);
        tch::no_grad(|| {
            norm.scale
                .shallow_clone()
                .copy_(&Tensor::arange(8, (Kind::Float, Device::Cpu)))
        });
        let x = Tensor::randn([2, 3, 8], (Kind::Float, Device::Cpu));
        let expected =
            &x / (x.square().mean_dim(-1, true, None::<Kind>) + 1e-5).sqrt() * &norm.scale;
        assert!(norm.forward(&x).allclose(&expected, 1e-6, 1e-6, false));
        let y = norm.forward(&x.to_kind(Kind::BFloat16));
        assert_eq!(y.kind(), Kind::BFloat16);
        assert_eq!(norm.to_string(), "RMSNorm((8,), eps=1e-5)");
    }
}
