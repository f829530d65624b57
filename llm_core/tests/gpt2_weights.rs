//! Chapter 5.5: GPT-2 weights in the Hugging Face layout, against the
//! outputs of `transformers`' `GPT2LMHeadModel` on a tiny random GPT-2
//! (`shared/data/tiny-random-gpt2-ours`, oracle in `oracles/`).

mod common;
use common::rng_lock;

use std::path::{Path, PathBuf};

use llm_core::model::gpt::{generate_text_simple, GptConfig, GptModel};
use llm_core::model::gpt2_weights::{
    export_gpt2, gpt2_tensors, load_gpt2, load_gpt2_safetensors, read_config, Gpt2WeightsError,
    CONFIG_FILE, WEIGHTS_FILE,
};
use llm_core::tch::nn::ModuleT;
use llm_core::tch::{self, nn, Device, Kind, Tensor};
use llm_core::text::dataset::create_dataloader_v1;
use llm_core::text::tokenizer::Tokenizer;
use llm_core::train::loss::calc_loss_loader;

fn tiny_dir() -> PathBuf {
    common::data_dir().join("tiny-random-gpt2-ours")
}

fn oracle() -> serde_json::Value {
    let path = common::data_dir().join("oracles/tiny_gpt2_oracle.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["tiny-random-gpt2-ours"].clone()
}

fn ids(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_i64().unwrap())
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn config_is_read_from_config_json() {
    let cfg = read_config(tiny_dir().join(CONFIG_FILE)).unwrap();
    assert_eq!(
        cfg,
        GptConfig {
            vocab_size: 50257,
            context_length: 128,
            emb_dim: 32,
            n_heads: 4,
            n_layers: 2,
            drop_rate: 0.0,
            qkv_bias: true,
        }
    );
}

#[test]
fn logits_match_transformers() {
    let _rng = rng_lock();
    let (_vs, model) = load_gpt2(tiny_dir(), Device::Cpu).unwrap();
    let input = Tensor::from_slice(&ids(&oracle()["input_ids"])).unsqueeze(0);
    assert_eq!(ids(&oracle()["input_ids"]), [6109, 3626, 6100, 345]);
    let logits = tch::no_grad(|| model.forward_t(&input, false)).squeeze_dim(0);
    let path = common::data_dir().join("oracles/tiny_gpt2_logits.safetensors");
    let expected = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "tiny_random_gpt2_ours_logits")
        .unwrap()
        .1;
    assert_eq!(expected.size(), [4, 50257]);
    assert_eq!(logits.size(), [4, 50257]);
    let diff = max_abs_diff(&logits, &expected.to_kind(Kind::Float));
    assert!(diff < 1e-5, "max |Δlogit| = {diff}");
    // the tied head: out_head is a copy of wte, not the same storage
    assert!(model.out_head.ws.equal(&model.tok_emb.ws));
}

#[test]
fn greedy_continuation_matches_transformers() {
    let _rng = rng_lock();
    let (_vs, model) = load_gpt2(tiny_dir(), Device::Cpu).unwrap();
    let prompt = common::gpt2().encode("Every effort moves you").unwrap();
    let prompt: Vec<i64> = prompt.into_iter().map(i64::from).collect();
    assert_eq!(prompt, ids(&oracle()["input_ids"]));
    let idx = Tensor::from_slice(&prompt).unsqueeze(0);
    let out = generate_text_simple(&model, &idx, 10, model.cfg.context_length);
    let new: Vec<i64> = Vec::try_from(out.get(0).narrow(0, 4, 10)).unwrap();
    assert_eq!(new, ids(&oracle()["greedy_10_new_ids"]));
}

