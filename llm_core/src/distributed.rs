//! Data-parallel training on torch.distributed's own engine (appendix A.4):
//! libtorch's c10d, the C++ core under `torch.distributed`, through a small
//! shim (`csrc/distributed.cpp`): the rendezvous `TCPStore` (served by rank
//! 0 at `MASTER_ADDR:MASTER_PORT`) and the Gloo process group, which
//! all-reduces and broadcasts CPU tensors (and CUDA tensors, through the
//! host).
//!
//! [`ProcessGroup::from_env`] reads the variables `torchrun` (and SLURM
//! scripts) set — `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//! `MASTER_PORT` — so
//!
//! ```text
//! torchrun --standalone --nproc_per_node=2 --no-python target/release/llm pretrain ...
//! ```
//!
//! starts two ranks that train one model, as the book's `DDP-script-torchrun.py`:
//! every rank builds the same model from the same seed, rank 0's weights
//! are broadcast at the start, each rank trains on its shard of every epoch
//! ([`crate::text::loader::BatchSampler::distributed`], PyTorch's
//! `DistributedSampler`), and the gradients are averaged after each
//! backward pass ([`ProcessGroup::all_reduce_mean`], in buckets of 25 MB
//! as DDP's). [`crate::train::pretrain::TrainOptions::distributed`] does
//! all of this in the book's training loop; only rank 0 evaluates, prints
//! and saves checkpoints.
//!
//! A rank that dies or hangs makes the others fail within the timeout with
//! an error naming it (each rank counts its collectives in the store; the
//! one behind is named), never hang.

use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};

extern "C" {
    fn llm_dist_last_error() -> *const c_char;
    fn llm_dist_init(
        host: *const c_char,
        port: i32,
        rank: i32,
        world: i32,
        timeout_ms: i64,
        serve: i32,
    ) -> *mut c_void;
    fn llm_dist_free(group: *mut c_void);
    fn llm_dist_all_reduce(
        group: *mut c_void,
        ts: *mut *mut torch_sys::C_tensor,
        n: i32,
        op: i32,
    ) -> i32;
    fn llm_dist_broadcast(
        group: *mut c_void,
        ts: *mut *mut torch_sys::C_tensor,
        n: i32,
        root: i32,
    ) -> i32;
    fn llm_dist_barrier(group: *mut c_void) -> i32;
    fn llm_dist_store_add(group: *mut c_void, key: *const c_char, delta: i64, out: *mut i64)
        -> i32;
}

fn last_error() -> String {
    // SAFETY: the shim returns a NUL-terminated thread-local string
    unsafe { CStr::from_ptr(llm_dist_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Why distributed training could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launcher variable is missing or malformed.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
    /// The rendezvous or the process group failed.
    #[error("rank {rank} of {world_size}: cannot join the group at {addr}:{port}: {message}")]
    Init {
        rank: usize,
        world_size: usize,
        addr: String,
        port: u16,
        message: String,
    },
    /// A collective failed: a rank died, hung past the timeout, or the
    /// connection broke.
    #[error("rank {rank}: {op} failed{}: {message}", suspect.as_ref().map(|s| format!(" ({s})")).unwrap_or_default())]
    Collective {
        rank: usize,
        op: &'static str,
        /// Which rank looks responsible, and the timeout.
        suspect: Option<String>,
        message: String,
    },
}

/// What a launcher (torchrun, a SLURM script) tells each process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already serves the store at the master address
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`): every rank connects to it.
    pub agent_store: bool,
}

impl DistEnv {
    /// Read `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (default: `RANK`),
    /// `MASTER_ADDR` (default 127.0.0.1) and `MASTER_PORT` (default 29500).
    /// `None` when `WORLD_SIZE` is not set: not launched for data parallelism.
    pub fn from_env() -> Result<Option<Self>, DistError> {
        let Ok(world) = std::env::var("WORLD_SIZE") else {
            return Ok(None);
        };
        let num = |var: &'static str, value: String| -> Result<usize, DistError> {
            value.trim().parse().map_err(|_| DistError::Env {
                var,
                value,
                reason: "not a whole number".into(),
            })
        };
        let world_size = num("WORLD_SIZE", world)?;
        if world_size == 0 {
            return Err(DistError::Env {
                var: "WORLD_SIZE",
                value: "0".into(),
                reason: "at least 1".into(),
            });
        }
        let rank = num(
            "RANK",
            std::env::var("RANK").map_err(|_| DistError::Env {
                var: "RANK",
                value: String::new(),
                reason: "must be set with WORLD_SIZE".into(),
            })?,
        )?;
        if rank >= world_size {
            return Err(DistError::Env {
                var: "RANK",
                value: rank.to_string(),
                reason: format!("must be below WORLD_SIZE = {world_size}"),
            });
        }
        let local_rank = match std::env::var("LOCAL_RANK") {
            Ok(v) => num("LOCAL_RANK", v)?,
            Err(_) => rank,
        };
        let master_addr = std::env::var("MASTER_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
        let port = std::env::var("MASTER_PORT").unwrap_or_else(|_| "29500".into());
        let master_port = port.trim().parse().map_err(|_| DistError::Env {
            var: "MASTER_PORT",
            value: port.clone(),
            reason: "a port number, 1 to 65535".into(),
        })?;
        let agent_store = std::env::var("TORCHELASTIC_USE_AGENT_STORE")
            .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(Some(DistEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            agent_store,
        }))
    }
}

