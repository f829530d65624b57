//! Chapter 3: attention mechanisms, each built as the book builds it.
//!
//! | book (§) | here | what it adds |
//! |---|---|---|
//! | 3.3.1–3.3.2 | [`simplified_attention`] | scores → softmax → context vectors, no weights |
//! | 3.4.1–3.4.2 | [`SelfAttentionV1`] | trainable query/key/value matrices, scaled dot product |
//! | 3.4.2 | [`SelfAttentionV2`] | the same with `Linear` layers |
//! | 3.5 | [`CausalAttention`] | a causal mask and dropout on the attention weights |
//! | 3.6.1 | [`MultiHeadAttentionWrapper`] | several causal heads, concatenated |
//! | 3.6.2 | [`MultiHeadAttention`] | one projection split into heads, then `out_proj` |
//! | — | [`MhaSdpa`] | the same computation through libtorch's fused kernel |
//!
//! Every layer draws its initial weights from libtorch's global generator in
//! the order the book's PyTorch modules do (through [`crate::model::init`]), and the
//! variables are named as the book's modules name them (`W_query.weight`,
//! `out_proj.bias`, …), so `tch::manual_seed(123)` gives the book's numbers:
//!
//! ```
//! use llm_core::model::attention::{inputs_your_journey, SelfAttentionV1};
//! use llm_core::tch::{self, nn, nn::Module, Device};
//!
//! tch::manual_seed(123);
//! let vs = nn::VarStore::new(Device::Cpu);
//! let sa_v1 = SelfAttentionV1::new(vs.root(), 3, 2);
//! let context = sa_v1.forward(&inputs_your_journey());
//! assert_eq!(context.size(), [6, 2]);
//! // book §3.4: the second row ("journey") is [0.3061, 0.8210]
//! let journey = Vec::<f32>::try_from(context.get(1)).unwrap();
//! assert!((journey[0] - 0.3061).abs() < 1e-4 && (journey[1] - 0.8210).abs() < 1e-4);
//! ```
//!
//! Layers with dropout implement [`nn::ModuleT`]: call `forward_t(x, train)`;
//! `train = true` applies dropout (drawing from the global generator, as
//! PyTorch's `nn.Dropout` in training mode does), `train = false` is the
//! book's `model.eval()`. Layers without dropout implement [`nn::Module`]
//! (and so `ModuleT` too).

use std::borrow::Borrow;

use tch::nn::{Module, ModuleT, Path};
use tch::{Device, Kind, Tensor};

use crate::model::init;
use crate::model::kv_cache::KvCache;
use crate::model::linear::Linear;

/// Errors from building an attention layer with inconsistent sizes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttentionError {
    #[error("d_out ({d_out}) must be a positive multiple of num_heads ({num_heads})")]
    HeadsDoNotDivide { d_out: i64, num_heads: i64 },
    #[error("dropout rate {p} is outside the accepted range 0 to 1")]
    DropoutRange { p: f64 },
}

/// Check a dropout rate: `0 <= p <= 1` (PyTorch's `nn.Dropout` rule).
pub fn check_dropout(p: f64) -> Result<f64, AttentionError> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(AttentionError::DropoutRange { p })
    }
}

/// The book's six 3-dimensional embeddings of "Your journey starts with one
/// step" (§3.3), shape `[6, 3]`.
///
/// ```
/// let inputs = llm_core::model::attention::inputs_your_journey();
/// assert_eq!(inputs.size(), [6, 3]);
/// ```
pub fn inputs_your_journey() -> Tensor {
    let rows: [[f32; 3]; 6] = [
        [0.43, 0.15, 0.89], // Your     (x^1)
        [0.55, 0.87, 0.66], // journey  (x^2)
        [0.57, 0.85, 0.64], // starts   (x^3)
        [0.22, 0.58, 0.33], // with     (x^4)
        [0.77, 0.25, 0.10], // one      (x^5)
        [0.05, 0.80, 0.55], // step     (x^6)
    ];
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([6, 3])
}

