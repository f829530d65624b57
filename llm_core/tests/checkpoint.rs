//! Checkpoints that lose nothing and are never silently wrong: interrupted
//! saves (simulated, and real kills of a saving process), exact shape and
//! dtype checks, a load that changes nothing when it fails, and the saved
//! config checked against the weights.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llm_core::files::{load_varstore, save_varstore};
use llm_core::model::gpt::{GptConfig, GptModel};
use llm_core::tch::{nn, Device, Kind, Tensor};
use llm_core::train::checkpoint::{
    load_training_checkpoint, read_checkpoint_info, recover_checkpoint_dir,
    save_training_checkpoint,
};
use llm_core::train::optim::{named_parameters, AdamW};
use llm_core::train::pretrain::TrainHistory;

fn tiny_cfg() -> GptConfig {
    GptConfig {
        vocab_size: 50,
        context_length: 8,
        emb_dim: 16,
        n_heads: 2,
        n_layers: 1,
        drop_rate: 0.0,
        qkv_bias: false,
    }
}

struct Run {
    vs: nn::VarStore,
    model: GptModel,
    opt: AdamW,
}

fn run(cfg: &GptConfig) -> Run {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), cfg).unwrap();
    let opt = AdamW::new(named_parameters(&vs, &model.parameters()), 4e-4, 0.1);
    Run { vs, model, opt }
}

/// Fill every weight with `value` and take one optimizer step, so that the
/// optimizer has state; the history says `step`.
fn set_step(r: &mut Run, value: f64, step: i64) -> TrainHistory {
    llm_core::tch::no_grad(|| {
        for (_, mut t) in r.vs.variables() {
            let _ = t.fill_(value);
        }
    });
    let logits = llm_core::tch::nn::ModuleT::forward_t(
        &r.model,
        &Tensor::from_slice(&[1i64, 2]).unsqueeze(0),
        true,
    );
    r.opt.zero_grad();
    logits.sum(Kind::Float).backward();
    r.opt.step();
    llm_core::tch::no_grad(|| {
        for (_, mut t) in r.vs.variables() {
            let _ = t.fill_(value);
        }
    });
    TrainHistory {
        global_step: step,
        ..TrainHistory::default()
    }
}

