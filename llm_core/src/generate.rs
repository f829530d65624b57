//! Chapter 5.3: decoding strategies — temperature scaling and top-k sampling
//! on top of the greedy loop of §4.7, with an optional end-of-text id that
//! stops generation early.
//!
//! ```
//! use llm_core::generate::generate;
//! use llm_core::model::{GptConfig, GptModel};
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
//! # Ok::<(), llm_core::model::ModelError>(())
//! ```

use tch::nn::ModuleT;
use tch::{Kind, Tensor};

use crate::tokenizer::{self, Tokenizer};

/// The book's `text_to_token_ids` (§5.1.1): encode `text` and return the ids
/// as a `[1, num_tokens]` tensor (a batch of one), ready for the model.
///
/// ```
/// use llm_core::generate::{text_to_token_ids, token_ids_to_text};
/// use llm_core::tokenizer::SimpleTokenizerV1;
///
/// let tokenizer = SimpleTokenizerV1::from_text("Every effort moves you.");
/// let ids = text_to_token_ids("Every effort moves you", &tokenizer)?;
/// assert_eq!(ids.size(), [1, 4]);
/// assert_eq!(token_ids_to_text(&ids, &tokenizer)?, "Every effort moves you");
/// # Ok::<(), llm_core::tokenizer::TokenizerError>(())
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
    // a negative id (such as chapter 7's -100) is reported as unknown id u32::MAX
    let ids: Vec<u32> = ids
        .into_iter()
        .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
        .collect();
    tokenizer.decode(&ids)
}

/// Keep the `k` largest logits of each row (`[batch, vocab]`) and set every
/// value below the `k`-th largest to −∞ (§5.3.2). Ties with the `k`-th
/// largest are kept, as in the book. `k` is clamped to `1..=vocab`.
///
/// ```
/// use llm_core::generate::top_k_filter;
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
    let vocab = logits.size().last().copied().unwrap_or(1);
    let k = k.clamp(1, vocab.max(1));
    let (top_logits, _) = logits.topk(k, -1, true, true);
    let min_val = top_logits.narrow(-1, k - 1, 1);
    logits.masked_fill(&logits.lt_tensor(&min_val), f64::NEG_INFINITY)
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
/// the argmax (greedy decoding, as [`crate::model::generate_text_simple`]).
///
/// With `eos_id`, generation stops before appending a token equal to it
/// (the end-of-text token is not appended). With a batch of several rows it
/// stops when every row's next token is `eos_id` (the book's code handles
/// one row).
///
/// ```
/// use llm_core::generate::generate;
/// use llm_core::model::{generate_text_simple, GptConfig, GptModel};
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
/// # Ok::<(), llm_core::model::ModelError>(())
/// ```
pub fn generate<M: ModuleT + ?Sized>(
    model: &M,
    idx: &Tensor,
    max_new_tokens: i64,
    context_size: i64,
    temperature: f64,
    top_k: Option<i64>,
    eos_id: Option<i64>,
) -> Tensor {
    let mut idx = idx.shallow_clone();
    for _ in 0..max_new_tokens {
        let num_tokens = idx.size()[1];
        let keep = num_tokens.min(context_size.max(1));
        let idx_cond = idx.narrow(1, num_tokens - keep, keep);
        let logits = tch::no_grad(|| model.forward_t(&idx_cond, false));
        let mut logits = logits.select(1, -1);
        if let Some(k) = top_k {
            logits = top_k_filter(&logits, k);
        }
        let idx_next = if temperature > 0.0 {
            let probs = (logits / temperature).softmax(-1, None::<Kind>);
            probs.multinomial(1, false)
        } else {
            logits.argmax(-1, true)
        };
        if let Some(eos) = eos_id {
            if idx_next.eq(eos).all().int64_value(&[]) != 0 {
                break;
            }
        }
        let idx_next = idx_next.to_device(idx.device());
        idx = Tensor::cat(&[idx, idx_next], 1);
    }
    idx
}
