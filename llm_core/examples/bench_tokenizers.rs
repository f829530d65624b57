//! Tokenizer benchmark on tiny Shakespeare (1.1 MB):
//!
//! - encode throughput (MB/s) of GPT-2's tokenizer through the `tokenizers`
//!   crate (`Gpt2Tokenizer`) and of the from-scratch `BpeTokenizer` loaded
//!   with the same files, on a cold cache (first call) and warm (best of 3);
//! - training time of `BpeTokenizer::train` against the `tokenizers` crate's
//!   `BpeTrainer` (byte-level, the same text, the same vocabulary size),
//!   both on one thread, and how many of their merges agree.
//!
//! ```text
//! source scripts/env.sh && cargo run --release --example bench_tokenizers [vocab_size]
//! ```
//!
//! The last lines are `key value` pairs for scripts (`gpt2_tokenizer_mb_s ...`);
//! `scripts/bench_tiktoken.py` prints tiktoken's figure in the same form.

use std::time::Instant;

use anyhow::Context;
use llm_core::text::tokenizer::byte_level::{decode_token, read_vocab_bpe};
use llm_core::text::tokenizer::{BpeTokenizer, Gpt2Tokenizer, Tokenizer};
use llm_core::tokenizers::models::bpe::{BpeTrainer, BPE};
use llm_core::tokenizers::models::TrainerWrapper;
use llm_core::tokenizers::pre_tokenizers::byte_level::ByteLevel;
use llm_core::tokenizers::{Model, Tokenizer as HfTokenizer};

