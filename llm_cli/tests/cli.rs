//! `llm` end to end on tiny models: every subcommand through the binary,
//! resumes that continue exactly, Ctrl-C, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary, in `dir`, offline, with the data directory of the test run.
fn llm(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llm"));
    c.current_dir(dir).env("LLM_OFFLINE", "1");
    for var in std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("LLM_") && k != "LLM_DATA_DIR" && k != "LLM_OFFLINE")
    {
        c.env_remove(var); // a developer's LLM_* settings would change the runs
    }
    c
}

fn run(c: &mut Command) -> Output {
    let out = c.output().expect("the llm binary runs");
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn data_dir() -> PathBuf {
    match std::env::var("LLM_DATA_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

/// The first 20 kB of tiny Shakespeare and a tiny model's settings.
fn setup(ctx: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(data_dir().join("tinyshakespeare.txt")).unwrap();
    let cut = text[..20_000].rfind('\n').unwrap() + 1;
    std::fs::write(dir.path().join("small.txt"), &text[..cut]).unwrap();
    std::fs::write(
        dir.path().join("tiny.toml"),
        format!(
            "context_length = {ctx}\nemb_dim = 32\nn_heads = 2\nn_layers = 1\ndrop_rate = 0.1\n\
             batch_size = 4\nnum_epochs = 2\neval_freq = 5\neval_iter = 2\nsample_tokens = 5\n\
             learning_rate = 1e-3\n"
        ),
    )
    .unwrap();
    dir
}

/// metrics.jsonl without the wall-clock field.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("train_seconds");
            v
        })
        .collect()
}

