//! The optimizer of chapters 5–7, `torch.optim.AdamW`, and appendix D's
//! gradient clipping, written out on tensors.
//!
//! tch has an AdamW too, but its state (the moments and the step) cannot be
//! read or restored, and a checkpoint needs both. This one performs, per
//! parameter and in the same order, the same libtorch operations as
//! PyTorch 2.13's single-tensor AdamW (the one PyTorch uses for CPU tensors;
//! a few lines of C++ in `csrc/adamw.cpp`, since tch's `addcmul_`/`addcdiv_`
//! lack the `value` argument), so a seeded run matches the book's code step
//! for step:
//!
//! ```text
//! step += 1
//! param    *= 1 - lr * weight_decay                      (decoupled weight decay)
//! exp_avg   = lerp(exp_avg, grad, 1 - beta1)
//! exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
//! denom     = sqrt(exp_avg_sq) / sqrt(1 - beta2^step) + eps
//! param    -= lr / (1 - beta1^step) * exp_avg / denom
//! ```
//!
//! On a GPU, PyTorch runs the same operations over lists of tensors
//! (`foreach`, fewer kernel launches); [`AdamW`] does too by default, so a
//! CUDA run matches the book's code as well. The fused kernel of the speed
//! recipe is [`AdamWKernel::Fused`].
//!
//! ```
//! use llm_core::train::optim::AdamW;
//! use llm_core::tch::{nn, Device, Kind, Tensor};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]));
//! let mut optimizer = AdamW::new(vec![("w".to_string(), w.shallow_clone())], 0.1, 0.0);
//! for _ in 0..50 {
//!     optimizer.zero_grad();
//!     let loss = (&w * &w).sum(Kind::Float); // minimum at w = 0
//!     loss.backward();
//!     optimizer.step();
//! }
//! assert_eq!(optimizer.step_count(), 50);
//! assert!(w.abs().max().double_value(&[]) < 0.2);
//! ```

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::{Kind, Tensor};

// csrc/adamw.cpp
extern "C" {
    fn llm_optim_last_error() -> *const std::os::raw::c_char;
    fn llm_adamw_single_tensor(
        param: *mut torch_sys::C_tensor,
        grad: *mut torch_sys::C_tensor,
        exp_avg: *mut torch_sys::C_tensor,
        exp_avg_sq: *mut torch_sys::C_tensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        step: f64,
    ) -> i32;
    fn llm_grad_set_to_none(param: *mut torch_sys::C_tensor);
}

// csrc/speed.cpp
extern "C" {
    fn llm_speed_last_error() -> *const std::os::raw::c_char;
    #[allow(clippy::too_many_arguments)]
    fn llm_foreach_adamw(
        params: *mut *mut torch_sys::C_tensor,
        grads: *mut *mut torch_sys::C_tensor,
        exp_avgs: *mut *mut torch_sys::C_tensor,
        exp_avg_sqs: *mut *mut torch_sys::C_tensor,
        n: i32,
        step: f64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> i32;
    #[allow(clippy::too_many_arguments)]
    fn llm_fused_adamw(
        params: *mut *mut torch_sys::C_tensor,
        grads: *mut *mut torch_sys::C_tensor,
        exp_avgs: *mut *mut torch_sys::C_tensor,
        exp_avg_sqs: *mut *mut torch_sys::C_tensor,
        n: i32,
        step: f64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> i32;
}

fn shim_error() -> String {
    // SAFETY: the shim returns a NUL-terminated thread-local buffer.
    unsafe { std::ffi::CStr::from_ptr(llm_optim_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Errors from restoring an optimizer's state; each names the tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptimError {
    #[error("optimizer state has no tensor {name:?} (saved from a different model?)")]
    Missing { name: String },
    #[error(
        "optimizer state tensor {name:?} has shape {actual:?}, the parameter has {expected:?}"
    )]
    Shape {
        name: String,
        expected: Vec<i64>,
        actual: Vec<i64>,
    },
    #[error("optimizer state has a tensor {name:?} that belongs to no parameter")]
    Unexpected { name: String },
    #[error("optimizer state tensor {name:?} is {actual}, expected {expected}")]
    Dtype {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("{name} = {value} is out of range; accepted: {accepted}")]
    Setting {
        name: &'static str,
        value: String,
        accepted: &'static str,
    },
}

/// PyTorch's three implementations of the AdamW step. They compute the
/// same update; single-tensor and multi-tensor (`foreach`) run the same
/// kernels in the same order and give the same numbers, the fused kernel
/// rounds differently in the last bits (within 1e-6 in the tests). The
/// moments are the same tensors in each, so a checkpoint taken with one
/// resumes with another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AdamWKernel {
    /// PyTorch's default: multi-tensor when the parameters are on a GPU,
    /// single-tensor on a CPU.
    #[default]
    Default,
    /// One parameter at a time, six small operations each (`foreach=False`).
    SingleTensor,
    /// Each operation over all parameters at once (`foreach=True`): fewer
    /// kernel launches on a GPU.
    Foreach,
    /// One fused kernel per device and dtype (`fused=True`, the speed
    /// recipe's step 3): one pass over memory.
    Fused,
}

#[derive(Debug, Clone, Copy)]
enum ListKernel {
    Fused,
    Foreach,
}

/// The two running averages AdamW keeps for one parameter.
#[derive(Debug)]
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// The float32 copy of a bfloat16 parameter ([`AdamW::master_weights`]).
    master: Option<Tensor>,
}

