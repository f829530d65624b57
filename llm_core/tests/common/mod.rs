//! Helpers shared by the integration tests: the RNG lock, the data directory,
//! the oracle file, and tokenizers loaded once per test binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use llm_core::text::tokenizer::{BpeTokenizer, Gpt2Tokenizer};

/// Tests that seed libtorch's global generator must not interleave (cargo
/// runs a test binary's tests on several threads): take this lock first.
pub fn rng_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `$LLM_DATA_DIR`, else `shared/data` beside the checkout.
pub fn data_dir() -> PathBuf {
    std::env::var_os("LLM_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// The test-only reference encodings (tiktoken's), parsed.
pub fn oracle() -> &'static serde_json::Value {
    static ORACLE: OnceLock<serde_json::Value> = OnceLock::new();
    ORACLE.get_or_init(|| {
        let path = data_dir().join("oracles/gpt2_tokenizer_cases.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    })
}

/// The oracle's `(text, ids)` cases.
pub fn oracle_cases() -> Vec<(String, Vec<u32>)> {
    oracle()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect();
            (c["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

/// A list of ids from the oracle, e.g. `ids_at(&["the_verdict", "first_20_ids"])`.
pub fn ids_at(keys: &[&str]) -> Vec<u32> {
    let mut v = oracle();
    for k in keys {
        v = &v[*k];
    }
    v.as_array()
        .unwrap_or_else(|| panic!("oracle has no {keys:?}"))
        .iter()
        .map(|i| i.as_u64().unwrap() as u32)
        .collect()
}

/// A JSON array of numbers (an oracle's losses, learning rates, ...).
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Each of `ours` within `tol` (relative, absolute below 1) of PyTorch's
/// `theirs`; the message names the series, the index and both series.
pub fn assert_close(name: &str, ours: &[f64], theirs: &[f64], tol: f64) {
    assert_eq!(ours.len(), theirs.len(), "{name}: lengths differ");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b).abs() <= tol * b.abs().max(1.0),
            "{name}[{i}]: ours {a}, PyTorch {b}\nours:    {ours:?}\nPyTorch: {theirs:?}"
        );
    }
}

/// A data file's text.
pub fn read(name: &str) -> String {
    llm_core::data::read_to_string(name).unwrap()
}

/// GPT-2 through the `tokenizers` crate, loaded once.
pub fn gpt2() -> &'static Gpt2Tokenizer {
    static T: OnceLock<Gpt2Tokenizer> = OnceLock::new();
    T.get_or_init(|| Gpt2Tokenizer::gpt2().unwrap())
}

/// GPT-2's files in the from-scratch encoder, loaded once.
pub fn bpe_gpt2() -> &'static BpeTokenizer {
    static T: OnceLock<BpeTokenizer> = OnceLock::new();
    T.get_or_init(|| BpeTokenizer::gpt2().unwrap())
}