#[test]
fn pretrain_stopped_and_resumed_equals_uninterrupted_and_shards_equal_text() {
    let tmp = setup(32);
    let dir = tmp.path();
    run(llm(dir).args([
        "pretrain",
        "--config",
        "tiny.toml",
        "small.txt",
        "--out",
        "whole",
    ]));

    // stopped within the first epoch after a checkpoint every 5 steps, then resumed
    let out = run(llm(dir).args([
        "pretrain",
        "--config",
        "tiny.toml",
        "small.txt",
        "--out",
        "parts",
        "--stop-at-step",
        "13",
        "--checkpoint-every",
        "5",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stopped after step 13") && stdout.contains("llm pretrain --resume parts"),
        "{stdout}"
    );
    run(llm(dir).args(["pretrain", "--resume", "parts"]));
    let whole = metrics(&dir.join("whole"));
    assert!(whole.len() > 5);
    assert_eq!(metrics(&dir.join("parts")), whole);
    let weights = |run: &str| std::fs::read(dir.join(run).join("model/model.safetensors")).unwrap();
    assert!(
        weights("parts") == weights("whole"),
        "the resumed run's weights differ"
    );

    // shards from `llm tokenize` train on the same batches as the text
    run(llm(dir).args(["tokenize", "small.txt", "--out", "shards", "--threads", "2"]));
    run(llm(dir).args([
        "pretrain",
        "--config",
        "tiny.toml",
        "shards",
        "--out",
        "from-shards",
    ]));
    assert_eq!(metrics(&dir.join("from-shards")), whole);
}

#[test]
fn tokenize_round_trips_to_the_tokenizer_ids() {
    use llm_core::text::tokenizer::{Gpt2Tokenizer, Tokenizer};
    let tmp = setup(32);
    let dir = tmp.path();
    std::fs::create_dir(dir.join("texts")).unwrap();
    std::fs::copy(dir.join("small.txt"), dir.join("texts/a.txt")).unwrap();
    std::fs::write(
        dir.join("texts/b.txt"),
        "Hello, world. <|endoftext|> Bye.\n",
    )
    .unwrap();
    let out = run(llm(dir).args([
        "tokenize",
        "texts",
        "--out",
        "shards",
        "--val-fraction",
        "0.2",
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("from 2 file(s)"));
    let read = |name: &str| -> Vec<u32> {
        std::fs::read(dir.join("shards").join(name))
            .unwrap()
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32)
            .collect()
    };
    let tokenizer = Gpt2Tokenizer::gpt2().unwrap();
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for name in ["a.txt", "b.txt"] {
        let mut ids = tokenizer
            .encode(&std::fs::read_to_string(dir.join("texts").join(name)).unwrap())
            .unwrap();
        ids.push(50256);
        let at = (0.8 * ids.len() as f64) as usize;
        train.extend_from_slice(&ids[..at]);
        val.extend_from_slice(&ids[at..]);
    }
    assert_eq!(read("train.bin"), train);
    assert_eq!(read("val.bin"), val);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("shards/meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["train_tokens"], train.len());
}

#[test]
fn ctrl_c_saves_a_loadable_checkpoint_and_exits_130() {
    let tmp = setup(32);
    let dir = tmp.path();
    let child = llm(dir)
        .args([
            "pretrain",
            "--config",
            "tiny.toml",
            "small.txt",
            "--out",
            "run",
            "--num-epochs",
            "1000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // wait for the first evaluations, so the run is inside its loop
    let started = Instant::now();
    while std::fs::read_to_string(dir.join("run/metrics.jsonl")).map_or(0, |t| t.lines().count())
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no evaluation within 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info =
        llm_core::train::checkpoint::read_checkpoint_info(dir.join("run/checkpoint")).unwrap();
    assert!(info.history.global_step >= 5, "{}", info.history);
    // it loads: generation from it, and a resume that finishes it
    run(llm(dir).args([
        "generate",
        "--model",
        "run",
        "ROMEO:",
        "--max-new-tokens",
        "3",
    ]));
    run(llm(dir).args(["pretrain", "--resume", "run", "--num-epochs", "2"]));
    assert!(dir.join("run/model/model.safetensors").is_file());
}

/// The last stderr line, after checking that stderr is that one line.
fn one_error_line(out: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err.trim_end().to_string()
}

#[test]
fn bad_input_is_one_clear_line_and_a_failure() {
    let tmp = setup(32);
    let dir = tmp.path();
    let out = llm(dir).args(["pretrain", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: unexpected argument '--bogus'")
    );

    let out = llm(dir).args(["pretrain", "missing.txt"]).output().unwrap();
    assert_eq!(
        one_error_line(&out, 1),
        "error: missing.txt: no such file or directory"
    );

    std::fs::write(dir.join("typo.toml"), "lerning_rate = 1e-3\n").unwrap();
    let out = llm(dir)
        .args(["pretrain", "--config", "typo.toml", "small.txt"])
        .output()
        .unwrap();
    let line = one_error_line(&out, 1);
    assert!(
        line.starts_with(
            "error: typo.toml: unknown setting `lerning_rate` for `llm pretrain`; it reads: data,"
        ),
        "{line}"
    );

    std::fs::write(dir.join("value.toml"), "num_epochs = -2\n").unwrap();
    let out = llm(dir)
        .args(["pretrain", "--config", "value.toml", "small.txt"])
        .output()
        .unwrap();
    let line = one_error_line(&out, 1);
    assert!(
        line.contains(
            "setting `num_epochs`: value.toml: key num_epochs = \"-2\" is not a valid usize"
        ),
        "{line}"
    );

    std::fs::write(dir.join("broken.toml"), "[model\n").unwrap();
    let out = llm(dir)
        .args(["pretrain", "--config", "broken.toml", "small.txt"])
        .output()
        .unwrap();
    assert!(one_error_line(&out, 1).starts_with("error: broken.toml: not valid TOML at line 1"));

    let out = llm(dir)
        .args(["generate", "--model", "no-such-run", "hi"])
        .output()
        .unwrap();
    assert!(one_error_line(&out, 1)
        .starts_with("error: no-such-run: no such directory, and not a GPT-2 name"));

    let out = llm(dir)
        .args(["pretrain", "--resume", "nowhere"])
        .output()
        .unwrap();
    assert!(one_error_line(&out, 1).contains("nowhere: not a run directory of `llm pretrain`"));

    let out = llm(dir)
        .args(["pretrain", "small.txt", "-s", "precision=fp8"])
        .output()
        .unwrap();
    assert!(one_error_line(&out, 1).contains("setting `precision`: flag --set precision = \"fp8\""));
}

#[test]
fn every_subcommand_end_to_end_on_a_tiny_model() {
    let tmp = setup(128);
    let dir = tmp.path();
    let out = run(llm(dir).args([
        "pretrain",
        "--config",
        "tiny.toml",
        "small.txt",
        "--out",
        "base",
        "--num-epochs",
        "1",
        "--dry-run",
    ]));
    let cfg = llm_core::model::gpt::GptConfig {
        context_length: 128,
        emb_dim: 32,
        n_heads: 2,
        n_layers: 1,
        ..llm_core::model::gpt::GptConfig::gpt2_small()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("model: {} parameters", cfg.num_parameters())),
        "{stdout}"
    );
    assert!(!dir.join("base").exists(), "a dry run writes nothing");
    run(llm(dir).args([
        "pretrain",
        "--config",
        "tiny.toml",
        "small.txt",
        "--out",
        "base",
        "--num-epochs",
        "1",
    ]));
    let svg = std::fs::read_to_string(dir.join("base/loss.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("Validation loss"));

    // chapter 6
    run(llm(dir).args([
        "finetune",
        "classify",
        "--base-model",
        "base",
        "--out",
        "spam",
        "--num-epochs",
        "1",
        "-s",
        "max_train_batches=2",
        "-s",
        "eval_freq=1",
        "-s",
        "eval_iter=1",
    ]));
    let out = run(llm(dir).args(["eval", "--classifier", "spam"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("test accuracy:"));

    // chapter 7 with LoRA, then its responses
    run(llm(dir).args([
        "finetune",
        "instruct",
        "--base-model",
        "base",
        "--out",
        "instruct",
        "--num-epochs",
        "1",
        "--batch-size",
        "4",
        "-s",
        "max_train_entries=8",
        "-s",
        "max_test_entries=2",
        "-s",
        "max_new_tokens=4",
        "-s",
        "lora_rank=2",
        "-s",
        "eval_freq=1",
        "-s",
        "eval_iter=1",
    ]));
    let out = run(llm(dir).args(["eval", "--responses", "instruct/test-responses.json"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 responses, exact match"));

    // DPO on the instruction model
    run(llm(dir).args([
        "dpo",
        "--base-model",
        "instruct",
        "--out",
        "dpo",
        "--batch-size",
        "2",
        "-s",
        "max_train_entries=4",
        "-s",
        "eval_freq=1",
        "-s",
        "eval_iter=1",
    ]));
    assert!(
        dir.join("dpo/model/model.safetensors").is_file()
            && dir.join("dpo/checkpoint/checkpoint.json").is_file()
    );

    // generation (greedy and sampled), chat, export, perplexity
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            "base",
            "ROMEO:",
            "--max-new-tokens",
            "8",
        ];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&run(llm(dir).args(&args)).stdout).to_string()
    };
    let greedy = gen(&[]);
    assert!(greedy.starts_with("ROMEO:") && greedy == gen(&[]));
    let sampled = gen(&[
        "--temperature",
        "1.5",
        "--top-k",
        "40",
        "--top-p",
        "0.9",
        "--seed",
        "7",
    ]);
    assert_eq!(
        sampled,
        gen(&[
            "--temperature",
            "1.5",
            "--top-k",
            "40",
            "--top-p",
            "0.9",
            "--seed",
            "7"
        ])
    );
    let mut chat = llm(dir)
        .args(["chat", "--model", "dpo", "--max-new-tokens", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    chat.stdin
        .take()
        .unwrap()
        .write_all(b"Name a color.\n/reset\nName a fruit.\n/exit\n")
        .unwrap();
    let out = chat.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("> ").count(), 4, "{stdout}");
    assert!(stdout.contains("(conversation forgotten)"));

    run(llm(dir).args(["export", "--model", "base", "--out", "exported"]));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("exported/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["n_embd"], 32);
    let out = run(llm(dir).args(["eval", "--model", "exported", "--text", "small.txt"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("loss ") && stdout.contains("perplexity"),
        "{stdout}"
    );
}

#[test]
fn help_has_examples_and_download_lists_offline() {
    let tmp = tempfile::tempdir().unwrap();
    for sub in [
        vec!["pretrain"],
        vec!["finetune", "classify"],
        vec!["finetune", "instruct"],
        vec!["dpo"],
        vec!["generate"],
        vec!["chat"],
        vec!["eval"],
        vec!["download"],
        vec!["export"],
        vec!["tokenize"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let out = run(llm(tmp.path()).args(&args));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Examples:\n  llm "),
            "{sub:?} --help has no example"
        );
    }
    let out = run(llm(tmp.path()).args(["download"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the-verdict.txt") && stdout.contains("gpt2-small (124M)"),
        "{stdout}"
    );
    let out = run(llm(tmp.path()).args(["download", "the-verdict.txt"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the-verdict.txt: "));
}

#[test]
fn qwen3_generates_and_chats() {
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../llm_core/tests/data/open_weights");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("qwen3");
    std::fs::create_dir(&model).unwrap();
    for entry in std::fs::read_dir(fixtures.join("qwen3")).unwrap() {
        let p = entry.unwrap().path();
        std::os::unix::fs::symlink(&p, model.join(p.file_name().unwrap())).unwrap();
    }
    std::os::unix::fs::symlink(
        fixtures.join("tokenizer.json"),
        model.join("tokenizer.json"),
    )
    .unwrap();
    let out = run(llm(tmp.path()).args([
        "generate",
        "--model",
        "qwen3",
        "Hello",
        "--max-new-tokens",
        "5",
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Hello"));
    let mut chat = llm(tmp.path())
        .args([
            "chat",
            "--model",
            "qwen3",
            "--max-new-tokens",
            "5",
            "--system",
            "Be brief.",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    chat.stdin
        .take()
        .unwrap()
        .write_all(b"Hi!\nAgain.\n")
        .unwrap();
    let out = chat.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("tokens/s]")
            .count(),
        2
    );
}
