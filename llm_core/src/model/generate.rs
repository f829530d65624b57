//! Chapter 5.3: decoding strategies — temperature scaling and top-k sampling
//! on top of the greedy loop of §4.7, with an optional end-of-text id that
//! stops generation early.
//!
//! Two paths give the same tokens: [`generate`] recomputes the whole context
//! at every step (the book's loop, and the oracle), [`generate_cached`] feeds
//! only the newest token through a [`KvCache`] (the bonus of chapter 4);
//! [`generate_batched`] generates for prompts of different lengths in one
//! batch.
//!
//! ```
//! use llm_core::model::generate::generate;
//! use llm_core::model::gpt::{GptConfig, GptModel};
//! use llm_core::tch::{self, nn, Device, Tensor};
//!
//! let cfg = GptConfig { vocab_size: 50, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 1,
//!                       ..GptConfig::gpt2_small() };
//! tch::manual_seed(123);
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = GptModel::new(vs.root(), &cfg)?;
//! let idx = Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0);
//! // the book's settings in §5.3.3: top_k=25, temperature=1.4
//! tch::manual_seed(123);
//! let out = generate(&model, &idx, 5, cfg.context_length, 1.4, Some(25), None);
//! assert_eq!(out.size(), [1, 8]);
//! # Ok::<(), llm_core::model::gpt::ModelError>(())
//! ```

use tch::{Kind, Tensor};

use crate::model::gpt::{check_prompt, setting, LanguageModel, ModelError};
pub use crate::model::gpt::{try_generate_text_simple, GenerateError};
use crate::model::kv_cache::KvCache;
use crate::text::tokenizer::{self, Tokenizer, TokenizerError};

/// The sampling settings: `temperature` 0 or positive and finite, `top_k`
/// and `eos_id` within the vocabulary.
fn check_sampling<M: LanguageModel + ?Sized>(
    model: &M,
    temperature: f64,
    top_k: Option<i64>,
    eos_id: Option<i64>,
) -> Result<(), GenerateError> {
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(setting(
            "temperature",
            temperature,
            "0 (greedy) or a positive finite number",
        ));
    }
    let vocab = model.vocab_size();
    if let Some(k) = top_k {
        check_top_k(k, vocab)?;
    }
    if let Some(eos) = eos_id.filter(|e| !(0..vocab).contains(e)) {
        return Err(setting(
            "eos_id",
            eos,
            format!("a token id from 0 to {}", vocab - 1),
        ));
    }
    Ok(())
}

/// The next token of each row from the last position's logits (`[batch,
/// vocab]`): top-k filtering, then sampling at `temperature` or the argmax
/// (the book's `generate` loop body). `step` only names the step in errors.
fn next_token(
    logits: &Tensor,
    temperature: f64,
    top_k: Option<i64>,
    step: i64,
) -> Result<Tensor, GenerateError> {
    if logits.isnan().any().int64_value(&[]) != 0 {
        return Err(GenerateError::NanLogits { step });
    }
    let logits = match top_k {
        Some(k) => try_top_k_filter(logits, k)?,
        None => logits.shallow_clone(),
    };
    Ok(if temperature > 0.0 {
        temperature_softmax(&logits, temperature).multinomial(1, false)
    } else {
        logits.argmax(-1, true)
    })
}

/// The book's `text_to_token_ids` (§5.1.1): encode `text` and return the ids
/// as a `[1, num_tokens]` tensor (a batch of one), ready for the model.
///
/// ```
/// use llm_core::model::generate::{text_to_token_ids, token_ids_to_text};
/// use llm_core::text::tokenizer::SimpleTokenizerV1;
///
/// let tokenizer = SimpleTokenizerV1::from_text("Every effort moves you.");
/// let ids = text_to_token_ids("Every effort moves you", &tokenizer)?;
/// assert_eq!(ids.size(), [1, 4]);
/// assert_eq!(token_ids_to_text(&ids, &tokenizer)?, "Every effort moves you");
/// # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
/// ```
pub fn text_to_token_ids<T: Tokenizer + ?Sized>(
    text: &str,
    tokenizer: &T,
) -> tokenizer::Result<Tensor> {
    let ids: Vec<i64> = tokenizer.encode(text)?.into_iter().map(i64::from).collect();
    Ok(Tensor::from_slice(&ids).unsqueeze(0))
}

