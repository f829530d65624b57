//! Data-parallel `llm pretrain` over Gloo on loopback: 2 ranks equal 1 rank
//! with twice the batch, a dead rank is named, a busy port is a clear
//! error, and torchrun launches it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn data_dir() -> PathBuf {
    std::env::var("LLM_DATA_DIR").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
        PathBuf::from,
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny run without dropout (each rank would draw its own masks).
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(data_dir().join("tinyshakespeare.txt")).unwrap();
    let cut = text[..20_000].rfind('\n').unwrap() + 1;
    std::fs::write(dir.path().join("small.txt"), &text[..cut]).unwrap();
    std::fs::write(
        dir.path().join("tiny.toml"),
        "context_length = 32\nemb_dim = 32\nn_heads = 2\nn_layers = 1\ndrop_rate = 0.0\n\
         num_epochs = 1\neval_freq = 1\neval_iter = 1\nsample_tokens = 3\nlearning_rate = 1e-3\n\
         ddp_timeout = 20\n",
    )
    .unwrap();
    dir
}

/// `llm pretrain` as rank `rank` of `world`.
fn rank(dir: &Path, rank: usize, world: usize, port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llm"));
    c.current_dir(dir)
        .env("LLM_OFFLINE", "1")
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .args(["pretrain", "--config", "tiny.toml", "small.txt"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn weights(run: &Path) -> Vec<(String, llm_core::tch::Tensor)> {
    let mut w =
        llm_core::tch::Tensor::read_safetensors(run.join("model/model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn two_ranks_with_batch_b_equal_one_rank_with_batch_2b() {
    let tmp = setup();
    let dir = tmp.path();
    ok(rank(
        dir,
        0,
        1,
        free_port(),
        &["--out", "one", "--batch-size", "4"],
    )
    .output()
    .unwrap());
    let port = free_port();
    let second: Child = rank(dir, 1, 2, port, &["--out", "two", "--batch-size", "2"])
        .spawn()
        .unwrap();
    let first = ok(
        rank(dir, 0, 2, port, &["--out", "two", "--batch-size", "2"])
            .output()
            .unwrap(),
    );
    let second = ok(second.wait_with_output().unwrap());
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("data parallel: rank 0 of 2") && stdout.contains("gradient all-reduce"),
        "{stdout}"
    );
    assert!(second.stdout.is_empty(), "only rank 0 prints");

    let (one, two) = (metrics(&dir.join("one")), metrics(&dir.join("two")));
    assert_eq!(one.len(), two.len());
    assert!(one.len() > 20);
    for (a, b) in one.iter().zip(&two) {
        assert_eq!(a["global_step"], b["global_step"]);
        assert_eq!(
            a["tokens_seen"].as_i64().unwrap(),
            2 * b["tokens_seen"].as_i64().unwrap()
        );
        let (x, y) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!(
            (x - y).abs() <= 1e-6 * x.abs(),
            "step {}: loss {x} vs {y}",
            a["global_step"]
        );
    }
    for ((name, a), (_, b)) in weights(&dir.join("one"))
        .iter()
        .zip(&weights(&dir.join("two")))
    {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{name}: the weights differ by {diff}");
    }
}

#[test]
fn a_rank_that_dies_is_named_and_the_others_stop() {
    let tmp = setup();
    let dir = tmp.path();
    let port = free_port();
    let mut second = rank(dir, 1, 2, port, &["--out", "run", "--num-epochs", "1000"])
        .spawn()
        .unwrap();
    let first = rank(dir, 0, 2, port, &["--out", "run", "--num-epochs", "1000"])
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(dir.join("run/metrics.jsonl")).map_or(0, |t| t.lines().count())
        < 3
    {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    second.kill().unwrap(); // SIGKILL: no goodbye
    let _ = second.wait();
    let killed = Instant::now();
    let out = first.wait_with_output().unwrap();
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "rank 0 took {:?} to stop",
        killed.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        // "stopped after N of M collectives", or "stopped during collective M" when
        // the kill came after rank 1 had counted the collective it died in
        err.contains("error: rank 0: ") && err.contains("rank 1 stopped "),
        "{err}"
    );
    assert!(err.contains("timeout 20 s"), "{err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let tmp = setup();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = rank(tmp.path(), 0, 2, port, &["--out", "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port} is in use")) && err.contains("MASTER_PORT"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// A torchrun that can start (the project's venv holds libtorch without
/// CUDA's libraries, so its Python torch may not import; the benchmark
/// venv's does).
fn torchrun() -> Option<PathBuf> {
    let venvs = [
        std::env::var("LLM_RS_VENV").map(PathBuf::from).ok(),
        std::env::var("LLM_RS_CACHE")
            .map(|c| Path::new(&c).join("bench-venv"))
            .ok(),
    ];
    venvs
        .into_iter()
        .flatten()
        .map(|v| v.join("bin/torchrun"))
        .find(|t| {
            Command::new(t)
                .arg("--help")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

#[test]
fn torchrun_and_llm_launch_start_two_ranks() {
    let tmp = setup();
    let llm = env!("CARGO_BIN_EXE_llm");
    let train = [
        "pretrain",
        "--config",
        "tiny.toml",
        "small.txt",
        "--batch-size",
        "2",
    ];
    // our own launcher
    let out = ok(Command::new(llm)
        .current_dir(tmp.path())
        .env("LLM_OFFLINE", "1")
        .args([
            "launch",
            "--nproc-per-node",
            "2",
            "--master-port",
            &free_port().to_string(),
            "--",
        ])
        .args(train)
        .args(["--out", "launched"])
        .output()
        .unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("data parallel: rank 0 of 2"), "{stdout}");
    assert!(tmp
        .path()
        .join("launched/model/model.safetensors")
        .is_file());
    // PyTorch's
    let Some(torchrun) = torchrun() else {
        eprintln!("torchrun: skipped (no venv whose torch imports)");
        return;
    };
    let out = ok(Command::new(torchrun)
        .current_dir(tmp.path())
        .env("LLM_OFFLINE", "1")
        .env("OMP_NUM_THREADS", "1")
        .args(["--standalone", "--nproc_per_node=2", "--no-python", llm])
        .args(train)
        .args(["--out", "torchrun"])
        .output()
        .unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("data parallel: rank 0 of 2"), "{stdout}");
    let losses = |run: &str| -> Vec<f64> {
        metrics(&tmp.path().join(run))
            .iter()
            .map(|m| m["loss"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(
        losses("torchrun"),
        losses("launched"),
        "the same run, launched either way"
    );
}

/// Ranks stopped at a step (each rank agrees on it; rank 0 saves) and
/// resumed on the same number of ranks train on as if never stopped.
#[test]
fn two_ranks_stopped_and_resumed_continue_exactly() {
    let tmp = setup();
    let dir = tmp.path();
    let both = |args: &[&str]| {
        let port = free_port();
        let second = rank(dir, 1, 2, port, args).spawn().unwrap();
        let first = ok(rank(dir, 0, 2, port, args).output().unwrap());
        ok(second.wait_with_output().unwrap());
        first
    };
    both(&["--out", "whole", "--batch-size", "2"]);
    let out = both(&[
        "--out",
        "parts",
        "--batch-size",
        "2",
        "--stop-at-step",
        "13",
        "--checkpoint-every",
        "5",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped after step 13"));
    // `--resume` reads the run's settings; the data path is relative to the run's directory
    let port = free_port();
    let resume = |r: usize| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_llm"));
        c.current_dir(dir)
            .env("LLM_OFFLINE", "1")
            .env("RANK", r.to_string())
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .args(["pretrain", "--resume", "parts"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let second = resume(1).spawn().unwrap();
    ok(resume(0).output().unwrap());
    ok(second.wait_with_output().unwrap());
    let losses = |run: &str| -> Vec<f64> {
        metrics(&dir.join(run))
            .iter()
            .map(|m| m["loss"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(losses("parts"), losses("whole"));
    for ((name, a), (_, b)) in weights(&dir.join("parts"))
        .iter()
        .zip(&weights(&dir.join("whole")))
    {
        assert!(a.equal(b), "{name} differs after the resume");
    }
}

/// Ctrl-C in the terminal reaches every rank of `llm launch` (one process
/// group): they stop after the same step, rank 0 saves that step, and the
/// launcher waits for it and exits 130.
#[test]
fn ctrl_c_stops_every_launched_rank_at_one_step() {
    let tmp = setup();
    let dir = tmp.path();
    // setsid: a process group of its own, as a terminal's foreground job
    let mut launcher = Command::new("setsid")
        .current_dir(dir)
        .env("LLM_OFFLINE", "1")
        .arg(env!("CARGO_BIN_EXE_llm"))
        .args([
            "launch",
            "--nproc-per-node",
            "2",
            "--master-port",
            &free_port().to_string(),
            "--",
        ])
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
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(dir.join("run/metrics.jsonl")).map_or(0, |t| t.lines().count())
        < 3
    {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let group = format!("-{}", launcher.id());
    assert!(Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap()
        .success());
    let status = launcher.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut launcher.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("stopped after step "))
        .expect("the stop line");
    let step: i64 = line["stopped after step ".len()..]
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let info =
        llm_core::train::checkpoint::read_checkpoint_info(dir.join("run/checkpoint")).unwrap();
    assert_eq!(
        info.history.global_step + 1,
        step,
        "the checkpoint is of the step the ranks stopped at"
    );
}
