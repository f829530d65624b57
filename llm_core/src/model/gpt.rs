//! Chapter 4: the GPT model, built as the book builds it.
//!
//! | book (§) | here |
//! |---|---|
//! | 4.1 | [`GptConfig`] (`GPT_CONFIG_124M` and the larger GPT-2 sizes) |
//! | 4.2 | [`LayerNorm`] |
//! | 4.3 | [`Gelu`], [`FeedForward`] |
//! | 4.5 | [`TransformerBlock`] |
//! | 4.6 | [`GptModel`], parameter counts and memory size |
//! | 4.7 | [`generate_text_simple`] |
//!
//! Every variable is created in the order the book's `GPTModel.__init__`
//! creates it and drawn with PyTorch's default initialisation
//! ([`crate::model::init`]), under the book's names (`tok_emb.weight`,
//! `trf_blocks.0.att.W_query.weight`, `trf_blocks.0.ff.layers.0.bias`,
//! `final_norm.scale`, `out_head.weight`, …). So after `tch::manual_seed(123)`
//! the model has the book's weights, and greedy generation gives the book's
//! tokens:
//!
//! ```no_run
//! use llm_core::model::gpt::{generate_text_simple, GptConfig, GptModel};
//! use llm_core::tch::{self, nn, Device, Tensor};
//!
//! let cfg = GptConfig::gpt2_small();
//! tch::manual_seed(123);
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = GptModel::new(vs.root(), &cfg)?;
//! assert_eq!(model.num_parameters(), 163_009_536);
//! // "Hello, I am" → "Hello, I am Featureiman Byeswickattribute argue" (book §4.7)
//! let idx = Tensor::from_slice(&[15496i64, 11, 314, 716]).unsqueeze(0);
//! let out = generate_text_simple(&model, &idx, 6, cfg.context_length);
//! assert_eq!(
//!     Vec::<i64>::try_from(out.get(0)).unwrap(),
//!     [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]
//! );
//! # Ok::<(), llm_core::model::gpt::ModelError>(())
//! ```

use std::borrow::Borrow;

use serde::{Deserialize, Serialize};
use tch::nn::{Module, ModuleT, Path};
use tch::{Kind, Tensor};

use crate::model::attention::{AttentionError, Dropout, MultiHeadAttention};
use crate::model::init;
use crate::model::kv_cache::{KvCache, KvCacheError};
use crate::model::linear::Linear;
use crate::model::precision::autocast_bf16;

/// Errors from choosing or building a model, or from input it cannot take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model {name:?}; known models: {known}")]
    UnknownModel { name: String, known: String },
    #[error(transparent)]
    Attention(#[from] AttentionError),
    /// A configuration value outside its range.
    #[error("config: {field} = {value} is out of range; accepted: {accepted}")]
    Config {
        field: &'static str,
        value: String,
        accepted: &'static str,
    },
    /// Token ids of the wrong shape or type.
    #[error("token ids: {0}")]
    Input(String),
    /// More tokens than the model's positional embeddings cover.
    #[error(
        "the input has {tokens} tokens, more than the model's context length {context_length}"
    )]
    TooLong { tokens: i64, context_length: i64 },
    /// The KV cache cannot take this step.
    #[error(transparent)]
    Cache(#[from] KvCacheError),
    /// A token id outside `0..vocab_size`.
    #[error("token id {id} is outside the vocabulary (ids are 0 to {}); {hint}", vocab_size - 1)]
    TokenId {
        id: i64,
        vocab_size: i64,
        hint: &'static str,
    },
}

/// What a token id outside the vocabulary most likely is.
fn token_id_hint(id: i64) -> &'static str {
    if id < 0 {
        "token ids are never negative (a negative id such as the loss's ignore index marks a padded target: pass the inputs, not the targets)"
    } else {
        "was the text encoded with another tokenizer, or the model built with a smaller vocab_size?"
    }
}

/// Check that `ids` is a `[batch, num_tokens]` tensor of int64 token ids,
/// each in `0..vocab_size`, with at most `context_length` tokens per row.
/// (One min/max pass over the ids; libtorch's own error would name neither
/// the id nor the vocabulary, and on CUDA an out-of-range id is fatal.)
pub fn check_token_ids(
    ids: &Tensor,
    vocab_size: i64,
    context_length: i64,
) -> Result<(), ModelError> {
    if ids.dim() != 2 {
        return Err(ModelError::Input(format!(
            "expected shape [batch, num_tokens], got {:?} (a single sequence needs .unsqueeze(0))",
            ids.size()
        )));
    }
    if !matches!(ids.kind(), Kind::Int64 | Kind::Int) {
        return Err(ModelError::Input(format!(
            "expected int64 token ids, got {:?}",
            ids.kind()
        )));
    }
    let tokens = ids.size()[1];
    if tokens > context_length {
        return Err(ModelError::TooLong {
            tokens,
            context_length,
        });
    }
    if ids.numel() > 0 {
        // the smallest and largest id in one read back from the device
        let range =
            Vec::<i64>::try_from(Tensor::stack(&[ids.min(), ids.max()], 0).to_kind(Kind::Int64))
                .map_err(|e| ModelError::Input(e.to_string()))?;
        for id in range {
            if !(0..vocab_size).contains(&id) {
                return Err(ModelError::TokenId {
                    id,
                    vocab_size,
                    hint: token_id_hint(id),
                });
            }
        }
    }
    Ok(())
}

