//! The SwiGLU feed-forward network of Llama and Qwen (the book's bonus
//! `ch05/07_gpt_to_llama`, its `FeedForward`): where GPT-2 computes
//! `fc2(GELU(fc1(x)))`, SwiGLU has two input projections, one of them
//! gating the other through SiLU (`x · sigmoid(x)`):
//!
//! `fc3(SiLU(fc1(x)) · fc2(x))`
//!
//! Hugging Face calls the three `gate_proj`, `up_proj` and `down_proj`. No
//! biases.
//!
//! ```
//! use llm_core::model::swiglu::FeedForward;
//! use llm_core::tch::{nn, nn::Module, Device, Kind, Tensor};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let ff = FeedForward::new(vs.root() / "ff", 16, 64);
//! let x = Tensor::randn([2, 3, 16], (Kind::Float, Device::Cpu));
//! assert_eq!(ff.forward(&x).size(), [2, 3, 16]);
//! assert_eq!(ff.num_parameters(), 3 * 16 * 64);
//! ```

use std::borrow::Borrow;

use tch::nn::{Module, Path};
use tch::Tensor;

use crate::model::linear::Linear;

/// The book's `FeedForward` of Llama and Qwen: `fc1` (gate), `fc2` (up),
/// `fc3` (down), without biases.
#[derive(Debug)]
pub struct FeedForward {
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
}

impl FeedForward {
    /// `emb_dim → hidden_dim` (twice), `hidden_dim → emb_dim`, under `path`.
    pub fn new<'a, P: Borrow<Path<'a>>>(path: P, emb_dim: i64, hidden_dim: i64) -> Self {
        let p = path.borrow();
        FeedForward {
            fc1: Linear::new(p / "fc1", emb_dim, hidden_dim, false),
            fc2: Linear::new(p / "fc2", emb_dim, hidden_dim, false),
            fc3: Linear::new(p / "fc3", hidden_dim, emb_dim, false),
        }
    }

    /// The three weights' elements.
    pub fn num_parameters(&self) -> i64 {
        [&self.fc1, &self.fc2, &self.fc3]
            .iter()
            .map(|l| l.ws.numel() as i64)
            .sum()
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Tensor {
        let x_fc1 = self.fc1.forward(x);
        let x_fc2 = self.fc2.forward(x);
        self.fc3.forward(&(x_fc1.silu() * x_fc2))
    }
}
