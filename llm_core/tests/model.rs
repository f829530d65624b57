//! Chapter 4: the GPT model against PyTorch's initialisation (seeded weights,
//! creation order, names), the book's parameter counts and generated tokens,
//! causality, and the building blocks.

mod common;
use common::rng_lock;

use std::collections::BTreeSet;

use llm_core::model::gpt::{
    gelu, generate_text_simple, FeedForward, Gelu, GptConfig, GptModel, LayerNorm, ModelError,
    TransformerBlock, MODEL_NAMES,
};
use llm_core::model::init;
use llm_core::tch::nn::{self, Module, ModuleT};
use llm_core::tch::{self, Device, Kind, Tensor};

fn tiny(qkv_bias: bool) -> GptConfig {
    GptConfig {
        vocab_size: 53,
        context_length: 9,
        emb_dim: 12,
        n_heads: 3,
        n_layers: 2,
        drop_rate: 0.1,
        qkv_bias,
    }
}

fn names(vs: &nn::VarStore) -> BTreeSet<String> {
    vs.variables().into_keys().collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn ids(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
}

/// The closed form of the architecture: two V×E matrices (embedding and
/// head), C×E positions, per block 12E² + 10E (+3E with qkv bias), and the
/// final norm's 2E.
fn params_by_formula(cfg: &GptConfig) -> i64 {
    let (v, c, e, l) = (
        cfg.vocab_size,
        cfg.context_length,
        cfg.emb_dim,
        cfg.n_layers,
    );
    let block = 12 * e * e + 10 * e + if cfg.qkv_bias { 3 * e } else { 0 };
    2 * v * e + c * e + l * block + 2 * e
}

/// One 124M model (a few seconds to build): the seeded weights, the counts,
/// and the book's greedy continuation of "Hello, I am".
#[test]
fn gpt2_small_with_seed_123_has_the_books_weights_and_tokens() {
    let _rng = rng_lock();
    let cfg = GptConfig::gpt2_small();
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();

    // weights equal to PyTorch's GPTModel after torch.manual_seed(123)
    let tok_sum = model
        .tok_emb
        .ws
        .to_kind(Kind::Double)
        .sum(Kind::Double)
        .double_value(&[]);
    let expected_sum = 2627.5139681208075;
    assert!(
        ((tok_sum - expected_sum) / expected_sum).abs() < 1e-6,
        "tok_emb.weight sum {tok_sum}"
    );
    let w_query = &model.trf_blocks[0].att.w_query.ws;
    let w00 = w_query.double_value(&[0, 0]);
    assert!(
        (w00 - 0.02662377804517746).abs() < 1e-9,
        "trf_blocks.0.att.W_query.weight[0][0] = {w00}"
    );
    println!("tok_emb.weight sum (float64) = {tok_sum:.13}; trf_blocks.0.att.W_query.weight[0][0] = {w00:.17}");
    let named = vs.variables();
    assert!(named["trf_blocks.0.att.W_query.weight"].equal(w_query));

    // book §4.6
    assert_eq!(model.num_parameters(), 163_009_536);
    assert_eq!(model.num_parameters_tied(), 124_412_160);
    assert_eq!(cfg.num_parameters(), 163_009_536);
    assert_eq!(cfg.num_parameters_tied(), 124_412_160);
    assert!((model.memory_mb() - 621.83).abs() < 0.005);
    assert_eq!(named.len(), model.parameters().len());
    assert_eq!(named.len(), 2 + 12 * 13 + 2 + 1);
    assert_eq!(named["tok_emb.weight"].size(), [50257, 768]);
    assert_eq!(named["pos_emb.weight"].size(), [1024, 768]);
    assert_eq!(
        named["trf_blocks.11.ff.layers.0.weight"].size(),
        [3072, 768]
    );
    assert_eq!(named["trf_blocks.11.ff.layers.2.bias"].size(), [768]);
    assert_eq!(named["out_head.weight"].size(), [50257, 768]);
    assert!(!named.contains_key("out_head.bias"));
    assert!(!named.contains_key("trf_blocks.0.att.W_query.bias"));

    // book §4.6: logits for the two-text batch
    let batch = Tensor::from_slice(&[6109i64, 3626, 6100, 345, 6109, 1110, 6622, 257]).view([2, 4]);
    let logits = tch::no_grad(|| model.forward_t(&batch, false));
    assert_eq!(logits.size(), [2, 4, 50257]);

    // book §4.7 (and the book's test_ch04.py): "Hello, I am" → 10 greedy tokens
    let encoded = Tensor::from_slice(&[15496i64, 11, 314, 716]).unsqueeze(0);
    let out = generate_text_simple(&model, &encoded, 10, cfg.context_length);
    assert_eq!(
        ids(&out),
        [
            15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267, 49706, 43231, 47062,
            34657
        ]
    );
}

#[test]
fn parameter_counts_of_the_four_presets() {
    let presets = [
        (GptConfig::gpt2_small(), 163_009_536, 124_412_160, 12),
        (GptConfig::gpt2_medium(), 406_212_608, 354_749_440, 16),
        (GptConfig::gpt2_large(), 838_220_800, 773_891_840, 20),
        (GptConfig::gpt2_xl(), 1_637_792_000, 1_557_380_800, 25),
    ];
    for ((cfg, total, tied, heads), name) in presets.iter().zip(MODEL_NAMES) {
        assert_eq!(params_by_formula(cfg), *total, "{name}");
        assert_eq!(cfg.num_parameters(), *total, "{name}");
        assert_eq!(cfg.num_parameters_tied(), *tied, "{name}");
        assert_eq!(cfg.n_heads, *heads);
        assert_eq!(GptConfig::by_name(name).unwrap(), *cfg);
        // with qkv bias (OpenAI's checkpoints): 3 E more per block
        let biased = GptConfig {
            qkv_bias: true,
            ..*cfg
        };
        assert_eq!(
            biased.num_parameters(),
            total + 3 * cfg.emb_dim * cfg.n_layers
        );
        assert_eq!(params_by_formula(&biased), biased.num_parameters());
    }
    // OpenAI's GPT-2 small: 124,439,808 parameters with qkv bias and a tied head
    let openai = GptConfig {
        qkv_bias: true,
        ..GptConfig::gpt2_small()
    };
    assert_eq!(openai.num_parameters_tied(), 124_439_808);
}

#[test]
fn built_models_have_the_configured_parameter_count() {
    let _rng = rng_lock();
    for qkv_bias in [false, true] {
        let cfg = tiny(qkv_bias);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = GptModel::new(vs.root(), &cfg).unwrap();
        let in_store: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
        assert_eq!(model.num_parameters(), in_store);
        assert_eq!(model.num_parameters(), cfg.num_parameters());
        assert_eq!(model.num_parameters(), params_by_formula(&cfg));
        assert_eq!(model.memory_bytes(), 4 * in_store);
    }
}

#[test]
fn variables_are_named_and_drawn_in_the_books_order() {
    let _rng = rng_lock();
    for qkv_bias in [false, true] {
        let cfg = tiny(qkv_bias);
        tch::manual_seed(2024);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = GptModel::new(vs.root(), &cfg).unwrap();

        // replay PyTorch's draws: embeddings N(0,1), then per block
        // W_query, W_key, W_value, out_proj, ff.layers.0, ff.layers.2, then out_head
        tch::manual_seed(2024);
        let (v, c, e) = (cfg.vocab_size, cfg.context_length, cfg.emb_dim);
        let mut expected: Vec<(String, Tensor)> = vec![
            ("tok_emb.weight".into(), init::normal(&[v, e])),
            ("pos_emb.weight".into(), init::normal(&[c, e])),
        ];
        let mut linear = |name: String, d_in: i64, d_out: i64, bias: bool| {
            let wb = init::linear_weight_bound(d_in);
            expected.push((
                format!("{name}.weight"),
                init::uniform(&[d_out, d_in], -wb, wb),
            ));
            if bias {
                let bb = init::linear_bias_bound(d_in);
                expected.push((format!("{name}.bias"), init::uniform(&[d_out], -bb, bb)));
            }
        };
        for i in 0..cfg.n_layers {
            let p = format!("trf_blocks.{i}");
            for m in ["W_query", "W_key", "W_value"] {
                linear(format!("{p}.att.{m}"), e, e, qkv_bias);
            }
            linear(format!("{p}.att.out_proj"), e, e, true);
            linear(format!("{p}.ff.layers.0"), e, 4 * e, true);
            linear(format!("{p}.ff.layers.2"), 4 * e, e, true);
        }
        linear("out_head".into(), e, v, false);
        for i in 0..cfg.n_layers {
            for norm in ["norm1", "norm2"] {
                expected.push((
                    format!("trf_blocks.{i}.{norm}.scale"),
                    Tensor::ones([e], (Kind::Float, Device::Cpu)),
                ));
                expected.push((
                    format!("trf_blocks.{i}.{norm}.shift"),
                    Tensor::zeros([e], (Kind::Float, Device::Cpu)),
                ));
            }
        }
        expected.push((
            "final_norm.scale".into(),
            Tensor::ones([e], (Kind::Float, Device::Cpu)),
        ));
        expected.push((
            "final_norm.shift".into(),
            Tensor::zeros([e], (Kind::Float, Device::Cpu)),
        ));

        let named = vs.variables();
        let expected_names: BTreeSet<String> = expected.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names(&vs), expected_names, "qkv_bias {qkv_bias}");
        for (name, value) in &expected {
            assert!(named[name].equal(value), "{name} (qkv_bias {qkv_bias})");
            assert!(named[name].requires_grad(), "{name}");
        }
        // parameters() lists them in PyTorch's order, which places each block's
        // norms after its feed-forward layers
        let order: Vec<i64> = model
            .parameters()
            .iter()
            .map(|t| t.numel() as i64)
            .collect();
        assert_eq!(order[0], v * e);
        assert_eq!(order[1], c * e);
        assert_eq!(*order.last().unwrap(), v * e);
    }
}