/// `nn.Dropout(p)`: zeroes each element with probability `p` and scales the
/// rest by `1/(1-p)` in training mode; the identity in evaluation mode.
///
/// Draws from libtorch's global generator exactly as PyTorch's `F.dropout`
/// (on the CPU it draws nothing when `p == 0` or `train == false`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// The probability of zeroing an element.
    pub p: f64,
}

impl Dropout {
    /// A dropout layer with rate `p`.
    ///
    /// # Panics
    /// If `p` is not between 0 and 1 (as PyTorch's `nn.Dropout` raises);
    /// [`Dropout::try_new`] returns the error instead.
    pub fn new(p: f64) -> Self {
        Self::try_new(p).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A dropout layer with rate `p`, or an error when `p` is not between 0 and 1.
    pub fn try_new(p: f64) -> Result<Self, AttentionError> {
        Ok(Dropout {
            p: check_dropout(p)?,
        })
    }
}

impl ModuleT for Dropout {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.dropout(self.p, train)
    }
}

/// Simplified self-attention without trainable weights (§3.3): attention
/// scores are the dot products of the inputs with each other, the weights
/// their softmax over the last dimension, and each context vector the
/// weighted sum of the inputs.
///
/// `inputs` is `[num_tokens, d]` or `[batch, num_tokens, d]`; the result has
/// the same shape.
///
/// ```
/// use llm_core::model::attention::{inputs_your_journey, simplified_attention};
///
/// let context = simplified_attention(&inputs_your_journey());
/// // book §3.3.2: the second context vector is [0.4419, 0.6515, 0.5683]
/// let z2 = Vec::<f32>::try_from(context.get(1)).unwrap();
/// assert!((z2[0] - 0.4419).abs() < 1e-4 && (z2[2] - 0.5683).abs() < 1e-4);
/// ```
pub fn simplified_attention(inputs: &Tensor) -> Tensor {
    let attn_scores = inputs.matmul(&inputs.transpose(-2, -1));
    let attn_weights = attn_scores.softmax(-1, None::<Kind>);
    attn_weights.matmul(inputs)
}

/// The upper triangle above the diagonal of a `[context_length,
/// context_length]` matrix as booleans: `true` where a query must not see a
/// key (the book's `torch.triu(torch.ones(n, n), diagonal=1).bool()`).
pub fn causal_mask(context_length: i64, device: Device) -> Tensor {
    Tensor::ones([context_length, context_length], (Kind::Float, device))
        .triu(1)
        .to_kind(Kind::Bool)
}

/// The top-left `[n, n]` block of a causal mask on `device`, with a clear
/// message when the input is longer than the context the layer was built for.
fn mask_for(mask: &Tensor, num_tokens: i64, device: Device) -> Tensor {
    let context_length = mask.size()[0];
    assert!(
        num_tokens <= context_length,
        "the input has {num_tokens} tokens, more than the context length {context_length} \
         this attention layer was built for"
    );
    // a no-op unless the variables were moved to another device after creation
    mask.narrow(0, 0, num_tokens)
        .narrow(1, 0, num_tokens)
        .to_device(device)
}

/// A trainable `[d_in, d_out]` matrix drawn from U(0, 1), the book's
/// `nn.Parameter(torch.rand(d_in, d_out))`.
fn rand_parameter(path: &Path, name: &str, d_in: i64, d_out: i64) -> Tensor {
    init::var_from(path, name, &init::uniform(&[d_in, d_out], 0.0, 1.0))
}

/// Scaled dot-product self-attention with raw weight matrices (§3.4.2,
/// `SelfAttention_v1`).
///
/// `W_query`, `W_key` and `W_value` are `[d_in, d_out]` parameters drawn
/// from U(0, 1) (`torch.rand`) in that order; the layer computes
/// `softmax(Q Kᵀ / √d_out) V` with `Q = x W_query`, and so on.
#[derive(Debug)]
pub struct SelfAttentionV1 {
    /// `W_query`, `[d_in, d_out]`
    pub w_query: Tensor,
    /// `W_key`, `[d_in, d_out]`
    pub w_key: Tensor,
    /// `W_value`, `[d_in, d_out]`
    pub w_value: Tensor,
}

