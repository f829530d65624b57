//! Loaders of user files: cut, damaged or unusual files give an error that
//! names the file (and line, key or entry), never a panic or an abort, and
//! never an `Ok` that silently differs from the whole file's result.
//!
//! For each loader a property test feeds
//! - truncations of a valid file: an error, or (only for line-based formats
//!   cut exactly at a line end, which are valid shorter files) the first
//!   records of the whole file's result;
//! - arbitrary bytes, and the valid file with a few bytes changed: no panic,
//!   and an error names the file.

mod common;

use std::fmt::{Debug, Display};
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use llm_core::files::read_tensors;
use llm_core::finetune::instruct::{load_instruction_data, InstructionEntry};
use llm_core::finetune::spam::{read_sms_collection, read_split_csv, Quoting, SmsMessage};
use llm_core::model::generate::token_ids_to_text;
use llm_core::model::gpt::{GptConfig, GptModel};
use llm_core::model::gpt2_weights::read_config;
use llm_core::tch::{nn, Device, Tensor};
use llm_core::text::tokenizer::{BpeTokenizer, Gpt2Tokenizer, Tokenizer};
use llm_core::train::checkpoint::{read_checkpoint_info, save_training_checkpoint};
use llm_core::train::optim::{named_parameters, AdamW};
use llm_core::train::pretrain::TrainHistory;

use common::data_dir;

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Write `bytes` as `name` in a fresh directory and load it.
fn load_bytes<T, E: Display>(
    name: &str,
    bytes: &[u8],
    load: &dyn Fn(&Path) -> Result<T, E>,
) -> (tempfile::TempDir, PathBuf, Result<T, E>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    let result = load(&path);
    (dir, path, result)
}

/// The error names the file it is about.
fn assert_names(err: &dyn Display, path: &Path) {
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "the error does not name {}: {text}",
        path.display()
    );
}

/// A truncation to `cut` bytes: an error naming the file, or exactly the
/// whole file's result.
fn check_cut<T: PartialEq + Debug, E: Display>(
    name: &str,
    valid: &[u8],
    cut: usize,
    whole: &T,
    load: &dyn Fn(&Path) -> Result<T, E>,
) {
    let (_dir, path, result) = load_bytes(name, &valid[..cut], load);
    match result {
        Ok(v) => assert_eq!(
            &v,
            whole,
            "cut to {cut} of {} bytes loaded Ok, but not the same",
            valid.len()
        ),
        Err(e) => assert_names(&e, &path),
    }
}

/// Arbitrary bytes: any result but a panic; an error names the file.
fn check_any<T, E: Display>(name: &str, bytes: &[u8], load: &dyn Fn(&Path) -> Result<T, E>) {
    let (_dir, path, result) = load_bytes(name, bytes, load);
    if let Err(e) = result {
        assert_names(&e, &path);
    }
}

fn mutate(valid: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for &(at, b) in edits {
        if !bytes.is_empty() {
            let n = bytes.len();
            bytes[at % n] = b;
        }
    }
    bytes
}

// --- GPT-2's tokenizer files (item 6) ---------------------------------------

