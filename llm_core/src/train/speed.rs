//! Training fast: the book's speed recipe (bonus material ch05/10,
//! `01_opt_single_gpu.py`) as options, each off by default so the book's
//! numbers stay exact.
//!
//! | step | book | here | on |
//! |---:|---|---|---|
//! | 2 | `torch.set_float32_matmul_precision("high")` | [`SpeedOptions::tf32`] | CUDA |
//! | 3 | `AdamW(..., fused=True)` | [`SpeedOptions::fused_adamw`] | CPU, CUDA |
//! | 5 | `model.to(torch.bfloat16)` | [`SpeedOptions::precision`]: [`Precision::Bf16`]; or [`Precision::Bf16Mixed`] (autocast, float32 weights); or [`Precision::Bf16Master`] (bfloat16 weights, float32 master weights in AdamW) | CPU, CUDA |
//! | 6 | `nn.LayerNorm`, `nn.GELU(approximate="tanh")` | [`SpeedOptions::native_layers`] | CPU, CUDA |
//! | 7 | `scaled_dot_product_attention`, one `qkv` layer | [`SpeedOptions::flash_attention`], [`SpeedOptions::fused_qkv`] | CPU, CUDA |
//! | 9 | vocabulary 50,257 → 50,304 | [`SpeedOptions::pad_vocab_to`] | CPU, CUDA |
//! | 10 | a larger batch | the loader's batch size, or [`SpeedOptions::grad_accum_steps`] when memory is short | CPU, CUDA |
//!
//! Step 1 (the causal mask made on the fly) is what `flash_attention` does;
//! step 4 (pinned memory) has nothing to pin here: the batches are made on
//! the device's side of libtorch already; step 8, `torch.compile`, has no
//! libtorch counterpart.
//!
//! ```
//! use llm_core::model::gpt::GptConfig;
//! use llm_core::model::precision::Precision;
//! use llm_core::train::optim::AdamWKernel;
//! use llm_core::train::speed::SpeedOptions;
//! use llm_core::tch::{nn, Device};
//!
//! let cfg = GptConfig { vocab_size: 100, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 1,
//!                       ..GptConfig::gpt2_small() };
//! let speed = SpeedOptions { precision: Precision::Bf16Mixed, ..SpeedOptions::fastest() };
//! let mut vs = nn::VarStore::new(Device::Cpu);
//! let model = speed.build_model(&mut vs, &cfg)?;
//! let optimizer = speed.optimizer(&vs, &model, 4e-4, 0.1);
//! assert_eq!(model.padded_vocab_size(), 128);
//! assert!(model.speed.flash_attention && optimizer.kernel == AdamWKernel::Fused);
//! assert_eq!(speed.to_string(),
//!            "TF32, fused AdamW, bf16-mixed, native layers, flash attention, fused QKV, vocab padded to 64");
//! # Ok::<(), llm_core::model::gpt::ModelError>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

use crate::model::gpt::{GptConfig, GptModel, ModelError, ModelSpeed};
use crate::model::precision::{set_tf32, Precision};
use crate::settings::{SettingError, Settings};
use crate::train::optim::{named_parameters, AdamW, AdamWKernel};

/// The speed recipe's options (see the [module docs](self)). `Default` is
/// the book's code, [`SpeedOptions::fastest`] everything on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpeedOptions {
    /// TF32 tensor cores for float32 matmuls (NVIDIA GPUs; nothing on CPU).
    pub tf32: bool,
    /// libtorch's fused AdamW kernel ([`AdamWKernel::Fused`]).
    pub fused_adamw: bool,
    /// float32, bfloat16 autocast, or bfloat16 weights ([`Precision`]).
    pub precision: Precision,
    /// libtorch's `layer_norm` and `gelu` kernels.
    pub native_layers: bool,
    /// Attention through `scaled_dot_product_attention`.
    pub flash_attention: bool,
    /// Queries, keys and values from one matmul.
    pub fused_qkv: bool,
    /// Pad the vocabulary rows to a multiple of this ([`GptModel::with_padded_vocab`]; the book: 64).
    pub pad_vocab_to: Option<i64>,
    /// Batches per optimizer step ([`crate::train::pretrain::TrainOptions::grad_accum_steps`]).
    pub grad_accum_steps: usize,
}

impl Default for SpeedOptions {
    fn default() -> Self {
        SpeedOptions {
            tf32: false,
            fused_adamw: false,
            precision: Precision::Float32,
            native_layers: false,
            flash_attention: false,
            fused_qkv: false,
            pad_vocab_to: None,
            grad_accum_steps: 1,
        }
    }
}

