//! Layers initialised exactly as PyTorch's defaults, so that a seeded run
//! builds the same weights as the book's PyTorch code.
//!
//! tch's own `nn::linear` initialises weights differently from PyTorch
//! (Kaiming-uniform with the ReLU gain, giving U(±√6/√fan_in) instead of
//! PyTorch's U(±1/√fan_in)), so the book's numbers would not come out. These
//! functions draw from libtorch's global generator in PyTorch's order, on the
//! CPU (as the book builds its model before moving it with `.to(device)`),
//! and then copy into the variable store on its device.
//!
//! ```
//! use llm_core::model::init;
//! use llm_core::tch::{nn, Device, Kind, Tensor};
//!
//! tch::manual_seed(123);
//! let vs = nn::VarStore::new(Device::Cpu);
//! let layer = init::linear(&vs.root() / "layer1", 2, 3, true);
//! assert_eq!(layer.ws.size(), [3, 2]);
//! let bound = 1.0 / 2f64.sqrt();
//! assert!(layer.ws.abs().max().double_value(&[]) <= bound);
//! ```

use std::borrow::Borrow;

use tch::nn::{self, Path};
use tch::{Device, Kind, Tensor};

/// The bound PyTorch's `nn.Linear` uses for its weight: `kaiming_uniform_`
/// with `a = √5`, computed step by step as `torch.nn.init` does in float64.
pub fn linear_weight_bound(fan_in: i64) -> f64 {
    let a = 5f64.sqrt();
    let gain = (2.0 / (1.0 + a.powi(2))).sqrt();
    let std = gain / (fan_in as f64).sqrt();
    3f64.sqrt() * std
}

/// The bound PyTorch's `nn.Linear` uses for its bias: `1/√fan_in`.
pub fn linear_bias_bound(fan_in: i64) -> f64 {
    if fan_in > 0 {
        1.0 / (fan_in as f64).sqrt()
    } else {
        0.0
    }
}

thread_local! {
    static SKIP_RANDOM_INIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `build` with the random draws of [`uniform`] and [`normal`] skipped
/// (they return zeros): for a model whose weights are loaded right after,
/// where drawing billions of random numbers would only cost time. The
/// global generator is left untouched.
pub fn without_random_init<T>(build: impl FnOnce() -> T) -> T {
    let before = SKIP_RANDOM_INIT.with(|s| s.replace(true));
    let out = build();
    SKIP_RANDOM_INIT.with(|s| s.set(before));
    out
}

/// Zeros of shape `dims` that take no memory (one element, broadcast).
fn zeros_view(dims: &[i64]) -> Tensor {
    Tensor::zeros([], (Kind::Float, Device::Cpu)).expand(dims, false)
}

fn skip_random_init() -> bool {
    SKIP_RANDOM_INIT.with(|s| s.get())
}

/// A tensor drawn from U(lo, up) on the CPU with libtorch's global generator.
pub fn uniform(dims: &[i64], lo: f64, up: f64) -> Tensor {
    if skip_random_init() {
        return zeros_view(dims);
    }
    tch::no_grad(|| Tensor::empty(dims, (Kind::Float, Device::Cpu)).uniform_(lo, up))
}

/// A tensor drawn from N(0, 1) on the CPU with libtorch's global generator
/// (`torch.nn.init.normal_`, as `nn.Embedding` does).
pub fn normal(dims: &[i64]) -> Tensor {
    if skip_random_init() {
        return zeros_view(dims);
    }
    tch::no_grad(|| Tensor::empty(dims, (Kind::Float, Device::Cpu)).normal_(0.0, 1.0))
}

/// A trainable variable named `name` under `path`, holding `value`.
pub fn var_from<'a, P: Borrow<Path<'a>>>(path: P, name: &str, value: &Tensor) -> Tensor {
    path.borrow().var_copy(name, value)
}

/// Take the variables named `names` out of `vs` (names it does not hold are
/// skipped): a layer that leaves the model (chapter 6's language-model head,
/// appendix E's merged adapters) leaves the store too, so that saving and
/// loading see only the model's variables.
pub fn remove_variables(vs: &nn::VarStore, names: &[String]) {
    let mut variables = vs.variables_.lock().unwrap_or_else(|e| e.into_inner());
    for name in names {
        if let Some(t) = variables.named_variables.remove(name) {
            let ptr = t.data_ptr();
            variables
                .trainable_variables
                .retain(|v| v.tensor.data_ptr() != ptr);
        }
    }
}

/// `nn.Linear(in_dim, out_dim, bias)` with PyTorch's default initialisation:
/// weight `[out_dim, in_dim]` then bias `[out_dim]`, both uniform.
pub fn linear<'a, P: Borrow<Path<'a>>>(
    path: P,
    in_dim: i64,
    out_dim: i64,
    bias: bool,
) -> nn::Linear {
    let path = path.borrow();
    let w = uniform(
        &[out_dim, in_dim],
        -linear_weight_bound(in_dim),
        linear_weight_bound(in_dim),
    );
    let ws = var_from(path, "weight", &w);
    let bs = bias.then(|| {
        let b = uniform(
            &[out_dim],
            -linear_bias_bound(in_dim),
            linear_bias_bound(in_dim),
        );
        var_from(path, "bias", &b)
    });
    nn::Linear { ws, bs }
}

/// An embedding table: row `i` is the vector for id `i` (`nn.Embedding`).
#[derive(Debug)]
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`
    pub ws: Tensor,
}

impl nn::Module for Embedding {
    fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.ws, ids, -1, false, false)
    }
}

/// `nn.Embedding(num_embeddings, embedding_dim)` with PyTorch's default
/// initialisation, N(0, 1).
pub fn embedding<'a, P: Borrow<Path<'a>>>(
    path: P,
    num_embeddings: i64,
    embedding_dim: i64,
) -> Embedding {
    let w = normal(&[num_embeddings, embedding_dim]);
    Embedding {
        ws: var_from(path, "weight", &w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_match_pytorch_formula() {
        let _rng = crate::rng_lock();
        // 1/sqrt(fan_in), up to float64 rounding of PyTorch's step-by-step formula
        for fan_in in [1, 2, 3, 50, 768, 3072] {
            let b = linear_weight_bound(fan_in);
            assert!((b - 1.0 / (fan_in as f64).sqrt()).abs() < 1e-15);
        }
    }

    #[test]
    fn linear_draws_weight_then_bias_from_global_generator() {
        let _rng = crate::rng_lock();
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let l = linear(vs.root() / "fc", 4, 3, true);
        tch::manual_seed(7);
        let w = uniform(&[3, 4], -0.5, 0.5);
        let b = uniform(&[3], -0.5, 0.5);
        assert!(l.ws.allclose(&w, 1e-7, 1e-7, false));
        assert!(l.bs.as_ref().unwrap().allclose(&b, 1e-7, 1e-7, false));
        assert!(l.ws.requires_grad());
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert!(names.contains(&"fc.weight".to_string()) && names.contains(&"fc.bias".to_string()));
    }
}