/// Bytes per all-reduce bucket (PyTorch DDP's `bucket_cap_mb = 25`).
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// A group of ranks training together over Gloo (see the [module docs](self)).
#[derive(Debug)]
pub struct ProcessGroup {
    ptr: *mut c_void,
    env: DistEnv,
    timeout: Duration,
    /// Collectives made so far (also counted in the store, for naming a
    /// rank that stopped).
    ops: Cell<i64>,
    /// Time spent in gradient all-reduces, and their number.
    reduce_time: Cell<Duration>,
    reduces: Cell<u64>,
}

impl ProcessGroup {
    /// Join the group `env` describes (rank 0 serves the store), waiting at
    /// most `timeout` for the others here and in every collective.
    pub fn init(env: DistEnv, timeout: Duration) -> Result<Self, DistError> {
        let init_err = |message: String| DistError::Init {
            rank: env.rank,
            world_size: env.world_size,
            addr: env.master_addr.clone(),
            port: env.master_port,
            message,
        };
        let host = CString::new(env.master_addr.clone())
            .map_err(|_| init_err("MASTER_ADDR holds a NUL byte".into()))?;
        // SAFETY: a valid C string; the shim catches every C++ exception
        let ptr = unsafe {
            llm_dist_init(
                host.as_ptr(),
                env.master_port as i32,
                env.rank as i32,
                env.world_size as i32,
                timeout.as_millis() as i64,
                i32::from(!env.agent_store),
            )
        };
        if ptr.is_null() {
            let message = last_error();
            let message = if message.contains("EADDRINUSE")
                || message.contains("address already in use")
            {
                format!(
                    "port {} is in use (another run, or a process that has not let go of it): set MASTER_PORT to a free port",
                    env.master_port
                )
            } else if message.contains("timed out") || message.contains("Timeout") {
                format!(
                    "not every rank arrived within {:.0} s (is each of the {} ranks started, with the same MASTER_ADDR and MASTER_PORT?): {}",
                    timeout.as_secs_f64(),
                    env.world_size,
                    first_line(&message)
                )
            } else {
                first_line(&message).to_string()
            };
            return Err(init_err(message));
        }
        Ok(ProcessGroup {
            ptr,
            env,
            timeout,
            ops: Cell::new(0),
            reduce_time: Cell::new(Duration::ZERO),
            reduces: Cell::new(0),
        })
    }

    /// [`ProcessGroup::init`] from the launcher's variables
    /// ([`DistEnv::from_env`]); `None` when not launched for it.
    pub fn from_env(timeout: Duration) -> Result<Option<Self>, DistError> {
        DistEnv::from_env()?
            .map(|env| Self::init(env, timeout))
            .transpose()
    }

