#!/usr/bin/env python3
"""Execute the notebooks headless on the `llm-rust` kernel, one after another.

    run_notebooks.py --smoke [NB ...]   # small settings (LLM_SMOKE=1), outputs to a scratch dir
    run_notebooks.py --full  [NB ...]   # the notebooks' own settings, outputs written in place
    run_notebooks.py --prewarm          # compile llm_core once in a kernel build slot

A notebook fails when any cell has an `error` output, or when anything written to
stderr contains `panicked at` (a panic in an evcxr cell does not make the cell
fail, so nbconvert alone would pass it). Ends with a table of per-notebook
seconds and the line `notebooks: N passed, N failed`; exits 1 if any failed.
"""
import argparse
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "llm-rust"

# Appendices run where the book reads them: appendix E fine-tunes chapter 6's
# classifier (and needs notebook ch05b's checkpoint when GPT-2 cannot be had).
RUN_AS = {"appendix_e": "ch06z"}


def book_order(path):
    """Sort key: the file name, with an appendix placed after the chapter it builds on."""
    name = path.name.replace("_solutions.ipynb", ".ipynb~")  # a chapter's solutions right after it
    for prefix, place in RUN_AS.items():
        if name.startswith(prefix):
            return place + name
    return name


def problems(nb):
    """Every error output and every stderr output (a panic, or an error a cell
    returned with `?`), as (cell number, first line). A cell tagged
    `raises-exception` (an exercise's answer and check cells, unanswered in the
    chapter notebooks) is the other way round: it must fail."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            if not any(out.output_type == "error" for out in cell.get("outputs", [])):
                found.append((i, "an unanswered exercise cell passed (its check checks nothing?)"))
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                text = f"{out.get('ename', '')}: {out.get('evalue', '')}".strip()
                found.append((i, text or "error output"))
            elif out.output_type == "stream" and out.get("name") == "stderr":
                # a panic, or an error a cell returned with `?`: evcxr shows both only on stderr
                lines = [l for l in out.get("text", "").splitlines() if l.strip()]
                line = next((l for l in lines if "panicked at" in l), lines[0] if lines else "stderr output")
                found.append((i, f"stderr: {line.strip()}"))
    return found


def execute(path, out_path, timeout):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=timeout,
        startup_timeout=120,
        allow_errors=True,  # run to the end; we collect every failure below
        resources={"metadata": {"path": str(path.parent)}},  # cwd: so `:dep ... path = "../llm_core"` resolves
    )
    start = time.time()
    err = None
    try:
        client.execute()
    except Exception as e:  # kernel died, timeout, ...
        err = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    seconds = time.time() - start
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_path)
    found = problems(nb)
    if err:
        found.append((-1, err))
    return seconds, found


def prewarm():
    """Build the kernels' template slot (see scripts/llm-kernel): every new slot starts as its copy."""
    os.environ["LLM_KERNEL_SLOT"] = "template"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f':dep llm_core = {{ path = "{ROOT / "llm_core"}" }}'),
                nbformat.v4.new_code_cell('println!("{}", llm_core::tch::Tensor::from(1.0f32));')]
    scratch = ROOT / "target" / "notebooks-smoke"
    scratch.mkdir(parents=True, exist_ok=True)
    src = scratch / "prewarm.ipynb"
    nbformat.write(nb, src)
    seconds, found = execute(src, src, timeout=1800)
    for cell, text in found:
        print(f"  prewarm cell {cell}: {text}", file=sys.stderr)
    print(f"    kernel build template warmed in {seconds:.0f}s")
    return 1 if found else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--smoke", action="store_true", help="small settings, outputs to target/notebooks-smoke/")
    mode.add_argument("--full", action="store_true", help="full settings, outputs written back into the notebooks")
    mode.add_argument("--prewarm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=int, default=None, help="seconds per cell (default 900 smoke, 7200 full)")
    ap.add_argument("notebooks", nargs="*", help="default: every notebooks/*.ipynb")
    args = ap.parse_args()
    if args.prewarm:
        return prewarm()

    if args.smoke:
        os.environ["LLM_SMOKE"] = "1"
    else:
        os.environ.pop("LLM_SMOKE", None)
    timeout = args.timeout or (900 if args.smoke else 7200)
    paths = [pathlib.Path(p).resolve() for p in args.notebooks] or sorted(
        list(NOTEBOOKS.glob("*.ipynb")) + list((NOTEBOOKS / "solutions").glob("*.ipynb")), key=book_order)
    scratch = ROOT / "target" / "notebooks-smoke"

    rows = []
    for path in paths:
        out_path = scratch / path.name if args.smoke else path
        print(f"==> {path.name} ({'smoke' if args.smoke else 'full'})", flush=True)
        seconds, found = execute(path, out_path, timeout)
        for cell, text in found:
            where = f"cell {cell}" if cell >= 0 else "kernel"
            print(f"    FAIL {path.name} {where}: {text}", flush=True)
        print(f"    {'ok' if not found else 'FAILED'} in {seconds:.1f}s -> {out_path.relative_to(ROOT)}", flush=True)
        rows.append((path.name, seconds, not found))

    width = max([len(r[0]) for r in rows] + [8])
    print()
    print(f"{'notebook':<{width}}  {'seconds':>8}  result")
    for name, seconds, ok in rows:
        print(f"{name:<{width}}  {seconds:>8.1f}  {'ok' if ok else 'FAILED'}")
    passed = sum(ok for _, _, ok in rows)
    print(f"notebooks: {passed} passed, {len(rows) - passed} failed")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