/// Check one step through a KV cache before it changes anything: `idx`
/// holds at least one new token with ids in `0..vocab_size`, the cache has
/// the model's `n_layers`, the new tokens fit before `context_length`, and
/// `attention_mask` (if any) is `[batch, new]`. Returns `(batch, new)`.
pub(crate) fn check_cache_step(
    idx: &Tensor,
    cache: &KvCache,
    attention_mask: Option<&Tensor>,
    n_layers: usize,
    vocab_size: i64,
    context_length: i64,
) -> Result<(i64, i64), ModelError> {
    check_token_ids(idx, vocab_size, i64::MAX)?;
    let (batch, new) = (idx.size()[0], idx.size()[1]);
    if new == 0 {
        return Err(ModelError::Input("no new tokens for the cache".into()));
    }
    if cache.n_layers() != n_layers {
        return Err(KvCacheError::Layers {
            cached: cache.n_layers(),
            model: n_layers,
        }
        .into());
    }
    if cache.current_pos() + new > context_length {
        return Err(KvCacheError::BeyondContext {
            current_pos: cache.current_pos(),
            new,
            context_length,
        }
        .into());
    }
    if let Some(m) = attention_mask.filter(|m| m.size() != [batch, new]) {
        return Err(ModelError::Input(format!(
            "attention_mask has shape {:?}, the tokens {:?}",
            m.size(),
            [batch, new]
        )));
    }
    Ok((batch, new))
}

/// What generation needs to know of a model besides its forward pass:
/// how many positions it covers and how many tokens it knows.
pub trait LanguageModel: ModuleT {
    /// The longest input, in tokens.
    fn context_length(&self) -> i64;
    /// The number of token ids (the width of the logits).
    fn vocab_size(&self) -> i64;
    /// The number of transformer blocks (the layers of a [`KvCache`]).
    fn n_layers(&self) -> usize;
    /// Where the weights are (token ids go there).
    fn device(&self) -> tch::Device;
    /// The forward pass through a KV cache, in evaluation mode (see
    /// [`GptModel::forward_with_cache`]).
    fn forward_with_cache(
        &self,
        idx: &Tensor,
        cache: &mut KvCache,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor, ModelError>;
}

/// The book's model configuration (`GPT_CONFIG_124M` and friends). Serialises
/// to and from JSON with the book's keys.
///
/// ```
/// use llm_core::model::gpt::GptConfig;
///
/// let cfg = GptConfig::by_name("gpt2-medium (355M)")?;
/// assert_eq!((cfg.emb_dim, cfg.n_layers, cfg.n_heads), (1024, 24, 16));
/// // the book's pattern for loading OpenAI's weights (§5.5)
/// let cfg = GptConfig { qkv_bias: true, drop_rate: 0.0, ..GptConfig::gpt2_small() };
/// let json = llm_core::serde_json::to_string(&cfg).unwrap();
/// assert!(json.contains("\"qkv_bias\":true"));
/// # Ok::<(), llm_core::model::gpt::ModelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Vocabulary size (50257 for GPT-2's BPE).
    pub vocab_size: i64,
    /// Maximum number of input tokens (positional embeddings).
    pub context_length: i64,
    /// Embedding dimension.
    pub emb_dim: i64,
    /// Attention heads per block.
    pub n_heads: i64,
    /// Transformer blocks.
    pub n_layers: i64,
    /// Dropout rate (embeddings, attention weights, shortcuts).
    pub drop_rate: f64,
    /// Bias in the query, key and value projections.
    pub qkv_bias: bool,
}

/// The book's names of the four GPT-2 sizes (`model_configs` in §5.5), for
/// [`GptConfig::by_name`].
pub const MODEL_NAMES: [&str; 4] = [
    "gpt2-small (124M)",
    "gpt2-medium (355M)",
    "gpt2-large (774M)",
    "gpt2-xl (1558M)",
];

impl GptConfig {
    /// `GPT_CONFIG_124M` (§4.1): vocabulary 50257, context 1024, 768
    /// dimensions, 12 heads, 12 layers, dropout 0.1, no qkv bias.
    pub fn gpt2_small() -> Self {
        GptConfig {
            vocab_size: 50257,
            context_length: 1024,
            emb_dim: 768,
            n_heads: 12,
            n_layers: 12,
            drop_rate: 0.1,
            qkv_bias: false,
        }
    }

    /// GPT-2 medium (355M): 1024 dimensions, 24 layers, 16 heads.
    pub fn gpt2_medium() -> Self {
        GptConfig {
            emb_dim: 1024,
            n_layers: 24,
            n_heads: 16,
            ..Self::gpt2_small()
        }
    }

    /// GPT-2 large (774M): 1280 dimensions, 36 layers, 20 heads.
    pub fn gpt2_large() -> Self {
        GptConfig {
            emb_dim: 1280,
            n_layers: 36,
            n_heads: 20,
            ..Self::gpt2_small()
        }
    }

    /// GPT-2 XL (1558M): 1600 dimensions, 48 layers, 25 heads.
    pub fn gpt2_xl() -> Self {
        GptConfig {
            emb_dim: 1600,
            n_layers: 48,
            n_heads: 25,
            ..Self::gpt2_small()
        }
    }

    /// A preset by the book's name (`"gpt2-small (124M)"`, see
    /// [`MODEL_NAMES`]); the short form without the size (`"gpt2-small"`)
    /// works too. The other fields are those of [`GptConfig::gpt2_small`].
    pub fn by_name(name: &str) -> Result<Self, ModelError> {
        let short = name.split(" (").next().unwrap_or(name).trim();
        match short {
            "gpt2-small" => Ok(Self::gpt2_small()),
            "gpt2-medium" => Ok(Self::gpt2_medium()),
            "gpt2-large" => Ok(Self::gpt2_large()),
            "gpt2-xl" => Ok(Self::gpt2_xl()),
            _ => Err(ModelError::UnknownModel {
                name: name.to_string(),
                known: MODEL_NAMES.join(", "),
            }),
        }
    }

