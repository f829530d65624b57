//! The KV cache against the uncached model (the oracle): the same tokens and
//! logits for every kind of cache, batched generation equal to generating
//! each prompt alone, the memory formula, and clear errors.

mod common;

use common::rng_lock;
use llm_core::model::generate::{
    generate, generate_batched, generate_text_simple_cached, try_generate_cached,
};
use llm_core::model::gpt::{generate_text_simple, GptConfig, GptModel, ModelError};
use llm_core::model::kv_cache::{KvCache, KvCacheError, KvCacheKind};
use llm_core::tch::{self, nn, nn::ModuleT, Device, Kind, Tensor};

fn ids(t: &Tensor) -> Vec<i64> {
    Vec::try_from(t.get(0)).unwrap()
}

fn model(cfg: &GptConfig, seed: i64) -> (nn::VarStore, GptModel) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = GptModel::new(vs.root(), cfg).unwrap();
    (vs, m)
}

fn tiny() -> GptConfig {
    GptConfig {
        vocab_size: 60,
        context_length: 32,
        emb_dim: 32,
        n_heads: 4,
        n_layers: 2,
        drop_rate: 0.1,
        qkv_bias: true,
    }
}

/// The seeded 124M model, "Hello, I am" and 200 greedy tokens: every cache
/// gives the uncached model's tokens, and its logits within 1e-5 at every
/// step.
#[test]
fn gpt2_124m_200_tokens_identical_with_every_cache() {
    let _rng = rng_lock();
    let cfg = GptConfig::gpt2_small();
    let (_vs, m) = model(&cfg, 123);
    let prompt = Tensor::from_slice(&[15496i64, 11, 314, 716]).unsqueeze(0);
    let n_layers = cfg.n_layers as usize;
    let mut caches = [
        KvCache::simple(n_layers),
        KvCache::preallocated(n_layers, cfg.context_length).unwrap(),
        KvCache::sliding_window(n_layers, 256).unwrap(),
    ];
    let new_tokens = 200;
    // step by step: the uncached logits of the last position against each cache's
    let mut idx = prompt.shallow_clone();
    let mut feed = prompt.shallow_clone();
    let mut worst = 0.0f64;
    tch::no_grad(|| {
        for _ in 0..new_tokens {
            let full = m.forward_t(&idx, false).select(1, -1);
            for cache in caches.iter_mut() {
                let cached = m
                    .forward_with_cache(&feed, cache, None)
                    .unwrap()
                    .select(1, -1);
                let diff = (&cached - &full).abs().max().double_value(&[]);
                worst = worst.max(diff);
            }
            let next = full.argmax(-1, true);
            idx = Tensor::cat(&[&idx, &next], 1);
            feed = next;
        }
    });
    assert!(worst < 1e-5, "largest logit difference {worst:e}");
    // and through the generate functions: identical token ids
    let uncached = ids(&idx);
    assert_eq!(
        uncached[..10],
        [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]
    );
    for kind in [
        KvCacheKind::Simple,
        KvCacheKind::Preallocated { capacity: 1024 },
        KvCacheKind::SlidingWindow { window: 256 },
    ] {
        let mut cache = KvCache::new(n_layers, kind).unwrap();
        let out = generate_text_simple_cached(&m, &prompt, new_tokens, &mut cache);
        assert_eq!(ids(&out), uncached, "{kind}");
    }
}

#[test]
fn sampling_with_a_cache_draws_the_same_tokens() {
    let _rng = rng_lock();
    let cfg = tiny();
    let (_vs, m) = model(&cfg, 5);
    let prompt = Tensor::from_slice(&[3i64, 1, 4, 1, 5]).unsqueeze(0);
    for (temperature, top_k, eos) in [
        (1.4, Some(25), None),
        (0.7, None, Some(7)),
        (0.0, None, Some(9)),
    ] {
        tch::manual_seed(99);
        let a = generate(&m, &prompt, 20, 32, temperature, top_k, eos);
        tch::manual_seed(99);
        let mut cache = KvCache::preallocated(2, 32).unwrap();
        let b =
            try_generate_cached(&m, &prompt, 20, 32, temperature, top_k, eos, &mut cache).unwrap();
        assert_eq!(
            ids(&a),
            ids(&b),
            "temperature {temperature}, top_k {top_k:?}, eos {eos:?}"
        );
    }
}

#[test]
fn batched_generation_equals_each_prompt_alone() {
    let _rng = rng_lock();
    let cfg = tiny();
    let (_vs, m) = model(&cfg, 11);
    let prompts = vec![
        vec![5i64, 6, 7, 8, 9, 10, 11],
        vec![12, 13],
        vec![14, 15, 16, 17],
    ];
    // the third token each row would generate alone is its own end-of-text
    let alone: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| {
            ids(&generate_text_simple(
                &m,
                &Tensor::from_slice(p).unsqueeze(0),
                12,
                32,
            ))
        })
        .collect();
    for kind in [
        KvCacheKind::Simple,
        KvCacheKind::Preallocated { capacity: 32 },
    ] {
        let mut cache = KvCache::new(2, kind).unwrap();
        let rows = generate_batched(&m, &prompts, 12, 0.0, None, None, 0, &mut cache).unwrap();
        assert_eq!(rows, alone, "{kind}");
    }
    // each row stops on its own: an end-of-text id that row 1 produces first
    let eos = alone[1][prompts[1].len() + 2];
    let mut cache = KvCache::simple(2);
    let rows = generate_batched(&m, &prompts, 12, 0.0, None, Some(eos), 0, &mut cache).unwrap();
    for (r, row) in rows.iter().enumerate() {
        let p = prompts[r].len();
        let expected: Vec<i64> = alone[r][..p]
            .iter()
            .copied()
            .chain(alone[r][p..].iter().copied().take_while(|&t| t != eos))
            .collect();
        assert_eq!(row, &expected, "row {r}");
    }
    assert!(rows[1].len() < alone[1].len());
}

