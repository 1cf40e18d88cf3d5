"""Runs many ``chumon`` command lines fast: imports chumon once, then forks a child per command.

A fresh ``python -m chumon`` spends about 0.4 s importing before it reads its arguments; the
bad-input test runs hundreds of command lines, so it sends them here instead. This process is
single-threaded (so forking it is safe); each child sets its environment, points file
descriptors 1 and 2 at files of its own, runs ``chumon.cli.main(argv)`` exactly as
``python -m chumon`` does (``sys.exit(main())``, an uncaught exception printed as Python
prints it) and exits with its code. A child still running after the time-out is killed.

Protocol: one JSON object a line on stdin, ``{"argv": [...], "env": {...}, "timeout": s}``;
one a line on stdout, ``{"code": int | null, "stdout": str, "stderr": str}`` (code null: killed
at the time-out).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time

import chumon.cli


def child(argv: list[str], env: dict[str, str], out: int, err: int) -> None:
    os.environ.update(env)
    os.dup2(out, 1)
    os.dup2(err, 2)
    code: object = 0
    try:
        code = chumon.cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # what a real process would print before dying: the test looks for it
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def run(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, object]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            child(argv, env, out.fileno(), err.fileno())
        deadline = time.monotonic() + timeout
        code: int | None = None
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.005)
        out.seek(0)
        err.seek(0)
        return {
            "code": code,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        answer = run(request["argv"], request["env"], float(request.get("timeout", 60)))
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
