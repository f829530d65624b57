# JupyterHub for a class: `make classroom` (scripts/classroom.sh) starts it with this file.
#
# Two ways in, chosen by the environment:
#   CLASSROOM_USERS="alice,bob,carol"  the machine's own accounts (PAM): each student's server runs
#                                      as that user in their home. The hub must run as root.
#   CLASSROOM_PASSWORD=...             a lab session: any name with this one password; every server
#                                      runs as the account that started the hub, each with its own
#                                      home under $CLASSROOM_DIR/homes/<name>. No isolation between
#                                      students: for a supervised session on a machine of your own.
# Both: CLASSROOM_ADMINS (names that may manage the hub), CLASSROOM_IP (127.0.0.1), CLASSROOM_PORT
# (8000). Each student starts with a copy of the chapter notebooks in ~/llm-from-scratch (exercises
# unanswered, no solutions; an existing copy is never overwritten) and the Rust kernel, whose build
# slots start as copies of the warm template (scripts/llm-kernel).
import os
import pwd
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import classroom  # noqa: E402

c = get_config()  # noqa: F821
state = Path(os.environ["CLASSROOM_DIR"])
venv = Path(os.environ["LLM_RS_VENV"])
users = [u.strip() for u in os.environ.get("CLASSROOM_USERS", "").split(",") if u.strip()]
admins = {u.strip() for u in os.environ.get("CLASSROOM_ADMINS", "").split(",") if u.strip()}
as_root = os.geteuid() == 0

c.JupyterHub.ip = os.environ.get("CLASSROOM_IP", "127.0.0.1")
c.JupyterHub.port = int(os.environ.get("CLASSROOM_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("CLASSROOM_HUB_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ.get('CLASSROOM_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.command = [os.environ["CLASSROOM_PROXY"]]
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")

c.Spawner.cmd = [str(venv / "bin" / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab/tree/llm-from-scratch"
c.Spawner.start_timeout = 300  # a server's start; a kernel's first cell is separate
c.Spawner.http_timeout = 120
passed = ["LLM_RS_CACHE", "LLM_DATA_DIR", "LLM_OFFLINE", "LLM_RS_VENV", "LIBTORCH", "LD_LIBRARY_PATH"]
c.Spawner.environment = {k: os.environ[k] for k in passed if k in os.environ}
c.Spawner.environment["PATH"] = f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
c.Authenticator.admin_users = admins

if users:
    c.JupyterHub.authenticator_class = "pam"
    c.Authenticator.allowed_users = set(users) | admins
    # LocalProcessSpawner (the default): the server runs as the user, in their home. Each keeps
    # their own build slots; the teacher's warm template is read from LLM_RS_TEMPLATE. Each
    # account needs Rust (rustup) of its own, or read access to a shared CARGO_HOME/RUSTUP_HOME.
    c.Spawner.environment.pop("LLM_RS_CACHE", None)
    c.Spawner.environment["LLM_RS_TEMPLATE"] = str(Path(os.environ["LLM_RS_CACHE"]) / "evcxr-slots" / "template")
else:
    # every server has its own HOME; Rust stays the hub account's own
    for var, default in [("CARGO_HOME", ".cargo"), ("RUSTUP_HOME", ".rustup")]:
        c.Spawner.environment[var] = os.environ.get(var) or str(Path.home() / default)
    password = os.environ.get("CLASSROOM_PASSWORD", "")
    if len(password) < 8:
        sys.exit("classroom: set CLASSROOM_PASSWORD (8 characters or more), or CLASSROOM_USERS")
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = password
    c.Authenticator.allow_all = True
    c.JupyterHub.spawner_class = "simple"
    c.SimpleLocalProcessSpawner.home_dir_template = str(state / "homes" / "{username}")
    if as_root:
        c.Spawner.args = ["--allow-root"]


def home_of(spawner):
    if users:
        return Path(pwd.getpwnam(spawner.user.name).pw_dir)
    return Path(spawner.home_dir_template.format(username=spawner.user.name))


def give_notebooks(spawner):
    """The chapter notebooks in the student's home, once (their own work is never overwritten)."""
    home = home_of(spawner)
    dest = home / "llm-from-scratch"
    if dest.exists():
        return
    classroom.copy_for_students(dest)
    if users and as_root:
        account = pwd.getpwnam(spawner.user.name)
        for path in [dest, *dest.rglob("*")]:
            shutil.chown(path, account.pw_uid, account.pw_gid)


c.Spawner.pre_spawn_hook = give_notebooks