fn leftovers(parent: &Path) -> Vec<String> {
    fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn all_weights_equal(vs: &nn::VarStore, value: f64) -> bool {
    vs.variables()
        .values()
        .all(|t| t.eq(value).all().int64_value(&[]) != 0)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Item 1: a kill between the two renames of an old version left
/// `.ckpt.old-<pid>` and no `ckpt`: the load is an error naming the old copy,
/// never the old copy silently. A kill after the rename of the new
/// checkpoint: the leftover old directory is removed.
#[test]
fn a_load_never_returns_an_older_checkpoint_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let cfg = tiny_cfg();
    let mut r = run(&cfg);
    let h3 = set_step(&mut r, 0.3, 3);
    save_training_checkpoint(&dir, &r.vs, &cfg, &r.opt, &h3).unwrap();
    let h38 = set_step(&mut r, 0.38, 38);
    // the old version's leftover: the step-3 checkpoint as `.old-<dead pid>`
    let old = tmp.path().join(".ckpt.old-999999");
    copy_dir(&dir, &old);
    save_training_checkpoint(&dir, &r.vs, &cfg, &r.opt, &h38).unwrap();
    // 1a. `ckpt` complete: the old copy is cleaned away, the load is step 38
    assert_eq!(read_checkpoint_info(&dir).unwrap().history.global_step, 38);
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
    // 1b. `ckpt` lost its checkpoint.json, an old copy lies beside it
    copy_dir(&dir, &old);
    fs::write(old.join("checkpoint.json"), {
        let text = fs::read_to_string(dir.join("checkpoint.json")).unwrap();
        text.replace("\"global_step\": 38", "\"global_step\": 3")
    })
    .unwrap();
    fs::remove_file(dir.join("checkpoint.json")).unwrap();
    let mut fresh = run(&cfg);
    let err = load_training_checkpoint(&dir, &mut fresh.vs, &mut fresh.opt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no complete checkpoint here"), "{err}");
    assert!(err.contains(".ckpt.old-999999"), "{err}");
    // 1c. no `ckpt` at all, only the old copy: still an error, not step 3
    fs::remove_dir_all(&dir).unwrap();
    let err = read_checkpoint_info(&dir).unwrap_err().to_string();
    assert!(err.contains(".ckpt.old-999999"), "{err}");
}

/// A kill after the new checkpoint was complete but before it was swapped
/// in: the next load finishes the swap and returns the newer one.
#[test]
fn an_interrupted_swap_is_finished_by_the_next_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let cfg = tiny_cfg();
    let mut r = run(&cfg);
    let h = set_step(&mut r, 0.1, 10);
    save_training_checkpoint(&dir, &r.vs, &cfg, &r.opt, &h).unwrap();
    let h = set_step(&mut r, 0.2, 20);
    let newer = tmp.path().join("newer");
    save_training_checkpoint(&newer, &r.vs, &cfg, &r.opt, &h).unwrap();
    // killed after `tmp -> new` (both `ckpt` and `.ckpt.new-*` complete)
    fs::rename(&newer, tmp.path().join(".ckpt.new-999998")).unwrap();
    let mut fresh = run(&cfg);
    let info = load_training_checkpoint(&dir, &mut fresh.vs, &mut fresh.opt).unwrap();
    assert_eq!(info.history.global_step, 20);
    assert!(all_weights_equal(&fresh.vs, 0.2));
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
    // killed after `ckpt -> old`, before `new -> ckpt`: no `ckpt` at all
    let h = set_step(&mut r, 0.3, 30);
    save_training_checkpoint(&newer, &r.vs, &cfg, &r.opt, &h).unwrap();
    fs::rename(&dir, tmp.path().join(".ckpt.old-999997")).unwrap();
    fs::rename(&newer, tmp.path().join(".ckpt.new-999997")).unwrap();
    assert_eq!(read_checkpoint_info(&dir).unwrap().history.global_step, 30);
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

/// Item 2: temporary directories of interrupted saves (and temporary files
/// of interrupted single-file saves) are removed by the next save or load.
#[test]
fn leftovers_of_interrupted_saves_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let cfg = tiny_cfg();
    let mut r = run(&cfg);
    let h = set_step(&mut r, 0.1, 1);
    for pid in [999991, 999992] {
        let half = tmp.path().join(format!(".ckpt.tmp-{pid}"));
        fs::create_dir_all(&half).unwrap();
        fs::write(half.join("model.safetensors"), vec![0u8; 4096]).unwrap();
    }
    save_training_checkpoint(&dir, &r.vs, &cfg, &r.opt, &h).unwrap();
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
    // and by a load
    fs::create_dir_all(tmp.path().join(".ckpt.tmp-999993")).unwrap();
    recover_checkpoint_dir(&dir).unwrap();
    assert!(leftovers(tmp.path()).is_empty());
    // single files: `.model.safetensors.tmp-<pid>.safetensors`
    let file = tmp.path().join("model.safetensors");
    fs::write(
        tmp.path().join(".model.safetensors.tmp-999994.safetensors"),
        b"half",
    )
    .unwrap();
    save_varstore(&r.vs, &file).unwrap();
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

/// Items 3 and 4: shapes that merely broadcast and other dtypes are refused,
/// naming the tensor; a failed load leaves the model as it was.
#[test]
fn shapes_and_dtypes_must_match_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_cfg();
    let r = run(&cfg);
    let names: Vec<String> = r.vs.variables().into_keys().collect();
    let write = |replace: &dyn Fn(&str, Tensor) -> Tensor, path: &Path| {
        let tensors: Vec<(String, Tensor)> =
            r.vs.variables()
                .into_iter()
                .map(|(n, t)| {
                    let t = replace(&n, t.detach().copy());
                    (n, t)
                })
                .collect();
        Tensor::write_safetensors(&tensors, path).unwrap();
    };
    // [1, 16] where the model has [50, 16]
    let broadcast = tmp.path().join("broadcast.safetensors");
    write(
        &|n, t| {
            if n == "tok_emb.weight" {
                t.narrow(0, 0, 1)
            } else {
                t
            }
        },
        &broadcast,
    );
    let mut other = run(&cfg);
    let before = other.model.tok_emb.ws.copy();
    let err = load_varstore(&mut other.vs, &broadcast)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor \"tok_emb.weight\" has shape [1, 16], the model expects [50, 16]"),
        "{err}"
    );
    assert!(other.model.tok_emb.ws.equal(&before), "nothing was copied");
    // float16 weights into a float32 model
    let half = tmp.path().join("half.safetensors");
    write(&|_, t| t.to_kind(Kind::Half), &half);
    let err = load_varstore(&mut other.vs, &half).unwrap_err().to_string();
    assert!(err.contains("is float16, the model's is float32"), "{err}");
    assert!(other
        .vs
        .variables()
        .values()
        .all(|t| t.kind() == Kind::Float));
    // a tensor too many, a tensor missing
    let extra = tmp.path().join("extra.safetensors");
    let mut tensors: Vec<(String, Tensor)> = r.vs.variables().into_iter().collect();
    tensors.push((
        "head.weight".into(),
        Tensor::zeros([2, 16], llm_core::tch::kind::FLOAT_CPU),
    ));
    Tensor::write_safetensors(&tensors, &extra).unwrap();
    let err = load_varstore(&mut other.vs, &extra)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected tensor \"head.weight\""), "{err}");
    tensors.pop();
    tensors.retain(|(n, _)| n != &names[0]);
    Tensor::write_safetensors(&tensors, &extra).unwrap();
    let err = load_varstore(&mut other.vs, &extra)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("missing tensor {:?}", names[0])),
        "{err}"
    );
    assert!(other.model.tok_emb.ws.equal(&before));
}