impl SelfAttentionV1 {
    /// Create the three matrices under `path` as `W_query`, `W_key`, `W_value`.
    pub fn new<'a, P: Borrow<Path<'a>>>(path: P, d_in: i64, d_out: i64) -> Self {
        let path = path.borrow();
        let w_query = rand_parameter(path, "W_query", d_in, d_out);
        let w_key = rand_parameter(path, "W_key", d_in, d_out);
        let w_value = rand_parameter(path, "W_value", d_in, d_out);
        SelfAttentionV1 {
            w_query,
            w_key,
            w_value,
        }
    }
}

impl Module for SelfAttentionV1 {
    /// `x`: `[num_tokens, d_in]` (or batched); returns `[num_tokens, d_out]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let keys = x.matmul(&self.w_key);
        let queries = x.matmul(&self.w_query);
        let values = x.matmul(&self.w_value);
        attention_weights(&queries, &keys, None).matmul(&values)
    }
}

/// Self-attention with `Linear` projections (§3.4.2, `SelfAttention_v2`).
///
/// Variables `W_query.weight`, `W_key.weight`, `W_value.weight` (and `.bias`
/// when `qkv_bias`), PyTorch's default `nn.Linear` initialisation.
///
/// ```
/// use llm_core::model::attention::{inputs_your_journey, SelfAttentionV2};
/// use llm_core::tch::{self, nn, nn::Module, Device};
///
/// tch::manual_seed(789);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let sa_v2 = SelfAttentionV2::new(vs.root(), 3, 2, false);
/// let context = sa_v2.forward(&inputs_your_journey());
/// let first = Vec::<f32>::try_from(context.get(0)).unwrap();
/// assert!((first[0] - -0.0739).abs() < 1e-4 && (first[1] - 0.0713).abs() < 1e-4);
/// ```
#[derive(Debug)]
pub struct SelfAttentionV2 {
    pub w_query: Linear,
    pub w_key: Linear,
    pub w_value: Linear,
}

impl SelfAttentionV2 {
    /// Create `W_query`, `W_key`, `W_value` (in that order) under `path`.
    pub fn new<'a, P: Borrow<Path<'a>>>(path: P, d_in: i64, d_out: i64, qkv_bias: bool) -> Self {
        let path = path.borrow();
        SelfAttentionV2 {
            w_query: Linear::new(path / "W_query", d_in, d_out, qkv_bias),
            w_key: Linear::new(path / "W_key", d_in, d_out, qkv_bias),
            w_value: Linear::new(path / "W_value", d_in, d_out, qkv_bias),
        }
    }
}

impl Module for SelfAttentionV2 {
    fn forward(&self, x: &Tensor) -> Tensor {
        let keys = self.w_key.forward(x);
        let queries = self.w_query.forward(x);
        let values = self.w_value.forward(x);
        attention_weights(&queries, &keys, None).matmul(&values)
    }
}

/// The attention weights `softmax(mask(Q Kᵀ) / √d_k)`, with `d_k` the
/// size of the keys' last dimension; `mask` (true above the diagonal) sets
/// those scores to −∞ first. Shared by every attention class of the chapter.
fn attention_weights(queries: &Tensor, keys: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let mut attn_scores = queries.matmul(&keys.transpose(-2, -1));
    if let Some(mask) = mask {
        attn_scores = attn_scores.masked_fill(mask, f64::NEG_INFINITY);
    }
    let d_k = *keys.size().last().unwrap_or(&1) as f64;
    (attn_scores / d_k.sqrt()).softmax(-1, None::<Kind>)
}

