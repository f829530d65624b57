//! Appendix E: parameter-efficient fine-tuning with LoRA. Freeze the model,
//! give its linear layers a trainable low-rank update
//! ([`replace_linear_with_lora`], the book's function), fine-tune as in
//! chapter 6 or 7, then either keep the small adapter apart
//! ([`save_lora_adapter`], [`load_lora_adapter`]) or fold it into the weights
//! ([`merge_lora`]) for a plain model that exports like any other.
//!
//! ```
//! use llm_core::finetune::lora::{replace_linear_with_lora, LoraTargets};
//! use llm_core::model::gpt::{GptConfig, GptModel};
//! use llm_core::tch::{self, nn, Device};
//!
//! let cfg = GptConfig { vocab_size: 100, context_length: 16, emb_dim: 32, n_heads: 2, n_layers: 2,
//!                       ..GptConfig::gpt2_small() };
//! tch::manual_seed(123);
//! let vs = nn::VarStore::new(Device::Cpu);
//! let mut model = GptModel::new(vs.root(), &cfg)?;
//! for p in model.parameters() {
//!     let _ = p.set_requires_grad(false); // freeze the pretrained weights
//! }
//! let replaced = replace_linear_with_lora(&vs, &mut model, 4, 4.0, LoraTargets::all())?;
//! assert_eq!(replaced, 13); // 6 per block and the output head
//! let trainable: i64 = model.parameters().iter().filter(|p| p.requires_grad()).map(|p| p.numel() as i64).sum();
//! assert_eq!(trainable, 2 * (4 * 4 * (32 + 32) + 4 * (32 + 128) + 4 * (128 + 32)) + 4 * (32 + 100));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use crate::files::{self, FileError};
use crate::model::gpt::GptModel;
use crate::model::init;
use crate::model::linear::Linear;
use crate::model::lora::LoraLayer;

/// Errors of the LoRA functions; each names the layer, the setting or the
/// file.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("{name} = {value} is out of range; accepted: {accepted}")]
    Setting {
        name: &'static str,
        value: String,
        accepted: &'static str,
    },
    #[error(
        "{layer} already has a LoRA update; merge it (merge_lora) or start from a fresh model"
    )]
    AlreadyAdapted { layer: String },
    #[error("{path}: {message}")]
    Adapter { path: String, message: String },
    #[error(transparent)]
    File(#[from] FileError),
}

/// Which linear layers get a LoRA update. The book adapts all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraTargets {
    /// `W_query`, `W_key`, `W_value` and `out_proj` of every block.
    pub attention: bool,
    /// `ff.layers.0` and `ff.layers.2` of every block.
    pub feed_forward: bool,
    /// `out_head` (the classifier's head in chapter 6).
    pub out_head: bool,
}

impl LoraTargets {
    /// Every linear layer, as the book's `replace_linear_with_lora`.
    pub fn all() -> Self {
        LoraTargets {
            attention: true,
            feed_forward: true,
            out_head: true,
        }
    }

    /// Whether the layer named `name` (as [`GptModel::linear_layers`] names it)
    /// is a target.
    pub fn includes(&self, name: &str) -> bool {
        if name == "out_head" {
            self.out_head
        } else if name.contains(".att.") {
            self.attention
        } else {
            self.feed_forward
        }
    }
}

impl Default for LoraTargets {
    fn default() -> Self {
        LoraTargets::all()
    }
}

impl fmt::Display for LoraTargets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.attention, "attention"),
            (self.feed_forward, "feed_forward"),
            (self.out_head, "out_head"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if names.len() == 3 {
            f.write_str("all")
        } else if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

impl FromStr for LoraTargets {
    type Err = String;
    /// `all`, or a comma-separated list of `attention`, `feed_forward`,
    /// `out_head`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "all" {
            return Ok(LoraTargets::all());
        }
        let mut t = LoraTargets {
            attention: false,
            feed_forward: false,
            out_head: false,
        };
        for part in s.split(',').map(str::trim) {
            match part {
                "attention" => t.attention = true,
                "feed_forward" => t.feed_forward = true,
                "out_head" => t.out_head = true,
                other => {
                    return Err(format!(
                        "{other:?} is not one of all, attention, feed_forward, out_head (comma-separated)"
                    ))
                }
            }
        }
        Ok(t)
    }
}

