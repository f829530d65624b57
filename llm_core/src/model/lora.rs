//! Appendix E.4: the low-rank update of LoRA (Hu et al., 2021).
//!
//! Fine-tuning learns a change `ΔW` of a weight matrix `W`. LoRA learns it
//! as the product of two thin matrices, `ΔW ≈ A B` with `A` `[in, rank]` and
//! `B` `[rank, out]`, and keeps `W` frozen: because
//! `x (W + A B) = x W + x A B`, the update is a layer of its own whose output
//! is added to the frozen layer's. With rank 16, a 768 × 768 projection
//! (589,824 weights) trains 24,576.
//!
//! [`LoraLayer`] is the book's `LoRALayer`. A [`crate::model::linear::Linear`]
//! that carries one is the book's `LinearWithLoRA`, and
//! [`crate::finetune::lora::replace_linear_with_lora`] gives one to every
//! linear layer of a GPT.
//!
//! ```
//! use llm_core::model::lora::LoraLayer;
//! use llm_core::tch::{self, nn, Device, Kind, Tensor};
//!
//! tch::manual_seed(123);
//! let vs = nn::VarStore::new(Device::Cpu);
//! let lora = LoraLayer::new(vs.root() / "lora", 768, 768, 16, 16.0);
//! assert_eq!((lora.a.size(), lora.b.size()), (vec![768, 16], vec![16, 768]));
//! assert_eq!(lora.num_parameters(), 24_576);
//! // B starts at zero, so the update starts at zero
//! let x = Tensor::randn([2, 5, 768], (Kind::Float, Device::Cpu));
//! assert_eq!(lora.forward(&x).abs().max().double_value(&[]), 0.0);
//! ```

use std::borrow::Borrow;
use std::fmt;

use tch::nn::Path;
use tch::{Device, Kind, Tensor};

use crate::model::init;

/// The book's `LoRALayer`: `A` `[in_dim, rank]` drawn as PyTorch's
/// `kaiming_uniform_(A, a=√5)` (uniform in ±1/√rank, from libtorch's global
/// generator), `B` `[rank, out_dim]` zeros, and the output
/// `(alpha / rank) · x A B`.
///
/// The scaling is the book's repository code today (`alpha / rank`, as in
/// the LoRA paper and Hugging Face PEFT). The first printing of the book
/// multiplied by `alpha` alone; `alpha = 16 · rank` here reproduces that.
#[derive(Debug)]
pub struct LoraLayer {
    /// `[in_dim, rank]`, trainable.
    pub a: Tensor,
    /// `[rank, out_dim]`, trainable, zeros at first.
    pub b: Tensor,
    pub rank: i64,
    pub alpha: f64,
}

impl LoraLayer {
    /// Create `A` then `B` under `path` (named `A` and `B`, as the book's
    /// `state_dict` names them).
    ///
    /// # Panics
    /// If `rank` is below 1 or `alpha` is not finite
    /// ([`crate::finetune::lora::replace_linear_with_lora`] checks both and
    /// returns an error instead).
    pub fn new<'a, P: Borrow<Path<'a>>>(
        path: P,
        in_dim: i64,
        out_dim: i64,
        rank: i64,
        alpha: f64,
    ) -> Self {
        assert!(
            rank >= 1,
            "LoRA rank {rank} is out of range; accepted: 1 or more"
        );
        assert!(
            alpha.is_finite(),
            "LoRA alpha {alpha} is not a finite number"
        );
        let path = path.borrow();
        // kaiming_uniform_ reads the fan-in from dimension 1 of A: the rank
        let bound = init::linear_weight_bound(rank);
        let a = init::var_from(path, "A", &init::uniform(&[in_dim, rank], -bound, bound));
        let b = init::var_from(
            path,
            "B",
            &Tensor::zeros([rank, out_dim], (Kind::Float, Device::Cpu)),
        );
        LoraLayer { a, b, rank, alpha }
    }

    /// `alpha / rank`, the factor on `x A B`.
    pub fn scaling(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// `(alpha / rank) · (x @ A @ B)`, in the book's order of operations.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.a).matmul(&self.b) * self.scaling()
    }

    /// The update as a `Linear` weight, `[out_dim, in_dim]`:
    /// `(alpha / rank) · (A B)ᵀ`. Adding it to the frozen weight gives one
    /// layer that computes what the two did (merging).
    pub fn delta_weight(&self) -> Tensor {
        (self.a.matmul(&self.b) * self.scaling()).tr()
    }

    /// The number of trainable values: `rank · (in_dim + out_dim)`.
    pub fn num_parameters(&self) -> i64 {
        (self.a.numel() + self.b.numel()) as i64
    }

    /// `A` then `B`, PyTorch's `parameters()` order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b]
    }
}

impl fmt::Display for LoraLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (in_dim, out_dim) = (self.a.size()[0], self.b.size()[1]);
        write!(
            f,
            "LoRALayer(in_dim={in_dim}, out_dim={out_dim}, rank={}, alpha={})",
            self.rank, self.alpha
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;

    #[test]
    fn a_is_drawn_as_kaiming_uniform_over_the_rank() {
        let _rng = crate::rng_lock();
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let lora = LoraLayer::new(vs.root() / "l", 6, 4, 2, 4.0);
        tch::manual_seed(3);
        let bound = 1.0 / 2f64.sqrt();
        let expected = Tensor::empty([6, 2], (Kind::Float, Device::Cpu)).uniform_(-bound, bound);
        assert!(lora.a.equal(&expected));
        assert_eq!(lora.b.abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert!(lora.a.requires_grad() && lora.b.requires_grad());
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(names, ["l.A", "l.B"]);
    }

    #[test]
    fn delta_weight_is_the_forward_as_a_linear_weight() {
        let _rng = crate::rng_lock();
        let vs = VarStore::new(Device::Cpu);
        let lora = LoraLayer::new(vs.root() / "l", 5, 3, 2, 8.0);
        tch::no_grad(|| {
            let _ = lora.b.shallow_clone().uniform_(-1.0, 1.0);
        });
        let x = Tensor::randn([4, 5], (Kind::Float, Device::Cpu));
        let via_weight = x.matmul(&lora.delta_weight().tr());
        assert!(lora.forward(&x).allclose(&via_weight, 1e-5, 1e-6, false));
        assert_eq!(lora.scaling(), 4.0);
        assert_eq!(
            lora.to_string(),
            "LoRALayer(in_dim=5, out_dim=3, rank=2, alpha=8)"
        );
    }
}
