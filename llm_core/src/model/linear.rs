//! The linear layer the models hold: PyTorch's `nn.Linear` (`x Wᵀ + b`),
//! which can also carry appendix E's LoRA update and then is the book's
//! `LinearWithLoRA` (`linear(x) + lora(x)`).
//!
//! ```
//! use llm_core::model::linear::Linear;
//! use llm_core::model::lora::LoraLayer;
//! use llm_core::tch::{self, nn, nn::Module, Device, Kind, Tensor};
//!
//! tch::manual_seed(123);
//! let vs = nn::VarStore::new(Device::Cpu);
//! let mut layer = Linear::new(vs.root() / "fc", 4, 3, true);
//! let x = Tensor::randn([2, 4], (Kind::Float, Device::Cpu));
//! let before = layer.forward(&x);
//! layer.lora = Some(LoraLayer::new(vs.root() / "fc" / "lora", 4, 3, 2, 2.0));
//! assert!(layer.forward(&x).equal(&before)); // B = 0: nothing changes yet
//! ```

use std::borrow::Borrow;
use std::fmt;

use tch::nn::{self, Module, Path};
use tch::Tensor;

use crate::model::init;
use crate::model::lora::LoraLayer;

/// `nn.Linear(in_dim, out_dim, bias)`: weight `ws` `[out_dim, in_dim]`,
/// optional bias `bs` `[out_dim]`, and (appendix E) an optional LoRA update
/// added to the output.
#[derive(Debug)]
pub struct Linear {
    pub ws: Tensor,
    pub bs: Option<Tensor>,
    /// Appendix E's low-rank update; with it the layer is the book's
    /// `LinearWithLoRA`.
    pub lora: Option<LoraLayer>,
}

impl Linear {
    /// A layer with PyTorch's default initialisation ([`init::linear`]),
    /// variables `weight` and `bias` under `path`.
    pub fn new<'a, P: Borrow<Path<'a>>>(path: P, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        Linear::from(init::linear(path, in_dim, out_dim, bias))
    }

    /// `in_features` of PyTorch's `nn.Linear`.
    pub fn in_features(&self) -> i64 {
        self.ws.size()[1]
    }

    /// `out_features` of PyTorch's `nn.Linear`.
    pub fn out_features(&self) -> i64 {
        self.ws.size()[0]
    }

    /// The trainable tensors in PyTorch's `parameters()` order: weight,
    /// bias, then LoRA's `A` and `B`.
    pub fn parameters(&self) -> Vec<&Tensor> {
        let mut p: Vec<&Tensor> = std::iter::once(&self.ws).chain(self.bs.as_ref()).collect();
        if let Some(lora) = &self.lora {
            p.extend(lora.parameters());
        }
        p
    }

    /// A layer sharing this one's tensors (training one trains the other).
    pub fn shallow_clone(&self) -> Linear {
        Linear {
            ws: self.ws.shallow_clone(),
            bs: self.bs.as_ref().map(Tensor::shallow_clone),
            lora: self.lora.as_ref().map(|l| LoraLayer {
                a: l.a.shallow_clone(),
                b: l.b.shallow_clone(),
                rank: l.rank,
                alpha: l.alpha,
            }),
        }
    }
}

impl From<nn::Linear> for Linear {
    fn from(l: nn::Linear) -> Self {
        Linear {
            ws: l.ws,
            bs: l.bs,
            lora: None,
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.linear(&self.ws, self.bs.as_ref());
        match &self.lora {
            None => y,
            Some(lora) => y + lora.forward(x),
        }
    }
}

impl fmt::Display for Linear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let linear = format!(
            "Linear(in_features={}, out_features={}, bias={})",
            self.in_features(),
            self.out_features(),
            if self.bs.is_some() { "True" } else { "False" }
        );
        match &self.lora {
            None => f.write_str(&linear),
            Some(lora) => write!(f, "LinearWithLoRA({linear}, {lora})"),
        }
    }
}