/// The book's `replace_linear_with_lora(model, rank, alpha)`: every target
/// linear layer gets a [`LoraLayer`] (variables `<layer>.lora.A` and
/// `<layer>.lora.B` in `vs`), so it computes `linear(x) + lora(x)`. The `A`
/// matrices are drawn in PyTorch's module order from libtorch's generator,
/// so a seeded run matches the book's. Returns how many layers were
/// replaced.
///
/// The new matrices are trainable and nothing else changes: freeze the
/// model's own parameters first, as the book does.
pub fn replace_linear_with_lora(
    vs: &VarStore,
    model: &mut GptModel,
    rank: i64,
    alpha: f64,
    targets: LoraTargets,
) -> Result<usize, LoraError> {
    check_rank_alpha(rank, alpha)?;
    let layers: Vec<(String, &mut Linear)> = model
        .linear_layers_mut()
        .into_iter()
        .filter(|(name, _)| targets.includes(name))
        .collect();
    if let Some((name, _)) = layers.iter().find(|(_, l)| l.lora.is_some()) {
        return Err(LoraError::AlreadyAdapted {
            layer: name.clone(),
        });
    }
    let n = layers.len();
    for (name, linear) in layers {
        let path = lora_path(vs, &name);
        linear.lora = Some(LoraLayer::new(
            path,
            linear.in_features(),
            linear.out_features(),
            rank,
            alpha,
        ));
    }
    Ok(n)
}

/// `<layer>.lora` in `vs` (a `Path` takes one name part at a time).
fn lora_path<'a>(vs: &'a VarStore, layer: &str) -> tch::nn::Path<'a> {
    layer.split('.').fold(vs.root(), |p, part| p / part) / "lora"
}

fn check_rank_alpha(rank: i64, alpha: f64) -> Result<(), LoraError> {
    if rank < 1 {
        return Err(LoraError::Setting {
            name: "rank",
            value: rank.to_string(),
            accepted: "1 or more",
        });
    }
    if !alpha.is_finite() {
        return Err(LoraError::Setting {
            name: "alpha",
            value: alpha.to_string(),
            accepted: "a finite number",
        });
    }
    Ok(())
}

/// The LoRA matrices of the model, named as in the book's `state_dict`
/// (`trf_blocks.0.att.W_query.lora.A`, …), in PyTorch's order.
pub fn lora_tensors(model: &GptModel) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for (name, l) in model.linear_layers() {
        if let Some(lora) = &l.lora {
            out.push((format!("{name}.lora.A"), lora.a.shallow_clone()));
            out.push((format!("{name}.lora.B"), lora.b.shallow_clone()));
        }
    }
    out
}

/// Fold every LoRA update into its layer's weight, `W ← W + (alpha/rank)
/// (A B)ᵀ`, and drop the adapters (their variables leave `vs`), leaving a
/// plain model that computes the same outputs (up to float rounding) one
/// matrix product faster per layer, and that saves and exports like any
/// other. Returns how many layers were merged.
pub fn merge_lora(vs: &VarStore, model: &mut GptModel) -> usize {
    let mut merged = 0;
    let mut gone = Vec::new();
    for (name, linear) in model.linear_layers_mut() {
        if let Some(lora) = linear.lora.take() {
            tch::no_grad(|| {
                let _ = linear.ws.shallow_clone().g_add_(&lora.delta_weight());
            });
            gone.push(format!("{name}.lora.A"));
            gone.push(format!("{name}.lora.B"));
            merged += 1;
        }
    }
    init::remove_variables(vs, &gone);
    merged
}

/// What an adapter file says about itself (its safetensors metadata).
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    pub rank: i64,
    pub alpha: f64,
    /// Number of adapted layers.
    pub layers: usize,
}

impl fmt::Display for AdapterInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LoRA adapter: {} layers, rank {}, alpha {}",
            self.layers, self.rank, self.alpha
        )
    }
}

const ADAPTER_FORMAT: &str = "llm-from-scratch-rs LoRA adapter";

/// Save only the LoRA matrices (the book's `state_dict` names, float32),
/// with the rank and alpha in the file's metadata, atomically. For GPT-2
/// 124M at rank 16 that is about 10 MB instead of 500 MB.
pub fn save_lora_adapter(
    model: &GptModel,
    path: impl AsRef<Path>,
) -> Result<AdapterInfo, LoraError> {
    let path = path.as_ref();
    let tensors = lora_tensors(model);
    let first = model
        .linear_layers()
        .into_iter()
        .find_map(|(_, l)| l.lora.as_ref().map(|lora| (lora.rank, lora.alpha)));
    let Some((rank, alpha)) = first else {
        return Err(LoraError::Adapter {
            path: path.display().to_string(),
            message: "the model has no LoRA layers to save (replace_linear_with_lora first)".into(),
        });
    };
    let info = AdapterInfo {
        rank,
        alpha,
        layers: tensors.len() / 2,
    };
    let metadata = HashMap::from([
        ("format".to_string(), ADAPTER_FORMAT.to_string()),
        ("rank".to_string(), rank.to_string()),
        ("alpha".to_string(), alpha.to_string()),
    ]);
    files::write_safetensors(path, &tensors, metadata)?;
    Ok(info)
}