    /// The number of parameters a [`GptModel`] with this configuration has
    /// (with a separate output head), computed from the layer shapes without
    /// building the model.
    pub fn num_parameters(&self) -> i64 {
        let (v, c, e) = (self.vocab_size, self.context_length, self.emb_dim);
        let linear =
            |d_in: i64, d_out: i64, bias: bool| d_in * d_out + if bias { d_out } else { 0 };
        let att = 3 * linear(e, e, self.qkv_bias) + linear(e, e, true);
        let ff = linear(e, 4 * e, true) + linear(4 * e, e, true);
        let norms = 2 * (2 * e);
        let block = att + ff + norms;
        v * e + c * e + self.n_layers * block + 2 * e + linear(e, v, false)
    }

    /// Check every field: sizes at least 1, `emb_dim` a multiple of
    /// `n_heads`, `drop_rate` between 0 and 1. [`GptModel::new`] calls it
    /// before drawing any weight.
    ///
    /// ```
    /// use llm_core::model::gpt::GptConfig;
    ///
    /// let bad = GptConfig { drop_rate: 1.5, ..GptConfig::gpt2_small() };
    /// assert_eq!(bad.validate().unwrap_err().to_string(),
    ///            "config: drop_rate = 1.5 is out of range; accepted: 0 to 1");
    /// ```
    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
            ("emb_dim", self.emb_dim),
            ("n_heads", self.n_heads),
            ("n_layers", self.n_layers),
        ];
        for (field, value) in positive {
            if value < 1 {
                return Err(ModelError::Config {
                    field,
                    value: value.to_string(),
                    accepted: "an integer of at least 1",
                });
            }
        }
        if !(0.0..=1.0).contains(&self.drop_rate) {
            return Err(ModelError::Config {
                field: "drop_rate",
                value: self.drop_rate.to_string(),
                accepted: "0 to 1",
            });
        }
        if self.emb_dim % self.n_heads != 0 {
            return Err(AttentionError::HeadsDoNotDivide {
                d_out: self.emb_dim,
                num_heads: self.n_heads,
            }
            .into());
        }
        Ok(())
    }

    /// [`GptConfig::num_parameters`] with the output head tied to the token
    /// embedding (as in OpenAI's GPT-2).
    pub fn num_parameters_tied(&self) -> i64 {
        self.num_parameters() - self.vocab_size * self.emb_dim
    }
}

/// Layer normalisation over the last dimension (§4.2), the book's own
/// `LayerNorm`: `scale * (x - mean) / sqrt(var + eps) + shift` with the
/// biased variance and `eps = 1e-5`; `scale` starts at ones, `shift` at zeros.
///
/// ```
/// use llm_core::model::gpt::LayerNorm;
/// use llm_core::tch::{nn, nn::Module, Device, Kind, Tensor};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let ln = LayerNorm::new(vs.root(), 5);
/// let x = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
/// let y = ln.forward(&x);
/// let mean = y.mean_dim(-1, false, None::<Kind>).abs().max().double_value(&[]);
/// assert!(mean < 1e-6);
/// ```
#[derive(Debug)]
pub struct LayerNorm {
    pub eps: f64,
    /// `[emb_dim]`, ones at first
    pub scale: Tensor,
    /// `[emb_dim]`, zeros at first
    pub shift: Tensor,
}

impl LayerNorm {
    /// Create `scale` and `shift` under `path`.
    pub fn new<'a, P: Borrow<Path<'a>>>(path: P, emb_dim: i64) -> Self {
        let path = path.borrow();
        let ones = Tensor::ones([emb_dim], (Kind::Float, tch::Device::Cpu));
        let zeros = Tensor::zeros([emb_dim], (Kind::Float, tch::Device::Cpu));
        LayerNorm {
            eps: 1e-5,
            scale: init::var_from(path, "scale", &ones),
            shift: init::var_from(path, "shift", &zeros),
        }
    }

    /// `scale`, then `shift`.
    pub fn parameters(&self) -> Vec<&Tensor> {
        vec![&self.scale, &self.shift]
    }
}

impl LayerNorm {
    /// The same normalisation through libtorch's fused `layer_norm` kernel
    /// (the book's `nn.LayerNorm` in ch05/10): one pass instead of five
    /// operations, and less memory kept for the backward pass.
    ///
    /// ```
    /// use llm_core::model::gpt::LayerNorm;
    /// use llm_core::tch::{nn, nn::Module, Device, Kind, Tensor};
    ///
    /// let vs = nn::VarStore::new(Device::Cpu);
    /// let ln = LayerNorm::new(vs.root(), 8);
    /// let x = Tensor::randn([3, 8], (Kind::Float, Device::Cpu));
    /// let diff = (ln.forward(&x) - ln.forward_native(&x)).abs().max().double_value(&[]);
    /// assert!(diff < 1e-5);
    /// ```
    pub fn forward_native(&self, x: &Tensor) -> Tensor {
        let emb_dim = self.scale.size()[0];
        x.layer_norm(
            [emb_dim],
            Some(&self.scale),
            Some(&self.shift),
            self.eps,
            true,
        )
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mean = x.mean_dim(-1, true, None::<Kind>);
        let var = x.var_dim(-1, false, true);
        let norm_x = (x - mean) / (var + self.eps).sqrt();
        &self.scale * norm_x + &self.shift
    }
}