    /// This process's rank (0 to world size − 1).
    pub fn rank(&self) -> usize {
        self.env.rank
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.env.world_size
    }

    /// The rank on this machine (which GPU to use).
    pub fn local_rank(&self) -> usize {
        self.env.local_rank
    }

    /// Rank 0: the one that logs, evaluates and saves.
    pub fn is_main(&self) -> bool {
        self.env.rank == 0
    }

    /// The timeout of every collective.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Mean seconds per gradient all-reduce so far, and how many there were.
    pub fn all_reduce_seconds(&self) -> (f64, u64) {
        let n = self.reduces.get();
        (self.reduce_time.get().as_secs_f64() / n.max(1) as f64, n)
    }

    /// Count this collective in the store, then run it; on a failure, name
    /// the rank that fell behind.
    fn collective(&self, op: &'static str, run: impl FnOnce() -> i32) -> Result<(), DistError> {
        let count = self.ops.get() + 1;
        self.ops.set(count);
        let key = CString::new(format!("ops/{}", self.env.rank)).expect("no NUL");
        let mut out = 0i64;
        // SAFETY: a live group, a valid key and out pointer
        let counted = unsafe { llm_dist_store_add(self.ptr, key.as_ptr(), 1, &mut out) };
        if counted != 0 || run() != 0 {
            let message = first_line(&last_error()).to_string();
            return Err(DistError::Collective {
                rank: self.env.rank,
                op,
                suspect: Some(self.suspect(count)),
                message,
            });
        }
        Ok(())
    }

    /// Which rank stopped: the one whose collective count is behind ours,
    /// or rank 0 when the store it serves is gone.
    fn suspect(&self, ours: i64) -> String {
        let timeout = format!("timeout {:.0} s", self.timeout.as_secs_f64());
        let mut behind = Vec::new();
        for r in (0..self.env.world_size).filter(|&r| r != self.env.rank) {
            let key = CString::new(format!("ops/{r}")).expect("no NUL");
            let mut count = 0i64;
            // SAFETY: as in `collective`
            if unsafe { llm_dist_store_add(self.ptr, key.as_ptr(), 0, &mut count) } != 0 {
                return format!(
                    "rank 0, which serves the store at {}:{}, is gone; {timeout}",
                    self.env.master_addr, self.env.master_port
                );
            }
            if count < ours {
                behind.push(format!(
                    "rank {r} stopped after {count} of {ours} collectives"
                ));
            }
        }
        if behind.is_empty() {
            // Every rank had started this collective: one stopped inside it (killed
            // mid-collective). With two ranks that can only be the other one.
            match self.env.world_size {
                2 => format!(
                    "rank {} stopped during collective {ours}; {timeout}",
                    1 - self.env.rank
                ),
                _ => format!(
                    "a rank stopped during collective {ours} (all had started it); {timeout}"
                ),
            }
        } else {
            format!("{}; {timeout}", behind.join(", "))
        }
    }

    fn reduce(&self, tensors: &[Tensor], op: i32, name: &'static str) -> Result<(), DistError> {
        // handles of the same tensors (in-place collectives change them)
        let mut handles: Vec<Tensor> = tensors.iter().map(Tensor::shallow_clone).collect();
        let mut ptrs: Vec<*mut torch_sys::C_tensor> =
            handles.iter_mut().map(|t| t.as_mut_ptr()).collect();
        self.collective(name, || unsafe {
            // SAFETY: live tensors, a live group
            llm_dist_all_reduce(self.ptr, ptrs.as_mut_ptr(), ptrs.len() as i32, op)
        })
    }

    /// Sum `tensors` across the ranks, in place.
    pub fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<(), DistError> {
        self.reduce(tensors, 0, "all-reduce")
    }

    /// The element-wise maximum of `tensors` across the ranks, in place.
    pub fn all_reduce_max(&self, tensors: &[Tensor]) -> Result<(), DistError> {
        self.reduce(tensors, 2, "all-reduce (max)")
    }