/// `torch.optim.AdamW(params, lr, weight_decay)` with PyTorch's defaults
/// `betas = (0.9, 0.999)`, `eps = 1e-8`. See the [module docs](self).
///
/// Parameters that do not require gradients (frozen layers, chapter 6) or
/// have no gradient yet are skipped, as PyTorch skips those whose `.grad`
/// is `None`; their moments stay unallocated until their first gradient.
#[derive(Debug)]
pub struct AdamW {
    params: Vec<(String, Tensor)>,
    moments: Vec<Option<Moments>>,
    /// The learning rate of the next step (appendix D's schedule sets it before each step).
    pub lr: f64,
    pub weight_decay: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// Which of PyTorch's three AdamW implementations performs the step
    /// ([`AdamWKernel`]; PyTorch's default choice unless set).
    pub kernel: AdamWKernel,
    /// For parameters stored in bfloat16 (or float16): keep a float32 copy
    /// of each ("master weights"), update that copy with a float32
    /// gradient and float32 moments, and write its rounded value back to
    /// the parameter. The model computes in bfloat16 while no update is
    /// rounded away; costs 4 bytes a parameter more than the book's pure
    /// bfloat16 ([`crate::model::precision::Precision::Bf16Master`]).
    /// No effect on float32 parameters.
    pub master_weights: bool,
    step: u64,
}

/// The named trainable tensors of a `VarStore`, in the order of `params`
/// (e.g. [`crate::model::gpt::GptModel::parameters`], which is PyTorch's
/// `model.parameters()` order). Each name is the tensor's name in the store,
/// such as `trf_blocks.0.att.W_query.weight`; tensors of `params` that are not
/// in the store are named `param.<i>`.
pub fn named_parameters(vs: &VarStore, params: &[&Tensor]) -> Vec<(String, Tensor)> {
    let by_ptr: HashMap<usize, String> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (t.data_ptr() as usize, name))
        .collect();
    params
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = by_ptr
                .get(&(t.data_ptr() as usize))
                .cloned()
                .unwrap_or_else(|| format!("param.{i}"));
            (name, t.shallow_clone())
        })
        .collect()
}