/// `sqrt(2/π)` as the book computes it: `torch.sqrt(torch.tensor(2.0 /
/// torch.pi))`, a float32 square root of the float32-rounded quotient.
fn sqrt_2_over_pi() -> f64 {
    f64::from((2.0f64 / std::f64::consts::PI) as f32).sqrt() as f32 as f64
}

/// The GELU activation with the tanh approximation GPT-2 uses (§4.3):
/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
///
/// ```
/// use llm_core::model::gpt::gelu;
/// use llm_core::tch::Tensor;
///
/// let y = gelu(&Tensor::from_slice(&[-3.0f32, 0.0, 1.0]));
/// let y = Vec::<f32>::try_from(y).unwrap();
/// assert!(y[0].abs() < 0.01 && y[1] == 0.0 && (y[2] - 0.8412).abs() < 1e-4);
/// ```
pub fn gelu(x: &Tensor) -> Tensor {
    // the book's order of operations (`0.5 * x` first): the backward pass
    // sums the three gradients that reach `x` in the order the operations
    // were created, so any other order changes the last bits of the gradients
    let half_x = x * 0.5;
    let inner = (x + x.pow_tensor_scalar(3) * 0.044715) * sqrt_2_over_pi();
    half_x * (inner.tanh() + 1.0)
}

/// [`gelu`] through libtorch's fused kernel (`nn.GELU(approximate="tanh")`,
/// the book's ch05/10): the same function in one pass.
///
/// ```
/// use llm_core::model::gpt::{gelu, gelu_native};
/// use llm_core::tch::{Device, Kind, Tensor};
///
/// let x = Tensor::randn([100], (Kind::Float, Device::Cpu));
/// assert!((gelu(&x) - gelu_native(&x)).abs().max().double_value(&[]) < 1e-5);
/// ```
pub fn gelu_native(x: &Tensor) -> Tensor {
    x.gelu("tanh")
}

/// [`gelu`] as a layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gelu;

impl Module for Gelu {
    fn forward(&self, x: &Tensor) -> Tensor {
        gelu(x)
    }
}

/// The position-wise feed-forward network (§4.3): `Linear(emb, 4 emb)`,
/// GELU, `Linear(4 emb, emb)`, under the book's `layers.0` and `layers.2`.
///
/// `layers` is a tuple, so `ff.layers.0.ws` reads like the book's
/// `ff.layers[0].weight`.
#[derive(Debug)]
pub struct FeedForward {
    pub layers: (Linear, Gelu, Linear),
}

impl FeedForward {
    /// Create `layers.0` then `layers.2` under `path`.
    pub fn new<'a, P: Borrow<Path<'a>>>(path: P, emb_dim: i64) -> Self {
        let layers = path.borrow() / "layers";
        let fc1 = Linear::new(&layers / 0, emb_dim, 4 * emb_dim, true);
        let fc2 = Linear::new(&layers / 2, 4 * emb_dim, emb_dim, true);
        FeedForward {
            layers: (fc1, Gelu, fc2),
        }
    }

    /// The trainable tensors in PyTorch's `parameters()` order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        let mut p = self.layers.0.parameters();
        p.extend(self.layers.2.parameters());
        p
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (fc1, act, fc2) = &self.layers;
        fc2.forward(&act.forward(&fc1.forward(x)))
    }
}

impl FeedForward {
    /// The forward pass with libtorch's GELU kernel when `native`
    /// ([`gelu_native`]), else the book's ([`Module::forward`]).
    pub fn forward_fast(&self, x: &Tensor, native: bool) -> Tensor {
        if !native {
            return self.forward(x);
        }
        let (fc1, _, fc2) = &self.layers;
        fc2.forward(&gelu_native(&fc1.forward(x)))
    }
}

/// A transformer block (§4.5): pre-norm multi-head attention and
/// feed-forward sublayers, each followed by dropout and added to its input
/// (the shortcut connection).
///
/// ```
/// use llm_core::model::gpt::{GptConfig, TransformerBlock};
/// use llm_core::tch::{self, nn, nn::ModuleT, Device, Kind, Tensor};
///
/// let cfg = GptConfig { emb_dim: 64, n_heads: 4, context_length: 16, ..GptConfig::gpt2_small() };
/// tch::manual_seed(123);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let block = TransformerBlock::new(vs.root(), &cfg)?;
/// let x = Tensor::rand([2, 4, 64], (Kind::Float, Device::Cpu));
/// assert_eq!(block.forward_t(&x, false).size(), [2, 4, 64]);
/// # Ok::<(), llm_core::model::gpt::ModelError>(())
/// ```
#[derive(Debug)]
pub struct TransformerBlock {
    pub att: MultiHeadAttention,
    pub ff: FeedForward,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub drop_shortcut: Dropout,
}

impl TransformerBlock {
    /// Create `att`, `ff`, `norm1`, `norm2` (in that order) under `path`.
    pub fn new<'a, P: Borrow<Path<'a>>>(path: P, cfg: &GptConfig) -> Result<Self, ModelError> {
        let path = path.borrow();
        let att = MultiHeadAttention::new(
            path / "att",
            cfg.emb_dim,
            cfg.emb_dim,
            cfg.context_length,
            cfg.drop_rate,
            cfg.n_heads,
            cfg.qkv_bias,
        )?;
        let ff = FeedForward::new(path / "ff", cfg.emb_dim);
        let norm1 = LayerNorm::new(path / "norm1", cfg.emb_dim);
        let norm2 = LayerNorm::new(path / "norm2", cfg.emb_dim);
        Ok(TransformerBlock {
            att,
            ff,
            norm1,
            norm2,
            drop_shortcut: Dropout::new(cfg.drop_rate),
        })
    }