/// Item 4: a training checkpoint without its optimizer file (or with a bad
/// one) fails before the weights, the optimizer or the generator change.
#[test]
fn a_failed_training_load_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let cfg = tiny_cfg();
    let mut r = run(&cfg);
    let h = set_step(&mut r, 0.5, 7);
    save_training_checkpoint(&dir, &r.vs, &cfg, &r.opt, &h).unwrap();

    let mut fresh = run(&cfg);
    let weights_before: Vec<(String, Tensor)> = fresh
        .vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let unchanged = |fresh: &Run| {
        weights_before
            .iter()
            .all(|(n, t)| fresh.vs.variables()[n].equal(t))
            && fresh.opt.step_count() == 0
    };
    // the optimizer file is missing
    let opt_file = dir.join("optimizer.safetensors");
    let saved = fs::read(&opt_file).unwrap();
    fs::remove_file(&opt_file).unwrap();
    let err = load_training_checkpoint(&dir, &mut fresh.vs, &mut fresh.opt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("optimizer.safetensors"), "{err}");
    assert!(unchanged(&fresh));
    // the optimizer file is cut short
    fs::write(&opt_file, &saved[..saved.len() / 2]).unwrap();
    let err = load_training_checkpoint(&dir, &mut fresh.vs, &mut fresh.opt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cut short"), "{err}");
    assert!(!err.contains("MetadataIncompleteBuffer"), "{err}");
    assert!(unchanged(&fresh));
    // restored: the load works and changes everything
    fs::write(&opt_file, &saved).unwrap();
    let info = load_training_checkpoint(&dir, &mut fresh.vs, &mut fresh.opt).unwrap();
    assert_eq!(info.history.global_step, 7);
    assert!(all_weights_equal(&fresh.vs, 0.5));
    assert_eq!(fresh.opt.step_count(), 1);
}