/// Seconds of the first call and the best of the next `repeats`, and the
/// first call's result.
fn time<T>(
    repeats: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(f64, f64, T)> {
    let t0 = Instant::now();
    let out = f()?;
    let cold = t0.elapsed().as_secs_f64();
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let t = Instant::now();
        let _ = f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((cold, best, out))
}

fn main() -> anyhow::Result<()> {
    let vocab_size: usize = match std::env::args().nth(1) {
        Some(v) => v.parse().context("vocab_size must be a number")?,
        None => 1000,
    };
    // the tokenizers crate: one thread, as ours
    llm_core::tokenizers::parallelism::set_parallelism(false);

    let text = llm_core::data::read_to_string("tinyshakespeare.txt")?;
    let mb = text.len() as f64 / 1e6;
    println!("tinyshakespeare.txt: {} bytes", text.len());

    // --- encoding -------------------------------------------------------
    let gpt2 = Gpt2Tokenizer::gpt2()?;
    let scratch = BpeTokenizer::gpt2()?;
    let (g_cold, g_warm, g_ids) = time(3, || Ok(gpt2.encode(&text)?))?;
    let (s_cold, s_warm, s_ids) = time(3, || Ok(scratch.encode(&text)?))?;
    anyhow::ensure!(
        g_ids == s_ids,
        "the two encoders disagree on tinyshakespeare"
    );
    // the crate's own pipeline (tokenizer.json), which Gpt2Tokenizer used
    // to encode with, for the record of why it no longer does
    let hf_json = Gpt2Tokenizer::from_tokenizer_json(
        llm_core::data::path("gpt2/encoder.json")?.with_file_name("tokenizer.json"),
    )?;
    let (_, hf_warm, hf_ids) = time(1, || Ok(hf_json.encode(&text)?))?;
    anyhow::ensure!(hf_ids == g_ids, "the tokenizers crate's pipeline disagrees");
    // every core (`llm tokenize`)
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (_, p_warm, p_ids) = time(3, || {
        Ok(llm_core::text::shards::encode_parallel(
            &gpt2, &text, cores,
        )?)
    })?;
    anyhow::ensure!(p_ids == g_ids, "the parallel encoder disagrees");

    // --- training -------------------------------------------------------
    let (ours_s, _, ours) = time(0, || Ok(BpeTokenizer::train(&text, vocab_size, &[])?))?;
    let (hf_s, _, hf) = time(0, || {
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .show_progress(false)
            .build()
            .into();
        let mut tokenizer = HfTokenizer::new(BPE::default());
        tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        tokenizer
            .train(&mut trainer, std::iter::once(text.as_str()))
            .map_err(|e| anyhow::anyhow!("tokenizers training: {e}"))?;
        Ok(tokenizer)
    })?;
    // compare the learned merges, as byte strings
    let dir = tempfile::tempdir()?;
    hf.get_model()
        .save(dir.path(), None)
        .map_err(|e| anyhow::anyhow!("saving the trained model: {e}"))?;
    let hf_merges: Vec<(Vec<u8>, Vec<u8>)> = read_vocab_bpe(dir.path().join("merges.txt"), None)?
        .into_iter()
        .map(|m| {
            (
                decode_token(&m.left).unwrap_or_default(),
                decode_token(&m.right).unwrap_or_default(),
            )
        })
        .collect();
    let our_merges: Vec<(Vec<u8>, Vec<u8>)> = ours
        .merges()
        .iter()
        .map(|m| {
            let b = |id| ours.token_bytes(id).unwrap_or_default().to_vec();
            (b(m.pair.0), b(m.pair.1))
        })
        .collect();
    let common_prefix = our_merges
        .iter()
        .zip(&hf_merges)
        .take_while(|(a, b)| a == b)
        .count();
    let ours_set: std::collections::HashSet<_> = our_merges.iter().collect();
    let shared = hf_merges.iter().filter(|m| ours_set.contains(m)).count();
    let ours_tokens = ours.encode(&text)?.len();
    let hf_tokens = hf
        .encode_fast(text.as_str(), false)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .len();

    let row =
        |cells: &[String]| println!("| {:<36} | {:>12} | {:>12} |", cells[0], cells[1], cells[2]);
    println!();
    row(&[
        "encode, GPT-2 vocabulary".into(),
        "first call".into(),
        "best of 3".into(),
    ]);
    println!(
        "|{}|{}|{}|",
        "-".repeat(38),
        "-".repeat(13) + ":",
        "-".repeat(13) + ":"
    );
    let mb_s = |s: f64| format!("{:.2} MB/s", mb / s);
    row(&[
        "Gpt2Tokenizer (tokenizers crate)".into(),
        mb_s(g_cold),
        mb_s(g_warm),
    ]);
    row(&[
        "BpeTokenizer (from scratch)".into(),
        mb_s(s_cold),
        mb_s(s_warm),
    ]);
    println!("({} tokens, identical from both)", g_ids.len());
    println!();
    row(&[
        format!("train byte-level BPE, vocab {vocab_size}"),
        "seconds".into(),
        "merges".into(),
    ]);
    println!(
        "|{}|{}|{}|",
        "-".repeat(38),
        "-".repeat(13) + ":",
        "-".repeat(13) + ":"
    );
    row(&[
        "BpeTokenizer::train".into(),
        format!("{ours_s:.3}"),
        our_merges.len().to_string(),
    ]);
    row(&[
        "tokenizers BpeTrainer".into(),
        format!("{hf_s:.3}"),
        hf_merges.len().to_string(),
    ]);
    println!("tokens for the text with the trained vocabularies: ours {ours_tokens}, tokenizers {hf_tokens}");
    println!(
        "merges in common: {shared} of {}; identical first {common_prefix} (ties may be broken differently)",
        our_merges.len()
    );
    println!();
    println!("gpt2_tokenizer_mb_s {:.3}", mb / g_warm);
    println!("hf_pipeline_mb_s {:.3}", mb / hf_warm);
    println!("parallel_cores {cores}");
    println!("parallel_mb_s {:.3}", mb / p_warm);
    println!("bpe_tokenizer_mb_s {:.3}", mb / s_warm);
    println!("bpe_tokenizer_cold_mb_s {:.3}", mb / s_cold);
    println!("bpe_train_s {ours_s:.3}");
    println!("hf_bpe_train_s {hf_s:.3}");
    Ok(())
}
