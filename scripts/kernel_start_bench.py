"""How long a classroom waits: N notebooks opened at the same time, each one's first cell.

    .venv/bin/python scripts/kernel_start_bench.py 10            # 10 kernels at once
    .venv/bin/python scripts/kernel_start_bench.py 3 --stagger 5 # one every 5 s
    .venv/bin/python scripts/kernel_start_bench.py 10 --one-by-one # each after the last one's first cell

Every kernel stays open until the end, so each holds its own build slot.

Each kernel runs the notebooks' first cell (`:dep llm_core`) and then one line
with a tensor. Times are from the kernel's start to the end of each cell.
Slots are claimed by scripts/llm-kernel; a new one is a copy of the template.
"""
import argparse
import sys
import threading
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

ROOT = Path(__file__).resolve().parent.parent
CELLS = [f':dep llm_core = {{ path = "{ROOT / "llm_core"}" }}',
         'println!("{}", llm_core::tch::Tensor::from(1.0f32) + 1.0);']


def run_one(i, delay, rows):
    time.sleep(delay)
    t0 = time.time()
    km, kc = start_new_kernel(kernel_name="llm-rust", startup_timeout=600)
    times, errors = [], []
    try:
        for code in CELLS:
            reply = kc.execute_interactive(code, timeout=900, output_hook=lambda msg: None)
            times.append(time.time() - t0)
            if reply["content"]["status"] != "ok":
                errors.append(reply["content"].get("evalue", "error"))
        rows[i] = (delay, times, errors)
    finally:
        rows.setdefault("kms", []).append((km, kc))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, nargs="?", default=3)
    ap.add_argument("--stagger", type=float, default=0.0, help="seconds between kernel starts")
    ap.add_argument("--one-by-one", action="store_true", help="open each when the previous one's first cell is done")
    args = ap.parse_args()
    rows = {}
    if args.one_by_one:
        for i in range(args.n):
            run_one(i, 0.0, rows)
    threads = [] if args.one_by_one else [
        threading.Thread(target=run_one, args=(i, i * args.stagger, rows)) for i in range(args.n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for km, kc in rows.get("kms", []):
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    print(f"{'kernel':>6}  {'opened at':>9}  {':dep cell done':>14}  {'2nd cell done':>13}")
    worst = 0.0
    for i in range(args.n):
        if i not in rows:
            print(f"{i + 1:>6}  failed to start")
            worst = float("inf")
            continue
        delay, times, errors = rows[i]
        print(f"{i + 1:>6}  {delay:>8.1f}s  {times[0]:>13.1f}s  {times[1]:>12.1f}s  {'; '.join(errors)}")
        worst = max(worst, times[0])
    print(f"slowest first cell: {worst:.1f} s")
    return 0 if worst != float("inf") and all(not rows[i][2] for i in range(args.n)) else 1


if __name__ == "__main__":
    sys.exit(main())
