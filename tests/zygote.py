"""A pre-imported parent for the suite's `python -m idspam.run` processes (a zygote, as Android and the
multiprocessing forkserver do it).

Most of a short test run's time is the interpreter importing torch, transformers, Lightning, Hydra and datasets
(about 10 of its 12 s on the 2-core CI machine); the training itself takes a second. `run_module` runs
`python -m <module> <args>` as a process forked from one long-lived interpreter that has already imported them
and has run nothing: the child gets its own pid, environment, working directory, stdin (/dev/null), stdout and
stderr, and exits through the interpreter's normal shutdown (atexit handlers, thread joins), so exit codes,
signals (a child killed by SIGKILL returns -9), files and output are those of a fresh process.

A fresh interpreter is used instead (never the zygote) when the run's environment differs from the zygote's in a
variable that the pre-imported libraries read at import time (HF_*, TRANSFORMERS_*, TORCH*, OMP_*, ...), when
IDSPAM_TEST_FRESH=1, or when the zygote cannot start. Tests of start-up itself (import time, `--help`, a wheel
installed elsewhere) start their own interpreters and do not come here.

The server side: `python -m tests.zygote` imports, checks that no thread was started (fork keeps only the calling
thread), prints "ready", then serves one JSON request per line on stdin, answering one JSON line on stdout.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREIMPORT = ("torch", "numpy", "transformers", "peft", "lightning", "lightning.pytorch", "torchmetrics", "hydra",
             "hydra.utils", "omegaconf", "datasets", "safetensors", "idspam.runner.app", "idspam.runner.train",
             "idspam.runner.compose", "idspam.methods", "idspam.model", "idspam.families",
             "transformers.models.roberta.modeling_roberta", "transformers.models.bert.modeling_bert",
             "transformers.models.llama.modeling_llama", "transformers.models.gpt2.modeling_gpt2")
# Read at import time by the pre-imported libraries (or the interpreter): a run that sets one differently from
# the zygote's environment gets a fresh interpreter.
IMPORT_TIME_ENV = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TORCH", "PYTORCH", "OMP_", "MKL_", "PYTHON", "CUDA",
                   "LD_", "DATASETS", "TOKENIZERS", "LIGHTNING", "PL_", "HYDRA", "KMP_", "OPENBLAS")


# ----------------------------------------------------------------------------------------------- server side
def _child(request: dict) -> None:
    """In the forked child: become `python -m <module> <args>` and exit the way the interpreter would."""
    import runpy

    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in (null, out, err):
        os.close(fd)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = ["-m", *request["args"]]
    # Run as `python -m` would: the module is __main__ with its spec (Lightning's process launcher re-runs
    # `python -m <spec name>`); SystemExit and uncaught exceptions end the interpreter as usual.
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


def serve() -> None:
    import importlib

    sys.path.insert(0, str(ROOT))
    for name in PREIMPORT:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional package just means a colder start
            pass
    if threading.active_count() != 1:  # fork keeps only the calling thread: never fork a threaded process
        print(json.dumps({"ready": False, "why": f"{threading.active_count()} threads after imports"}), flush=True)
        return
    protocol_out = sys.stdout
    print(json.dumps({"ready": True, "pid": os.getpid()}), file=protocol_out, flush=True)
    exited: dict[int, int] = {}

    def reap(pid: int, block: bool) -> int | None:
        if pid in exited:
            return exited[pid]
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        if done:
            exited[pid] = os.waitstatus_to_exitcode(status)
        return exited.get(pid)

    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op", "run")
        if op in ("run", "spawn"):
            pid = os.fork()
            if pid == 0:
                _child(request)  # returns only when the module returns: exit 0 through the normal shutdown
                raise SystemExit(0)
            if op == "spawn":
                answer = {"pid": pid}
            else:
                answer = {"pid": pid, **_wait(reap, pid, request["timeout"], kill=True)}
        elif op == "poll":
            answer = {"rc": reap(request["pid"], block=False)}
        else:  # wait
            answer = _wait(reap, request["pid"], request["timeout"], kill=False)
        print(json.dumps(answer), file=protocol_out, flush=True)


def _wait(reap, pid: int, timeout: float | None, kill: bool) -> dict:
    """The child's exit code, or on timeout (killing it when `kill`) {"rc": None, "timeout": True}."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while (rc := reap(pid, block=False)) is None:
        if deadline is not None and time.monotonic() > deadline:
            if not kill:
                return {"rc": None, "timeout": True}
            os.kill(pid, 9)
            reap(pid, block=True)
            return {"rc": -9, "timeout": True}
        time.sleep(0.01)
    return {"rc": rc, "timeout": False}


