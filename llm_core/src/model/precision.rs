//! Number formats for training and inference (the book's ch05/10 speed
//! recipe, steps 2 and 5): bfloat16 autocast (mixed precision), bfloat16
//! weights, and TF32 matmuls on NVIDIA GPUs.
//!
//! * [`Precision::Float32`] — the book's default: every tensor in float32.
//! * [`Precision::Bf16Mixed`] — autocast: inside the forward pass, matmuls,
//!   linear layers and attention run in bfloat16, while the weights, their
//!   gradients and AdamW's state stay float32 ("master weights"). This is
//!   `with torch.autocast(device_type, dtype=torch.bfloat16):` in PyTorch.
//! * [`Precision::Bf16`] — the book's own step 5, `model.to(torch.bfloat16)`:
//!   weights, gradients and optimizer state all in bfloat16. Half the memory,
//!   no casts, but updates smaller than 1/256 of a weight are rounded away.
//! * [`Precision::Bf16Master`] — bfloat16 weights and gradients as in the
//!   book's step 5, while the optimizer keeps a float32 copy of every
//!   weight ("master weights") and float32 moments, and writes the rounded
//!   result back after each step ([`crate::train::optim::AdamW::master_weights`]):
//!   the speed of bfloat16 without losing the small updates.
//!
//! ```
//! use llm_core::model::precision::{autocast_bf16, Precision};
//! use llm_core::tch::{Device, Kind, Tensor};
//!
//! let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
//! let b = Tensor::randn([8, 2], (Kind::Float, Device::Cpu));
//! let c = autocast_bf16(Device::Cpu, || a.matmul(&b));
//! assert_eq!(c.kind(), Kind::BFloat16); // computed in bfloat16 ...
//! assert_eq!(a.matmul(&b).kind(), Kind::Float); // ... only inside the region
//! assert_eq!("bf16-mixed".parse::<Precision>()?, Precision::Bf16Mixed);
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::Device;

// csrc/speed.cpp
extern "C" {
    fn llm_autocast_enter(cuda: i32) -> i32;
    fn llm_autocast_exit(cuda: i32, was_enabled: i32);
    fn llm_autocast_is_enabled(cuda: i32) -> i32;
    fn llm_set_allow_tf32(allow: i32);
    fn llm_allow_tf32() -> i32;
}

/// How the numbers of a training run are stored and computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in float32 (the book's code).
    #[default]
    Float32,
    /// bfloat16 autocast in the forward pass, float32 weights and optimizer state.
    Bf16Mixed,
    /// Weights, gradients and optimizer state in bfloat16 (the book's `model.to(torch.bfloat16)`).
    Bf16,
    /// bfloat16 weights and gradients, float32 master weights and moments in the optimizer.
    Bf16Master,
}

impl Precision {
    /// The names [`Precision`] parses, for error messages and settings.
    pub const NAMES: [&'static str; 4] = ["fp32", "bf16-mixed", "bf16", "bf16-master"];

    /// Whether the model's weights are stored in bfloat16.
    pub fn bf16_weights(self) -> bool {
        matches!(self, Precision::Bf16 | Precision::Bf16Master)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Float32 => "fp32",
            Precision::Bf16Mixed => "bf16-mixed",
            Precision::Bf16 => "bf16",
            Precision::Bf16Master => "bf16-master",
        })
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "float32" | "f32" => Ok(Precision::Float32),
            "bf16-mixed" | "bf16_mixed" | "autocast" | "mixed" => Ok(Precision::Bf16Mixed),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "bf16-master" | "bf16_master" | "master" => Ok(Precision::Bf16Master),
            other => Err(format!(
                "precision {other:?} is not known; accepted: {}",
                Precision::NAMES.join(", ")
            )),
        }
    }
}

/// Run `f` with bfloat16 autocast on for `device`'s type (CPU or CUDA), as
/// `with torch.autocast(device_type, dtype=torch.bfloat16): f()`. Regions
/// nest; autocast is restored when `f` returns or panics. Operations outside
/// libtorch's autocast lists (additions, layer norms, softmax...) keep the
/// dtype of their inputs; matmuls and linear layers compute in bfloat16.
pub fn autocast_bf16<T>(device: Device, f: impl FnOnce() -> T) -> T {
    struct Exit {
        cuda: i32,
        was: i32,
    }
    impl Drop for Exit {
        fn drop(&mut self) {
            // SAFETY: plain calls into libtorch's thread-local autocast state.
            unsafe { llm_autocast_exit(self.cuda, self.was) }
        }
    }
    let cuda = i32::from(matches!(device, Device::Cuda(_)));
    // SAFETY: as above.
    let was = unsafe { llm_autocast_enter(cuda) };
    let _exit = Exit { cuda, was };
    f()
}

/// Whether bfloat16 autocast is on for `device`'s type in this thread.
pub fn autocast_enabled(device: Device) -> bool {
    let cuda = i32::from(matches!(device, Device::Cuda(_)));
    // SAFETY: reads libtorch's thread-local autocast state.
    unsafe { llm_autocast_is_enabled(cuda) != 0 }
}

/// Let float32 matmuls and convolutions on NVIDIA GPUs use TensorFloat-32
/// tensor cores (Ampere and newer), as the book's
/// `torch.set_float32_matmul_precision("high")`: a 10-bit mantissa inside
/// the matmul, float32 everywhere else. A process-wide switch; it changes
/// nothing on the CPU.
pub fn set_tf32(allow: bool) {
    // SAFETY: sets two flags of libtorch's global context.
    unsafe { llm_set_allow_tf32(i32::from(allow)) }
}

/// Whether [`set_tf32`] is on.
pub fn tf32() -> bool {
    // SAFETY: reads a flag of libtorch's global context.
    unsafe { llm_allow_tf32() != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn autocast_regions_nest_and_restore() {
        let _rng = crate::rng_lock();
        assert!(!autocast_enabled(Device::Cpu));
        let a = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        let inner = autocast_bf16(Device::Cpu, || {
            let k = autocast_bf16(Device::Cpu, || a.matmul(&a).kind());
            assert!(autocast_enabled(Device::Cpu));
            (k, a.matmul(&a).kind())
        });
        assert_eq!(inner, (Kind::BFloat16, Kind::BFloat16));
        assert!(!autocast_enabled(Device::Cpu));
        let caught = std::panic::catch_unwind(|| autocast_bf16(Device::Cpu, || panic!("boom")));
        assert!(caught.is_err());
        assert!(!autocast_enabled(Device::Cpu));
    }

    #[test]
    fn precision_names_round_trip() {
        for name in Precision::NAMES {
            assert_eq!(name.parse::<Precision>().unwrap().to_string(), name);
        }
        let err = "fp8".parse::<Precision>().unwrap_err();
        assert!(
            err.contains("accepted: fp32, bf16-mixed, bf16, bf16-master"),
            "{err}"
        );
    }

    #[test]
    fn tf32_switch_round_trips() {
        let _rng = crate::rng_lock();
        let before = tf32();
        set_tf32(true);
        assert!(tf32());
        set_tf32(before);
    }
}