    /// The trainable tensors in PyTorch's `parameters()` order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        let mut p = self.att.parameters();
        p.extend(self.ff.parameters());
        p.extend(self.norm1.parameters());
        p.extend(self.norm2.parameters());
        p
    }
}

impl TransformerBlock {
    /// [`TransformerBlock`]'s forward pass in evaluation mode with attention
    /// through layer `layer` of a KV cache.
    pub fn forward_with_cache(
        &self,
        x: &Tensor,
        cache: &mut KvCache,
        layer: usize,
        mask: &Tensor,
    ) -> Tensor {
        let shortcut = x;
        let h = self.norm1.forward(x);
        let h = self.att.forward_with_cache(&h, cache, layer, mask);
        let x = h + shortcut;
        let shortcut = &x;
        let h = self.norm2.forward(&x);
        let h = self.ff.forward(&h);
        h + shortcut
    }
}

impl ModuleT for TransformerBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_fast(x, train, &ModelSpeed::default())
    }
}

impl TransformerBlock {
    /// The block's forward pass with the options of `speed` (all off: the
    /// book's, [`ModuleT::forward_t`]).
    pub fn forward_fast(&self, x: &Tensor, train: bool, speed: &ModelSpeed) -> Tensor {
        let norm = |ln: &LayerNorm, x: &Tensor| {
            if speed.native_layers {
                ln.forward_native(x)
            } else {
                ln.forward(x)
            }
        };
        // attention sublayer
        let shortcut = x;
        let h = norm(&self.norm1, x);
        let h = self
            .att
            .forward_fast(&h, train, speed.flash_attention, speed.fused_qkv);
        let h = self.drop_shortcut.forward_t(&h, train);
        let x = h + shortcut;
        // feed-forward sublayer
        let shortcut = &x;
        let h = norm(&self.norm2, &x);
        let h = self.ff.forward_fast(&h, speed.native_layers);
        let h = self.drop_shortcut.forward_t(&h, train);
        h + shortcut
    }
}

/// Faster ways to compute the same [`GptModel`] (the book's ch05/10 speed
/// recipe), each off by default so the book's numbers stay exact. They
/// change how the forward pass is computed, never the weights, so they can
/// be switched on and off on a trained model (`model.speed = ...`).
///
/// | field | book (ch05/10) | what changes |
/// |---|---|---|
/// | `native_layers` | step 6, `nn.LayerNorm`, `nn.GELU` | libtorch's fused kernels instead of the from-scratch layers |
/// | `flash_attention` | step 7, `scaled_dot_product_attention` | fused attention; no `[n, n]` weights kept |
/// | `fused_qkv` | step 7, `self.qkv` | one matmul for queries, keys, values |
/// | `autocast_bf16` | step 5 (as mixed precision) | matmuls in bfloat16, weights float32 |
///
/// The KV-cache path ([`GptModel::forward_with_cache`]) honours
/// `autocast_bf16` and computes the rest as the book does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpeed {
    /// Attention through libtorch's fused `scaled_dot_product_attention`.
    pub flash_attention: bool,
    /// Queries, keys and values from one matmul.
    pub fused_qkv: bool,
    /// libtorch's `layer_norm` and `gelu(tanh)` kernels.
    pub native_layers: bool,
    /// bfloat16 autocast in the forward pass; the logits come back float32.
    pub autocast_bf16: bool,
}

impl ModelSpeed {
    /// Every option on.
    pub fn all() -> Self {
        ModelSpeed {
            flash_attention: true,
            fused_qkv: true,
            native_layers: true,
            autocast_bf16: true,
        }
    }
}

/// The GPT model (§4.6): token and positional embeddings, dropout, the
/// transformer blocks, a final layer norm and the linear output head (no
/// bias). Input token ids `[batch, num_tokens]` (`Int64`), output logits
/// `[batch, num_tokens, vocab_size]`.
///
/// ```
/// use llm_core::model::gpt::{GptConfig, GptModel};
/// use llm_core::tch::{self, nn, nn::ModuleT, Device, Tensor};
///
/// let cfg = GptConfig { vocab_size: 100, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 2,
///                       ..GptConfig::gpt2_small() };
/// tch::manual_seed(123);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let logits = model.forward_t(&Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0), false);
/// assert_eq!(logits.size(), [1, 3, 100]);
/// assert_eq!(model.num_parameters(), cfg.num_parameters());
/// # Ok::<(), llm_core::model::gpt::ModelError>(())
/// ```
///
/// # Panics
/// `forward_t` panics, with the message of [`GptModel::try_forward`], on
/// input it cannot take: more than `context_length` tokens, a token id
/// outside the vocabulary, or a tensor that is not `[batch, num_tokens]`
/// int64.
#[derive(Debug)]
pub struct GptModel {
    pub cfg: GptConfig,
    pub tok_emb: init::Embedding,
    pub pos_emb: init::Embedding,
    pub drop_emb: Dropout,
    pub trf_blocks: Vec<TransformerBlock>,
    pub final_norm: LayerNorm,
    pub out_head: Linear,
    /// How the forward pass is computed ([`ModelSpeed`]; the book's way by default).
    pub speed: ModelSpeed,
}

impl GptModel {
    /// Create the model under `path` in the book's order: `tok_emb`,
    /// `pos_emb`, `trf_blocks.0` … `trf_blocks.{n_layers-1}`, `final_norm`,
    /// `out_head`. Fails, before drawing any weight, when the config is out
    /// of range ([`GptConfig::validate`]).
    pub fn new<'a, P: Borrow<Path<'a>>>(path: P, cfg: &GptConfig) -> Result<Self, ModelError> {
        Self::build(path.borrow(), cfg, cfg.vocab_size)
    }