/// Single-head causal self-attention with dropout (§3.5.3, `CausalAttention`).
///
/// Scores above the diagonal are set to −∞ before the softmax, so token `i`
/// attends only to tokens `0..=i`; dropout is applied to the attention
/// weights in training mode. Input `[batch, num_tokens, d_in]` with
/// `num_tokens <= context_length`; output `[batch, num_tokens, d_out]`.
///
/// ```
/// use llm_core::model::attention::{inputs_your_journey, CausalAttention};
/// use llm_core::tch::{self, nn, nn::ModuleT, Device, Tensor};
///
/// tch::manual_seed(123);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let batch = Tensor::stack(&[inputs_your_journey(), inputs_your_journey()], 0);
/// let ca = CausalAttention::new(vs.root(), 3, 2, 6, 0.0, false);
/// let context = ca.forward_t(&batch, false);
/// assert_eq!(context.size(), [2, 6, 2]);
/// ```
#[derive(Debug)]
pub struct CausalAttention {
    pub d_out: i64,
    pub w_query: Linear,
    pub w_key: Linear,
    pub w_value: Linear,
    pub dropout: Dropout,
    /// `[context_length, context_length]`, `true` above the diagonal (a
    /// buffer, not a trainable variable).
    pub mask: Tensor,
}

impl CausalAttention {
    /// Create `W_query`, `W_key`, `W_value` (in that order) under `path`.
    pub fn new<'a, P: Borrow<Path<'a>>>(
        path: P,
        d_in: i64,
        d_out: i64,
        context_length: i64,
        dropout: f64,
        qkv_bias: bool,
    ) -> Self {
        let path = path.borrow();
        CausalAttention {
            d_out,
            w_query: Linear::new(path / "W_query", d_in, d_out, qkv_bias),
            w_key: Linear::new(path / "W_key", d_in, d_out, qkv_bias),
            w_value: Linear::new(path / "W_value", d_in, d_out, qkv_bias),
            dropout: Dropout::new(dropout),
            mask: causal_mask(context_length, path.device()),
        }
    }
}

impl ModuleT for CausalAttention {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let num_tokens = x.size()[x.dim() - 2];
        let keys = self.w_key.forward(x);
        let queries = self.w_query.forward(x);
        let values = self.w_value.forward(x);
        let mask = mask_for(&self.mask, num_tokens, x.device());
        let attn_weights = attention_weights(&queries, &keys, Some(&mask));
        let attn_weights = self.dropout.forward_t(&attn_weights, train);
        attn_weights.matmul(&values)
    }
}

/// Multi-head attention as a stack of [`CausalAttention`] heads whose outputs
/// are concatenated along the last dimension (§3.6.1,
/// `MultiHeadAttentionWrapper`). Output `[batch, num_tokens, num_heads * d_out]`.
///
/// The heads live under `heads.0`, `heads.1`, … and are created in order.
#[derive(Debug)]
pub struct MultiHeadAttentionWrapper {
    pub heads: Vec<CausalAttention>,
}

impl MultiHeadAttentionWrapper {
    /// Create `num_heads` causal heads, each `d_in → d_out`.
    pub fn new<'a, P: Borrow<Path<'a>>>(
        path: P,
        d_in: i64,
        d_out: i64,
        context_length: i64,
        dropout: f64,
        num_heads: i64,
        qkv_bias: bool,
    ) -> Self {
        let heads = path.borrow() / "heads";
        let heads = (0..num_heads)
            .map(|i| {
                CausalAttention::new(&heads / i, d_in, d_out, context_length, dropout, qkv_bias)
            })
            .collect();
        MultiHeadAttentionWrapper { heads }
    }
}

impl ModuleT for MultiHeadAttentionWrapper {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let outs: Vec<Tensor> = self.heads.iter().map(|h| h.forward_t(x, train)).collect();
        Tensor::cat(&outs, -1)
    }
}

/// Check that `d_out` splits evenly into `num_heads` heads; the head size.
fn head_dim(d_out: i64, num_heads: i64) -> Result<i64, AttentionError> {
    if num_heads > 0 && d_out > 0 && d_out % num_heads == 0 {
        Ok(d_out / num_heads)
    } else {
        Err(AttentionError::HeadsDoNotDivide { d_out, num_heads })
    }
}