/// Give `model` the adapter saved by [`save_lora_adapter`] (or a PyTorch
/// `state_dict` of the book's LoRA layers saved as safetensors, with
/// `alpha` in the metadata): each layer named in the file gets a
/// [`LoraLayer`] holding the file's `A` and `B`. The model must not have
/// LoRA layers yet; the file's layers must exist in the model with matching
/// shapes. On an error the model is unchanged.
pub fn load_lora_adapter(
    vs: &VarStore,
    model: &mut GptModel,
    path: impl AsRef<Path>,
) -> Result<AdapterInfo, LoraError> {
    let path = path.as_ref();
    let bad = |message: String| LoraError::Adapter {
        path: path.display().to_string(),
        message,
    };
    let (tensors, metadata) = files::read_safetensors_with_metadata(path)?;
    let alpha: f64 = metadata
        .get("alpha")
        .ok_or_else(|| bad("no \"alpha\" in the file's metadata (not a LoRA adapter?)".into()))?
        .parse()
        .map_err(|_| {
            bad(format!(
                "metadata alpha = {:?} is not a number",
                metadata["alpha"]
            ))
        })?;
    let mut pairs: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    for (name, t) in tensors {
        if let Some(layer) = name.strip_suffix(".lora.A") {
            pairs.entry(layer.to_string()).or_default().0 = Some(t);
        } else if let Some(layer) = name.strip_suffix(".lora.B") {
            pairs.entry(layer.to_string()).or_default().1 = Some(t);
        } else {
            return Err(bad(format!(
                "unexpected tensor {name:?}: an adapter holds only <layer>.lora.A and <layer>.lora.B"
            )));
        }
    }
    if pairs.is_empty() {
        return Err(bad("the file holds no LoRA matrices".into()));
    }
    // check everything before changing the model
    let mut plan = Vec::new();
    let mut rank = None;
    {
        let layers: HashMap<String, &Linear> = model.linear_layers().into_iter().collect();
        for (layer, (a, b)) in &pairs {
            let (Some(a), Some(b)) = (a, b) else {
                return Err(bad(format!(
                    "{layer}: the file has only one of lora.A and lora.B"
                )));
            };
            let linear = layers
                .get(layer.as_str())
                .ok_or_else(|| bad(format!("{layer}: no such linear layer in this model")))?;
            if linear.lora.is_some() {
                return Err(LoraError::AlreadyAdapted {
                    layer: layer.clone(),
                });
            }
            let r = a.size().get(1).copied().unwrap_or(0);
            let want_a = [linear.in_features(), r];
            let want_b = [r, linear.out_features()];
            if a.size() != want_a || b.size() != want_b {
                return Err(bad(format!(
                    "{layer}: lora.A {:?} and lora.B {:?} do not fit the layer (expected {want_a:?} and {want_b:?})",
                    a.size(),
                    b.size()
                )));
            }
            match rank {
                None => rank = Some(r),
                Some(r0) if r0 != r => {
                    return Err(bad(format!("{layer}: rank {r}, other layers rank {r0}")))
                }
                _ => {}
            }
            plan.push((layer.clone(), a.shallow_clone(), b.shallow_clone()));
        }
    }
    let rank = rank.unwrap_or(0);
    check_rank_alpha(rank, alpha)?;
    let n = plan.len();
    let mut by_name: HashMap<String, &mut Linear> = model.linear_layers_mut().into_iter().collect();
    for (layer, a, b) in plan {
        let linear = by_name.get_mut(&layer).expect("checked above");
        // the file's matrices, not new draws: loading leaves the generator alone
        let path = lora_path(vs, &layer);
        linear.lora = Some(LoraLayer {
            a: init::var_from(&path, "A", &a),
            b: init::var_from(&path, "B", &b),
            rank,
            alpha,
        });
    }
    Ok(AdapterInfo {
        rank,
        alpha,
        layers: n,
    })
}
