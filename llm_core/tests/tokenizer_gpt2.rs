//! GPT-2's tokenizer, two ways: through the `tokenizers` crate
//! (`Gpt2Tokenizer`) and from scratch on OpenAI's files (`BpeTokenizer`).
//! Both must give tiktoken's ids on every oracle case and on whole texts.

mod common;

use llm_core::text::tokenizer::{BpeTokenizer, Gpt2Tokenizer, Tokenizer};
use proptest::prelude::*;

fn encoders() -> Vec<(&'static str, &'static dyn Tokenizer)> {
    vec![
        ("Gpt2Tokenizer", common::gpt2()),
        ("BpeTokenizer", common::bpe_gpt2()),
    ]
}

#[test]
fn every_oracle_case_matches_tiktoken() {
    let json =
        Gpt2Tokenizer::from_tokenizer_json(common::data_dir().join("gpt2/tokenizer.json")).unwrap();
    let mut all = encoders();
    all.push(("Gpt2Tokenizer (tokenizer.json)", &json));
    let cases = common::oracle_cases();
    assert_eq!(cases.len(), 31);
    for (name, t) in all {
        for (text, ids) in &cases {
            assert_eq!(&t.encode(text).unwrap(), ids, "{name} on {text:?}");
            assert_eq!(&t.decode(ids).unwrap(), text, "{name} decoding {text:?}");
        }
    }
}

#[test]
fn the_verdict_matches_tiktoken() {
    let text = common::read("the-verdict.txt");
    let first = common::ids_at(&["the_verdict", "first_20_ids"]);
    let last = common::ids_at(&["the_verdict", "last_10_ids"]);
    for (name, t) in encoders() {
        let ids = t.encode(&text).unwrap();
        assert_eq!(ids.len(), 5145, "{name}");
        assert_eq!(ids[..20], first[..], "{name}");
        assert_eq!(ids[ids.len() - 10..], last[..], "{name}");
        assert_eq!(t.decode(&ids).unwrap(), text, "{name}");
    }
}

#[test]
fn tinyshakespeare_matches_tiktoken() {
    let text = common::read("tinyshakespeare.txt");
    let first = common::ids_at(&["tinyshakespeare", "first_20_ids"]);
    let production = common::gpt2().encode(&text).unwrap();
    let scratch = common::bpe_gpt2().encode(&text).unwrap();
    assert_eq!(production.len(), 338_025);
    assert_eq!(production[..20], first[..]);
    // the two encoders agree id for id, not only in count
    assert_eq!(scratch.len(), production.len());
    if let Some(i) = (0..scratch.len()).find(|&i| scratch[i] != production[i]) {
        panic!(
            "first difference at token {i}: {} vs {}",
            scratch[i], production[i]
        );
    }
    assert_eq!(common::bpe_gpt2().decode(&scratch).unwrap(), text);
}

#[test]
fn long_pieces_are_fast_and_exact() {
    // one 200 kB word, and long whitespace runs: a rescan per merge would be
    // quadratic here (minutes); the from-scratch encoder switches to a heap
    let mut x: u64 = 2463534242;
    let word: String = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect();
    let spaces = format!("{}x{}\n", " ".repeat(50_000), "\t \n".repeat(20_000));
    for text in [word, spaces] {
        let start = std::time::Instant::now();
        let ids = common::bpe_gpt2().encode(&text).unwrap();
        let took = start.elapsed();
        assert_eq!(ids, common::gpt2().encode(&text).unwrap());
        assert_eq!(common::bpe_gpt2().decode(&ids).unwrap(), text);
        assert!(took.as_secs_f64() < 20.0, "{took:?}");
    }
}

#[test]
fn vocabulary_queries_agree() {
    for (name, t) in encoders() {
        assert_eq!(t.vocab_size(), 50257, "{name}");
        assert_eq!(t.token_to_id("<|endoftext|>"), Some(50256), "{name}");
        assert_eq!(t.token_to_id("Ġthe"), Some(262), "{name}");
        assert_eq!(t.id_to_token(262).as_deref(), Some("Ġthe"), "{name}");
        assert_eq!(
            t.id_to_token(50256).as_deref(),
            Some("<|endoftext|>"),
            "{name}"
        );
        assert_eq!(t.id_to_token(50257), None, "{name}");
        let err = t.decode(&[40, 50257]).unwrap_err().to_string();
        assert!(err.contains("50257"), "{name}: {err}");
    }
    let bpe = common::bpe_gpt2();
    assert_eq!(bpe.merges().len(), 50_000);
    assert_eq!(bpe.special_tokens(), [("<|endoftext|>".to_string(), 50256)]);
    // merge ranks follow the ids: merge r makes token 256 + r
    assert!(bpe
        .merges()
        .iter()
        .enumerate()
        .all(|(r, m)| m.id == 256 + r as u32));
}

