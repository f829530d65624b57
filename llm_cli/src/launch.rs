//! `llm launch`: a local launcher for data-parallel training on one machine
//! (what `torchrun --standalone --nproc_per_node=N --no-python llm ...`
//! does, without Python): N copies of `llm` with the variables torchrun
//! sets, their exit watched.

use std::process::{Child, Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  llm launch --nproc-per-node 2 -- pretrain data/shakespeare --out runs/ddp --batch-size 4
  torchrun --standalone --nproc_per_node=2 --no-python llm pretrain data/shakespeare --out runs/ddp

Each process gets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1 and MASTER_PORT,
as torchrun sets them. Rank 0 prints; when a rank fails, the others are stopped and
the launcher exits with its status. Ctrl-C reaches every rank: they stop together
after the step, rank 0 saves a checkpoint. Across machines, use torchrun or SLURM
(README: More than one GPU or machine).")]
pub struct LaunchArgs {
    /// Processes (ranks) to start on this machine
    #[arg(long, default_value_t = 2)]
    nproc_per_node: usize,
    /// The port of the rendezvous store (rank 0 serves it)
    #[arg(long, default_value_t = 29500)]
    master_port: u16,
    /// The llm subcommand and its arguments, after `--`
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(args: LaunchArgs) -> Result<ExitCode> {
    if args.nproc_per_node == 0 {
        bail!("--nproc-per-node 0: at least 1");
    }
    let exe = std::env::current_exe().context("finding the llm binary")?;
    // the ranks get Ctrl-C from the terminal; the launcher waits for them
    let _ = ctrlc::set_handler(|| {});
    let world = args.nproc_per_node;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for rank in 0..world {
        let child = Command::new(&exe)
            .args(&args.command)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", args.master_port.to_string())
            .env(
                "OMP_NUM_THREADS",
                std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| {
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                    (cores / world).max(1).to_string()
                }),
            )
            .spawn()
            .with_context(|| format!("starting rank {rank}"))?;
        children.push((rank, child));
    }
    let mut failed: Option<(usize, i32)> = None;
    let mut interrupted = false;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait()? {
                Some(status) => {
                    let (rank, _) = children.remove(i);
                    let code = status.code().unwrap_or(1);
                    // stopped by Ctrl-C with the others: rank 0 may still be
                    // saving the checkpoint, so nobody is stopped
                    if code == i32::from(crate::run::INTERRUPTED) {
                        interrupted = true;
                    } else if !status.success() && failed.is_none() {
                        eprintln!("llm launch: rank {rank} exited with status {code}; stopping the others");
                        failed = Some((rank, code));
                        for (_, other) in &mut children {
                            let _ = other.kill();
                        }
                    }
                }
                None => i += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(match failed {
        Some((_, code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None if interrupted => ExitCode::from(crate::run::INTERRUPTED),
        None => ExitCode::SUCCESS,
    })
}
