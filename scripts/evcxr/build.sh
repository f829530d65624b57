#!/usr/bin/env bash
# Build the evcxr Jupyter kernel with our patch (scripts/evcxr/*.patch) into
# $1 (the kernel's --root). Called by scripts/setup.sh.
#
# The patch (against evcxr 0.22.0, the library inside evcxr_jupyter) makes a
# panic or a `?` error in a cell an error of that cell: an `error` output and
# an error execute_reply, as evcxr already gives compile errors, so Run All
# stops there and nbclient / nbgrader see the failure. The message comes
# first (libtorch's C++ frames cut off); the backtrace goes to stderr only
# with RUST_BACKTRACE=1. The variables of earlier cells stay.
#
# A second patch (against evcxr_jupyter 0.22.0) gives the error execute_reply
# the ename, evalue and traceback the Jupyter protocol asks for (nbgrader's
# autograde reads them, and stopped with a KeyError without them).
#
# Both crates come from the crates.io registry (the download URL its index
# names), checked against their sha256 (those of evcxr_jupyter's Cargo.lock
# and crates.io), then evcxr_jupyter is built against the patched evcxr with
# its own Cargo.lock (--locked).
set -euo pipefail
root="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version=0.22.0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

dl="$(curl -fsSL https://index.crates.io/config.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["dl"])')"
fetch() {
    local name="$1" sha="$2" url
    case "$dl" in
        *"{crate}"*) url="${dl//\{crate\}/$name}"; url="${url//\{version\}/$version}" ;;
        *) url="$dl/$name/$version/download" ;;
    esac
    curl -fsSL "$url" -o "$work/$name.crate"
    echo "$sha  $work/$name.crate" | sha256sum -c --quiet -
    tar -xzf "$work/$name.crate" -C "$work"
}
fetch evcxr ee69caeeefc311959b85962458e370d8eccb165123edbc5270134aaee6d7ed80
fetch evcxr_jupyter 3ce0d7b3058f68a9673df4f1266b641942fea0ec131881d095306e509a382764

for p in "$here"/evcxr-$version-*.patch; do
    patch --quiet -p1 -d "$work/evcxr-$version" < "$p"
done
for p in "$here"/evcxr_jupyter-$version-*.patch; do
    patch --quiet -p1 -d "$work/evcxr_jupyter-$version" < "$p"
done
# evcxr_jupyter against the patched evcxr: a path dependency, and the lock
# entry without the registry's source and checksum
python3 - "$work/evcxr_jupyter-$version" <<'PY'
import sys, pathlib
d = pathlib.Path(sys.argv[1])
toml = (d / "Cargo.toml").read_text()
old = '[dependencies.evcxr]\nversion = "=0.22.0"\n'
assert old in toml, "evcxr_jupyter's Cargo.toml changed"
(d / "Cargo.toml").write_text(toml.replace(old, old + 'path = "../evcxr-0.22.0"\n'))
lock = (d / "Cargo.lock").read_text()
old = ('name = "evcxr"\nversion = "0.22.0"\nsource = "registry+https://github.com/rust-lang/crates.io-index"\n'
       'checksum = "ee69caeeefc311959b85962458e370d8eccb165123edbc5270134aaee6d7ed80"\n')
assert old in lock, "evcxr_jupyter's Cargo.lock changed"
(d / "Cargo.lock").write_text(lock.replace(old, 'name = "evcxr"\nversion = "0.22.0"\n'))
PY
cargo install --locked --quiet --path "$work/evcxr_jupyter-$version" --root "$root"