/// Item 5: the config in `checkpoint.json` is compared with the weights.
#[test]
fn the_saved_config_must_match_the_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let cfg = tiny_cfg();
    let mut r = run(&cfg);
    let h = set_step(&mut r, 0.5, 7);
    save_training_checkpoint(&dir, &r.vs, &cfg, &r.opt, &h).unwrap();
    let json = dir.join("checkpoint.json");
    let text = fs::read_to_string(&json).unwrap();
    for (from, to, says) in [
        (
            "\"vocab_size\": 50",
            "\"vocab_size\": 60",
            "tok_emb.weight has shape [50, 16], the config gives [60, 16]",
        ),
        (
            "\"n_layers\": 1",
            "\"n_layers\": 2",
            "1 transformer blocks, the config gives n_layers = 2",
        ),
        (
            "\"qkv_bias\": false",
            "\"qkv_bias\": true",
            "the weights have no query/key/value biases",
        ),
        (
            "\"drop_rate\": 0.0",
            "\"drop_rate\": 1.5",
            "drop_rate = 1.5 is out of range",
        ),
    ] {
        assert!(text.contains(from), "{from} in {text}");
        fs::write(&json, text.replace(from, to)).unwrap();
        let mut fresh = run(&cfg);
        let err = load_training_checkpoint(&dir, &mut fresh.vs, &mut fresh.opt)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{from} -> {to}: {err}");
        assert!(err.contains("checkpoint.json"), "{err}");
    }
    fs::write(&json, &text).unwrap();
    // a byte-order mark in front of the JSON is fine
    fs::write(&json, format!("\u{feff}{text}")).unwrap();
    assert_eq!(read_checkpoint_info(&dir).unwrap().history.global_step, 7);
}

// ---------------------------------------------------------------------------
// The kill test: a child process saves in a loop and is killed at random
// moments; every load afterwards returns the newest complete checkpoint.

const CHILD_DIR: &str = "LLM_KILL_TEST_DIR";

/// The saving child (run by `kill_test_newest_complete_checkpoint_survives`,
/// ignored otherwise): save step 1, 2, 3, … with every weight equal to the
/// step / 1000, printing `saved <step>` after each save returns.
#[test]
#[ignore = "the child process of the kill test"]
fn kill_test_child_saves_in_a_loop() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let cfg = tiny_cfg();
    let mut r = run(&cfg);
    let first = read_checkpoint_info(&dir)
        .map(|i| i.history.global_step + 1)
        .unwrap_or(1);
    for step in first.. {
        let h = set_step(&mut r, step as f64 / 1000.0, step);
        save_training_checkpoint(&dir, &r.vs, &cfg, &r.opt, &h).unwrap();
        println!("saved {step}");
    }
}

/// A tiny xorshift generator, so the kill moments differ from run to run
/// but a failure prints the seed to replay it.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill_test_newest_complete_checkpoint_survives() {
    let seed = std::env::var("LLM_KILL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let kills: usize = std::env::var("LLM_KILL_TEST_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut rng = XorShift(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let cfg = tiny_cfg();
    for kill in 0..kills {
        let mut last_saved: Option<i64>;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill_test_child_saves_in_a_loop",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // wait for the first save of this child, then kill it 0-40 ms later
        // (a save of this model takes a few ms: every phase gets hit)
        let started = Instant::now();
        loop {
            let line = lines
                .next()
                .expect("the child ended without saving")
                .unwrap();
            if let Some(step) = line.strip_prefix("saved ") {
                last_saved = Some(step.parse().unwrap());
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no save in 60 s"
            );
        }
        std::thread::sleep(Duration::from_micros(rng.next() % 40_000));
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines.map_while(Result::ok) {
            if let Some(step) = line.strip_prefix("saved ") {
                last_saved = Some(step.parse().unwrap());
            }
        }
        let last = last_saved.unwrap();
        let mut fresh = run(&cfg);
        let info = load_training_checkpoint(&dir, &mut fresh.vs, &mut fresh.opt)
            .unwrap_or_else(|e| panic!("seed {seed}, kill {kill}: {e}"));
        let step = info.history.global_step;
        // the last save that returned, or the one the kill interrupted after
        // it was complete: never an older one
        assert!(
            step == last || step == last + 1,
            "seed {seed}, kill {kill}: loaded step {step}, the last completed save was {last}"
        );
        assert!(
            all_weights_equal(&fresh.vs, step as f64 / 1000.0),
            "seed {seed}, kill {kill}: the weights are not those of step {step}"
        );
        assert!(
            leftovers(tmp.path()).is_empty(),
            "seed {seed}, kill {kill}: left behind {:?}",
            leftovers(tmp.path())
        );
    }
}