# ----------------------------------------------------------------------------------------------- client side
class _Zygote:
    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.failed = False
        self.lock = threading.RLock()

    def start(self) -> bool:
        if self.proc is not None and self.proc.poll() is None:
            return True
        if self.failed:
            return False
        self.env = dict(os.environ)
        self.log = Path(tempfile.gettempdir()) / f"idspam-zygote-{os.getpid()}.log"
        log = open(self.log, "w")
        atexit.register(self.stop)
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.zygote"], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True, env=self.env)
        ready = json.loads(self.proc.stdout.readline() or '{"ready": false}')
        if not ready.get("ready"):
            self.failed = True
            self.proc.kill()
            return False
        return True

    def stop(self) -> None:
        """At the test worker's exit: end the zygote (it reads EOF) and remove its log."""
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.unlink(missing_ok=True)

    def usable(self, env: dict[str, str]) -> bool:
        if os.environ.get("IDSPAM_TEST_FRESH") == "1" or not self.start():
            return False
        changed = {k for k in env.keys() | self.env.keys() if env.get(k) != self.env.get(k)}
        if env.get("PYTHONPATH") == str(ROOT):  # the zygote has the checkout on sys.path already
            changed.discard("PYTHONPATH")
        return not any(k.upper().startswith(IMPORT_TIME_ENV) for k in changed)

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def run(self, module: str, args: list[str], env: dict[str, str], cwd: str, timeout: float):
        with tempfile.TemporaryDirectory(prefix="idspam-zygote-") as tmp:
            answer = self.ask({"op": "run", "module": module, "args": list(args), "env": env, "cwd": cwd,
                               "timeout": timeout, "stdout": f"{tmp}/out", "stderr": f"{tmp}/err"})
            out, err = Path(f"{tmp}/out").read_text(errors="replace"), Path(f"{tmp}/err").read_text(errors="replace")
        cmd = [sys.executable, "-m", module, *args]
        if answer["timeout"]:
            raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err)
        return subprocess.CompletedProcess(cmd, answer["rc"], out, err)


class Forked:
    """The part of `subprocess.Popen` the tests use, for a process forked from the zygote: pid, poll, wait,
    send_signal, kill, communicate (its stdout and stderr, text)."""

    def __init__(self, zygote: _Zygote, cmd: list[str], **request):
        self.zygote, self.args, self.returncode = zygote, cmd, None
        self.tmp = tempfile.TemporaryDirectory(prefix="idspam-zygote-")
        self.out, self.err = f"{self.tmp.name}/out", f"{self.tmp.name}/err"
        with zygote.lock:
            self.pid = zygote.ask({"op": "spawn", **request, "stdout": self.out, "stderr": self.err})["pid"]

    def poll(self) -> int | None:
        if self.returncode is None:
            with self.zygote.lock:
                self.returncode = self.zygote.ask({"op": "poll", "pid": self.pid})["rc"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            with self.zygote.lock:
                answer = self.zygote.ask({"op": "wait", "pid": self.pid, "timeout": timeout})
            if answer["timeout"]:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = answer["rc"]
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(9)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return Path(self.out).read_text(errors="replace"), Path(self.err).read_text(errors="replace")


_ZYGOTE = _Zygote()


def run_module(module: str, *args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """`subprocess.run([python, -m, module, *args], capture_output=True, text=True)` with the environment `env`
    (the whole environment, default this process's), forked from the pre-imported zygote where that is exact."""
    env = dict(os.environ if env is None else env)
    cwd = str(cwd or os.getcwd())
    with _ZYGOTE.lock:
        if _ZYGOTE.usable(env):
            return _ZYGOTE.run(module, list(args), env, cwd, timeout)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def start_module(module: str, *args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None):
    """`subprocess.Popen([python, -m, module, *args], stdout=PIPE, stderr=PIPE, text=True)` forked from the zygote
    where that is exact (see run_module): a `Forked` (pid, poll, wait, send_signal, kill, communicate), else the
    Popen."""
    env = dict(os.environ if env is None else env)
    cwd = str(cwd or os.getcwd())
    with _ZYGOTE.lock:
        usable = _ZYGOTE.usable(env)
    if usable:
        return Forked(_ZYGOTE, [sys.executable, "-m", module, *args], module=module, args=list(args), env=env,
                      cwd=cwd)
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=cwd)


if __name__ == "__main__":
    serve()
