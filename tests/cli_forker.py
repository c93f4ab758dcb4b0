"""Run ``modelport`` command lines in forked children of one interpreter that has imported the CLI already.

tests/test_cli_contract.py runs some two hundred short command lines; a fresh ``python -m modelport.cli`` for
each spends most of its time starting Python and importing the CLI. Here that is paid once: this process
imports ``modelport.cli`` and then, per request, forks a child that runs ``main()`` with the request's argv,
folder and environment, its stdout and stderr going to files, exactly as a new process would run it past
the imports. A child that outlives the request's timeout is killed by its alarm.

Protocol: one JSON object per line on stdin (``argv``, ``cwd``, ``env``, ``out``, ``err``, ``timeout``); one
JSON line ``{"rc": N}`` back on stdout per request, in order. EOF on stdin ends the process."""

from __future__ import annotations

import json
import os
import signal
import sys


def _child(request: dict) -> None:
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # stdin is the request pipe: a command must not read it
        for fd, path in ((1, request["out"]), (2, request["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.alarm(int(request["timeout"]))
        sys.argv = ["modelport", *request["argv"]]
        try:
            from modelport.cli import main

            main()
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
    except BaseException:  # as the interpreter would: the traceback on stderr, exit 1
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve() -> None:
    # Most commands import torch before they can fail; loading it once here (no thread is started by the
    # import) leaves each child only its own work. It is a base dependency, present on the default install.
    import torch  # noqa: F401

    import modelport.cli  # noqa: F401  (the import every child shares)

    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        replies.write(json.dumps({"rc": rc}) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve()