#[test]
fn memory_follows_the_formula() {
    let _rng = rng_lock();
    let cfg = tiny();
    let (_vs, m) = model(&cfg, 1);
    let (layers, heads, head_dim) = (2, 4, 8);
    let bytes = |batch: i64, positions: i64| 2 * layers * batch * heads * head_dim * positions * 4;
    let x = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]).view([2, 6]);
    let mut simple = KvCache::simple(2);
    let _ = m.forward_with_cache(&x, &mut simple, None).unwrap();
    assert_eq!(simple.memory_bytes(), bytes(2, 6));
    let mut pre = KvCache::preallocated(2, 20).unwrap();
    let _ = m.forward_with_cache(&x, &mut pre, None).unwrap();
    assert_eq!(pre.memory_bytes(), bytes(2, 20));
    // a sliding window keeps its size however long the generation
    let mut win = KvCache::sliding_window(2, 8).unwrap();
    let one = Tensor::from_slice(&[1i64]).unsqueeze(0);
    for _ in 0..20 {
        let _ = m.forward_with_cache(&one, &mut win, None).unwrap();
    }
    assert_eq!((win.len(), win.current_pos()), (8, 20));
    assert_eq!(win.memory_bytes(), bytes(1, 8));
    assert!(win.to_string().starts_with(
        "sliding-window cache (last 8 positions): 2 layers, 8 positions held, next position 20"
    ));
    // reset: empty again, position 0
    win.reset();
    assert_eq!((win.len(), win.current_pos()), (0, 0));
}

#[test]
fn a_sliding_window_equals_the_model_while_the_sequence_fits() {
    let _rng = rng_lock();
    let cfg = tiny();
    let (_vs, m) = model(&cfg, 2);
    let prompt = Tensor::from_slice(&[7i64, 8, 9]).unsqueeze(0);
    let oracle = generate_text_simple(&m, &prompt, 20, 32);
    let mut win = KvCache::sliding_window(2, 23).unwrap();
    assert!(generate_text_simple_cached(&m, &prompt, 20, &mut win).equal(&oracle));
    // a smaller window attends to fewer tokens: it runs, and its memory stays at 8 positions
    let mut small = KvCache::sliding_window(2, 8).unwrap();
    let out = generate_text_simple_cached(&m, &prompt, 20, &mut small);
    assert_eq!(out.size(), [1, 23]);
    assert_eq!(small.len(), 8);
}

#[test]
fn clear_errors_instead_of_panics() {
    let _rng = rng_lock();
    let cfg = tiny();
    let (_vs, m) = model(&cfg, 3);
    let prompt = Tensor::arange(10, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    // a prompt longer than the cache's capacity
    let mut small = KvCache::preallocated(2, 8).unwrap();
    let err = m.forward_with_cache(&prompt, &mut small, None).unwrap_err();
    assert_eq!(
        err,
        ModelError::Cache(KvCacheError::Full {
            kind: KvCacheKind::Preallocated { capacity: 8 },
            cached: 0,
            new: 10,
            capacity: 8
        })
    );
    assert!(err
        .to_string()
        .contains("10 more do not fit in its capacity of 8"));
    // a prompt longer than a sliding window, fed at once
    let mut win = KvCache::sliding_window(2, 4).unwrap();
    assert!(m
        .forward_with_cache(&prompt, &mut win, None)
        .unwrap_err()
        .to_string()
        .contains("feed at most 4 tokens per step"));
    // past the context length
    let mut cache = KvCache::simple(2);
    let err = try_generate_cached(&m, &prompt, 30, 32, 0.0, None, None, &mut cache).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "max_new_tokens = 30 is out of range; accepted: at most 22 with a KV cache"
        ),
        "{err}"
    );
    let long = Tensor::zeros([1, 33], (Kind::Int64, Device::Cpu));
    let err = m
        .forward_with_cache(&long, &mut KvCache::simple(2), None)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("would pass the model's context length 32"),
        "{err}"
    );
    // a cache built for another model, or another batch
    let err = m
        .forward_with_cache(&prompt, &mut KvCache::simple(3), None)
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("the cache has 3 layers, the model 2"));
    let mut cache = KvCache::simple(2);
    let _ = m.forward_with_cache(&prompt, &mut cache, None).unwrap();
    let two = Tensor::zeros([2, 1], (Kind::Int64, Device::Cpu));
    assert!(m
        .forward_with_cache(&two, &mut cache, None)
        .unwrap_err()
        .to_string()
        .contains("reset it for a new batch"));
    // ids outside the vocabulary, as without a cache
    let bad = Tensor::from_slice(&[60i64]).unsqueeze(0);
    assert!(m
        .forward_with_cache(&bad, &mut KvCache::simple(2), None)
        .is_err());
    assert_eq!(
        KvCache::preallocated(2, 0).unwrap_err(),
        KvCacheError::Size(0)
    );
}