    /// Average `tensors` (such as gradients) across the ranks, in place:
    /// flattened into buckets of at most [`BUCKET_BYTES`] per dtype and
    /// device, one all-reduce per bucket, divided by the world size.
    pub fn all_reduce_mean(&self, tensors: &[Tensor]) -> Result<(), DistError> {
        let started = Instant::now();
        let mut start = 0;
        while start < tensors.len() {
            let (kind, device) = (tensors[start].kind(), tensors[start].device());
            let mut end = start;
            let mut bytes = 0;
            while end < tensors.len()
                && tensors[end].kind() == kind
                && tensors[end].device() == device
                && (end == start
                    || bytes + tensors[end].numel() * kind.elt_size_in_bytes() <= BUCKET_BYTES)
            {
                bytes += tensors[end].numel() * kind.elt_size_in_bytes();
                end += 1;
            }
            let bucket = &tensors[start..end];
            if bucket.len() == 1 {
                self.reduce(bucket, 1, "gradient all-reduce")?;
            } else {
                let flat = Tensor::cat(
                    &bucket.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(),
                    0,
                );
                self.reduce(std::slice::from_ref(&flat), 1, "gradient all-reduce")?;
                let mut at = 0;
                tch::no_grad(|| {
                    for t in bucket {
                        let n = t.numel() as i64;
                        let mut t = t.shallow_clone();
                        t.copy_(&flat.narrow(0, at, n).view_as(&t));
                        at += n;
                    }
                });
            }
            start = end;
        }
        self.reduce_time
            .set(self.reduce_time.get() + started.elapsed());
        self.reduces.set(self.reduces.get() + 1);
        Ok(())
    }

    /// Copy `tensors` from rank `root` to every rank, in place (the start of
    /// DDP: every replica from rank 0's weights).
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<(), DistError> {
        // handles of the same tensors (in-place collectives change them)
        let mut handles: Vec<Tensor> = tensors.iter().map(Tensor::shallow_clone).collect();
        let mut ptrs: Vec<*mut torch_sys::C_tensor> =
            handles.iter_mut().map(|t| t.as_mut_ptr()).collect();
        self.collective("broadcast", || unsafe {
            // SAFETY: live tensors, a live group
            llm_dist_broadcast(self.ptr, ptrs.as_mut_ptr(), ptrs.len() as i32, root as i32)
        })
    }

    /// Wait until every rank arrives.
    pub fn barrier(&self) -> Result<(), DistError> {
        self.collective("barrier", || unsafe {
            // SAFETY: a live group
            llm_dist_barrier(self.ptr)
        })
    }

    /// The sum over the ranks of one number per rank (such as a loss).
    pub fn sum_scalars(&self, values: &[f64]) -> Result<Vec<f64>, DistError> {
        let t = Tensor::from_slice(values).to_kind(Kind::Double);
        self.all_reduce_sum(std::slice::from_ref(&t))?;
        Ok(Vec::<f64>::try_from(&t).expect("a double tensor"))
    }
}

impl Drop for ProcessGroup {
    /// Shut the group down: Gloo's worker threads end, the store closes.
    fn drop(&mut self) {
        // SAFETY: made by llm_dist_init, freed once
        unsafe { llm_dist_free(self.ptr) }
    }
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rank_group_reduces_to_itself() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = DistEnv {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
        };
        let pg = ProcessGroup::init(env, Duration::from_secs(30)).unwrap();
        let a = Tensor::from_slice(&[1.0f32, 2.0]);
        let b = Tensor::from_slice(&[3.0f32]);
        pg.all_reduce_mean(&[a.shallow_clone(), b.shallow_clone()])
            .unwrap();
        assert_eq!(Vec::<f32>::try_from(&a).unwrap(), [1.0, 2.0]);
        assert_eq!(pg.sum_scalars(&[2.5]).unwrap(), [2.5]);
        pg.broadcast(&[a.shallow_clone()], 0).unwrap();
        pg.barrier().unwrap();
        assert_eq!(pg.all_reduce_seconds().1, 1);
    }
}
