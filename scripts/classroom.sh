#!/usr/bin/env bash
# `make classroom`: JupyterHub for a class on this machine (README, "Teaching with this").
#
#   CLASSROOM_PASSWORD=letmein-2026 make classroom          # a lab session: any name, one password
#   sudo CLASSROOM_USERS=alice,bob,carol make classroom     # the machine's accounts (PAM), as root
#
# Listens on http://127.0.0.1:8000 (CLASSROOM_IP, CLASSROOM_PORT); its state (database, cookie
# secret, the lab session's homes) lives in CLASSROOM_DIR (default target/classroom).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LLM_RS_ROOT"
export CLASSROOM_DIR="${CLASSROOM_DIR:-$LLM_RS_ROOT/target/classroom}"
export CLASSROOM_PROXY="${CLASSROOM_PROXY:-$LLM_RS_CACHE/classroom-proxy/node_modules/.bin/configurable-http-proxy}"
if [ ! -x "$CLASSROOM_PROXY" ]; then
    echo "classroom: error: no proxy at $CLASSROOM_PROXY; install Node.js 18+ with npm, then run make setup" >&2
    exit 1
fi
password="${CLASSROOM_PASSWORD:-}"
if [ -z "${CLASSROOM_USERS:-}" ] && [ "${#password}" -lt 8 ]; then
    echo "classroom: error: set CLASSROOM_PASSWORD (8 characters or more) for a lab session, or CLASSROOM_USERS=alice,bob for the machine's accounts" >&2
    exit 1
fi
mkdir -p "$CLASSROOM_DIR"
echo "classroom: http://${CLASSROOM_IP:-127.0.0.1}:${CLASSROOM_PORT:-8000} ($( [ -n "${CLASSROOM_USERS:-}" ] && echo "accounts: $CLASSROOM_USERS" || echo "any name, the shared password")); state in $CLASSROOM_DIR"
cd "$CLASSROOM_DIR"
exec "$LLM_RS_VENV/bin/jupyterhub" -f "$LLM_RS_ROOT/scripts/jupyterhub_config.py" "$@"