#[test]
fn verdict_loss_matches_transformers() {
    let _rng = rng_lock();
    let (_vs, model) = load_gpt2(tiny_dir(), Device::Cpu).unwrap();
    let o = &oracle()["verdict_loss_oracle"];
    let text = common::read("the-verdict.txt");
    let split = o["split_char_index"].as_u64().unwrap() as usize;
    let (train, val): (String, String) = {
        let chars: Vec<char> = text.chars().collect();
        (
            chars[..split].iter().collect(),
            chars[split..].iter().collect(),
        )
    };
    let max_len = o["max_length"].as_u64().unwrap() as usize;
    let stride = o["stride"].as_u64().unwrap() as usize;
    for (name, part) in [("train", &train), ("val", &val)] {
        // batches of 2 equal windows: the mean of batch means is the mean over tokens
        let loader = create_dataloader_v1(part, 2, max_len, stride, false, false).unwrap();
        let n_windows = o[name]["n_windows"].as_u64().unwrap() as i64;
        assert_eq!(loader.inputs.size()[0], n_windows, "{name}");
        assert_eq!(n_windows % 2, 0);
        let loss = calc_loss_loader(&loader, &model, Device::Cpu, None);
        let expected = o[name]["mean_token_ce"].as_f64().unwrap();
        assert!(
            (loss - expected).abs() < 1e-4,
            "{name}: {loss} vs {expected}"
        );
    }
}

fn tiny_cfg() -> GptConfig {
    GptConfig {
        vocab_size: 40,
        context_length: 10,
        emb_dim: 8,
        n_heads: 2,
        n_layers: 2,
        drop_rate: 0.0,
        qkv_bias: true,
    }
}

fn tiny_model(seed: i64, cfg: &GptConfig) -> (nn::VarStore, GptModel) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), cfg).unwrap();
    (vs, model)
}

/// Write `tensors` as a model directory beside the tiny model's config.
fn write_dir(dir: &Path, cfg: &GptConfig, tensors: &[(String, Tensor)]) {
    std::fs::create_dir_all(dir).unwrap();
    let config = llm_core::model::gpt2_weights::config_to_hf(cfg, true);
    std::fs::write(dir.join(CONFIG_FILE), config.to_string()).unwrap();
    Tensor::write_safetensors(tensors, dir.join(WEIGHTS_FILE)).unwrap();
}

fn hf_tensors() -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(tiny_dir().join(WEIGHTS_FILE)).unwrap()
}

#[test]
fn missing_tensor_is_named() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let tensors: Vec<_> = hf_tensors()
        .into_iter()
        .filter(|(k, _)| k != "transformer.h.1.mlp.c_fc.bias")
        .collect();
    let cfg = read_config(tiny_dir().join(CONFIG_FILE)).unwrap();
    write_dir(tmp.path(), &cfg, &tensors);
    let err = load_gpt2(tmp.path(), Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Gpt2WeightsError::MissingTensor { key, expected, .. }
            if key == "h.1.mlp.c_fc.bias" && expected == &[128]),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("h.1.mlp.c_fc.bias") && msg.contains(WEIGHTS_FILE),
        "{msg}"
    );
}

#[test]
fn wrong_shape_names_key_and_both_shapes() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let tensors: Vec<_> = hf_tensors()
        .into_iter()
        .map(|(k, t)| {
            if k == "transformer.h.0.attn.c_attn.weight" {
                (k, t.tr().contiguous()) // [96, 32] instead of [32, 96]
            } else {
                (k, t)
            }
        })
        .collect();
    let cfg = read_config(tiny_dir().join(CONFIG_FILE)).unwrap();
    write_dir(tmp.path(), &cfg, &tensors);
    let err = load_gpt2(tmp.path(), Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("h.0.attn.c_attn.weight")
            && msg.contains("[96, 32]")
            && msg.contains("[32, 96]"),
        "{msg}"
    );
}

#[test]
fn unexpected_tensor_is_named_and_buffers_are_skipped() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = read_config(tiny_dir().join(CONFIG_FILE)).unwrap();
    let mut tensors = hf_tensors();
    // the causal-mask buffers older checkpoints carry are fine
    tensors.push((
        "transformer.h.0.attn.bias".into(),
        Tensor::ones([1, 1, 128, 128], (Kind::Float, Device::Cpu)).tril(0),
    ));
    tensors.push((
        "h.1.attn.masked_bias".into(),
        Tensor::from_slice(&[-1e4f32]).squeeze(),
    ));
    write_dir(tmp.path(), &cfg, &tensors);
    load_gpt2(tmp.path(), Device::Cpu).unwrap();
    // a third block is not
    tensors.push((
        "transformer.h.2.ln_1.weight".into(),
        Tensor::ones([32], (Kind::Float, Device::Cpu)),
    ));
    write_dir(tmp.path(), &cfg, &tensors);
    let msg = load_gpt2(tmp.path(), Device::Cpu).unwrap_err().to_string();
    assert!(
        msg.contains("unexpected") && msg.contains("h.2.ln_1.weight"),
        "{msg}"
    );
}