/// The book's `token_ids_to_text` (§5.1.1): decode a `[1, num_tokens]` (or
/// `[num_tokens]`) tensor of ids back to text.
pub fn token_ids_to_text<T: Tokenizer + ?Sized>(
    token_ids: &Tensor,
    tokenizer: &T,
) -> tokenizer::Result<String> {
    let ids: Vec<i64> =
        Vec::try_from(token_ids.flatten(0, -1).to_kind(Kind::Int64)).unwrap_or_default();
    let ids = ids
        .into_iter()
        .map(|i| {
            u32::try_from(i).map_err(|_| TokenizerError::UnknownId {
                id: i,
                vocab_size: tokenizer.vocab_size(),
            })
        })
        .collect::<tokenizer::Result<Vec<u32>>>()?;
    tokenizer.decode(&ids)
}

/// Keep the `k` largest logits of each row (`[batch, vocab]`) and set every
/// value below the `k`-th largest to −∞ (§5.3.2). Ties with the `k`-th
/// largest are kept, as in the book.
///
/// # Panics
/// If `k` is not between 1 and the vocabulary size (the last dimension),
/// as `torch.topk` raises; [`try_top_k_filter`] returns the error instead.
///
/// ```
/// use llm_core::model::generate::top_k_filter;
/// use llm_core::tch::Tensor;
///
/// let logits = Tensor::from_slice(&[4.51f32, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]);
/// let top3 = Vec::<f32>::try_from(top_k_filter(&logits.unsqueeze(0), 3).squeeze()).unwrap();
/// assert_eq!(top3[0], 4.51);
/// assert_eq!(top3[3], 6.75);
/// assert_eq!(top3[7], 6.28);
/// assert!(top3[1] == f32::NEG_INFINITY && top3[8] == f32::NEG_INFINITY);
/// ```
pub fn top_k_filter(logits: &Tensor, k: i64) -> Tensor {
    try_top_k_filter(logits, k).unwrap_or_else(|e| panic!("{e}"))
}

/// [`top_k_filter`], or an error when `k` is not between 1 and the
/// vocabulary size.
pub fn try_top_k_filter(logits: &Tensor, k: i64) -> Result<Tensor, GenerateError> {
    check_top_k(k, logits.size().last().copied().unwrap_or(0))?;
    let (top_logits, _) = logits.topk(k, -1, true, true);
    let min_val = top_logits.narrow(-1, k - 1, 1);
    Ok(logits.masked_fill(&logits.lt_tensor(&min_val), f64::NEG_INFINITY))
}

/// `top_k` must be between 1 and the vocabulary size (`torch.topk` raises too).
fn check_top_k(k: i64, vocab: i64) -> Result<(), GenerateError> {
    if (1..=vocab).contains(&k) {
        Ok(())
    } else {
        Err(setting(
            "top_k",
            k,
            format!("1 to the vocabulary size {vocab}"),
        ))
    }
}

/// `softmax(logits / temperature)`, as the book computes it; when the
/// division overflows (a temperature so small that `logits / temperature`
/// is infinite), the same distribution from the shifted logits
/// `(logits - max) / temperature`, which cannot overflow.
fn temperature_softmax(logits: &Tensor, temperature: f64) -> Tensor {
    let scaled = logits / temperature;
    // one reduction, one read back: +inf or NaN anywhere
    let overflow = scaled
        .isposinf()
        .logical_or(&scaled.isnan())
        .any()
        .int64_value(&[])
        != 0;
    if overflow {
        // 0 / temperature stays 0 even where temperature rounds to 0 in float32
        let shifted = logits - logits.amax(-1, true);
        let is_max = shifted.eq(0.0);
        (shifted / temperature)
            .masked_fill(&is_max, 0.0)
            .softmax(-1, None::<Kind>)
    } else {
        scaled.softmax(-1, None::<Kind>)
    }
}