impl AdamW {
    /// AdamW over `params` (name, tensor) with learning rate `lr` and
    /// decoupled weight decay `weight_decay` (the book uses 0.1).
    ///
    /// # Panics
    /// If `lr` or `weight_decay` is negative, NaN or infinite (PyTorch
    /// raises "Invalid learning rate" too); [`AdamW::try_new`] returns the
    /// error instead.
    pub fn new(params: Vec<(String, Tensor)>, lr: f64, weight_decay: f64) -> Self {
        Self::try_new(params, lr, weight_decay).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`AdamW::new`], or an error when `lr` or `weight_decay` is not a
    /// finite number of 0 or more.
    ///
    /// ```
    /// use llm_core::train::optim::AdamW;
    ///
    /// let err = AdamW::try_new(vec![], f64::NAN, 0.1).unwrap_err();
    /// assert_eq!(err.to_string(), "lr = NaN is out of range; accepted: a finite number, 0 or more");
    /// ```
    pub fn try_new(
        params: Vec<(String, Tensor)>,
        lr: f64,
        weight_decay: f64,
    ) -> Result<Self, OptimError> {
        for (name, value) in [("lr", lr), ("weight_decay", weight_decay)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(OptimError::Setting {
                    name,
                    value: value.to_string(),
                    accepted: "a finite number, 0 or more",
                });
            }
        }
        let moments = params.iter().map(|_| None).collect();
        Ok(AdamW {
            params,
            moments,
            lr,
            weight_decay,
            betas: (0.9, 0.999),
            eps: 1e-8,
            kernel: AdamWKernel::Default,
            master_weights: false,
            step: 0,
        })
    }

    /// The parameters this optimizer updates.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// How many steps have been taken (PyTorch's `state[p]["step"]`).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Drop every parameter's gradient (the book's `optimizer.zero_grad()`,
    /// which sets them to `None`): the next backward pass writes them fresh,
    /// without a zero fill or an accumulation.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            // SAFETY: a tch tensor handle is a libtorch `at::Tensor*`.
            unsafe { llm_grad_set_to_none(p.as_mut_ptr()) };
        }
    }

    /// One AdamW update of every parameter that has a gradient.
    pub fn step(&mut self) {
        self.step += 1;
        let on_cuda = self.params.iter().any(|(_, p)| p.device().is_cuda());
        let kernel = match self.kernel {
            AdamWKernel::Fused => Some(ListKernel::Fused),
            AdamWKernel::Foreach => Some(ListKernel::Foreach),
            AdamWKernel::Default if on_cuda => Some(ListKernel::Foreach),
            AdamWKernel::Default | AdamWKernel::SingleTensor => None,
        };
        tch::no_grad(|| {
            // [the tensor to update, its gradient, exp_avg, exp_avg_sq] of
            // each parameter with a gradient, and the (parameter, float32
            // master) pairs to copy back after the update
            let mut work: Vec<[Tensor; 4]> = Vec::new();
            let mut copy_back: Vec<(Tensor, Tensor)> = Vec::new();
            for ((_, param), moments) in self.params.iter().zip(self.moments.iter_mut()) {
                if !param.requires_grad() {
                    continue;
                }
                let grad = param.grad();
                if !grad.defined() {
                    continue;
                }
                let m = moments.get_or_insert_with(|| {
                    let master = (self.master_weights && param.kind() != Kind::Float)
                        .then(|| param.to_kind(Kind::Float));
                    let like = master.as_ref().unwrap_or(param);
                    Moments {
                        exp_avg: like.zeros_like(),
                        exp_avg_sq: like.zeros_like(),
                        master,
                    }
                });
                let (target, grad) = match &m.master {
                    Some(w) => {
                        copy_back.push((param.shallow_clone(), w.shallow_clone()));
                        (w.shallow_clone(), grad.to_kind(Kind::Float))
                    }
                    None => (param.shallow_clone(), grad),
                };
                work.push([
                    target,
                    grad,
                    m.exp_avg.shallow_clone(),
                    m.exp_avg_sq.shallow_clone(),
                ]);
            }
            match kernel {
                None => self.step_single(&mut work),
                Some(k) => self.step_lists(k, work),
            }
            for (param, master) in copy_back {
                param.shallow_clone().copy_(&master);
            }
        });
    }

    /// PyTorch's single-tensor AdamW over `work`, one parameter at a time.
    fn step_single(&self, work: &mut [[Tensor; 4]]) {
        let (beta1, beta2) = self.betas;
        for [param, grad, exp_avg, exp_avg_sq] in work {
            // SAFETY: tch's tensor handles are libtorch `at::Tensor*`; all
            // four are defined and of the parameter's shape.
            let rc = unsafe {
                llm_adamw_single_tensor(
                    param.as_mut_ptr(),
                    grad.as_mut_ptr(),
                    exp_avg.as_mut_ptr(),
                    exp_avg_sq.as_mut_ptr(),
                    self.lr,
                    beta1,
                    beta2,
                    self.weight_decay,
                    self.eps,
                    self.step as f64,
                )
            };
            assert_eq!(rc, 0, "AdamW step failed: {}", shim_error());
        }
    }

    /// AdamW over `work` through a kernel over lists of tensors
    /// (`_fused_adamw_`, or the `_foreach_*` operations), one call per
    /// device and dtype.
    fn step_lists(&self, kernel: ListKernel, work: Vec<[Tensor; 4]>) {
        let (beta1, beta2) = self.betas;
        // (device, dtype) -> the work of its parameters
        type Group = ((tch::Device, Kind), Vec<[Tensor; 4]>);
        let mut groups: Vec<Group> = Vec::new();
        for four in work {
            let key = (four[0].device(), four[0].kind());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.push(four),
                None => groups.push((key, vec![four])),
            }
        }
        for (_, mut group) in groups {
            let mut ptrs: [Vec<*mut torch_sys::C_tensor>; 4] = Default::default();
            for four in &mut group {
                for (list, t) in ptrs.iter_mut().zip(four.iter_mut()) {
                    list.push(t.as_mut_ptr());
                }
            }
            let [p, g, m, v] = &mut ptrs;
            let f = match kernel {
                ListKernel::Fused => llm_fused_adamw,
                ListKernel::Foreach => llm_foreach_adamw,
            };
            // SAFETY: four lists of `n` live libtorch tensor handles, each
            // parameter with its gradient and moments of the same shape.
            let rc = unsafe {
                f(
                    p.as_mut_ptr(),
                    g.as_mut_ptr(),
                    m.as_mut_ptr(),
                    v.as_mut_ptr(),
                    group.len() as i32,
                    self.step as f64,
                    self.lr,
                    beta1,
                    beta2,
                    self.weight_decay,
                    self.eps,
                )
            };
            if rc != 0 {
                // SAFETY: the shim returns a NUL-terminated thread-local buffer.
                let msg = unsafe { std::ffi::CStr::from_ptr(llm_speed_last_error()) };
                panic!("{kernel:?} AdamW step failed: {}", msg.to_string_lossy());
            }
        }
    }

    /// The state to save: for each parameter with moments,
    /// `<name>.exp_avg` and `<name>.exp_avg_sq`, and `<name>.master` with
    /// master weights (the step is
    /// [`AdamW::step_count`], saved separately).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for ((name, _), m) in self.params.iter().zip(&self.moments) {
            if let Some(m) = m {
                out.push((format!("{name}.exp_avg"), m.exp_avg.shallow_clone()));
                out.push((format!("{name}.exp_avg_sq"), m.exp_avg_sq.shallow_clone()));
                if let Some(w) = &m.master {
                    out.push((format!("{name}.master"), w.shallow_clone()));
                }
            }
        }
        out
    }

    /// Restore the state saved by [`AdamW::state_tensors`] and the step.
    /// Every tensor must belong to a parameter and have its shape; a
    /// parameter without saved moments (it had no gradient yet) starts
    /// fresh. On error nothing is changed.
    pub fn load_state(
        &mut self,
        tensors: Vec<(String, Tensor)>,
        step: u64,
    ) -> Result<(), OptimError> {
        let mut saved: HashMap<String, Tensor> = tensors.into_iter().collect();
        let mut moments = Vec::with_capacity(self.params.len());
        for (name, param) in &self.params {
            let exp_avg = saved.remove(&format!("{name}.exp_avg"));
            let exp_avg_sq = saved.remove(&format!("{name}.exp_avg_sq"));
            let master = saved.remove(&format!("{name}.master"));
            // float32 moments, except for a bfloat16 parameter without master weights
            let kind = if master.is_some() || param.kind() == Kind::Float {
                Kind::Float
            } else {
                param.kind()
            };
            let m = match (exp_avg, exp_avg_sq) {
                (None, None) => None,
                (Some(_), None) => {
                    return Err(OptimError::Missing {
                        name: format!("{name}.exp_avg_sq"),
                    })
                }
                (None, Some(_)) => {
                    return Err(OptimError::Missing {
                        name: format!("{name}.exp_avg"),
                    })
                }
                (Some(a), Some(b)) => {
                    let named = [
                        ("exp_avg", Some(&a)),
                        ("exp_avg_sq", Some(&b)),
                        ("master", master.as_ref()),
                    ];
                    for (suffix, t) in named.into_iter().filter_map(|(n, t)| Some((n, t?))) {
                        if t.size() != param.size() {
                            return Err(OptimError::Shape {
                                name: format!("{name}.{suffix}"),
                                expected: param.size(),
                                actual: t.size(),
                            });
                        }
                        if t.kind() != kind {
                            return Err(OptimError::Dtype {
                                name: format!("{name}.{suffix}"),
                                expected: format!("{kind:?}"),
                                actual: format!("{:?}", t.kind()),
                            });
                        }
                    }
                    let to = |t: Tensor| t.to_device(param.device());
                    Some(Moments {
                        exp_avg: to(a),
                        exp_avg_sq: to(b),
                        master: master.map(to),
                    })
                }
            };
            moments.push(m);
        }
        if let Some(name) = saved.into_keys().min() {
            return Err(OptimError::Unexpected { name });
        }
        self.moments = moments;
        self.step = step;
        Ok(())
    }
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` (appendix D.3): if the
/// L2 norm of all gradients together exceeds `max_norm`, scale every gradient
/// by `max_norm / (norm + 1e-6)`. Returns the norm before clipping. The same
/// libtorch operations as PyTorch's CPU path: one norm per gradient, the norm
/// of those norms, and the scale clamped at 1 and applied to every gradient.
///
/// ```
/// use llm_core::train::optim::clip_grad_norm;
/// use llm_core::tch::{Kind, Tensor};
///
/// let w = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
/// (&w * 1.0).sum(Kind::Float).backward();              // gradient [1, 1], norm √2
/// (&w * &w).sum(Kind::Float).backward();               // adds [6, 8]: gradient [7, 9]
/// let norm = clip_grad_norm(&[&w], 1.0);
/// assert!((norm - (49.0f64 + 81.0).sqrt()).abs() < 1e-4);
/// let clipped = w.grad().norm().double_value(&[]);
/// assert!((clipped - 1.0).abs() < 1e-4);
/// ```
pub fn clip_grad_norm(params: &[&Tensor], max_norm: f64) -> f64 {
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    if grads.is_empty() {
        return 0.0;
    }
    tch::no_grad(|| {
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total_norm = Tensor::stack(&norms, 0).norm();
        // PyTorch's `max_norm / (total_norm + 1e-6)` is `reciprocal(...) * max_norm`
        let clip_coef = (&total_norm + 1e-6).reciprocal() * max_norm;
        let clip_coef_clamped = clip_coef.clamp_max(1.0);
        for g in &grads {
            let _ = g.shallow_clone().f_mul_(&clip_coef_clamped);
        }
        total_norm.double_value(&[])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    fn quadratic_problem() -> (nn::VarStore, Tensor) {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs
            .root()
            .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0, 0.5]));
        (vs, w)
    }

    fn train(opt: &mut AdamW, w: &Tensor, steps: usize) {
        for _ in 0..steps {
            opt.zero_grad();
            ((w - 0.3) * (w - 0.3)).sum(Kind::Float).backward();
            opt.step();
        }
    }

    #[test]
    fn first_step_moves_each_weight_by_lr_times_sign_of_gradient() {
        let _rng = crate::rng_lock();
        // with bias correction, Adam's first step is lr * g / (|g| + eps')
        let (_vs, w) = quadratic_problem();
        let before = w.copy();
        let mut opt = AdamW::new(vec![("w".into(), w.shallow_clone())], 0.01, 0.0);
        train(&mut opt, &w, 1);
        let delta = Vec::<f32>::try_from(&w - &before).unwrap();
        for (d, expected) in delta.iter().zip([-0.01f32, 0.01, -0.01]) {
            assert!((d - expected).abs() < 1e-6, "{delta:?}");
        }
    }

    #[test]
    fn weight_decay_shrinks_weights_without_gradient_signal() {
        let _rng = crate::rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[2.0f32]));
        let mut opt = AdamW::new(vec![("w".into(), w.shallow_clone())], 0.1, 0.5);
        opt.zero_grad();
        (&w * 0.0).sum(Kind::Float).backward();
        opt.step();
        // decay by 1 - lr*wd = 0.95; the Adam update of a zero gradient is 0
        assert!((w.double_value(&[0]) - 1.9).abs() < 1e-6);
    }

    #[test]
    fn restored_state_continues_exactly() {
        let _rng = crate::rng_lock();
        let (_vs, w) = quadratic_problem();
        let mut opt = AdamW::new(vec![("w".into(), w.shallow_clone())], 0.05, 0.1);
        train(&mut opt, &w, 3);
        let saved: Vec<(String, Tensor)> = opt
            .state_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        let w_saved = w.copy();
        train(&mut opt, &w, 4);
        let uninterrupted = w.copy();

        let (_vs2, w2) = quadratic_problem();
        tch::no_grad(|| w2.shallow_clone().copy_(&w_saved));
        let mut opt2 = AdamW::new(vec![("w".into(), w2.shallow_clone())], 0.05, 0.1);
        opt2.load_state(saved, 3).unwrap();
        train(&mut opt2, &w2, 4);
        assert!(w2.equal(&uninterrupted));
        assert_eq!(opt2.step_count(), 7);
    }

    #[test]
    fn bad_state_names_the_tensor() {
        let _rng = crate::rng_lock();
        let (_vs, w) = quadratic_problem();
        let mut opt = AdamW::new(vec![("w".into(), w.shallow_clone())], 0.05, 0.1);
        let z = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let err = opt
            .load_state(
                vec![
                    ("w.exp_avg".into(), z.copy()),
                    ("w.exp_avg_sq".into(), z.copy()),
                ],
                1,
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("\"w.exp_avg\" has shape [2]"),
            "{err}"
        );
        let z3 = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let err = opt
            .load_state(vec![("w.exp_avg".into(), z3.copy())], 1)
            .unwrap_err();
        assert!(err.to_string().contains("w.exp_avg_sq"), "{err}");
        let err = opt
            .load_state(vec![("v.exp_avg".into(), z3.copy())], 1)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("\"v.exp_avg\" that belongs to no parameter"),
            "{err}"
        );
        assert_eq!(opt.step_count(), 0);
    }

    #[test]
    fn master_weights_keep_the_updates_bfloat16_rounds_away() {
        let _rng = crate::rng_lock();
        // bfloat16 spacing at 1.0 is 2^-7 = 0.0078: steps of 1e-4 vanish
        let run = |master: bool| {
            let mut vs = nn::VarStore::new(Device::Cpu);
            let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, 1.0]));
            vs.bfloat16();
            assert_eq!(w.kind(), Kind::BFloat16);
            let mut opt = AdamW::new(vec![("w".into(), w.shallow_clone())], 1e-4, 0.0);
            opt.master_weights = master;
            for _ in 0..100 {
                opt.zero_grad();
                (&w * &w).sum(Kind::Float).backward();
                opt.step();
            }
            (w.to_kind(Kind::Float), opt)
        };
        let (pure, _) = run(false);
        assert_eq!(Vec::<f32>::try_from(&pure).unwrap(), [1.0, 1.0]);
        let (mastered, opt) = run(true);
        let moved = Vec::<f32>::try_from(&mastered).unwrap();
        assert!(moved[0] < 0.995 && moved[0] > 0.985, "{moved:?}");
        let state = opt.state_tensors();
        let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["w.exp_avg", "w.exp_avg_sq", "w.master"]);
        assert!(state.iter().all(|(_, t)| t.kind() == Kind::Float));
        let master = state[2].1.double_value(&[0]);
        assert!((master - 0.99).abs() < 1e-3, "{master}");
        // restored, the master copy comes back with the moments
        let mut vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &mastered);
        vs.bfloat16();
        let mut opt2 = AdamW::new(vec![("w".into(), w.shallow_clone())], 1e-4, 0.0);
        opt2.master_weights = true;
        let copied = state.into_iter().map(|(n, t)| (n, t.copy())).collect();
        opt2.load_state(copied, 100).unwrap();
        assert_eq!(opt2.state_tensors().len(), 3);
        let bad = vec![
            (
                "w.exp_avg".into(),
                Tensor::zeros([2], (Kind::BFloat16, Device::Cpu)),
            ),
            (
                "w.exp_avg_sq".into(),
                Tensor::zeros([2], (Kind::Float, Device::Cpu)),
            ),
            (
                "w.master".into(),
                Tensor::zeros([2], (Kind::Float, Device::Cpu)),
            ),
        ];
        let err = opt2.load_state(bad, 1).unwrap_err().to_string();
        assert!(
            err.contains("\"w.exp_avg\" is BFloat16, expected Float"),
            "{err}"
        );
    }

    #[test]
    fn frozen_parameters_are_not_touched() {
        let _rng = crate::rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32]));
        let frozen = vs
            .root()
            .var_copy("frozen", &Tensor::from_slice(&[1.0f32]))
            .set_requires_grad(false);
        let mut opt = AdamW::new(
            vec![
                ("w".into(), w.shallow_clone()),
                ("frozen".into(), frozen.shallow_clone()),
            ],
            0.1,
            0.1,
        );
        opt.zero_grad();
        (&w * &frozen).sum(Kind::Float).backward();
        opt.step();
        assert_eq!(frozen.double_value(&[0]), 1.0);
        assert_ne!(w.double_value(&[0]), 1.0);
        assert_eq!(opt.state_tensors().len(), 2);
    }

    #[test]
    fn fused_and_foreach_steps_match_the_single_tensor_step() {
        let _rng = crate::rng_lock();
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let a = vs.root().randn("a", &[64, 32], 0.0, 0.02);
        let b = vs.root().randn("b", &[32], 0.0, 0.02);
        let x = Tensor::randn([16, 32], (Kind::Float, Device::Cpu));
        let start: Vec<Tensor> = [&a, &b].iter().map(|t| t.copy()).collect();
        let run = |kernel: AdamWKernel| {
            tch::no_grad(|| {
                a.shallow_clone().copy_(&start[0]);
                b.shallow_clone().copy_(&start[1]);
            });
            let params = vec![
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ];
            let mut opt = AdamW::new(params, 1e-2, 0.1);
            opt.kernel = kernel;
            for _ in 0..20 {
                opt.zero_grad();
                (x.matmul(&a.tr()) + &b.sum(Kind::Float))
                    .tanh()
                    .sum(Kind::Float)
                    .backward();
                opt.step();
            }
            (a.copy(), b.copy(), opt.state_tensors())
        };
        let (a1, b1, s1) = run(AdamWKernel::SingleTensor);
        let (a2, b2, s2) = run(AdamWKernel::Fused);
        let (a3, b3, s3) = run(AdamWKernel::Foreach);
        // multi-tensor: the same kernels in the same order, the same numbers
        assert!(a3.equal(&a1) && b3.equal(&b1));
        for ((_, t1), (_, t3)) in s1.iter().zip(&s3) {
            assert!(t1.equal(t3));
        }
        let max_diff = |x: &Tensor, y: &Tensor| (x - y).abs().max().double_value(&[]);
        assert!(max_diff(&a1, &a2) < 1e-6, "{}", max_diff(&a1, &a2));
        assert!(max_diff(&b1, &b2) < 1e-6, "{}", max_diff(&b1, &b2));
        assert!(max_diff(&a1, &start[0]) > 1e-3, "the weights moved");
        for ((n1, t1), (n2, t2)) in s1.iter().zip(&s2) {
            assert_eq!(n1, n2);
            assert!(max_diff(t1, t2) < 1e-6, "{n1}");
        }
    }

    #[test]
    fn named_parameters_finds_store_names() {
        let _rng = crate::rng_lock();
        let (vs, w) = quadratic_problem();
        let loose = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let named = named_parameters(&vs, &[&w, &loose]);
        assert_eq!(named[0].0, "w");
        assert_eq!(named[1].0, "param.1");
    }
}