#[test]
fn keys_without_prefix_and_untied_head_load() {
    let _rng = rng_lock();
    let cfg = tiny_cfg();
    let (_vs_a, a) = tiny_model(1, &cfg);
    let (_vs_b, b) = tiny_model(2, &cfg);
    // a fresh model's head is not tied: the export has an lm_head.weight; replace it
    let mut tensors: Vec<(String, Tensor)> = gpt2_tensors(&a)
        .into_iter()
        .filter(|(k, _)| k != "lm_head.weight")
        .map(|(k, t)| (k.trim_start_matches("transformer.").to_string(), t))
        .collect();
    assert_eq!(tensors.len(), gpt2_tensors(&a).len() - 1);
    let head = Tensor::randn([40, 8], (Kind::Float, Device::Cpu));
    tensors.push(("lm_head.weight".into(), head.copy()));
    let tmp = tempfile::tempdir().unwrap();
    write_dir(tmp.path(), &cfg, &tensors);
    load_gpt2_safetensors(&b, tmp.path().join(WEIGHTS_FILE)).unwrap();
    assert!(b.out_head.ws.equal(&head));
    assert!(b.tok_emb.ws.equal(&a.tok_emb.ws));
    for (x, y) in a.trf_blocks.iter().zip(&b.trf_blocks) {
        assert!(x.att.w_value.ws.equal(&y.att.w_value.ws));
        assert!(x
            .att
            .w_key
            .bs
            .as_ref()
            .unwrap()
            .equal(y.att.w_key.bs.as_ref().unwrap()));
        assert!(x.ff.layers.2.ws.equal(&y.ff.layers.2.ws));
        assert!(x.norm2.shift.equal(&y.norm2.shift));
    }
}

#[test]
fn config_mismatch_is_a_shape_error() {
    let _rng = rng_lock();
    // the file's model has 32 dimensions; a 16-dimensional model does not fit
    let cfg = GptConfig {
        emb_dim: 16,
        ..read_config(tiny_dir().join(CONFIG_FILE)).unwrap()
    };
    let (_vs, model) = tiny_model(3, &cfg);
    let msg = load_gpt2_safetensors(&model, tiny_dir().join(WEIGHTS_FILE))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("wte.weight") && msg.contains("[50257, 16]") && msg.contains("[50257, 32]"),
        "{msg}"
    );
}

#[test]
fn export_then_load_round_trips() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    // the tiny GPT-2 itself: exported, the file has the same tensors
    let (_vs, model) = load_gpt2(tiny_dir(), Device::Cpu).unwrap();
    export_gpt2(&model, tmp.path().join("tiny")).unwrap();
    let mut ours = Tensor::read_safetensors(tmp.path().join("tiny").join(WEIGHTS_FILE)).unwrap();
    let mut theirs = hf_tensors();
    ours.sort_by(|a, b| a.0.cmp(&b.0));
    theirs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        ours.iter().map(|t| &t.0).collect::<Vec<_>>(),
        theirs.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    for ((k, a), (_, b)) in ours.iter().zip(&theirs) {
        assert!(a.equal(b), "{k}");
    }
    let hf: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("tiny").join(CONFIG_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(hf["tie_word_embeddings"], true);
    assert_eq!(hf["model_type"], "gpt2");

    // a model trained here with an untied head and no qkv bias: same logits after the trip
    let cfg = GptConfig {
        qkv_bias: false,
        ..tiny_cfg()
    };
    let (_vs, a) = tiny_model(7, &cfg);
    export_gpt2(&a, tmp.path().join("mine")).unwrap();
    let (_vs_b, b) = load_gpt2(tmp.path().join("mine"), Device::Cpu).unwrap();
    assert_eq!(
        b.cfg,
        GptConfig {
            qkv_bias: true,
            ..cfg
        }
    );
    let x = Tensor::from_slice(&[3i64, 1, 4, 1, 5, 9, 2, 6]).view([2, 4]);
    let diff = max_abs_diff(&a.forward_t(&x, false), &b.forward_t(&x, false));
    assert!(diff < 1e-6, "{diff}");
    // no temporary files left behind
    let names: Vec<_> = std::fs::read_dir(tmp.path().join("mine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}