    /// [`GptModel::new`] with the token embedding and the output head given
    /// rows up to the next multiple of `multiple` (the speed recipe's step
    /// 9: 50,257 → 50,304 with 64, friendlier to GPU matmul kernels). The
    /// extra rows are never used: token ids stay below `cfg.vocab_size`, and
    /// the logits (as wide as the padded head, as in the book) are -inf in
    /// the padded columns, so a padded id has probability 0: it is never
    /// sampled, adds nothing to the loss and gets no gradient.
    ///
    /// ```
    /// use llm_core::model::gpt::{GptConfig, GptModel};
    /// use llm_core::tch::{nn, nn::ModuleT, Device, Tensor};
    ///
    /// let cfg = GptConfig { vocab_size: 100, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 1,
    ///                       ..GptConfig::gpt2_small() };
    /// let vs = nn::VarStore::new(Device::Cpu);
    /// let model = GptModel::with_padded_vocab(vs.root(), &cfg, 64)?;
    /// assert_eq!(model.out_head.ws.size(), [128, 16]);
    /// let logits = model.forward_t(&Tensor::from_slice(&[1i64, 2]).unsqueeze(0), false);
    /// assert_eq!(logits.size(), [1, 2, 128]);
    /// let probas = logits.softmax(-1, None::<llm_core::tch::Kind>);
    /// assert_eq!(probas.narrow(-1, 100, 28).max().double_value(&[]), 0.0);
    /// # Ok::<(), llm_core::model::gpt::ModelError>(())
    /// ```
    pub fn with_padded_vocab<'a, P: Borrow<Path<'a>>>(
        path: P,
        cfg: &GptConfig,
        multiple: i64,
    ) -> Result<Self, ModelError> {
        if multiple < 1 {
            return Err(ModelError::Config {
                field: "pad_vocab_to",
                value: multiple.to_string(),
                accepted: "1 or more (64 in the book)",
            });
        }
        let rows = (cfg.vocab_size + multiple - 1) / multiple * multiple;
        Self::build(path.borrow(), cfg, rows)
    }

    /// The rows of the token embedding and the output head: `vocab_size`,
    /// or more with [`GptModel::with_padded_vocab`].
    pub fn padded_vocab_size(&self) -> i64 {
        self.out_head.ws.size()[0]
    }

    fn build(path: &Path, cfg: &GptConfig, vocab_rows: i64) -> Result<Self, ModelError> {
        // fail before drawing anything (PyTorch would fail after the embeddings)
        cfg.validate()?;
        let tok_emb = init::embedding(path / "tok_emb", vocab_rows, cfg.emb_dim);
        let pos_emb = init::embedding(path / "pos_emb", cfg.context_length, cfg.emb_dim);
        let blocks = path / "trf_blocks";
        let trf_blocks = (0..cfg.n_layers)
            .map(|i| TransformerBlock::new(&blocks / i, cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let final_norm = LayerNorm::new(path / "final_norm", cfg.emb_dim);
        let out_head = Linear::new(path / "out_head", cfg.emb_dim, vocab_rows, false);
        Ok(GptModel {
            cfg: *cfg,
            tok_emb,
            pos_emb,
            drop_emb: Dropout::new(cfg.drop_rate),
            trf_blocks,
            final_norm,
            out_head,
            speed: ModelSpeed::default(),
        })
    }

    /// The trainable tensors in PyTorch's `model.parameters()` order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        let mut p = vec![&self.tok_emb.ws, &self.pos_emb.ws];
        for block in &self.trf_blocks {
            p.extend(block.parameters());
        }
        p.extend(self.final_norm.parameters());
        p.extend(self.out_head.parameters());
        p
    }

    /// Every linear layer with its name in the book's
    /// `state_dict`, in PyTorch's module order: per block `att.W_query`,
    /// `att.W_key`, `att.W_value`, `att.out_proj`, `ff.layers.0`, `ff.layers.2`,
    /// then `out_head`.
    pub fn linear_layers(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, block) in self.trf_blocks.iter().enumerate() {
            let att = &block.att;
            for (name, l) in [
                ("att.W_query", &att.w_query),
                ("att.W_key", &att.w_key),
                ("att.W_value", &att.w_value),
                ("att.out_proj", &att.out_proj),
                ("ff.layers.0", &block.ff.layers.0),
                ("ff.layers.2", &block.ff.layers.2),
            ] {
                out.push((format!("trf_blocks.{i}.{name}"), l));
            }
        }
        out.push(("out_head".to_string(), &self.out_head));
        out
    }

    /// [`GptModel::linear_layers`], mutable (appendix E gives them LoRA
    /// updates, or merges those).
    pub fn linear_layers_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, block) in self.trf_blocks.iter_mut().enumerate() {
            let att = &mut block.att;
            let (fc1, _, fc2) = &mut block.ff.layers;
            for (name, l) in [
                ("att.W_query", &mut att.w_query),
                ("att.W_key", &mut att.w_key),
                ("att.W_value", &mut att.w_value),
                ("att.out_proj", &mut att.out_proj),
                ("ff.layers.0", fc1),
                ("ff.layers.2", fc2),
            ] {
                out.push((format!("trf_blocks.{i}.{name}"), l));
            }
        }
        out.push(("out_head".to_string(), &mut self.out_head));
        out
    }

    /// Total number of parameters (`sum(p.numel() for p in model.parameters())`).
    pub fn num_parameters(&self) -> i64 {
        self.parameters().iter().map(|t| t.numel() as i64).sum()
    }

    /// Number of parameters when the output head shares the token embedding's
    /// weights, as in OpenAI's GPT-2 (the book's `total_params_gpt2`).
    pub fn num_parameters_tied(&self) -> i64 {
        self.num_parameters() - self.out_head.ws.numel() as i64
    }

    /// Bytes the parameters take (4 per float32 parameter).
    pub fn memory_bytes(&self) -> i64 {
        self.parameters()
            .iter()
            .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as i64)
            .sum()
    }

    /// [`GptModel::memory_bytes`] in MiB, as the book prints it ("621.83 MB").
    pub fn memory_mb(&self) -> f64 {
        self.memory_bytes() as f64 / (1024.0 * 1024.0)
    }
}

