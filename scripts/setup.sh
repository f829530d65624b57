#!/usr/bin/env bash
# One-time (then seconds) set-up: Python venv with Jupyter and libtorch, the
# evcxr Rust kernel, and the project's `llm-rust` kernelspec. Idempotent: each
# step checks a stamp and is skipped when nothing it depends on has changed.
#
#   LLM_TORCH=cuda scripts/setup.sh   # the full torch wheel (NVIDIA GPU machines)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LLM_RS_ROOT"
t0=$(date +%s)

die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# --- 0. tools we cannot install for you -------------------------------------
command -v cargo >/dev/null || die "cargo not found. Install Rust with rustup (https://rustup.rs), then run this again."
command -v python3 >/dev/null || die "python3 not found. Install Python $(sed -n 's/^ *- python=//p' environment.yml) or newer (3.10+)."
python3 - <<'PY' || die "python3 is older than 3.10; the torch 2.13 wheel needs 3.10+."
import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY
for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
        step "rustup component add $comp"
        rustup component add "$comp" || die "cargo $comp is missing and rustup could not add it"
        step_done
    fi
done

# --- 1. Python venv with the pins from environment.yml ----------------------
torch_version="$(python3 scripts/pins.py get torch)"
pins_hash="$( (cat environment.yml; echo "$LLM_TORCH") | sha256sum | cut -c1-16)"
stamp="$LLM_RS_VENV/.llm-rs-pins"
if [ "$(cat "$stamp" 2>/dev/null)" != "$pins_hash" ]; then
    step "python venv in $LLM_RS_VENV (torch $torch_version, variant: $LLM_TORCH)"
    if [ ! -x "$LLM_RS_VENV/bin/python" ]; then
        python3 -m venv "$LLM_RS_VENV" || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    pip=("$LLM_RS_VENV/bin/python" -m pip install --disable-pip-version-check -q)
    mapfile -t pins < <(python3 scripts/pins.py)
    others=(); cuda_libs=()
    for p in "${pins[@]}"; do
        case "$p" in
            torch==*) ;;
            nvidia-*) cuda_libs+=("$p") ;;
            *) others+=("$p") ;;
        esac
    done
    "${pip[@]}" "${others[@]}"
    if [ "$LLM_TORCH" = cuda ]; then
        # The full wheel with every CUDA library it depends on (~2.7 GB).
        "${pip[@]}" "torch==$torch_version" "${cuda_libs[@]}"
    else
        # Only libtorch is used: skip torch's 2.7 GB of CUDA wheels and add the two
        # CUDA runtime libraries libtorch_cpu.so links against. (`import torch` in
        # Python does not work in this venv; nothing here needs it.)
        "${pip[@]}" --no-deps "torch==$torch_version" "${cuda_libs[@]}"
    fi
    echo "$pins_hash" > "$stamp"
    step_done
fi
source scripts/env.sh   # picks up LIBTORCH now that the wheel is there
[ -n "${LIBTORCH:-}" ] || die "no torch/lib in $LLM_RS_VENV; remove $LLM_RS_VENV and run again"

# --- 2. the evcxr Jupyter kernel (a ~7 min build, cached outside the repo) ---
# evcxr_jupyter with our patch (scripts/evcxr/build.sh: errors end a cell)
if [ ! -x "$EVCXR_JUPYTER" ]; then
    step "build evcxr_jupyter $EVCXR_BUILD into $LLM_RS_CACHE (first time only, ~7-10 min)"
    bash scripts/evcxr/build.sh "$LLM_RS_CACHE/evcxr-$EVCXR_BUILD"
    step_done
fi

# --- 3. the project's kernelspec, inside the venv ---------------------------
spec_dir="$LLM_RS_VENV/share/jupyter/kernels/$KERNEL_NAME"
# evcxr links each cell against the toolchain's libstd-*.so. The relative rpath
# cargo writes into those libraries breaks for build dirs deep under $HOME, so
# the kernel finds libstd (and libtorch) through LD_LIBRARY_PATH instead.
rust_libdir="$(rustc --print target-libdir)"
mkdir -p "$spec_dir"
"$LLM_RS_VENV/bin/python" - "$spec_dir/kernel.json" <<PY
import json, sys
spec = {
    "argv": ["$LLM_RS_ROOT/scripts/llm-kernel", "--control_file", "{connection_file}"],
    "display_name": "Rust (llm-from-scratch-rs)",
    "language": "rust",
    "interrupt_mode": "message",
    "env": {
        "LIBTORCH": "$LIBTORCH",
        "LD_LIBRARY_PATH": "$LIBTORCH/lib:$rust_libdir",
        "LLM_RS_CACHE": "$LLM_RS_CACHE",
        "EVCXR_JUPYTER": "$EVCXR_JUPYTER",
    },
}
new = json.dumps(spec, indent=1) + "\n"
try:
    old = open(sys.argv[1]).read()
except OSError:
    old = None
if old != new:
    open(sys.argv[1], "w").write(new)
    print("==> kernelspec $KERNEL_NAME written to", sys.argv[1])
PY

# --- 3b. the class server's proxy (make classroom), from npm ------------------
proxy_pins="$(python3 scripts/pins.py npm)"
proxy_dir="$LLM_RS_CACHE/classroom-proxy"
if [ "$(cat "$proxy_dir/.pins" 2>/dev/null)" != "$proxy_pins" ]; then
    if command -v npm >/dev/null; then
        step "npm install $proxy_pins into $proxy_dir (JupyterHub's proxy, for make classroom)"
        mkdir -p "$proxy_dir"
        # shellcheck disable=SC2086
        npm install --prefix "$proxy_dir" --no-audit --no-fund --loglevel=error $proxy_pins >/dev/null
        echo "$proxy_pins" > "$proxy_dir/.pins"
        step_done
    else
        echo "setup: note: npm not found, so no class server (make classroom); install Node.js 18+ for it" >&2
    fi
fi

# --- 4. the warm kernel build template (the first :dep compiles tch, ~2-3 min) ---
# Every kernel's build slot starts as a copy of it (scripts/llm-kernel). Rebuilt
# when the toolchain, the kernel, the lock file or the checkout's place changes.
template_key="$( (rustc -V; echo "$EVCXR_BUILD $LLM_RS_ROOT"; cat Cargo.lock) | sha256sum | cut -c1-16)"
ready="$LLM_RS_CACHE/evcxr-slots/template/.ready"
if [ "${LLM_RS_PREWARM:-1}" = 1 ] && [ "$(cat "$ready" 2>/dev/null)" != "$template_key" ]; then
    step "warming the kernels' build template (compiles tch + llm_core for the notebooks, first time only)"
    "$LLM_RS_VENV/bin/python" scripts/run_notebooks.py --prewarm
    echo "$template_key" > "$ready"
    step_done
fi

printf 'setup: ready in %ss (venv %s, libtorch %s)\n' "$(( $(date +%s) - t0 ))" "$LLM_RS_VENV" "$LIBTORCH"