#[test]
fn book_example_with_an_unknown_word() {
    // §2.5: BPE splits unknown words into known pieces
    for (name, t) in encoders() {
        let ids = t.encode("Akwirw ier").unwrap();
        assert_eq!(ids, [33901, 86, 343, 86, 220, 959], "{name}");
        let pieces: Vec<String> = ids.iter().map(|&i| t.decode(&[i]).unwrap()).collect();
        assert_eq!(pieces, ["Ak", "w", "ir", "w", " ", "ier"], "{name}");
    }
}

#[test]
fn missing_or_corrupt_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let real = common::data_dir().join("gpt2");
    let encoder = real.join("encoder.json");
    let merges = real.join("vocab.bpe");
    let missing = dir.path().join("nope.json");
    for err in [
        Gpt2Tokenizer::from_files(&missing, &merges).unwrap_err(),
        BpeTokenizer::from_files(&missing, &merges).unwrap_err(),
        Gpt2Tokenizer::from_tokenizer_json(&missing).unwrap_err(),
    ] {
        assert!(err.to_string().contains("nope.json"), "{err}");
    }
    // a truncated encoder.json
    let bad_json = dir.path().join("encoder.json");
    let bytes = std::fs::read(&encoder).unwrap();
    std::fs::write(&bad_json, &bytes[..1000]).unwrap();
    for err in [
        Gpt2Tokenizer::from_files(&bad_json, &merges).unwrap_err(),
        BpeTokenizer::from_files(&bad_json, &merges).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(msg.contains(&*bad_json.to_string_lossy()), "{msg}");
    }
    // a merges file with a bad line 3
    let bad_bpe = dir.path().join("vocab.bpe");
    let text = std::fs::read_to_string(&merges).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "Ġt";
    std::fs::write(&bad_bpe, lines.join("\n")).unwrap();
    for err in [
        Gpt2Tokenizer::from_files(&encoder, &bad_bpe).unwrap_err(),
        BpeTokenizer::from_files(&encoder, &bad_bpe).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(msg.contains("vocab.bpe:3:"), "{msg}");
    }
    // a merge whose result is not in the vocabulary
    lines[2] = "Ġ Ġ";
    std::fs::write(&bad_bpe, lines.join("\n")).unwrap();
    let msg = BpeTokenizer::from_files(&encoder, &bad_bpe)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("vocab.bpe:3:") && msg.contains("ĠĠ"), "{msg}");
}

/// Text that exercises the pre-tokenizer: words, numbers, contractions,
/// whitespace runs, punctuation, non-ASCII, and the special token.
fn texty() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z]{1,8}",
        "[0-9]{1,5}",
        Just("'s".to_string()),
        Just("'ll".to_string()),
        "[ \t\n\r]{1,4}",
        "[!-/:-@\\[-`{-~]{1,3}",
        "[àéü€你好😀\u{200d}\u{a0}\u{3000}]{1,3}",
        Just("<|endoftext|>".to_string()),
        Just("<|endof".to_string()),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn both_round_trip_any_string(text in any::<String>()) {
        for (name, t) in encoders() {
            let ids = t.encode(&text).unwrap();
            prop_assert_eq!(t.decode(&ids).unwrap(), text.clone(), "{}", name);
        }
    }

    #[test]
    fn both_round_trip_texty_strings(text in texty()) {
        for (name, t) in encoders() {
            let ids = t.encode(&text).unwrap();
            prop_assert_eq!(t.decode(&ids).unwrap(), text.clone(), "{}", name);
        }
    }

    #[test]
    fn from_scratch_equals_production(text in prop_oneof![any::<String>(), texty(), "[a-z]{60,400}", "[ \n]{60,200}[a-z]"]) {
        prop_assert_eq!(common::bpe_gpt2().encode(&text).unwrap(), common::gpt2().encode(&text).unwrap());
    }
}