impl GptModel {
    /// The forward pass, after checking the input ([`check_token_ids`]):
    /// `[batch, num_tokens]` int64 ids in `0..vocab_size`, at most
    /// `context_length` of them.
    ///
    /// ```
    /// use llm_core::model::gpt::{GptConfig, GptModel};
    /// use llm_core::tch::{nn, Device, Tensor};
    ///
    /// let cfg = GptConfig { vocab_size: 100, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 1,
    ///                       ..GptConfig::gpt2_small() };
    /// let vs = nn::VarStore::new(Device::Cpu);
    /// let model = GptModel::new(vs.root(), &cfg)?;
    /// let err = model.try_forward(&Tensor::from_slice(&[1i64, 100]).unsqueeze(0), false).unwrap_err();
    /// assert!(err.to_string().starts_with("token id 100 is outside the vocabulary (ids are 0 to 99)"));
    /// # Ok::<(), llm_core::model::gpt::ModelError>(())
    /// ```
    pub fn try_forward(&self, in_idx: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        check_token_ids(in_idx, self.cfg.vocab_size, self.cfg.context_length)?;
        Ok(self.forward_unchecked(in_idx, train))
    }

    fn forward_unchecked(&self, in_idx: &Tensor, train: bool) -> Tensor {
        if self.speed.autocast_bf16 {
            return autocast_bf16(in_idx.device(), || self.forward_layers(in_idx, train));
        }
        self.forward_layers(in_idx, train)
    }

    fn forward_layers(&self, in_idx: &Tensor, train: bool) -> Tensor {
        let seq_len = in_idx.size()[1];
        let tok_embeds = self.tok_emb.forward(in_idx);
        let positions = Tensor::arange(seq_len, (Kind::Int64, in_idx.device()));
        let pos_embeds = self.pos_emb.forward(&positions);
        let x = tok_embeds + pos_embeds;
        let mut x = self.drop_emb.forward_t(&x, train);
        for block in &self.trf_blocks {
            x = block.forward_fast(&x, train, &self.speed);
        }
        let x = if self.speed.native_layers {
            self.final_norm.forward_native(&x)
        } else {
            self.final_norm.forward(&x)
        };
        self.logits(&x)
    }

    /// The output head: the logits, with a padded head's extra columns set
    /// to -inf; float32 under autocast (the weights' dtype otherwise, as in
    /// the book; its path is untouched).
    fn logits(&self, x: &Tensor) -> Tensor {
        let mut logits = self.out_head.forward(x);
        let (vocab, rows) = (self.cfg.vocab_size, self.padded_vocab_size());
        if rows > vocab {
            // probability exactly 0: never sampled, no gradient (the
            // softmax's derivative there is 0). Without autograd: the
            // matmul does not keep its output, so nothing needs the old values.
            tch::no_grad(|| {
                let _ = logits
                    .narrow(-1, vocab, rows - vocab)
                    .fill_(f64::NEG_INFINITY);
            });
        }
        if self.speed.autocast_bf16 && logits.kind() != Kind::Float {
            logits = logits.to_kind(Kind::Float);
        }
        logits
    }
}