/// The four projections every multi-head attention layer has, created in
/// the book's order: `W_query`, `W_key`, `W_value` (`qkv_bias`), `out_proj`
/// (always with bias).
fn mha_projections(path: &Path, d_in: i64, d_out: i64, qkv_bias: bool) -> [Linear; 4] {
    [
        Linear::new(path / "W_query", d_in, d_out, qkv_bias),
        Linear::new(path / "W_key", d_in, d_out, qkv_bias),
        Linear::new(path / "W_value", d_in, d_out, qkv_bias),
        Linear::new(path / "out_proj", d_out, d_out, true),
    ]
}

/// `[b, n, d_out]` → `[b, num_heads, n, head_dim]`
fn split_heads(x: &Tensor, num_heads: i64, head_dim: i64) -> Tensor {
    let (b, n) = (x.size()[0], x.size()[1]);
    x.view([b, n, num_heads, head_dim]).transpose(1, 2)
}

/// `[b, num_heads, n, head_dim]` → `[b, n, d_out]`
fn combine_heads(x: &Tensor, d_out: i64) -> Tensor {
    let (b, n) = (x.size()[0], x.size()[2]);
    x.transpose(1, 2).contiguous().view([b, n, d_out])
}

/// Efficient multi-head causal attention (§3.6.2, `MultiHeadAttention`).
///
/// One `Linear` projection each for queries, keys and values (`d_in →
/// d_out`), split into `num_heads` heads of `head_dim = d_out / num_heads`;
/// per head `softmax(mask(Q Kᵀ) / √head_dim)`, dropout on those weights,
/// times `V`; the heads are concatenated again and mixed by `out_proj`
/// (`d_out → d_out`, with bias). Input `[batch, num_tokens, d_in]`, output
/// `[batch, num_tokens, d_out]`.
///
/// ```
/// use llm_core::model::attention::{inputs_your_journey, MultiHeadAttention};
/// use llm_core::tch::{self, nn, nn::ModuleT, Device, Tensor};
///
/// tch::manual_seed(123);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let batch = Tensor::stack(&[inputs_your_journey(), inputs_your_journey()], 0);
/// let mha = MultiHeadAttention::new(vs.root(), 3, 2, 6, 0.0, 2, false)?;
/// let context = mha.forward_t(&batch, false);
/// assert_eq!(context.size(), [2, 6, 2]);
/// let first = Vec::<f32>::try_from(context.get(0).get(0)).unwrap();
/// assert!((first[0] - 0.3190).abs() < 1e-4 && (first[1] - 0.4858).abs() < 1e-4);
/// # Ok::<(), llm_core::model::attention::AttentionError>(())
/// ```
///
/// # Panics
/// `forward_t` panics when the input has more tokens than `context_length`.
#[derive(Debug)]
pub struct MultiHeadAttention {
    pub d_out: i64,
    pub num_heads: i64,
    pub head_dim: i64,
    pub w_query: Linear,
    pub w_key: Linear,
    pub w_value: Linear,
    pub out_proj: Linear,
    pub dropout: Dropout,
    /// `[context_length, context_length]`, `true` above the diagonal (a
    /// buffer, not a trainable variable).
    pub mask: Tensor,
}

impl MultiHeadAttention {
    /// Create `W_query`, `W_key`, `W_value` and `out_proj` (in that order)
    /// under `path`. Fails when `d_out` is not a multiple of `num_heads`.
    pub fn new<'a, P: Borrow<Path<'a>>>(
        path: P,
        d_in: i64,
        d_out: i64,
        context_length: i64,
        dropout: f64,
        num_heads: i64,
        qkv_bias: bool,
    ) -> Result<Self, AttentionError> {
        let head_dim = head_dim(d_out, num_heads)?;
        check_dropout(dropout)?;
        let path = path.borrow();
        let [w_query, w_key, w_value, out_proj] = mha_projections(path, d_in, d_out, qkv_bias);
        Ok(MultiHeadAttention {
            d_out,
            num_heads,
            head_dim,
            w_query,
            w_key,
            w_value,
            out_proj,
            dropout: Dropout::new(dropout),
            mask: causal_mask(context_length, path.device()),
        })
    }

    /// The trainable tensors in PyTorch's `parameters()` order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        [&self.w_query, &self.w_key, &self.w_value, &self.out_proj]
            .into_iter()
            .flat_map(Linear::parameters)
            .collect()
    }
}