/// The book's `generate` (§5.3.3): append up to `max_new_tokens` tokens to
/// `idx` (`[batch, num_tokens]` token ids) and return the longer sequence.
///
/// For each new token the model sees at most the last `context_size` tokens
/// (in evaluation mode, without gradients); of its logits at the last
/// position, with `top_k` only the `k` largest stay (the others become −∞,
/// [`top_k_filter`]); then with `temperature > 0` the next token is sampled
/// from `softmax(logits / temperature)` with libtorch's `multinomial` (the
/// call PyTorch's `torch.multinomial` makes, so after the same
/// `manual_seed` the same tokens come out as in the book); otherwise it is
/// the argmax (greedy decoding, as [`crate::model::gpt::generate_text_simple`]).
///
/// With `eos_id`, generation stops before appending a token equal to it
/// (the end-of-text token is not appended). With a batch of several rows it
/// stops when every row's next token is `eos_id` (the book's code handles
/// one row).
///
/// Every step runs the model over the whole (cropped) sequence again: the
/// book's loop, kept for teaching and as the oracle. [`generate_cached`]
/// draws the same tokens through a KV cache ([`crate::model::kv_cache`]), feeding
/// only the newest token at each step.
///
/// ```
/// use llm_core::model::generate::generate;
/// use llm_core::model::gpt::{generate_text_simple, GptConfig, GptModel};
/// use llm_core::tch::{self, nn, Device, Tensor};
///
/// let cfg = GptConfig { vocab_size: 50, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 1,
///                       ..GptConfig::gpt2_small() };
/// tch::manual_seed(123);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let idx = Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0);
/// // temperature 0 without top-k is greedy decoding
/// let greedy = generate(&model, &idx, 6, 8, 0.0, None, None);
/// assert!(greedy.equal(&generate_text_simple(&model, &idx, 6, 8)));
/// # Ok::<(), llm_core::model::gpt::ModelError>(())
/// ```
///
/// # Panics
/// On settings or a prompt it cannot take, with the message of
/// [`try_generate`] (which returns it as an error instead).
pub fn generate<M: LanguageModel + ?Sized>(
    model: &M,
    idx: &Tensor,
    max_new_tokens: i64,
    context_size: i64,
    temperature: f64,
    top_k: Option<i64>,
    eos_id: Option<i64>,
) -> Tensor {
    try_generate(
        model,
        idx,
        max_new_tokens,
        context_size,
        temperature,
        top_k,
        eos_id,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// [`generate`], checking everything first. The errors name the setting and
/// its accepted range:
///
/// | input | accepted |
/// |---|---|
/// | `idx` | `[batch, num_tokens]` int64 ids in `0..vocab_size`, at least one token |
/// | `max_new_tokens` | 0 or more |
/// | `context_size` | 1 to the model's context length |
/// | `temperature` | 0 (greedy) or a positive finite number |
/// | `top_k` | 1 to the vocabulary size |
/// | `eos_id` | an id in `0..vocab_size` |
///
/// ```
/// use llm_core::model::generate::try_generate;
/// use llm_core::model::gpt::{GptConfig, GptModel};
/// use llm_core::tch::{nn, Device, Tensor};
///
/// let cfg = GptConfig { vocab_size: 50, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 1,
///                       ..GptConfig::gpt2_small() };
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let idx = Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0);
/// let err = try_generate(&model, &idx, 5, 8, -1.0, None, None).unwrap_err();
/// assert_eq!(err.to_string(),
///            "temperature = -1 is out of range; accepted: 0 (greedy) or a positive finite number");
/// # Ok::<(), llm_core::model::gpt::ModelError>(())
/// ```
pub fn try_generate<M: LanguageModel + ?Sized>(
    model: &M,
    idx: &Tensor,
    max_new_tokens: i64,
    context_size: i64,
    temperature: f64,
    top_k: Option<i64>,
    eos_id: Option<i64>,
) -> Result<Tensor, GenerateError> {
    check_prompt(model, idx, max_new_tokens, context_size)?;
    check_sampling(model, temperature, top_k, eos_id)?;
    let mut idx = idx.shallow_clone();
    for step in 0..max_new_tokens {
        let num_tokens = idx.size()[1];
        let keep = num_tokens.min(context_size);
        let idx_cond = idx.narrow(1, num_tokens - keep, keep);
        let logits = tch::no_grad(|| model.forward_t(&idx_cond, false));
        let idx_next = next_token(&logits.select(1, -1), temperature, top_k, step)?;
        if let Some(eos) = eos_id {
            if idx_next.eq(eos).all().int64_value(&[]) != 0 {
                break;
            }
        }
        let idx_next = idx_next.to_device(idx.device());
        idx = Tensor::cat(&[idx, idx_next], 1);
    }
    Ok(idx)
}

/// [`generate`] through a KV cache (the book's bonus `use_cache=True`):
/// the prompt (its last `context_size` tokens) runs through the model once,
/// filling `cache`, then each step feeds only the newest token. Same
/// settings, same sampling calls in the same order, so the same tokens come
/// out as from [`generate`] when the whole sequence fits in `context_size`
/// (the cached path cannot crop the context: positions must stay within
/// the model's context length, so `max_new_tokens` is limited to what
/// fits). `cache` is reset first; any [`KvCache`] kind works.
///
/// ```
/// use llm_core::model::generate::{generate, try_generate_cached};
/// use llm_core::model::kv_cache::KvCache;
/// use llm_core::model::gpt::{GptConfig, GptModel};
/// use llm_core::tch::{self, nn, Device, Tensor};
///
/// let cfg = GptConfig { vocab_size: 50, context_length: 16, emb_dim: 16, n_heads: 2, n_layers: 2,
///                       ..GptConfig::gpt2_small() };
/// tch::manual_seed(123);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let idx = Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0);
/// // the uncached path (the oracle) and the cached one give the same tokens
/// tch::manual_seed(7);
/// let uncached = generate(&model, &idx, 10, 16, 1.4, Some(25), None);
/// tch::manual_seed(7);
/// let mut cache = KvCache::simple(2);
/// let cached = try_generate_cached(&model, &idx, 10, 16, 1.4, Some(25), None, &mut cache)?;
/// assert!(cached.equal(&uncached));
/// assert_eq!(cache.current_pos(), 12); // 3 + 10 - 1: the last token is never fed back
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn try_generate_cached<M: LanguageModel + ?Sized>(
    model: &M,
    idx: &Tensor,
    max_new_tokens: i64,
    context_size: i64,
    temperature: f64,
    top_k: Option<i64>,
    eos_id: Option<i64>,
    cache: &mut KvCache,
) -> Result<Tensor, GenerateError> {
    check_prompt(model, idx, max_new_tokens, context_size)?;
    check_sampling(model, temperature, top_k, eos_id)?;
    let num_tokens = idx.size()[1];
    let keep = num_tokens.min(context_size);
    let room = model.context_length() - keep;
    if max_new_tokens > room {
        return Err(setting(
            "max_new_tokens",
            max_new_tokens,
            format!(
                "at most {room} with a KV cache: the prompt's {keep} tokens and the new ones must fit in the model's context length {} (without a cache, generate crops the context instead)",
                model.context_length()
            ),
        ));
    }
    cache.reset();
    let mut idx = idx.shallow_clone();
    if max_new_tokens == 0 {
        return Ok(idx);
    }
    let mut logits = tch::no_grad(|| {
        model.forward_with_cache(&idx.narrow(1, num_tokens - keep, keep), cache, None)
    })?;
    for step in 0..max_new_tokens {
        let idx_next = next_token(&logits.select(1, -1), temperature, top_k, step)?;
        if let Some(eos) = eos_id {
            if idx_next.eq(eos).all().int64_value(&[]) != 0 {
                break;
            }
        }
        let idx_next = idx_next.to_device(idx.device());
        idx = Tensor::cat(&[&idx, &idx_next], 1);
        if step + 1 < max_new_tokens {
            logits = tch::no_grad(|| model.forward_with_cache(&idx_next, cache, None))?;
        }
    }
    Ok(idx)
}

/// [`try_generate_cached`], panicking on settings it cannot take (as
/// [`generate`] does).
#[allow(clippy::too_many_arguments)]
pub fn generate_cached<M: LanguageModel + ?Sized>(
    model: &M,
    idx: &Tensor,
    max_new_tokens: i64,
    context_size: i64,
    temperature: f64,
    top_k: Option<i64>,
    eos_id: Option<i64>,
    cache: &mut KvCache,
) -> Tensor {
    try_generate_cached(
        model,
        idx,
        max_new_tokens,
        context_size,
        temperature,
        top_k,
        eos_id,
        cache,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Greedy decoding through a KV cache (the book's `generate_text_simple`
/// with `use_cache=True`): the same tokens as
/// [`crate::model::gpt::generate_text_simple`] while the sequence fits in the
/// model's context.
///
/// # Panics
/// On a prompt or sizes it cannot take, as [`generate_cached`].
pub fn generate_text_simple_cached<M: LanguageModel + ?Sized>(
    model: &M,
    idx: &Tensor,
    max_new_tokens: i64,
    cache: &mut KvCache,
) -> Tensor {
    let context = model.context_length();
    generate_cached(model, idx, max_new_tokens, context, 0.0, None, None, cache)
}

/// Generate for several prompts of different lengths in one batch through
/// a KV cache (the book's `kv_cache_batched`): the prompts are padded on
/// the left with `pad_id` and an attention mask keeps the padding out of
/// every row's attention and positions, so each row gets what it would get
/// alone; each row stops on its own at `eos_id` (not appended) or after
/// `max_new_tokens`. Returns each prompt followed by its new tokens.
///
/// ```
/// use llm_core::model::generate::{generate_batched, generate_text_simple_cached};
/// use llm_core::model::kv_cache::KvCache;
/// use llm_core::model::gpt::{GptConfig, GptModel};
/// use llm_core::tch::{self, nn, Device, Tensor};
///
/// let cfg = GptConfig { vocab_size: 50, context_length: 16, emb_dim: 16, n_heads: 2, n_layers: 2,
///                       drop_rate: 0.0, qkv_bias: false };
/// tch::manual_seed(123);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let prompts = vec![vec![1i64, 2, 3, 4, 5], vec![6, 7]];
/// let mut cache = KvCache::preallocated(2, 16)?;
/// let rows = generate_batched(&model, &prompts, 6, 0.0, None, None, 0, &mut cache)?;
/// for (prompt, row) in prompts.iter().zip(&rows) {
///     let alone = generate_text_simple_cached(&model, &Tensor::from_slice(prompt).unsqueeze(0), 6,
///                                             &mut KvCache::simple(2));
///     assert_eq!(row, &Vec::<i64>::try_from(alone.get(0))?);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn generate_batched<M: LanguageModel + ?Sized>(
    model: &M,
    prompts: &[Vec<i64>],
    max_new_tokens: i64,
    temperature: f64,
    top_k: Option<i64>,
    eos_id: Option<i64>,
    pad_id: i64,
    cache: &mut KvCache,
) -> Result<Vec<Vec<i64>>, GenerateError> {
    check_sampling(model, temperature, top_k, eos_id)?;
    if max_new_tokens < 0 {
        return Err(setting("max_new_tokens", max_new_tokens, "0 or more"));
    }
    let vocab = model.vocab_size();
    if !(0..vocab).contains(&pad_id) {
        return Err(setting(
            "pad_id",
            pad_id,
            format!("a token id from 0 to {}", vocab - 1),
        ));
    }
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(GenerateError::EmptyPrompt);
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) as i64;
    let context = model.context_length();
    if longest + max_new_tokens > context {
        return Err(setting(
            "max_new_tokens",
            max_new_tokens,
            format!(
                "at most {} for these prompts: the longest prompt ({longest} tokens) and the new tokens must fit in the model's context length {context}",
                (context - longest).max(0)
            ),
        ));
    }
    let batch = prompts.len() as i64;
    let mut ids = Vec::with_capacity((batch * longest) as usize);
    let mut mask = Vec::with_capacity(ids.capacity());
    for p in prompts {
        let pad = longest as usize - p.len();
        ids.extend(std::iter::repeat_n(pad_id, pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, p.len())));
    }
    let device = model.device();
    let idx = Tensor::from_slice(&ids)
        .view([batch, longest])
        .to_device(device);
    let attention_mask = Tensor::from_slice(&mask)
        .view([batch, longest])
        .to_device(device);
    let mut rows: Vec<Vec<i64>> = prompts.to_vec();
    if max_new_tokens == 0 {
        return Ok(rows);
    }
    cache.reset();
    let mut logits = tch::no_grad(|| model.forward_with_cache(&idx, cache, Some(&attention_mask)))?;
    let mut done = vec![false; prompts.len()];
    for step in 0..max_new_tokens {
        let next: Vec<i64> = Vec::try_from(
            next_token(&logits.select(1, -1), temperature, top_k, step)?
                .flatten(0, -1)
                .to_device(tch::Device::Cpu),
        )
        .map_err(|e: tch::TchError| GenerateError::Model(ModelError::Input(e.to_string())))?;
        for (r, &t) in next.iter().enumerate() {
            if !done[r] && Some(t) == eos_id {
                done[r] = true;
            }
            if !done[r] {
                rows[r].push(t);
            }
        }
        if done.iter().all(|&d| d) || step + 1 == max_new_tokens {
            break;
        }
        // finished rows go on as padding, which no other row looks at
        let feed: Vec<i64> = next
            .iter()
            .zip(&done)
            .map(|(&t, &d)| if d { pad_id } else { t })
            .collect();
        let live: Vec<i64> = done.iter().map(|&d| i64::from(!d)).collect();
        logits = tch::no_grad(|| {
            model.forward_with_cache(
                &Tensor::from_slice(&feed).view([batch, 1]).to_device(device),
                cache,
                Some(&Tensor::from_slice(&live).view([batch, 1]).to_device(device)),
            )
        })?;
    }
    Ok(rows)
}

/// Nucleus (top-p) filtering: keep the smallest set of most likely tokens
/// whose probabilities (`softmax` of each row of `logits`, `[batch,
/// vocab]`) add up to at least `p`, set the others to −∞. The most likely
/// token always stays.
///
/// ```
/// use llm_core::model::generate::top_p_filter;
/// use llm_core::tch::Tensor;
///
/// // probabilities 0.5, 0.3, 0.2 (as logits): p = 0.7 keeps the first two
/// let logits = Tensor::from_slice(&[0.5f32, 0.3, 0.2]).log().unsqueeze(0);
/// let kept = Vec::<f32>::try_from(top_p_filter(&logits, 0.7).squeeze()).unwrap();
/// assert!(kept[0].is_finite() && kept[1].is_finite() && kept[2] == f32::NEG_INFINITY);
/// ```
pub fn top_p_filter(logits: &Tensor, p: f64) -> Tensor {
    let (sorted, order) = logits.sort(-1, true);
    let probs = sorted.softmax(-1, Kind::Float);
    // the mass of the tokens before each one: drop those whose predecessors reach p
    let before = probs.cumsum(-1, Kind::Float) - &probs;
    let drop_sorted = before.ge(p);
    let drop = drop_sorted.scatter(-1, &order, &drop_sorted);
    logits.masked_fill(&drop, f64::NEG_INFINITY)
}

/// How [`generate_stream`] picks tokens and when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// The most tokens to generate.
    pub max_new_tokens: i64,
    /// 0: greedy; above: sample from `softmax(logits / temperature)`.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<i64>,
    /// Keep only the most likely tokens that make up probability `p`.
    pub top_p: Option<f64>,
    /// Tokens that end the answer (not returned), such as `<|im_end|>`.
    pub stop_ids: Vec<i64>,
    /// Only ids below this are generated: the tokenizer's size, when the
    /// model's vocabulary is padded beyond it (Qwen3 has 151,936 rows of
    /// embeddings for 151,669 tokens; ids past the tokenizer decode to
    /// nothing).
    pub vocab_limit: Option<i64>,
}