impl ModuleT for GptModel {
    fn forward_t(&self, in_idx: &Tensor, train: bool) -> Tensor {
        self.try_forward(in_idx, train)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl GptModel {
    /// The forward pass through a KV cache (the book's `use_cache=True`), in
    /// evaluation mode: `idx` (`[batch, new]`) holds only the tokens the
    /// cache has not seen (the whole prompt first, then one token per step);
    /// their positions continue at [`KvCache::current_pos`], and their
    /// queries attend to every cached position. Returns the logits of the
    /// new tokens, `[batch, new, vocab_size]`.
    ///
    /// `attention_mask` (`[batch, new]`, 1 for a token, 0 for padding) lets
    /// rows of different lengths share a batch: left padding is never
    /// attended to and does not count as a position, so each row computes
    /// what it would alone.
    ///
    /// Errors: the ids as in [`GptModel::try_forward`]; positions past the
    /// context length; a full preallocated cache; a cache with another
    /// number of layers or rows.
    pub fn forward_with_cache(
        &self,
        idx: &Tensor,
        cache: &mut KvCache,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        let (batch, new) = check_cache_step(
            idx,
            cache,
            attention_mask,
            self.trf_blocks.len(),
            self.cfg.vocab_size,
            self.cfg.context_length,
        )?;
        let pad = attention_mask.map(|m| m.eq(0));
        let step = cache.begin_step(batch, new, pad.as_ref(), idx.device())?;
        let layers = |cache: &mut KvCache| {
            let x = self.tok_emb.forward(idx) + self.pos_emb.forward(&step.positions);
            let mut x = self.drop_emb.forward_t(&x, false);
            for (layer, block) in self.trf_blocks.iter().enumerate() {
                x = block.forward_with_cache(&x, cache, layer, &step.mask);
            }
            self.logits(&self.final_norm.forward(&x))
        };
        let logits = if self.speed.autocast_bf16 {
            autocast_bf16(idx.device(), || layers(cache))
        } else {
            layers(cache)
        };
        cache.end_step(new);
        Ok(logits)
    }
}

impl LanguageModel for GptModel {
    fn context_length(&self) -> i64 {
        self.cfg.context_length
    }
    fn vocab_size(&self) -> i64 {
        self.cfg.vocab_size
    }
    fn n_layers(&self) -> usize {
        self.trf_blocks.len()
    }
    fn device(&self) -> tch::Device {
        self.tok_emb.ws.device()
    }
    fn forward_with_cache(
        &self,
        idx: &Tensor,
        cache: &mut KvCache,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        GptModel::forward_with_cache(self, idx, cache, attention_mask)
    }
}

/// Greedy decoding (§4.7): append `max_new_tokens` tokens to `idx`
/// (`[batch, num_tokens]`), each the argmax of the model's next-token
/// distribution given at most the last `context_size` tokens. Runs without
/// gradients and in evaluation mode (no dropout). Returns `[batch,
/// num_tokens + max_new_tokens]`.
///
/// ```
/// use llm_core::model::gpt::{generate_text_simple, GptConfig, GptModel};
/// use llm_core::tch::{self, nn, Device, Tensor};
///
/// let cfg = GptConfig { vocab_size: 50, context_length: 4, emb_dim: 8, n_heads: 2, n_layers: 1,
///                       ..GptConfig::gpt2_small() };
/// tch::manual_seed(123);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let idx = Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0);
/// let out = generate_text_simple(&model, &idx, 5, cfg.context_length); // crops to 4 tokens
/// assert_eq!(out.size(), [1, 8]);
/// # Ok::<(), llm_core::model::gpt::ModelError>(())
/// ```
///
/// # Panics
/// On a prompt or sizes it cannot take (an empty or 1-D prompt, ids outside
/// the vocabulary, `context_size` above the model's), with the message of
/// [`try_generate_text_simple`], which returns the error
/// instead.
pub fn generate_text_simple<M: LanguageModel + ?Sized>(
    model: &M,
    idx: &Tensor,
    max_new_tokens: i64,
    context_size: i64,
) -> Tensor {
    try_generate_text_simple(model, idx, max_new_tokens, context_size)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`generate_text_simple`] (greedy decoding, §4.7), checking the prompt,
/// `max_new_tokens` and `context_size` first (as
/// [`crate::model::generate::try_generate`] does).
pub fn try_generate_text_simple<M: LanguageModel + ?Sized>(
    model: &M,
    idx: &Tensor,
    max_new_tokens: i64,
    context_size: i64,
) -> Result<Tensor, GenerateError> {
    check_prompt(model, idx, max_new_tokens, context_size)?;
    Ok(generate_text_simple_unchecked(
        model,
        idx,
        max_new_tokens,
        context_size,
    ))
}

/// Settings or a prompt that generation cannot take; each names the
/// accepted range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    /// A setting outside its range.
    #[error("{name} = {value} is out of range; accepted: {accepted}")]
    Setting {
        name: &'static str,
        value: String,
        accepted: String,
    },
    /// An empty prompt.
    #[error("the prompt is empty: generation needs at least one token to start from")]
    EmptyPrompt,
    /// The model's logits became NaN (its weights have diverged).
    #[error("the model's logits contain NaN at new token {step}: its weights have diverged (NaN); retrain or reload them")]
    NanLogits { step: i64 },
    /// The prompt or the model rejected the input.
    #[error(transparent)]
    Model(#[from] ModelError),
}

pub(crate) fn setting(
    name: &'static str,
    value: impl ToString,
    accepted: impl Into<String>,
) -> GenerateError {
    GenerateError::Setting {
        name,
        value: value.to_string(),
        accepted: accepted.into(),
    }
}

/// The checks `generate` and `generate_text_simple` share: a `[batch,
/// num_tokens]` prompt of valid ids, and `context_size` within the model's.
pub(crate) fn check_prompt<M: LanguageModel + ?Sized>(
    model: &M,
    idx: &Tensor,
    max_new_tokens: i64,
    context_size: i64,
) -> Result<(), GenerateError> {
    let context_length = model.context_length();
    if !(1..=context_length).contains(&context_size) {
        return Err(setting(
            "context_size",
            context_size,
            format!("1 to the model's context length {context_length}"),
        ));
    }
    if max_new_tokens < 0 {
        return Err(setting("max_new_tokens", max_new_tokens, "0 or more"));
    }
    if idx.numel() == 0 {
        return Err(GenerateError::EmptyPrompt);
    }
    // the model sees at most the last `context_size` tokens, so only the
    // ids matter here, not the prompt's length
    check_token_ids(idx, model.vocab_size(), i64::MAX)?;
    Ok(())
}

/// The book's loop of [`generate_text_simple`], without the checks.
pub(crate) fn generate_text_simple_unchecked<M: ModuleT + ?Sized>(
    model: &M,
    idx: &Tensor,
    max_new_tokens: i64,
    context_size: i64,
) -> Tensor {
    let mut idx = idx.shallow_clone();
    for _ in 0..max_new_tokens {
        let num_tokens = idx.size()[1];
        let keep = num_tokens.min(context_size);
        let idx_cond = idx.narrow(1, num_tokens - keep, keep);
        let logits = tch::no_grad(|| model.forward_t(&idx_cond, false));
        let logits = logits.select(1, -1);
        let probas = logits.softmax(-1, None::<Kind>);
        let idx_next = probas.argmax(-1, true);
        idx = Tensor::cat(&[idx, idx_next], 1);
    }
    idx
}
