//! Llama 3 and Qwen3 against Hugging Face `transformers` and the book's
//! code: tiny random models made by `scripts/reference/open_weights_oracle.py`
//! (their safetensors, config.json, a tokenizer.json, and the reference's
//! logits, RoPE tables, greedy tokens and chat-format ids).

use std::fs;
use std::path::{Path, PathBuf};

use llm_core::model::generate::{generate_text_simple_cached, GenerationConfig};
use llm_core::model::hf_weights::{load_open_model, HfWeightsError};
use llm_core::model::kv_cache::KvCache;
use llm_core::model::open_model::{OpenModel, OpenModelConfig};
use llm_core::model::rope::compute_rope_params;
use llm_core::tch::{nn::ModuleT, Device, Kind, Tensor};
use llm_core::text::tokenizer::qwen_llama::{ChatFormat, Llama3Tokenizer, Qwen3Tokenizer};
use llm_core::text::tokenizer::Tokenizer;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/open_weights")
}

fn oracle(name: &str) -> Tensor {
    let tensors = Tensor::read_safetensors(fixtures().join("oracle.safetensors")).unwrap();
    tensors
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("oracle.safetensors has no {name}"))
        .1
}

fn load(family: &str, kind: Kind) -> OpenModel {
    let (vs, model) = load_open_model(fixtures().join(family), Device::Cpu, kind).unwrap();
    std::mem::forget(vs); // the model's tensors keep the weights alive either way
    model
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

const FAMILIES: [&str; 2] = ["llama3", "qwen3"];

#[test]
fn logits_match_transformers() {
    let ids = oracle("input_ids");
    for fam in FAMILIES {
        let model = load(fam, Kind::Float);
        let logits = tch_no_grad(|| model.forward(&ids).unwrap());
        let expected = oracle(&format!("{fam}.logits"));
        assert_eq!(logits.size(), expected.size());
        let diff = max_abs_diff(&logits, &expected);
        assert!(diff < 1e-5, "{fam}: max |logits - transformers| = {diff:e}");
    }
}

fn tch_no_grad<T>(f: impl FnOnce() -> T) -> T {
    llm_core::tch::no_grad(f)
}

#[test]
fn cached_logits_match_transformers() {
    let ids = oracle("input_ids");
    for fam in FAMILIES {
        let model = load(fam, Kind::Float);
        for mut cache in [KvCache::simple(2), KvCache::preallocated(2, 16).unwrap()] {
            let logits = tch_no_grad(|| {
                let _ = model
                    .forward_with_cache(&ids.narrow(1, 0, 4), &mut cache, None)
                    .unwrap();
                model
                    .forward_with_cache(&ids.narrow(1, 4, 3), &mut cache, None)
                    .unwrap()
            });
            let expected = oracle(&format!("{fam}.chunked_logits"));
            let diff = max_abs_diff(&logits, &expected);
            assert!(diff < 1e-5, "{fam}, {}: max diff {diff:e}", cache.kind());
        }
    }
}

#[test]
fn greedy_tokens_match_transformers_generate() {
    let ids = oracle("input_ids").narrow(0, 0, 1);
    for fam in FAMILIES {
        let model = load(fam, Kind::Float);
        let expected = oracle(&format!("{fam}.greedy"));
        let new = expected.size()[1] - ids.size()[1];
        let out = generate_text_simple_cached(&model, &ids, new, &mut KvCache::simple(2));
        assert!(
            out.equal(&expected),
            "{fam}: {out} vs transformers {expected}"
        );
        // the uncached forward pass picks the same tokens
        let again = llm_core::model::gpt::generate_text_simple(&model, &ids, new, 256);
        assert!(again.equal(&expected), "{fam} without cache");
    }
}

#[test]
fn rope_tables_match_transformers() {
    for fam in FAMILIES {
        let text = fs::read_to_string(fixtures().join(fam).join("config.json")).unwrap();
        let cfg = OpenModelConfig::from_hf_config(&text, Path::new("config.json")).unwrap();
        let (cos, sin) =
            compute_rope_params(cfg.head_dim(), cfg.rope_base, 16, cfg.rope_freq.as_ref());
        for (ours, name) in [(cos, "rope_cos"), (sin, "rope_sin")] {
            let diff = max_abs_diff(&ours, &oracle(&format!("{fam}.{name}")));
            assert!(diff < 1e-6, "{fam} {name}: {diff:e}");
        }
        assert_eq!(cfg.rope_freq.is_some(), fam == "llama3");
    }
}

#[test]
fn transformers_5_config_layout_reads_the_same() {
    for fam in FAMILIES {
        let read = |f: &str| {
            let text = fs::read_to_string(fixtures().join(fam).join(f)).unwrap();
            OpenModelConfig::from_hf_config(&text, Path::new(f)).unwrap()
        };
        assert_eq!(read("config.json"), read("config.v5.json"), "{fam}");
    }
}

#[test]
fn bfloat16_weights_load_and_agree_roughly() {
    let ids = oracle("input_ids");
    for fam in FAMILIES {
        let model = load(fam, Kind::BFloat16);
        assert_eq!(model.kind(), Kind::BFloat16);
        let logits = tch_no_grad(|| model.forward_t(&ids, false));
        let expected = oracle(&format!("{fam}.logits"));
        let scale = expected.abs().max().double_value(&[]);
        let diff = max_abs_diff(&logits, &expected);
        assert!(diff < 0.1 * scale, "{fam} bf16: {diff} vs scale {scale}");
    }
}

fn chat_records() -> Vec<serde_json::Value> {
    let text = fs::read_to_string(fixtures().join("chat_oracle.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["records"].as_array().unwrap().clone()
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn chat_formats_match_the_book() {
    let path = fixtures().join("tokenizer.json");
    let mut qwen = Qwen3Tokenizer::from_file(&path, Some("Qwen/Qwen3-0.6B")).unwrap();
    let llama = ChatFormat::new(Llama3Tokenizer::from_file(&path).unwrap());
    let records = chat_records();
    let (mut n_qwen, mut n_llama) = (0, 0);
    for r in &records {
        let message = r["message"].as_str().unwrap();
        let expected = ids_of(&r["ids"]);
        match r["family"].as_str().unwrap() {
            "qwen3" => {
                qwen.apply_chat_template = r["apply_chat_template"].as_bool().unwrap();
                qwen.add_generation_prompt = r["add_generation_prompt"].as_bool().unwrap();
                qwen.add_thinking = r["add_thinking"].as_bool().unwrap();
                assert_eq!(qwen.encode(message).unwrap(), expected, "qwen3: {r}");
                assert_eq!(
                    qwen.decode(&expected).unwrap(),
                    r["decoded"].as_str().unwrap()
                );
                n_qwen += 1;
            }
            "llama3" => {
                let system = r["system"].as_str();
                assert_eq!(
                    llama.encode(message, system).unwrap(),
                    expected,
                    "llama3: {r}"
                );
                assert_eq!(
                    llama.decode(&expected).unwrap(),
                    r["text"].as_str().unwrap()
                );
                n_llama += 1;
            }
            other => panic!("unknown family {other}"),
        }
    }
    assert!(
        n_qwen >= 8 && n_llama >= 4,
        "{n_qwen} qwen3 and {n_llama} llama3 records"
    );
}

#[test]
fn chat_streams_what_it_returns() {
    use llm_core::model::chat::Chat;
    let model = load("qwen3", Kind::Float);
    let tokenizer =
        Qwen3Tokenizer::from_file(fixtures().join("tokenizer.json"), Some("Qwen/Qwen3-0.6B"))
            .unwrap();
    let mut chat = Chat::qwen3(&model, tokenizer);
    chat.settings = GenerationConfig {
        max_new_tokens: 20,
        ..chat.settings.clone()
    };
    let mut streamed = String::new();
    let reply = chat
        .send("Hello, how are you?", |t| streamed.push_str(t))
        .unwrap();
    assert_eq!(streamed, reply.text);
    assert!(reply.new_tokens <= 20 && reply.prompt_tokens > 10);
    assert_eq!(chat.history.len(), 2);
    // the second turn's prompt holds the first exchange
    let before = chat.prompt_ids().unwrap().len();
    chat.send("And then?", |_| {}).unwrap();
    assert_eq!(chat.history.len(), 4);
    assert!(chat.prompt_ids().unwrap().len() > before);
}

/// A copy of a fixture model in a temporary directory, for breaking it.
fn copy_of(family: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(fixtures().join(family)).unwrap() {
        let p = entry.unwrap().path();
        fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    fs::write(&path, json.to_string()).unwrap();
}

fn load_err(dir: &Path) -> HfWeightsError {
    load_open_model(dir, Device::Cpu, Kind::Float)
        .map(|_| ())
        .unwrap_err()
}

#[test]
fn bad_inputs_are_clear_errors() {
    // an unknown value in the config
    let dir = copy_of("llama3");
    edit_config(dir.path(), |j| {
        j["rope_scaling"]["rope_type"] = "yarn".into()
    });
    let e = load_err(dir.path()).to_string();
    assert!(
        e.contains("rope_scaling.rope_type") && e.contains("yarn"),
        "{e}"
    );

    // a tensor the config expects but the files lack
    let dir = copy_of("qwen3");
    edit_config(dir.path(), |j| j["num_hidden_layers"] = 3.into());
    let e = load_err(dir.path()).to_string();
    assert!(
        e.contains("missing tensor") && e.contains("model.layers.2."),
        "{e}"
    );

    // a shape that does not fit
    let dir = copy_of("llama3");
    edit_config(dir.path(), |j| j["intermediate_size"] = 100.into());
    let e = load_err(dir.path()).to_string();
    assert!(
        e.contains("mlp.down_proj.weight") && e.contains("[64, 128]") && e.contains("[64, 100]"),
        "{e}"
    );

    // a truncated safetensors file
    let dir = copy_of("llama3");
    let weights = dir.path().join("model.safetensors");
    let bytes = fs::read(&weights).unwrap();
    fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path()).to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("cut short"),
        "{e}"
    );

    // no weights at all
    let dir = copy_of("llama3");
    fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path()).to_string();
    assert!(e.contains("neither model.safetensors"), "{e}");

    // an untied config over tied weights: lm_head.weight is missing
    let dir = copy_of("llama3");
    edit_config(dir.path(), |j| j["tie_word_embeddings"] = false.into());
    let e = load_err(dir.path()).to_string();
    assert!(e.contains("lm_head.weight"), "{e}");
}

#[test]
fn streaming_generation_stops_at_a_stop_token() {
    use llm_core::model::generate::generate_stream;
    let model = load("llama3", Kind::Float);
    let greedy = Vec::<i64>::try_from(oracle("llama3.greedy").get(0)).unwrap();
    let prompt = &greedy[..7];
    let settings = GenerationConfig {
        max_new_tokens: 12,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let new = generate_stream(&model, prompt, &settings, &mut KvCache::simple(2), |id| {
        seen.push(id)
    })
    .unwrap();
    assert_eq!(
        new,
        greedy[7..],
        "greedy streaming = transformers' greedy tokens"
    );
    assert_eq!(seen, new);
    // stop at the third new token: two come out
    let settings = GenerationConfig {
        stop_ids: vec![greedy[9]],
        ..settings
    };
    let new = generate_stream(&model, prompt, &settings, &mut KvCache::simple(2), |_| {}).unwrap();
    assert_eq!(new, greedy[7..9]);
    // sampling settings are checked
    let bad = GenerationConfig {
        top_p: Some(1.5),
        temperature: 1.0,
        ..Default::default()
    };
    let e = generate_stream(&model, prompt, &bad, &mut KvCache::simple(2), |_| {}).unwrap_err();
    assert!(e.to_string().contains("top_p"), "{e}");
}
