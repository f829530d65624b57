//! The state of libtorch's global random number generators, saved and
//! restored — PyTorch's `torch.get_rng_state()` / `torch.set_rng_state()`.
//!
//! Everything random in training draws from these generators: dropout masks,
//! the shuffled batch order of a [`crate::loader::TensorLoader`], sampling in
//! [`crate::generate::generate`]. A checkpoint stores the state, so a run
//! resumed from it draws exactly what the uninterrupted run would have drawn.
//! The bytes are libtorch's own (5056 bytes for the CPU's MT19937), the same
//! as Python's `torch.get_rng_state().numpy().tobytes()`.
//!
//! ```
//! use llm_core::rng::RngState;
//! use llm_core::tch::{self, Device, Kind, Tensor};
//!
//! tch::manual_seed(123);
//! let saved = RngState::capture(Device::Cpu)?;
//! let a = Tensor::rand([3], (Kind::Float, Device::Cpu));
//! saved.restore()?;
//! let b = Tensor::rand([3], (Kind::Float, Device::Cpu));
//! assert!(a.equal(&b));
//! # Ok::<(), llm_core::rng::RngError>(())
//! ```

use std::fmt;

use tch::Device;

extern "C" {
    fn llm_rng_last_error() -> *const std::os::raw::c_char;
    fn llm_rng_get_state(device_type: i32, device_index: i32, out: *mut u8, cap: i64) -> i64;
    fn llm_rng_set_state(device_type: i32, device_index: i32, input: *const u8, len: i64) -> i32;
}

/// libtorch refused to read or restore a generator's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("random generator state of {device}: {message}")]
pub struct RngError {
    pub device: String,
    pub message: String,
}

/// A saved generator state: the device's default generator and its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct RngState {
    pub device: Device,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for RngState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RngState({:?}, {} bytes)", self.device, self.bytes.len())
    }
}

fn device_code(device: Device) -> (i32, i32) {
    match device {
        Device::Cuda(i) => (1, i as i32),
        _ => (0, 0),
    }
}

fn last_error(device: Device) -> RngError {
    // SAFETY: the shim returns a pointer to a NUL-terminated thread-local buffer.
    let message = unsafe { std::ffi::CStr::from_ptr(llm_rng_last_error()) }
        .to_string_lossy()
        .lines()
        .next()
        .unwrap_or("unknown error")
        .to_string();
    RngError {
        device: format!("{device:?}"),
        message,
    }
}

impl RngState {
    /// The current state of `device`'s default generator (`Device::Cpu`, or
    /// `Device::Cuda(i)` — the CPU generator for any other device).
    pub fn capture(device: Device) -> Result<Self, RngError> {
        let (ty, index) = device_code(device);
        // SAFETY: cap 0 with a null pointer only asks for the size.
        let n = unsafe { llm_rng_get_state(ty, index, std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(last_error(device));
        }
        let mut bytes = vec![0u8; n as usize];
        // SAFETY: `bytes` has room for the `n` bytes the shim writes.
        let m = unsafe { llm_rng_get_state(ty, index, bytes.as_mut_ptr(), n) };
        if m != n {
            return Err(last_error(device));
        }
        Ok(RngState { device, bytes })
    }

    /// Put the generator back into this state.
    pub fn restore(&self) -> Result<(), RngError> {
        let (ty, index) = device_code(self.device);
        // SAFETY: the pointer and length describe `self.bytes`.
        let rc =
            unsafe { llm_rng_set_state(ty, index, self.bytes.as_ptr(), self.bytes.len() as i64) };
        if rc == 0 {
            Ok(())
        } else {
            Err(last_error(self.device))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn restoring_replays_the_same_draws_including_dropout() {
        let _lock = crate::rng_lock();
        tch::manual_seed(7);
        let x = Tensor::ones([64, 64], (Kind::Float, Device::Cpu));
        let _ = x.dropout(0.1, true);
        let state = RngState::capture(Device::Cpu).unwrap();
        assert_eq!(state.bytes.len(), 5056);
        let a = x.dropout(0.1, true);
        let perm_a = Tensor::randperm(10, (Kind::Int64, Device::Cpu));
        state.restore().unwrap();
        let b = x.dropout(0.1, true);
        let perm_b = Tensor::randperm(10, (Kind::Int64, Device::Cpu));
        assert!(a.equal(&b));
        assert!(perm_a.equal(&perm_b));
        assert!(format!("{state:?}").contains("5056 bytes"));
    }

    #[test]
    fn a_malformed_state_is_an_error_not_a_crash() {
        let _lock = crate::rng_lock();
        let bad = RngState {
            device: Device::Cpu,
            bytes: vec![1, 2, 3],
        };
        let err = bad.restore().unwrap_err();
        assert!(err.to_string().contains("Cpu"), "{err}");
    }
}