#[test]
fn gpt_model_is_causal() {
    let _rng = rng_lock();
    tch::manual_seed(3);
    let cfg = tiny(true);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    let idx = Tensor::from_slice(&[5i64, 17, 3, 44, 8, 20, 1, 9, 31, 2, 50, 7]).view([2, 6]);
    let logits = model.forward_t(&idx, false);
    assert_eq!(logits.size(), [2, 6, cfg.vocab_size]);
    for t in [5, 2, 1] {
        let changed = idx.copy();
        let _ = changed.narrow(1, t, 6 - t).fill_(52);
        let logits2 = model.forward_t(&changed, false);
        assert_eq!(
            max_abs_diff(&logits.narrow(1, 0, t), &logits2.narrow(1, 0, t)),
            0.0,
            "position < {t} changed"
        );
        assert!(max_abs_diff(&logits.narrow(1, t, 1), &logits2.narrow(1, t, 1)) > 1e-5);
    }
}

#[test]
fn dropout_only_in_training_mode() {
    let _rng = rng_lock();
    tch::manual_seed(11);
    let cfg = GptConfig {
        drop_rate: 0.5,
        ..tiny(false)
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    let idx = Tensor::from_slice(&[1i64, 2, 3, 4]).unsqueeze(0);
    let eval1 = model.forward_t(&idx, false);
    let eval2 = model.forward_t(&idx, false);
    assert!(eval1.equal(&eval2));
    tch::manual_seed(99);
    let train1 = model.forward_t(&idx, true);
    tch::manual_seed(99);
    let train2 = model.forward_t(&idx, true);
    assert!(train1.equal(&train2), "seeded training passes repeat");
    assert!(max_abs_diff(&train1, &eval1) > 1e-3);
}

#[test]
fn generate_text_simple_crops_the_context_and_leaves_the_generator_alone() {
    let _rng = rng_lock();
    tch::manual_seed(5);
    let cfg = GptConfig {
        context_length: 4,
        drop_rate: 0.5,
        ..tiny(false)
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    let idx = Tensor::from_slice(&[7i64, 8, 9, 10, 11, 12, 13, 14]).view([2, 4]);
    let long = Tensor::from_slice(&[1i64, 2, 7, 8, 9, 10, 3, 4, 11, 12, 13, 14]).view([2, 6]);

    tch::manual_seed(0);
    let out = generate_text_simple(&model, &idx, 6, cfg.context_length);
    let next_draw = Tensor::rand([1], (Kind::Float, Device::Cpu)).double_value(&[0]);
    tch::manual_seed(0);
    let fresh_draw = Tensor::rand([1], (Kind::Float, Device::Cpu)).double_value(&[0]);
    assert_eq!(next_draw, fresh_draw, "evaluation mode draws nothing");

    assert_eq!(out.size(), [2, 10]);
    assert!(!out.requires_grad());
    assert_eq!(ids(&out.narrow(1, 0, 4)), ids(&idx));
    // the model only ever sees the last 4 tokens, so a longer prefix continues the same way
    let out_long = generate_text_simple(&model, &long, 6, cfg.context_length);
    assert_eq!(ids(&out_long.narrow(1, 6, 6)), ids(&out.narrow(1, 4, 6)));
    // each new token is the argmax of the last position's logits
    let logits = model.forward_t(&idx, false);
    let first = logits.select(1, -1).argmax(-1, false);
    assert_eq!(ids(&out.select(1, 4)), ids(&first));
    // zero new tokens: the input unchanged
    assert_eq!(ids(&generate_text_simple(&model, &idx, 0, 4)), ids(&idx));
}

#[test]
fn layer_norm_normalises_the_last_dimension() {
    let _rng = rng_lock();
    // book §4.2
    tch::manual_seed(123);
    let batch_example = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
    let vs = nn::VarStore::new(Device::Cpu);
    let ln = LayerNorm::new(vs.root(), 5);
    let out_ln = ln.forward(&batch_example);
    let mean = out_ln.mean_dim(-1, true, None::<Kind>);
    let var = out_ln.var_dim(-1, false, true);
    assert!(mean.abs().max().double_value(&[]) < 1e-6);
    assert!((var - 1.0).abs().max().double_value(&[]) < 1e-4);
    assert_eq!(ln.eps, 1e-5);
    assert_eq!(names(&vs), ["scale", "shift"].map(String::from).into());
    // same as libtorch's layer_norm with the biased variance
    let reference = batch_example.layer_norm([5], Some(&ln.scale), Some(&ln.shift), 1e-5, false);
    assert!(max_abs_diff(&out_ln, &reference) < 1e-6);
    // scale and shift act per feature
    let _ = tch::no_grad(|| ln.shift.shallow_clone().fill_(2.0));
    assert!(
        (ln.forward(&batch_example)
            .mean(None::<Kind>)
            .double_value(&[])
            - 2.0)
            .abs()
            < 1e-5
    );
}

#[test]
fn gelu_is_the_tanh_approximation() {
    let x = Tensor::linspace(-3.0, 3.0, 100, (Kind::Float, Device::Cpu));
    let reference = x.gelu("tanh");
    assert!(max_abs_diff(&gelu(&x), &reference) < 1e-6);
    assert!(Gelu.forward(&x).equal(&gelu(&x)));
    // the exact GELU differs slightly
    assert!(max_abs_diff(&gelu(&x), &x.gelu("none")) > 1e-5);
    let at: Vec<f32> = Vec::try_from(gelu(&Tensor::from_slice(&[0.0f32, 1.0, -1.0]))).unwrap();
    assert_eq!(at[0], 0.0);
    assert!((at[1] - 0.841192).abs() < 1e-5 && (at[2] + 0.158808).abs() < 1e-5);
}

#[test]
fn feed_forward_and_transformer_block_shapes_and_composition() {
    let _rng = rng_lock();
    let cfg = GptConfig {
        emb_dim: 32,
        n_heads: 4,
        context_length: 8,
        ..GptConfig::gpt2_small()
    };
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let ff = FeedForward::new(vs.root() / "ff", cfg.emb_dim);
    assert_eq!(ff.layers.0.ws.size(), [128, 32]);
    assert_eq!(ff.layers.2.ws.size(), [32, 128]);
    let x = Tensor::rand([2, 3, 32], (Kind::Float, Device::Cpu));
    assert_eq!(ff.forward(&x).size(), [2, 3, 32]);
    assert_eq!(
        names(&vs),
        [
            "ff.layers.0.bias",
            "ff.layers.0.weight",
            "ff.layers.2.bias",
            "ff.layers.2.weight"
        ]
        .map(String::from)
        .into()
    );

    let vs = nn::VarStore::new(Device::Cpu);
    let block = TransformerBlock::new(vs.root(), &cfg).unwrap();
    let x = Tensor::rand([2, 4, 32], (Kind::Float, Device::Cpu));
    let out = block.forward_t(&x, false);
    assert_eq!(out.size(), [2, 4, 32]);
    // pre-norm sublayers with shortcut connections
    let h = block.att.forward_t(&block.norm1.forward(&x), false) + &x;
    let by_hand = block.ff.forward(&block.norm2.forward(&h)) + &h;
    assert!(max_abs_diff(&out, &by_hand) < 1e-6);
    // att: 4 weights + out_proj.bias; ff: 2 weights + 2 biases; 2 norms × 2
    assert_eq!(block.parameters().len(), 5 + 4 + 4);
    assert_eq!(vs.variables().len(), block.parameters().len());
    assert_eq!(block.drop_shortcut.p, 0.1);
}

#[test]
fn config_names_json_and_errors() {
    assert_eq!(
        GptConfig::by_name("gpt2-small").unwrap(),
        GptConfig::gpt2_small()
    );
    assert_eq!(GptConfig::by_name("gpt2-xl (1558M)").unwrap().emb_dim, 1600);
    let err = GptConfig::by_name("gpt5").unwrap_err();
    assert!(matches!(err, ModelError::UnknownModel { .. }));
    assert!(err.to_string().contains("gpt2-medium (355M)"));

    let cfg = GptConfig::gpt2_small();
    let json = llm_core::serde_json::to_value(cfg).unwrap();
    assert_eq!(
        json,
        llm_core::serde_json::json!({
            "vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12,
            "n_layers": 12, "drop_rate": 0.1, "qkv_bias": false
        })
    );
    let back: GptConfig = llm_core::serde_json::from_value(json).unwrap();
    assert_eq!(back, cfg);

    let bad = GptConfig {
        n_heads: 5,
        ..tiny(false)
    };
    let vs = nn::VarStore::new(Device::Cpu);
    assert!(matches!(
        GptModel::new(vs.root(), &bad),
        Err(ModelError::Attention(_))
    ));
}

#[test]
#[should_panic(expected = "more than the model's context length")]
fn inputs_longer_than_the_context_are_rejected() {
    let _rng = rng_lock();
    let cfg = tiny(false);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    let _ = model.forward_t(&Tensor::zeros([1, 10], (Kind::Int64, Device::Cpu)), false);
}
