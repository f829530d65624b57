# Sourced by the other scripts and the Makefile: where things live, and the
# environment that cargo, the Rust kernel and our binaries need.
# Every path can be overridden from the environment.

LLM_RS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LLM_RS_ROOT
# Caches that outlive a clone (the evcxr kernel binary, per-kernel build dirs, downloads).
export LLM_RS_CACHE="${LLM_RS_CACHE:-$HOME/.cache/llm-rs}"
# The project's Python venv (Jupyter + the torch wheel that carries libtorch).
export LLM_RS_VENV="${LLM_RS_VENV:-$LLM_RS_ROOT/.venv}"
# cpu: torch wheel without its 2.7 GB of CUDA wheels; cuda: the full wheel.
export LLM_TORCH="${LLM_TORCH:-cpu}"
export EVCXR_VERSION="0.22.0"
# evcxr with scripts/evcxr/*.patch (panics and `?` errors end a cell in an
# error); a new name whenever the patch changes, so an old build is not reused
export EVCXR_BUILD="$EVCXR_VERSION-cell-errors-2"
export EVCXR_JUPYTER="${EVCXR_JUPYTER:-$LLM_RS_CACHE/evcxr-$EVCXR_BUILD/bin/evcxr_jupyter}"
export KERNEL_NAME="llm-rust"

# libtorch lives inside the torch wheel: site-packages/torch/{include,lib}.
_llm_site="$(ls -d "$LLM_RS_VENV"/lib/python3*/site-packages 2>/dev/null | head -n1 || true)"
if [ -n "$_llm_site" ] && [ -d "$_llm_site/torch/lib" ]; then
    export LIBTORCH="$_llm_site/torch"
    case ":${LD_LIBRARY_PATH:-}:" in
        *":$LIBTORCH/lib:"*) ;;
        *) export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
fi
unset _llm_site

# Data: a local directory first (../shared/data beside a checkout), else the
# user cache, else a download from the file's public URL (see llm_core::data).
if [ -z "${LLM_DATA_DIR:-}" ] && [ -d "$LLM_RS_ROOT/../shared/data" ]; then
    LLM_DATA_DIR="$(cd "$LLM_RS_ROOT/../shared/data" && pwd)"
    export LLM_DATA_DIR
fi

# Print a step header and remember when it started; `step_done` prints its duration.
step() {
    _llm_step_name="$1"
    _llm_step_start=$(date +%s)
    printf '==> %s\n' "$1"
}
step_done() {
    printf '    done: %s (%ss)\n' "$_llm_step_name" "$(( $(date +%s) - _llm_step_start ))"
}
