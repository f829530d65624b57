#!/usr/bin/env python3
"""Read the Python pins from environment.yml (no PyYAML needed).

    python3 scripts/pins.py            # every pip pin, one `name==version` a line
    python3 scripts/pins.py python     # the python version (e.g. 3.11)
    python3 scripts/pins.py get torch  # one pin's version
    python3 scripts/pins.py bench      # the benchmark-only pins (`# bench:` lines), with pip flags
    python3 scripts/pins.py npm        # the Node packages (`# npm:` lines), as name@version

environment.yml is the one list of Python pins: the set-up script installs exactly
what this prints, so conda users and pip users get the same versions.
"""
import pathlib
import re
import sys

ENV_FILE = pathlib.Path(__file__).resolve().parent.parent / "environment.yml"


def read(path=ENV_FILE):
    python = None
    pins = []
    in_pip = False
    pip_indent = None
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if in_pip and indent <= pip_indent:
            in_pip = False
        if item == "- pip:":
            in_pip, pip_indent = True, indent
            continue
        if in_pip:
            m = re.fullmatch(r"-\s+([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", item)
            if not m:
                sys.exit(f"{path}:{lineno}: pip entries must be pinned as `- name==version`, got {item!r}")
            pins.append((m.group(1), m.group(2)))
            continue
        m = re.fullmatch(r"-\s+python=([0-9.]+)", item)
        if m:
            python = m.group(1)
    if python is None:
        sys.exit(f"{path}: no `- python=X.Y` dependency")
    return python, pins


def read_bench(path=ENV_FILE):
    """The `# bench: name==version [pip flags]` lines: reference code that only
    `make bench` installs, into its own venv."""
    pins = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        m = re.fullmatch(r"\s*#\s*bench:\s*(.*?)\s*", raw)
        if not m:
            continue
        parts = m.group(1).split()
        pin = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", parts[0]) if parts else None
        if not pin or any(not f.startswith("--") for f in parts[1:]):
            sys.exit(f"{path}:{lineno}: bench pins must read `# bench: name==version [--flag ...]`, got {raw!r}")
        pins.append((pin.group(1), pin.group(2), parts[1:]))
    return pins


def read_npm(path=ENV_FILE):
    """The `# npm: name@version` lines: Node packages (the class server's proxy)."""
    pins = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        m = re.fullmatch(r"\s*#\s*npm:\s*(.*?)\s*", raw)
        if not m:
            continue
        if not re.fullmatch(r"[a-z0-9@/._\-]+@[0-9][A-Za-z0-9.+\-]*", m.group(1)):
            sys.exit(f"{path}:{lineno}: npm pins must read `# npm: name@version`, got {raw!r}")
        pins.append(m.group(1))
    return pins


def main(argv):
    python, pins = read()
    if argv[1:] == ["npm"]:
        print("\n".join(read_npm()))
        return
    if argv[1:] == ["bench"]:
        for name, version, flags in read_bench():
            print(" ".join([f"{name}=={version}", *flags]))
        return
    if argv[1:] == ["python"]:
        print(python)
    elif len(argv) == 3 and argv[1] == "get":
        for name, version in pins:
            if name.lower() == argv[2].lower():
                print(version)
                return
        sys.exit(f"{ENV_FILE}: no pin for {argv[2]}")
    elif len(argv) == 1:
        for name, version in pins:
            print(f"{name}=={version}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