impl Default for GenerationConfig {
    /// Greedy, 256 tokens, no stop tokens.
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 256,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            stop_ids: Vec::new(),
            vocab_limit: None,
        }
    }
}

/// Generate after `prompt` (one sequence of ids) through a KV cache (reset
/// first), calling `on_token` with each new id as soon as it is chosen, so
/// a caller can print text as it arrives. Stops at a stop id (not passed on
/// or returned), after `max_new_tokens`, or at the model's context length.
/// Returns the new ids.
///
/// Each token: the last position's logits, top-k, then top-p on
/// `softmax(logits / temperature)`, then a draw with libtorch's
/// `multinomial` (or the argmax at temperature 0).
///
/// ```
/// use llm_core::model::generate::{generate_stream, generate_text_simple_cached, GenerationConfig};
/// use llm_core::model::gpt::{GptConfig, GptModel};
/// use llm_core::model::kv_cache::KvCache;
/// use llm_core::tch::{nn, Device, Tensor};
///
/// let cfg = GptConfig { vocab_size: 50, context_length: 16, emb_dim: 16, n_heads: 2, n_layers: 2,
///                       drop_rate: 0.0, qkv_bias: false };
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let mut streamed = Vec::new();
/// let settings = GenerationConfig { max_new_tokens: 5, ..Default::default() };
/// let new = generate_stream(&model, &[1, 2, 3], &settings, &mut KvCache::simple(2), |id| streamed.push(id))?;
/// assert_eq!(new, streamed);
/// let greedy = generate_text_simple_cached(&model, &Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0), 5,
///                                          &mut KvCache::simple(2));
/// assert_eq!(new, Vec::<i64>::try_from(greedy.get(0).narrow(0, 3, 5))?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn generate_stream<M: LanguageModel + ?Sized>(
    model: &M,
    prompt: &[i64],
    settings: &GenerationConfig,
    cache: &mut KvCache,
    mut on_token: impl FnMut(i64),
) -> Result<Vec<i64>, GenerateError> {
    let idx = Tensor::from_slice(prompt)
        .unsqueeze(0)
        .to_device(model.device());
    let room = model.context_length() - prompt.len() as i64;
    check_prompt(
        model,
        &idx,
        settings.max_new_tokens.min(room.max(0)),
        model.context_length(),
    )?;
    check_sampling(model, settings.temperature, settings.top_k, None)?;
    if let Some(p) = settings.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return Err(setting("top_p", p, "a probability above 0, at most 1"));
    }
    let vocab = model.vocab_size();
    if let Some(&bad) = settings
        .stop_ids
        .iter()
        .find(|id| !(0..vocab).contains(*id))
    {
        return Err(setting(
            "stop_ids",
            bad,
            format!("token ids from 0 to {}", vocab - 1),
        ));
    }
    cache.reset();
    let mut new = Vec::new();
    let steps = settings.max_new_tokens.min(room);
    if steps <= 0 {
        return Ok(new);
    }
    let mut logits = tch::no_grad(|| model.forward_with_cache(&idx, cache, None))?;
    for step in 0..steps {
        let mut last = logits.select(1, -1);
        if last.isnan().any().int64_value(&[]) != 0 {
            return Err(GenerateError::NanLogits { step });
        }
        if let Some(limit) = settings.vocab_limit.filter(|&l| l < vocab) {
            last = last.shallow_clone();
            let _ = last
                .narrow(-1, limit, vocab - limit)
                .fill_(f64::NEG_INFINITY);
        }
        if let Some(k) = settings.top_k {
            last = try_top_k_filter(&last, k)?;
        }
        let id = if settings.temperature > 0.0 {
            let mut scaled = last / settings.temperature;
            if let Some(p) = settings.top_p {
                scaled = top_p_filter(&scaled, p);
            }
            scaled.softmax(-1, Kind::Float).multinomial(1, false)
        } else {
            last.argmax(-1, true)
        };
        let token = id.int64_value(&[0, 0]);
        if settings.stop_ids.contains(&token) {
            break;
        }
        on_token(token);
        new.push(token);
        if step + 1 < steps {
            let next = Tensor::from_slice(&[token])
                .unsqueeze(0)
                .to_device(model.device());
            logits = tch::no_grad(|| model.forward_with_cache(&next, cache, None))?;
        }
    }
    Ok(new)
}