/// The case: a `vocab.bpe` cut in half loaded in both GPT-2
/// tokenizers and encoded the-verdict as 7,158 tokens instead of 5,145.
#[test]
fn a_vocab_bpe_cut_short_is_refused_by_both_tokenizers() {
    let dir = data_dir().join("gpt2");
    let vocab = fs::read(dir.join("vocab.bpe")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for fraction in [2, 3, 10] {
        // cut at a line end, so that every line left is a valid merge
        let mut cut = vocab.len() / fraction;
        while vocab[cut - 1] != b'\n' {
            cut -= 1;
        }
        let short = tmp.path().join("vocab.bpe");
        fs::write(&short, &vocab[..cut]).unwrap();
        let encoder = dir.join("encoder.json");
        let a = Gpt2Tokenizer::from_files(&encoder, &short)
            .unwrap_err()
            .to_string();
        let b = BpeTokenizer::from_files(&encoder, &short)
            .unwrap_err()
            .to_string();
        for err in [a, b] {
            assert!(err.contains(&short.display().to_string()), "{err}");
            assert!(err.contains("Is this file cut short"), "{err}");
            assert!(err.contains("<|endoftext|>"), "{err}");
        }
    }
    // the whole files still load and add up: 256 + 50,000 + 1
    let t = Gpt2Tokenizer::from_files(dir.join("encoder.json"), dir.join("vocab.bpe")).unwrap();
    assert_eq!(t.vocab_size(), 50257);
}

/// A small pair of files in GPT-2's format, from our own trainer.
fn small_bpe_files() -> (Vec<u8>, Vec<u8>) {
    let text = "the cat sat on the mat; the dog sat on the log. <|endoftext|> then they ran";
    let t = BpeTokenizer::train(text, 256 + 24 + 1, &["<|endoftext|>"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    t.save(dir.path()).unwrap();
    (
        fs::read(dir.path().join("encoder.json")).unwrap(),
        fs::read(dir.path().join("vocab.bpe")).unwrap(),
    )
}

const SAMPLE: &str = "the cat ran on the log <|endoftext|> they sat";

fn load_pair(encoder: &Path, vocab: &Path) -> Result<(usize, Vec<u32>, Vec<u32>), String> {
    let a = BpeTokenizer::from_files(encoder, vocab).map_err(|e| e.to_string())?;
    let b = Gpt2Tokenizer::from_files(encoder, vocab).map_err(|e| e.to_string())?;
    Ok((
        a.vocab_size(),
        a.encode(SAMPLE).map_err(|e| e.to_string())?,
        b.encode(SAMPLE).map_err(|e| e.to_string())?,
    ))
}

fn with_pair(enc: &[u8], vocab: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (e, v) = (
        dir.path().join("encoder.json"),
        dir.path().join("vocab.bpe"),
    );
    fs::write(&e, enc).unwrap();
    fs::write(&v, vocab).unwrap();
    (dir, e, v)
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn tokenizer_files_cut_short(cut_enc in 0.0f64..1.0, cut_vocab in 0.0f64..1.0, which in 0..2u8) {
        let (enc, vocab) = small_bpe_files();
        let (_d, e, v) = with_pair(&enc, &vocab);
        let whole = load_pair(&e, &v).unwrap();
        let (enc2, vocab2) = if which == 0 {
            (enc[..(cut_enc * enc.len() as f64) as usize].to_vec(), vocab.clone())
        } else {
            (enc.clone(), vocab[..(cut_vocab * vocab.len() as f64) as usize].to_vec())
        };
        let (_d2, e2, v2) = with_pair(&enc2, &vocab2);
        match load_pair(&e2, &v2) {
            Ok(r) => prop_assert_eq!(r, whole),
            Err(err) => {
                let named = if which == 0 { &e2 } else { &v2 };
                prop_assert!(err.contains(&named.display().to_string()) || err.contains(&e2.display().to_string()), "{}", err);
            }
        }
    }

    #[test]
    fn tokenizer_files_damaged(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4), which in 0..2u8) {
        let (enc, vocab) = small_bpe_files();
        let (enc2, vocab2) = if which == 0 { (mutate(&enc, &edits), vocab) } else { (enc, mutate(&vocab, &edits)) };
        let (_d, e, v) = with_pair(&enc2, &vocab2);
        let _ = load_pair(&e, &v); // no panic, no abort
    }

    #[test]
    fn tokenizer_files_arbitrary(bytes in prop::collection::vec(any::<u8>(), 0..300), which in 0..2u8) {
        let (enc, vocab) = small_bpe_files();
        let (enc2, vocab2) = if which == 0 { (bytes, vocab) } else { (enc, bytes) };
        let (_d, e, v) = with_pair(&enc2, &vocab2);
        let _ = load_pair(&e, &v);
    }
}

// --- the SMS Spam Collection (item 7) ----------------------------------------

const TSV: &str = "ham\tGo until jurong point, crazy..\nspam\t\"Free\" entry in 2 a wkly comp\nham\tOk lar... Joking wif u oni\nham\t\"I'm home\", she said\nspam\tWINNER!! claim \"now\"\n";

#[test]
fn an_unclosed_quote_names_the_line_it_opened_on() {
    let text = "ham\tfine\nham\tfine too\nspam\t\"never closed\nham\tswallowed\nham\tand this\n";
    let (_d, path, result) = load_bytes("SMSSpamCollection.tsv", text.as_bytes(), &|p: &Path| {
        read_sms_collection(p, Quoting::Pandas)
    });
    let err = result.unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:3:", path.display())), "{err}");
    assert!(err.contains("never closed"), "{err}");
    assert!(err.contains("EOF inside string"), "{err}");
    // without quoting the same file reads line by line
    let plain = read_sms_collection(&path, Quoting::None).unwrap();
    assert_eq!(plain.len(), 5);
    // the same in the book's CSV split files
    let csv = "Label,Text\n0,fine\n1,\"never closed\n0,swallowed\n";
    let (_d, path, result) = load_bytes("train.csv", csv.as_bytes(), &|p: &Path| read_split_csv(p));
    let err = result.unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:3:", path.display())), "{err}");
}

#[test]
fn the_real_sms_files_still_read_as_pandas_reads_them() {
    let dir = data_dir().join("sms_spam_collection");
    let all = read_sms_collection(dir.join("SMSSpamCollection.tsv"), Quoting::Pandas).unwrap();
    assert_eq!(all.len(), 5572);
    assert_eq!(read_split_csv(dir.join("train.csv")).unwrap().len(), 1045);
}

/// Records of a line-based file cut at a line end are a valid shorter file:
/// its messages must be the first ones of the whole file.
fn prefix_or_error(
    name: &str,
    valid: &[u8],
    cut: usize,
    load: &dyn Fn(&Path) -> Result<Vec<SmsMessage>, llm_core::finetune::spam::SpamDataError>,
) {
    let whole = {
        let (_d, _p, r) = load_bytes(name, valid, load);
        r.unwrap()
    };
    let (_d, path, result) = load_bytes(name, &valid[..cut], load);
    match result {
        Ok(v) => {
            assert!(
                cut == 0 || valid[cut - 1] == b'\n',
                "cut at {cut}, mid-line, loaded Ok: {v:?}"
            );
            assert_eq!(v[..], whole[..v.len()], "cut at {cut}");
        }
        Err(e) => assert_names(&e, &path),
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn sms_tsv_cut_short(cut in 0..TSV.len()) {
        prefix_or_error("s.tsv", TSV.as_bytes(), cut, &|p: &Path| read_sms_collection(p, Quoting::Pandas));
    }

    #[test]
    fn sms_csv_cut_short(cut in 0..80usize) {
        let csv = "Label,Text\n0,\"Go, until\"\n1,\"Free \"\"entry\"\"\"\n0,Ok lar\n";
        prefix_or_error("t.csv", csv.as_bytes(), cut.min(csv.len()), &|p: &Path| read_split_csv(p));
    }

    #[test]
    fn sms_files_damaged_or_arbitrary(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                                      bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let load_tsv = |p: &Path| read_sms_collection(p, Quoting::Pandas);
        check_any("s.tsv", &mutate(TSV.as_bytes(), &edits), &load_tsv);
        check_any("s.tsv", &bytes, &load_tsv);
        check_any("t.csv", &bytes, &|p: &Path| read_split_csv(p));
    }
}

// --- instruction data, configs, checkpoint.json (item 8) ---------------------

fn instruction_json() -> Vec<u8> {
    let entries = vec![
        InstructionEntry::new(
            "Rewrite the sentence.",
            "The car is fast.",
            "The car is very fast.",
        ),
        InstructionEntry::new("Name a colour.", "", "Blue"),
    ];
    serde_json::to_vec_pretty(&entries).unwrap()
}

#[test]
fn a_byte_order_mark_is_not_an_error() {
    let json = instruction_json();
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(&json);
    let load = |p: &Path| load_instruction_data(p);
    let (_d, _p, plain) = load_bytes("data.json", &json, &load);
    let (_d, _p, bom) = load_bytes("data.json", &with_bom, &load);
    assert_eq!(plain.unwrap(), bom.unwrap());
    // config.json too
    let cfg = fs::read(data_dir().join("tiny-random-gpt2-ours/config.json")).unwrap();
    let mut cfg_bom = b"\xEF\xBB\xBF".to_vec();
    cfg_bom.extend_from_slice(&cfg);
    let (_d, _p, a) = load_bytes("config.json", &cfg, &|p: &Path| read_config(p));
    let (_d, _p, b) = load_bytes("config.json", &cfg_bom, &|p: &Path| read_config(p));
    assert_eq!(a.unwrap(), b.unwrap());
}

#[test]
fn config_errors_name_config_json_and_the_key() {
    let hf = serde_json::json!({"n_embd": 768, "n_layer": 12, "n_head": 5, "n_positions": 1024,
                                "vocab_size": 50257});
    let (_d, path, result) = load_bytes("config.json", hf.to_string().as_bytes(), &|p: &Path| {
        read_config(p)
    });
    let err = result.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: config key \"n_head\"", path.display())),
        "{err}"
    );
    assert!(err.contains("does not divide n_embd = 768"), "{err}");
    // and through load_gpt2, before any weight is read
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config.json"), hf.to_string()).unwrap();
    let err = llm_core::model::gpt2_weights::load_gpt2(dir.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    // a missing key, a wrong type, a zero: each named
    let cases = [
        (
            serde_json::json!({"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257}),
            "n_positions",
            "missing field",
        ),
        (
            serde_json::json!({"n_embd": "768", "n_layer": 12, "n_head": 12, "n_positions": 1024, "vocab_size": 50257}),
            "n_embd",
            "invalid type",
        ),
        (
            serde_json::json!({"n_embd": 768, "n_layer": 0, "n_head": 12, "n_positions": 1024, "vocab_size": 50257}),
            "n_layer",
            "nonzero",
        ),
    ];
    for (hf, key, problem) in cases {
        let err = llm_core::model::gpt2_weights::config_from_hf(&hf, Path::new("config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("config.json: config key \"{key}\"")),
            "{err}"
        );
        assert!(err.contains(problem), "{err}");
    }
}

#[test]
fn minus_100_is_shown_as_minus_100() {
    let tok = BpeTokenizer::train("ab", 256, &[]).unwrap();
    let ids = Tensor::from_slice(&[97i64, -100]);
    let err = token_ids_to_text(&ids, &tok).unwrap_err().to_string();
    assert!(
        err.starts_with("token id -100 is not in the vocabulary (size 256)"),
        "{err}"
    );
    assert!(err.contains("mask them out before decoding"), "{err}");
    assert!(!err.contains("4294967295"), "{err}");
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn instruction_data_cut_damaged_or_arbitrary(cut in 0.0f64..1.0,
                                                 edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                                                 bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let valid = instruction_json();
        let load = |p: &Path| load_instruction_data(p);
        let whole = { let (_d, _p, r) = load_bytes("d.json", &valid, &load); r.unwrap() };
        check_cut("d.json", &valid, (cut * valid.len() as f64) as usize, &whole, &load);
        check_any("d.json", &mutate(&valid, &edits), &load);
        check_any("d.json", &bytes, &load);
    }

    #[test]
    fn config_json_cut_damaged_or_arbitrary(cut in 0.0f64..1.0,
                                            edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                                            bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let valid = fs::read(data_dir().join("tiny-random-gpt2-ours/config.json")).unwrap();
        let load = |p: &Path| read_config(p);
        let whole = { let (_d, _p, r) = load_bytes("config.json", &valid, &load); r.unwrap() };
        check_cut("config.json", &valid, (cut * valid.len() as f64) as usize, &whole, &load);
        check_any("config.json", &mutate(&valid, &edits), &load);
        check_any("config.json", &bytes, &load);
    }
}

// --- weights and training checkpoints (items 3 and 8) ------------------------

/// Name, shape and sum of every tensor: what a weights file means.
type Summary = Vec<(String, Vec<i64>, f64)>;

fn summary(tensors: Vec<(String, Tensor)>) -> Summary {
    let mut s: Summary = tensors
        .into_iter()
        .map(|(n, t)| {
            let sum = t
                .to_kind(llm_core::tch::Kind::Double)
                .sum(None)
                .double_value(&[]);
            (n, t.size(), sum)
        })
        .collect();
    s.sort_by(|a, b| a.0.cmp(&b.0));
    s
}

fn weights_file() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("w.safetensors");
    let tensors = vec![
        (
            "a".to_string(),
            Tensor::arange(12, llm_core::tch::kind::FLOAT_CPU).view([3, 4]),
        ),
        ("b".to_string(), Tensor::from_slice(&[1i64, 2, 3])),
    ];
    Tensor::write_safetensors(&tensors, &path).unwrap();
    fs::read(&path).unwrap()
}

#[test]
fn safetensors_errors_are_plain() {
    let valid = weights_file();
    let load = |p: &Path| read_tensors(p).map(summary);
    let path_of = |e: &llm_core::files::FileError| e.to_string();
    // cut short
    let (_d, path, r) = load_bytes("w.safetensors", &valid[..valid.len() - 5], &load);
    let err = path_of(&r.unwrap_err());
    assert!(err.contains("cut short"), "{err}");
    assert_eq!(
        err.matches(&path.display().to_string()).count(),
        1,
        "the path once: {err}"
    );
    assert!(!err.contains("MetadataIncompleteBuffer"), "{err}");
    // a header length that makes no sense (e.g. a PyTorch .bin renamed)
    let mut junk = vec![0xffu8; 8];
    junk.extend_from_slice(b"PK\x03\x04 a zip, not a safetensors file");
    let (_d, _p, r) = load_bytes("w.safetensors", &junk, &load);
    let err = path_of(&r.unwrap_err());
    assert!(err.contains("not a safetensors file"), "{err}");
    assert!(!err.contains("HeaderTooLarge"), "{err}");
    // shorter than the length field
    let (_d, _p, r) = load_bytes("w.safetensors", b"abc", &load);
    assert!(path_of(&r.unwrap_err()).contains("fewer than the 8-byte header length"));
}

fn checkpoint_dir_files() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let cfg = GptConfig {
        vocab_size: 20,
        context_length: 4,
        emb_dim: 8,
        n_heads: 2,
        n_layers: 1,
        drop_rate: 0.0,
        qkv_bias: false,
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    let opt = AdamW::new(named_parameters(&vs, &model.parameters()), 1e-3, 0.1);
    let history = TrainHistory {
        global_step: 12,
        train_losses: vec![3.5, 2.25],
        ..TrainHistory::default()
    };
    save_training_checkpoint(&dir, &vs, &cfg, &opt, &history).unwrap();
    (tmp, dir)
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn safetensors_cut_damaged_or_arbitrary(cut in 0.0f64..1.0,
                                            edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                                            bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let valid = weights_file();
        let load = |p: &Path| read_tensors(p).map(summary);
        let whole = { let (_d, _p, r) = load_bytes("w.safetensors", &valid, &load); r.unwrap() };
        check_cut("w.safetensors", &valid, (cut * valid.len() as f64) as usize, &whole, &load);
        check_any("w.safetensors", &mutate(&valid, &edits), &load);
        check_any("w.safetensors", &bytes, &load);
    }

    #[test]
    fn checkpoint_json_cut_damaged_or_arbitrary(cut in 0.0f64..1.0,
                                                edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                                                bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let (_tmp, dir) = checkpoint_dir_files();
        let json = dir.join("checkpoint.json");
        let valid = fs::read(&json).unwrap();
        let info = |bytes: &[u8]| {
            fs::write(&json, bytes).unwrap();
            read_checkpoint_info(&dir).map(|i| (i.config, i.history))
        };
        let whole = info(&valid).unwrap();
        let cut = (cut * valid.len() as f64) as usize;
        match info(&valid[..cut]) {
            Ok(v) => prop_assert_eq!(v, whole.clone()),
            Err(e) => assert_names(&e, &json),
        }
        for b in [mutate(&valid, &edits), bytes] {
            if let Err(e) = info(&b) {
                assert_names(&e, &json);
            }
        }
    }
}

/// Each rank's share of an epoch, and its batches, equal PyTorch's
/// `DistributedSampler` + `DataLoader` (oracle: scripts/reference/ddp_sampler_oracle.py).
#[test]
fn distributed_sampler_matches_pytorch() {
    let _lock = common::rng_lock();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ddp_sampler_oracle.json");
    let oracle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let usizes = |v: &serde_json::Value| -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    };
    let cases = oracle["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let n = case["len"].as_u64().unwrap() as usize;
        let world = case["world_size"].as_u64().unwrap() as usize;
        let seed = case["seed"].as_u64().unwrap();
        let epoch = case["epoch"].as_u64().unwrap();
        let shuffle = case["shuffle"].as_bool().unwrap();
        let batch_size = case["batch_size"].as_u64().unwrap() as usize;
        let drop_last = case["drop_last"].as_bool().unwrap();
        for (rank, expected) in case["ranks"].as_array().unwrap().iter().enumerate() {
            let sampler = llm_core::text::loader::BatchSampler::new(n, batch_size)
                .shuffle(shuffle)
                .drop_last(drop_last)
                .distributed(rank, world, seed);
            let shard = sampler.shard.unwrap();
            assert_eq!(
                shard.indices(n, shuffle, epoch),
                usizes(&expected["indices"]),
                "{case}"
            );
            let batches: Vec<Vec<usize>> = expected["batches"]
                .as_array()
                .unwrap()
                .iter()
                .map(usizes)
                .collect();
            assert_eq!(sampler.num_batches(), batches.len(), "{case}");
            assert_eq!(sampler.epoch_at(epoch), batches, "{case}, rank {rank}");
        }
    }
}
