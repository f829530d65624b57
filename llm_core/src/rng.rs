//! The state of libtorch's global random number generators, saved and
//! restored — PyTorch's `torch.get_rng_state()` / `torch.set_rng_state()`.
//!
//! Everything random in training draws from these generators: dropout masks,
//! the shuffled batch order of a [`crate::text::loader::TensorLoader`], sampling in
//! [`crate::model::generate::generate`]. A checkpoint stores the state, so a run
//! resumed from it draws exactly what the uninterrupted run would have drawn.
//! The bytes are libtorch's own (5056 bytes for the CPU's MT19937), the same
//! as Python's `torch.get_rng_state().numpy().tobytes()`.
//!
//! It also holds the shuffles that the book draws from generators tch does
//! not expose, reproduced draw for draw: the Mersenne Twister ([`Mt19937`]),
//! `torch.randperm` on a seeded generator ([`randperm`], as `DataLoader`
//! shuffles) and NumPy's `RandomState(seed).permutation` ([`numpy_permutation`],
//! as pandas' `sample` splits the chapter 6 and 7 data).
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

// ---- PyTorch's and NumPy's shuffles, reproduced (tch exposes no private generators) ----

/// The 32-bit Mersenne Twister (MT19937) as PyTorch's `CPUGeneratorImpl`
/// uses it: seeded from the low 32 bits of a 64-bit seed.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    /// A generator as `torch.Generator().manual_seed(seed)` makes it.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; 624];
        state[0] = (seed & 0xffff_ffff) as u32;
        for j in 1..624 {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..624 {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % 624] & LOWER);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= MATRIX_A;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    /// The next 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// The next 64-bit output (two 32-bit draws, high word first), as
    /// `CPUGeneratorImpl::random64`.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        let lo = self.next_u32() as u64;
        (hi << 32) | lo
    }
}

/// `torch.randperm(n, generator=torch.Generator().manual_seed(seed))` on the CPU.
pub fn randperm(n: usize, seed: u64) -> Vec<usize> {
    let mut gen = Mt19937::new(seed);
    if (n as u64) < (u32::MAX as u64) / 20 {
        // libtorch's small-n path: a Fisher-Yates shuffle with 32-bit draws
        let mut r: Vec<usize> = (0..n).collect();
        for i in 0..n.saturating_sub(1) {
            let z = (gen.next_u32() as u64 % (n - i) as u64) as usize;
            r.swap(i, i + z);
        }
        r
    } else {
        // the "inside-out" variant with 64-bit draws for huge n
        let mut r = vec![0usize; n];
        for i in 0..n {
            let z = (gen.next_u64() % (i as u64 + 1)) as usize;
            r[i] = r[z];
            r[z] = i;
        }
        r
    }
}

/// NumPy's legacy `RandomState(seed).permutation(n)`: a Fisher–Yates shuffle
/// of `0..n` from the last element down, each index drawn from MT19937
/// (seeded as `init_genrand(seed)`) by masked rejection sampling. pandas'
/// `df.sample(n, random_state=seed)` takes the first `n` of it.
///
/// ```
/// // np.random.RandomState(123).permutation(10)
/// assert_eq!(llm_core::rng::numpy_permutation(10, 123), [4, 0, 7, 5, 8, 3, 1, 6, 9, 2]);
/// ```
pub fn numpy_permutation(n: usize, seed: u32) -> Vec<usize> {
    let mut rng = Mt19937::new(seed as u64);
    let mut values: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let max = i as u64;
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        let j = loop {
            let draw = if max <= 0xffff_ffff {
                rng.next_u32() as u64
            } else {
                rng.next_u64()
            };
            let v = draw & mask;
            if v <= max {
                break v as usize;
            }
        };
        values.swap(i, j);
    }
    values
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

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        let _rng = crate::rng_lock();
        // std::mt19937 seeded with 5489 (the C++ default): the 10000th output is 4123659995
        let mut g = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10000 {
            last = g.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn randperm_matches_libtorch() {
        let _rng = crate::rng_lock();
        for (seed, n) in [(0u64, 1usize), (123, 5), (42, 10), (2024, 97), (7, 1000)] {
            tch::manual_seed(seed as i64);
            let expected: Vec<i64> =
                Vec::try_from(Tensor::randperm(n as i64, (Kind::Int64, Device::Cpu))).unwrap();
            let ours: Vec<i64> = randperm(n, seed).into_iter().map(|i| i as i64).collect();
            assert_eq!(ours, expected, "seed {seed}, n {n}");
        }
    }

    #[test]
    fn numpy_permutation_known_values() {
        let _rng = crate::rng_lock();
        // np.random.RandomState(0).permutation(5) and RandomState(123).permutation(10)
        assert_eq!(numpy_permutation(5, 0), [2, 0, 1, 3, 4]);
        assert_eq!(numpy_permutation(10, 123), [4, 0, 7, 5, 8, 3, 1, 6, 9, 2]);
        assert_eq!(numpy_permutation(10, 42), [8, 1, 5, 0, 7, 2, 9, 4, 3, 6]);
        assert_eq!(numpy_permutation(0, 1), Vec::<usize>::new());
    }
}