/// One rung of the speed ladder: a name and the options, each rung
/// adding one change to the one before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rung {
    pub name: &'static str,
    pub options: SpeedOptions,
    /// Changes something only on a CUDA device.
    pub cuda_only: bool,
}

impl SpeedOptions {
    /// The book's code: every option off.
    pub fn book() -> Self {
        Self::default()
    }

    /// Every option on, with bfloat16 autocast (float32 master weights).
    pub fn fastest() -> Self {
        SpeedOptions {
            tf32: true,
            fused_adamw: true,
            precision: Precision::Bf16Mixed,
            native_layers: true,
            flash_attention: true,
            fused_qkv: true,
            pad_vocab_to: Some(64),
            grad_accum_steps: 1,
        }
    }

    /// The ladder in the book's order: the book's code, then one option
    /// more per rung, ending at [`SpeedOptions::fastest`]; and, last, the
    /// book's own bfloat16 (weights and optimizer state in bfloat16) in
    /// place of autocast.
    pub fn ladder() -> Vec<Rung> {
        let mut o = SpeedOptions::book();
        let mut rungs = vec![Rung {
            name: "book code (fp32)",
            options: o,
            cuda_only: false,
        }];
        let mut add = |name: &'static str, cuda_only: bool, change: &dyn Fn(&mut SpeedOptions)| {
            change(&mut o);
            rungs.push(Rung {
                name,
                options: o,
                cuda_only,
            });
        };
        add("+ TF32 matmuls", true, &|o| o.tf32 = true);
        add("+ fused AdamW", false, &|o| o.fused_adamw = true);
        add("+ bf16 autocast", false, &|o| {
            o.precision = Precision::Bf16Mixed
        });
        add("+ native LayerNorm, GELU", false, &|o| {
            o.native_layers = true
        });
        add("+ flash attention (SDPA)", false, &|o| {
            o.flash_attention = true
        });
        add("+ fused QKV", false, &|o| o.fused_qkv = true);
        add("+ vocabulary padded to 64", false, &|o| {
            o.pad_vocab_to = Some(64)
        });
        add("bf16 weights (the book's step 5)", false, &|o| {
            o.precision = Precision::Bf16
        });
        add("+ float32 master weights", false, &|o| {
            o.precision = Precision::Bf16Master
        });
        rungs.push(Rung {
            name: "fastest on a CPU",
            options: SpeedOptions::fastest_cpu(),
            cuda_only: false,
        });
        rungs
    }

    /// The options that pay off on a CPU, as measured by `make bench` (the
    /// ladder): bfloat16 weights with float32 master weights, the fused
    /// AdamW and the native layers.
    /// Left out because they cost time there: flash attention (with dropout
    /// in training, libtorch's CPU attention falls back to its unfused math
    /// kernel, slower than the book's matmuls), the fused QKV matmul (no
    /// gain), and the padded vocabulary (the wider head is slower on the
    /// CPU's matmul kernels).
    pub fn fastest_cpu() -> Self {
        SpeedOptions {
            fused_adamw: true,
            precision: Precision::Bf16Master,
            native_layers: true,
            ..SpeedOptions::book()
        }
    }

    /// Each option as a notebook setting ([`Settings`]), `defaults` where
    /// none is set: `tf32`, `fused_adamw`, `native_layers`,
    /// `flash_attention`, `fused_qkv` (true/false), `precision` (fp32,
    /// bf16-mixed, bf16), `pad_vocab_to` (0: no padding) and
    /// `grad_accum_steps`. So `LLM_PRECISION=bf16-mixed LLM_FUSED_ADAMW=true
    /// make lab` switches them without editing a cell.
    ///
    /// ```
    /// use llm_core::train::speed::SpeedOptions;
    /// use llm_core::Settings;
    ///
    /// let mut settings = Settings::from_env();
    /// let speed = SpeedOptions::from_settings(&mut settings, SpeedOptions::fastest_cpu())?;
    /// # if std::env::var("LLM_PRECISION").is_err() {
    /// assert_eq!(speed.precision, SpeedOptions::fastest_cpu().precision);
    /// # }
    /// println!("{settings}");
    /// # Ok::<(), llm_core::settings::SettingError>(())
    /// ```
    pub fn from_settings(
        settings: &mut Settings,
        defaults: SpeedOptions,
    ) -> Result<Self, SettingError> {
        let mut flag = |name: &str, value: bool| settings.try_get_or_smoke(name, value, value);
        let tf32 = flag("tf32", defaults.tf32)?;
        let fused_adamw = flag("fused_adamw", defaults.fused_adamw)?;
        let native_layers = flag("native_layers", defaults.native_layers)?;
        let flash_attention = flag("flash_attention", defaults.flash_attention)?;
        let fused_qkv = flag("fused_qkv", defaults.fused_qkv)?;
        let precision =
            settings.try_get_or_smoke("precision", defaults.precision, defaults.precision)?;
        let pad = defaults.pad_vocab_to.unwrap_or(0);
        let pad: u32 = settings.try_get_or_smoke("pad_vocab_to", pad as u32, pad as u32)?;
        let accum = defaults.grad_accum_steps;
        let grad_accum_steps = settings.try_get_or_smoke("grad_accum_steps", accum, accum)?;
        Ok(SpeedOptions {
            tf32,
            fused_adamw,
            precision,
            native_layers,
            flash_attention,
            fused_qkv,
            pad_vocab_to: (pad > 0).then_some(pad as i64),
            grad_accum_steps,
        })
    }

    /// The options that change the forward pass.
    pub fn model_speed(&self) -> ModelSpeed {
        ModelSpeed {
            flash_attention: self.flash_attention,
            fused_qkv: self.fused_qkv,
            native_layers: self.native_layers,
            autocast_bf16: self.precision == Precision::Bf16Mixed,
        }
    }

    /// Build the model under `vs`'s root with these options: the padded
    /// vocabulary, the forward-pass options, bfloat16 weights for
    /// [`Precision::Bf16`], and the process-wide TF32 switch (set either
    /// way, so a later rung without it turns it off). The random draws are
    /// the book's (made in float32, then cast), so a seeded model starts
    /// from the same weights with and without the options — except with
    /// `pad_vocab_to`, whose extra embedding rows take draws of their own.
    pub fn build_model(&self, vs: &mut VarStore, cfg: &GptConfig) -> Result<GptModel, ModelError> {
        let mut model = match self.pad_vocab_to {
            Some(multiple) => GptModel::with_padded_vocab(vs.root(), cfg, multiple)?,
            None => GptModel::new(vs.root(), cfg)?,
        };
        model.speed = self.model_speed();
        if self.precision.bf16_weights() {
            vs.bfloat16();
        }
        set_tf32(self.tf32);
        Ok(model)
    }

    /// AdamW over `model`'s parameters in `vs`, fused if asked.
    pub fn optimizer(&self, vs: &VarStore, model: &GptModel, lr: f64, weight_decay: f64) -> AdamW {
        let mut optimizer = AdamW::new(named_parameters(vs, &model.parameters()), lr, weight_decay);
        if self.fused_adamw {
            optimizer.kernel = AdamWKernel::Fused;
        }
        optimizer.master_weights = self.precision == Precision::Bf16Master;
        optimizer
    }
}

