//! Training byte pair encoding from scratch: the incremental trainer against
//! a brute-force one, saving and loading GPT-2's format, and the saved files
//! read by the production tokenizer.

mod common;

use std::cmp::Reverse;
use std::collections::HashMap;

use llm_core::text::tokenizer::bpe::GPT2_SPLIT_PATTERN;
use llm_core::text::tokenizer::{BpeTokenizer, Gpt2Tokenizer, Tokenizer};
use proptest::prelude::*;

/// A merge as the bytes of its two tokens.
type BytePair = (Vec<u8>, Vec<u8>);

/// minbpe's way: recount every pair of every piece before each merge. Returns
/// each merge as (left bytes, right bytes).
fn brute_force_merges(text: &str, n_merges: usize) -> Vec<BytePair> {
    let re = fancy_regex::Regex::new(GPT2_SPLIT_PATTERN).unwrap();
    let mut words: Vec<Vec<Vec<u8>>> = re
        .find_iter(text)
        .map(|m| m.unwrap().as_str().bytes().map(|b| vec![b]).collect())
        .collect();
    let mut merges = Vec::new();
    let mut ids: HashMap<Vec<u8>, u32> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
    for _ in 0..n_merges {
        let mut counts: HashMap<(u32, u32), (i64, BytePair)> = HashMap::new();
        for w in &words {
            for p in w.windows(2) {
                let key = (ids[&p[0]], ids[&p[1]]);
                counts
                    .entry(key)
                    .or_insert((0, (p[0].clone(), p[1].clone())))
                    .0 += 1;
            }
        }
        let Some((_, (_, (a, b)))) = counts
            .into_iter()
            .max_by_key(|(pair, (n, _))| (*n, Reverse(*pair)))
        else {
            break;
        };
        let merged = [a.clone(), b.clone()].concat();
        let next = ids.len() as u32;
        ids.entry(merged.clone()).or_insert(next);
        for w in &mut words {
            let mut out = Vec::with_capacity(w.len());
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && w[i] == a && w[i + 1] == b {
                    out.push(merged.clone());
                    i += 2;
                } else {
                    out.push(w[i].clone());
                    i += 1;
                }
            }
            *w = out;
        }
        merges.push((a, b));
    }
    merges
}

fn merges_as_bytes(t: &BpeTokenizer) -> Vec<BytePair> {
    t.merges()
        .iter()
        .map(|m| {
            (
                t.token_bytes(m.pair.0).unwrap().to_vec(),
                t.token_bytes(m.pair.1).unwrap().to_vec(),
            )
        })
        .collect()
}

#[test]
fn incremental_trainer_equals_brute_force_on_the_verdict() {
    let text = common::read("the-verdict.txt");
    let text = &text[..6000];
    let t = BpeTokenizer::train(text, 256 + 120, &[]).unwrap();
    assert_eq!(merges_as_bytes(&t), brute_force_merges(text, 120));
    // the first merge is the most frequent pair: pieces keep their leading
    // space, so it is " " + "t" (from " the", " that", " to", ...)
    let first = &merges_as_bytes(&t)[0];
    assert_eq!(
        (first.0.as_slice(), first.1.as_slice()),
        (&b" "[..], &b"t"[..])
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn incremental_trainer_equals_brute_force(text in "[ab ]{0,60}|[a-d\n ]{0,200}|[aé😀 .]{0,80}", n in 1usize..40) {
        let t = BpeTokenizer::train(&text, 256 + n, &[]).unwrap();
        let expected = brute_force_merges(&text, n);
        prop_assert_eq!(merges_as_bytes(&t), expected);
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
