//! Training byte pair encoding from scratch: the fast trainer against the
//! one to read (`BpeTokenizerSimple`, same merges and ids), saving and loading GPT-2's format, and the saved files
//! read by the production tokenizer.

mod common;

use std::collections::HashMap;

use llm_core::text::tokenizer::{BpeTokenizer, BpeTokenizerSimple, Gpt2Tokenizer, Tokenizer};
use proptest::prelude::*;

/// The fast trainer and the one to read learn the same merges, in the same
/// order, with the same ids; both encode `probes` to the same ids and
/// decode them back.
fn assert_same(text: &str, vocab_size: usize, specials: &[&str], probes: &[&str]) -> BpeTokenizer {
    let fast = BpeTokenizer::train(text, vocab_size, specials).unwrap();
    let simple = BpeTokenizerSimple::train(text, vocab_size, specials).unwrap();
    let fast_merges: Vec<((u32, u32), u32)> =
        fast.merges().iter().map(|m| (m.pair, m.id)).collect();
    assert_eq!(fast_merges, simple.merges, "merges of {text:?}");
    assert_eq!(fast.special_tokens(), simple.special_tokens.as_slice());
    for probe in probes.iter().chain([&text]) {
        let ids = fast.encode(probe).unwrap();
        assert_eq!(ids, simple.encode(probe).unwrap(), "ids of {probe:?}");
        assert_eq!(simple.decode(&ids).unwrap(), fast.decode(&ids).unwrap());
    }
    fast
}

#[test]
fn the_fast_trainer_equals_the_one_to_read_on_the_verdict() {
    let text = common::read("the-verdict.txt");
    let text = format!("{}<|endoftext|>{}", &text[..3000], &text[3000..6000]);
    let t = assert_same(
        &text,
        256 + 200 + 1,
        &["<|endoftext|>"],
        &[
            "Hello, do you like tea? <|endoftext|> In the sunlit terraces",
            "Jack Gisburn 1908 ☕",
        ],
    );
    // the first merge is the most frequent pair: pieces keep their leading
    // space, so it is " " + "t" (from " the", " that", " to", ...)
    let first = t.merges()[0];
    assert_eq!(
        (
            t.token_bytes(first.pair.0).unwrap(),
            t.token_bytes(first.pair.1).unwrap()
        ),
        (&b" "[..], &b"t"[..])
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_fast_trainer_equals_the_one_to_read(text in "[ab ]{0,60}|[a-d\n ]{0,200}|[aé😀 .]{0,80}|([ab]{0,5}<\\|e\\|>){0,6}", n in 1usize..40) {
        assert_same(&text, 256 + n + 1, &["<|e|>"], &["ab ba", "a<|e|>b"]);
        let t = BpeTokenizer::train(&text, 256 + n, &[]).unwrap();
        let ids = t.encode(&text).unwrap();
        prop_assert_eq!(t.decode(&ids).unwrap(), text);
    }
}

#[test]
fn trained_tokenizer_saves_loads_and_reads_in_the_production_tokenizer() {
    let text = common::read("the-verdict.txt");
    let t = BpeTokenizer::train(&text, 500, &["<|endoftext|>"]).unwrap();
    assert_eq!(t.merges().len(), 243);
    assert_eq!(t.vocab_size(), 500);
    assert_eq!(t.token_to_id("<|endoftext|>"), Some(499));

    let sample = format!("{}<|endoftext|>{}", &text[..3000], &text[15000..]);
    let ids = t.encode(&sample).unwrap();
    assert_eq!(t.decode(&ids).unwrap(), sample);
    assert!(
        ids.len() * 2 < sample.len(),
        "{} tokens for {} bytes",
        ids.len(),
        sample.len()
    );

    let dir = tempfile::tempdir().unwrap();
    t.save(dir.path()).unwrap();
    let vocab_bpe = std::fs::read_to_string(dir.path().join("vocab.bpe")).unwrap();
    assert!(vocab_bpe.starts_with("#version: 0.2\n"));
    assert_eq!(vocab_bpe.lines().count(), 1 + 243);
    let encoder: HashMap<String, u32> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("encoder.json")).unwrap())
            .unwrap();
    assert_eq!(encoder.len(), 500);
    assert_eq!(encoder["Ġ"], 32);
    assert_eq!(encoder["<|endoftext|>"], 499);

    let loaded = BpeTokenizer::load(dir.path()).unwrap();
    assert_eq!(loaded.merges(), t.merges());
    assert_eq!(loaded.special_tokens(), t.special_tokens());
    assert_eq!(loaded.encode(&sample).unwrap(), ids);

    // the same files in Hugging Face's BPE give the same ids
    let production = Gpt2Tokenizer::from_files(
        dir.path().join("encoder.json"),
        dir.path().join("vocab.bpe"),
    )
    .unwrap();
    assert_eq!(production.vocab_size(), 500);
    assert_eq!(production.encode(&sample).unwrap(), ids);
    assert_eq!(production.decode(&ids).unwrap(), sample);
}

#[test]
fn gpt2_files_round_trip_through_save() {
    let dir = tempfile::tempdir().unwrap();
    let gpt2 = common::bpe_gpt2();
    gpt2.save(dir.path()).unwrap();
    // byte-identical merges file; the same JSON object (OpenAI's escapes
    // non-ASCII characters, we do not)
    let ours = std::fs::read(dir.path().join("vocab.bpe")).unwrap();
    let theirs = std::fs::read(common::data_dir().join("gpt2/vocab.bpe")).unwrap();
    assert!(ours == theirs, "vocab.bpe differs");
    let parse = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    assert_eq!(
        parse(dir.path().join("encoder.json")),
        parse(common::data_dir().join("gpt2/encoder.json"))
    );
}