impl fmt::Display for SpeedOptions {
    /// The options that are on, comma-separated ("book code" when none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut on: Vec<String> = Vec::new();
        if self.tf32 {
            on.push("TF32".into());
        }
        if self.fused_adamw {
            on.push("fused AdamW".into());
        }
        if self.precision != Precision::Float32 {
            on.push(self.precision.to_string());
        }
        if self.native_layers {
            on.push("native layers".into());
        }
        if self.flash_attention {
            on.push("flash attention".into());
        }
        if self.fused_qkv {
            on.push("fused QKV".into());
        }
        if let Some(m) = self.pad_vocab_to {
            on.push(format!("vocab padded to {m}"));
        }
        if self.grad_accum_steps > 1 {
            on.push(format!("{} accumulation steps", self.grad_accum_steps));
        }
        if on.is_empty() {
            f.write_str("book code")
        } else {
            f.write_str(&on.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_climbs_one_option_at_a_time_to_the_fastest() {
        let rungs = SpeedOptions::ladder();
        assert_eq!(rungs[0].options, SpeedOptions::book());
        assert_eq!(rungs[rungs.len() - 4].options, SpeedOptions::fastest());
        assert_eq!(
            rungs[rungs.len() - 3].options.precision,
            Precision::Bf16,
            "the book's bf16"
        );
        assert_eq!(rungs.last().unwrap().options, SpeedOptions::fastest_cpu());
        assert_eq!(SpeedOptions::book().to_string(), "book code");
        let json = serde_json::to_string(&SpeedOptions::fastest()).unwrap();
        assert!(json.contains("\"precision\":\"bf16-mixed\""), "{json}");
        let back: SpeedOptions = serde_json::from_str(r#"{"fused_adamw": true}"#).unwrap();
        assert_eq!(
            back,
            SpeedOptions {
                fused_adamw: true,
                ..SpeedOptions::book()
            }
        );
    }
}
