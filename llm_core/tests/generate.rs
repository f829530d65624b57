//! Chapter 5.3: temperature, top-k and an end-of-text id in `generate`.

mod common;
use common::rng_lock;

use llm_core::model::generate::{generate, top_k_filter};
use llm_core::model::gpt::{generate_text_simple, GptConfig, GptModel};
use llm_core::tch::nn::ModuleT;
use llm_core::tch::{self, nn, Device, Kind, Tensor};

const CONTEXT: i64 = 6;

fn tiny() -> (nn::VarStore, GptModel) {
    let cfg = GptConfig {
        vocab_size: 40,
        context_length: CONTEXT,
        emb_dim: 16,
        n_heads: 2,
        n_layers: 2,
        drop_rate: 0.1,
        qkv_bias: false,
    };
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    (vs, model)
}

fn prompt() -> Tensor {
    Tensor::from_slice(&[3i64, 14, 15, 9]).unsqueeze(0)
}

fn row(t: &Tensor) -> Vec<i64> {
    Vec::try_from(t.get(0)).unwrap()
}

#[test]
fn zero_and_tiny_temperature_are_greedy() {
    let _rng = rng_lock();
    let (_vs, model) = tiny();
    let greedy = generate_text_simple(&model, &prompt(), 10, CONTEXT);
    let zero = generate(&model, &prompt(), 10, CONTEXT, 0.0, None, None);
    assert_eq!(row(&zero), row(&greedy));
    // crops the context: 4 + 10 tokens > 6
    assert_eq!(zero.size(), [1, 14]);
    for seed in 0..5 {
        tch::manual_seed(seed);
        let cold = generate(&model, &prompt(), 10, CONTEXT, 1e-4, None, None);
        assert_eq!(row(&cold), row(&greedy), "seed {seed}");
    }
    // a hot one does not stay greedy
    tch::manual_seed(0);
    let hot = generate(&model, &prompt(), 10, CONTEXT, 100.0, None, None);
    assert_ne!(row(&hot), row(&greedy));
}

#[test]
fn top_k_never_samples_outside_the_k_largest() {
    let _rng = rng_lock();
    let (_vs, model) = tiny();
    let k = 3;
    for seed in 0..40 {
        tch::manual_seed(seed);
        let out = generate(&model, &prompt(), 4, CONTEXT, 5.0, Some(k), None);
        let ids = row(&out);
        for (pos, id) in ids.iter().enumerate().skip(4) {
            let pos = pos as i64;
            let ctx = out.narrow(1, (pos - CONTEXT).max(0), pos.min(CONTEXT));
            let logits = tch::no_grad(|| model.forward_t(&ctx, false)).select(1, -1);
            let (_, top) = logits.topk(k, -1, true, true);
            let top: Vec<i64> = Vec::try_from(top.get(0)).unwrap();
            assert!(top.contains(id), "seed {seed}: {id} not in {top:?}");
        }
    }
    // top_k = 1 is greedy whatever the temperature
    tch::manual_seed(1);
    let one = generate(&model, &prompt(), 8, CONTEXT, 10.0, Some(1), None);
    assert_eq!(
        row(&one),
        row(&generate_text_simple(&model, &prompt(), 8, CONTEXT))
    );
}

#[test]
fn top_k_filter_masks_below_the_kth_per_row() {
    let logits = Tensor::from_slice(&[1.0f32, 5.0, 3.0, 2.0, 9.0, 8.0, 7.0, 0.0]).view([2, 4]);
    let f = top_k_filter(&logits, 2);
    let inf = f32::NEG_INFINITY;
    assert_eq!(
        Vec::<f32>::try_from(f.get(0)).unwrap(),
        [inf, 5.0, 3.0, inf]
    );
    assert_eq!(
        Vec::<f32>::try_from(f.get(1)).unwrap(),
        [9.0, 8.0, inf, inf]
    );
    // k outside 1..=vocab is an error naming the range (torch.topk raises too)
    for k in [0, -3, 99] {
        let err = llm_core::model::generate::try_top_k_filter(&logits, k).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("top_k = {k} is out of range; accepted: 1 to the vocabulary size 4")
        );
    }
}

#[test]
fn eos_stops_early() {
    let _rng = rng_lock();
    let (_vs, model) = tiny();
    let greedy = row(&generate_text_simple(&model, &prompt(), 10, CONTEXT));
    let third = greedy[6]; // the third new token
    let first_at = greedy[4..].iter().position(|&t| t == third).unwrap() + 4;
    let out = generate(&model, &prompt(), 10, CONTEXT, 0.0, None, Some(third));
    // stops before the first occurrence, which is not appended
    assert_eq!(row(&out), greedy[..first_at]);
    // an id outside the vocabulary could never stop anything: an error
    let err = llm_core::model::generate::try_generate(
        &model,
        &prompt(),
        10,
        CONTEXT,
        0.0,
        None,
        Some(-1),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("eos_id = -1 is out of range"),
        "{err}"
    );
}

#[test]
fn seeded_sampling_is_deterministic_and_matches_multinomial() {
    let _rng = rng_lock();
    let (_vs, model) = tiny();
    tch::manual_seed(123);
    let a = generate(&model, &prompt(), 8, CONTEXT, 1.4, Some(25), None);
    tch::manual_seed(123);
    let b = generate(&model, &prompt(), 8, CONTEXT, 1.4, Some(25), None);
    assert_eq!(row(&a), row(&b));
    tch::manual_seed(124);
    let c = generate(&model, &prompt(), 8, CONTEXT, 1.4, Some(25), None);
    assert_ne!(row(&a), row(&c));
    // one step by hand: the same multinomial draw from softmax(logits / T)
    tch::manual_seed(7);
    let step = generate(&model, &prompt(), 1, CONTEXT, 2.0, None, None);
    let logits = tch::no_grad(|| model.forward_t(&prompt(), false)).select(1, -1);
    tch::manual_seed(7);
    let by_hand = (logits / 2.0)
        .softmax(-1, Kind::Float)
        .multinomial(1, false);
    assert_eq!(row(&step)[4], by_hand.int64_value(&[0, 0]));
}