impl MultiHeadAttention {
    /// The forward pass with a KV cache (the book's `use_cache=True`), in
    /// evaluation mode: the new tokens' keys and values are appended to layer
    /// `layer` of `cache`, and their queries attend to every held position
    /// that `mask` (`[batch or 1, 1, new, held]`, from
    /// [`KvCache::begin_step`]) leaves open. Input `[batch, new, d_in]`.
    pub fn forward_with_cache(
        &self,
        x: &Tensor,
        cache: &mut KvCache,
        layer: usize,
        mask: &Tensor,
    ) -> Tensor {
        let [keys, queries, values] = [&self.w_key, &self.w_query, &self.w_value]
            .map(|w| split_heads(&w.forward(x), self.num_heads, self.head_dim));
        let (keys, values) = cache.append(layer, &keys, &values);
        let attn_weights = attention_weights(&queries, &keys, Some(mask));
        let context_vec = combine_heads(&attn_weights.matmul(&values), self.d_out);
        self.out_proj.forward(&context_vec)
    }
}

impl ModuleT for MultiHeadAttention {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_fast(x, train, false, false)
    }
}

impl MultiHeadAttention {
    /// The forward pass with the speed recipe's two attention options (the
    /// book's `PyTorchMultiHeadAttention` in ch05/10): `flash` computes
    /// `softmax(mask(Q Kᵀ) / √head_dim) V` with libtorch's fused
    /// `scaled_dot_product_attention` (FlashAttention where the device has
    /// it; the `[num_tokens, num_tokens]` weights are never stored), and
    /// `fused_qkv` computes queries, keys and values with one matmul against
    /// the three weight matrices stacked (same weights, one bigger and
    /// faster GEMM; layers with LoRA keep three). With both off this is
    /// [`MultiHeadAttention`]'s `forward_t`, the book's code.
    ///
    /// ```
    /// use llm_core::model::attention::MultiHeadAttention;
    /// use llm_core::tch::{self, nn, nn::ModuleT, Device, Kind, Tensor};
    ///
    /// tch::manual_seed(123);
    /// let vs = nn::VarStore::new(Device::Cpu);
    /// let mha = MultiHeadAttention::new(vs.root(), 16, 8, 10, 0.0, 2, true)?;
    /// let x = Tensor::randn([3, 10, 16], (Kind::Float, Device::Cpu));
    /// let book = mha.forward_t(&x, false);
    /// let fast = mha.forward_fast(&x, false, true, true);
    /// assert!((book - fast).abs().max().double_value(&[]) < 1e-6);
    /// # Ok::<(), llm_core::model::attention::AttentionError>(())
    /// ```
    pub fn forward_fast(&self, x: &Tensor, train: bool, flash: bool, fused_qkv: bool) -> Tensor {
        let num_tokens = x.size()[1];
        let [keys, queries, values] = self.project_qkv(x, fused_qkv);
        let context_vec = if flash {
            let context_length = self.mask.size()[0];
            assert!(
                num_tokens <= context_length,
                "the input has {num_tokens} tokens, more than the context length {context_length} \
                 this attention layer was built for"
            );
            let dropout_p = if train { self.dropout.p } else { 0.0 };
            Tensor::scaled_dot_product_attention(
                &queries,
                &keys,
                &values,
                None::<Tensor>,
                dropout_p,
                true,
                None::<f64>,
                false,
            )
        } else {
            let mask = mask_for(&self.mask, num_tokens, x.device());
            let attn_weights = attention_weights(&queries, &keys, Some(&mask));
            let attn_weights = self.dropout.forward_t(&attn_weights, train);
            attn_weights.matmul(&values)
        };
        self.out_proj
            .forward(&combine_heads(&context_vec, self.d_out))
    }

    /// Keys, queries and values split into heads, `[b, num_heads, n,
    /// head_dim]` each: three projections in the book's order (keys first),
    /// or one matmul against `[W_query; W_key; W_value]` when `fused`.
    fn project_qkv(&self, x: &Tensor, fused: bool) -> [Tensor; 3] {
        let ws = [&self.w_query, &self.w_key, &self.w_value];
        let fusable = ws.iter().all(|w| w.lora.is_none());
        if !(fused && fusable) {
            return [&self.w_key, &self.w_query, &self.w_value]
                .map(|w| split_heads(&w.forward(x), self.num_heads, self.head_dim));
        }
        let weight = Tensor::cat(&ws.map(|w| &w.ws), 0);
        let bias = ws
            .iter()
            .map(|w| w.bs.as_ref())
            .collect::<Option<Vec<_>>>()
            .map(|b| Tensor::cat(&b, 0));
        let (b, n) = (x.size()[0], x.size()[1]);
        // [b, n, 3 d_out] -> [b, n, 3, heads, head_dim] -> [3, b, heads, n, head_dim]
        let qkv = x
            .linear(&weight, bias.as_ref())
            .view([b, n, 3, self.num_heads, self.head_dim])
            .permute([2, 0, 3, 1, 4]);
        [qkv.get(1), qkv.get(0), qkv.get(2)]
    }
}

/// [`MultiHeadAttention`] computed with libtorch's fused
/// `scaled_dot_product_attention` (`is_causal`), which never materialises
/// the `[num_tokens, num_tokens]` weights when a flash or memory-efficient
/// kernel applies.
///
/// Same variables, same names, same creation order, same output as
/// [`MultiHeadAttention`] (up to float rounding) when dropout is off. With
/// dropout in training mode the kernel draws its own dropout mask, so the
/// random pattern differs from `MultiHeadAttention`'s (the distribution is
/// the same).
///
/// ```
/// use llm_core::model::attention::{MhaSdpa, MultiHeadAttention};
/// use llm_core::tch::{self, nn, nn::ModuleT, Device, Kind, Tensor};
///
/// tch::manual_seed(123);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let mha = MultiHeadAttention::new(vs.root(), 16, 8, 10, 0.0, 2, false)?;
/// let sdpa = MhaSdpa::from(&mha); // shares mha's weights
/// let x = Tensor::randn([3, 10, 16], (Kind::Float, Device::Cpu));
/// let diff = (mha.forward_t(&x, false) - sdpa.forward_t(&x, false)).abs().max();
/// assert!(diff.double_value(&[]) < 1e-6);
/// # Ok::<(), llm_core::model::attention::AttentionError>(())
/// ```
///
/// # Panics
/// `forward_t` panics when the input has more tokens than the context length
/// the layer was built for.
#[derive(Debug)]
pub struct MhaSdpa(pub MultiHeadAttention);

impl MhaSdpa {
    /// Create the layer exactly as [`MultiHeadAttention::new`] does (same
    /// variables, names and creation order).
    pub fn new<'a, P: Borrow<Path<'a>>>(
        path: P,
        d_in: i64,
        d_out: i64,
        context_length: i64,
        dropout: f64,
        num_heads: i64,
        qkv_bias: bool,
    ) -> Result<Self, AttentionError> {
        MultiHeadAttention::new(
            path,
            d_in,
            d_out,
            context_length,
            dropout,
            num_heads,
            qkv_bias,
        )
        .map(MhaSdpa)
    }

    /// The trainable tensors in PyTorch's `parameters()` order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        self.0.parameters()
    }
}

impl From<&MultiHeadAttention> for MhaSdpa {
    /// The fused variant sharing `mha`'s weight tensors (training one trains
    /// the other).
    fn from(mha: &MultiHeadAttention) -> Self {
        MhaSdpa(MultiHeadAttention {
            d_out: mha.d_out,
            num_heads: mha.num_heads,
            head_dim: mha.head_dim,
            w_query: mha.w_query.shallow_clone(),
            w_key: mha.w_key.shallow_clone(),
            w_value: mha.w_value.shallow_clone(),
            out_proj: mha.out_proj.shallow_clone(),
            dropout: mha.dropout,
            mask: mha.mask.shallow_clone(),
        })
    }
}

impl ModuleT for MhaSdpa {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.0.forward_fast(x, train, true, false)
    }
}
