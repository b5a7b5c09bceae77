"""The recipes' command-line layer: one-line errors, ``--debug`` tracebacks, out_dir safety.

A recipe ends with::

    if __name__ == "__main__":
        run(main)

and :func:`run` turns a set-up mistake (a bad config value, a missing dataset folder, an out_dir that
already holds a run...) into one ``error: ...`` line on stderr and exit status 2, instead of a
traceback. ``--debug`` on the command line or ``WARPADAPT_DEBUG=1`` in the environment shows the
full traceback. Failures during training (``RuntimeError``, ``FloatingPointError``, Ctrl-C) are
never shortened. :func:`check_out_dir` refuses to write into an out_dir that already holds a run
unless ``resume=true`` or ``overwrite=true`` says what to do with it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["ConfigError", "run", "check_out_dir", "debug_enabled", "USER_ERRORS", "RUN_FILES",
           "RUN_MARKERS", "DEBUG_ENV"]

#: The environment variable that asks for full tracebacks (any value but "" and "0").
DEBUG_ENV = "WARPADAPT_DEBUG"
#: The command-line flag that asks for full tracebacks (removed before ``main`` sees argv).
DEBUG_FLAG = "--debug"
#: Files whose presence means an out_dir holds a run: it trained (a config.yaml alone is a start that
#: failed before its first logged step, e.g. on a wrong data.root; starting again replaces it).
RUN_MARKERS = ("last.pt", "final.json", "metrics.jsonl")
#: The files a recipe writes in out_dir; ``overwrite=true`` deletes these (and only these).
RUN_FILES = ("last.pt", "final.json", "metrics.jsonl", "curves.png", "predictions.png", "config.yaml",
             "static_prior.npz")


class ConfigError(ValueError):
    """A configuration mistake (a ``ValueError``: :func:`run` prints it as one ``error:`` line).

    >>> isinstance(ConfigError("config: train.iters: expected an int >= 1, got 0"), ValueError)
    True
    """


#: The exception types :func:`run` reports as one line (mistakes in config / data / model set-up).
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError)


def debug_enabled(argv: Sequence[str] = ()) -> bool:
    """True if ``--debug`` is in ``argv`` or ``$WARPADAPT_DEBUG`` is set to a value other than "" / "0".

    >>> debug_enabled(["train.iters=3", "--debug"])
    True
    """
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        # str(KeyError("x")) is "'x'": keep a sentence as is, name the type for a bare key
        text = exc.args[0]
        return text if " " in text.strip() else f"KeyError: {text!r}"
    text = str(exc)
    return text if text.strip() else type(exc).__name__


def run(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> Any:
    """Call ``main(argv)`` the way a recipe's ``__main__`` should; return what it returns.

    Args:
        main: the recipe's ``main(argv: list[str])``.
        argv: the command line without the program name; None: ``sys.argv[1:]``. ``--debug`` is
            removed before ``main`` sees it.

    Behaviour:
        - ``--debug`` in argv, or ``WARPADAPT_DEBUG`` set (not "" / "0"): exceptions propagate with
          their full traceback.
        - otherwise ``ValueError``, ``TypeError``, ``FileNotFoundError``, ``FileExistsError`` and
          ``KeyError`` (config / data / model set-up mistakes) print ONE ``error: <message>  (--debug
          or WARPADAPT_DEBUG=1 shows the traceback)`` to stderr and raise ``SystemExit(2)``; a
          message spanning lines is printed as is after the ``error:`` prefix.
        - anything else (``RuntimeError``, ``FloatingPointError``, ``KeyboardInterrupt``,
          ``SystemExit`` from ``--help``...) propagates unchanged.

    >>> def main(argv):
    ...     if "train.iters=0" in argv:
    ...         raise ValueError("config: train.iters: expected an int >= 1, got 0")
    ...     return argv
    >>> run(main, ["train.iters=3", "--debug"])
    ['train.iters=3']
    >>> import contextlib, io
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     run(main, ["train.iters=0"])
    Traceback (most recent call last):
    ...
    SystemExit: 2
    >>> print(err.getvalue().strip())
    error: config: train.iters: expected an int >= 1, got 0  (--debug or WARPADAPT_DEBUG=1 shows the traceback)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    if debug:
        return main(argv)
    try:
        return main(argv)
    except USER_ERRORS as exc:
        print(f"error: {_message(exc)}  (--debug or {DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(2) from None


def check_out_dir(out_dir: str | os.PathLike, *, resume: bool, overwrite: bool) -> bool:
    """Decide what happens to an out_dir before a run writes into it; True: continue its checkpoint.

    An out_dir "holds a run" if it contains ``last.pt``, ``final.json`` or ``metrics.jsonl``
    (:data:`RUN_MARKERS`).

    Args:
        out_dir: the run folder (it need not exist; it is not created here).
        resume: the config's ``resume``: continue from ``out_dir/last.pt`` when it exists.
        overwrite: the config's ``overwrite``: delete the run files (:data:`RUN_FILES`) of a run held
            in out_dir and start afresh; other files are left alone.

    Returns:
        True when ``resume`` is set and ``out_dir/last.pt`` exists (the recipe loads it), else False
        (start from step 0; ``resume`` without a checkpoint prints a line saying so).

    Raises:
        ValueError: ``resume`` and ``overwrite`` both true.
        FileExistsError: out_dir holds a run and neither is true, or out_dir is a file.

    Under DDP call it on rank 0 before any rank writes (deletions tolerate files already gone).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> check_out_dir(d, resume=False, overwrite=False)          # empty: a new run
    False
    >>> _ = (d / "metrics.jsonl").write_text("{}\\n"); _ = (d / "notes.txt").write_text("mine")
    >>> check_out_dir(d, resume=False, overwrite=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: out_dir: ... already holds a run (config.yaml, last.pt ...); pass resume=true ...
    >>> check_out_dir(d, resume=False, overwrite=True), sorted(p.name for p in d.iterdir())
    (False, ['notes.txt'])
    >>> _ = (d / "last.pt").write_bytes(b"")
    >>> check_out_dir(d, resume=True, overwrite=False)           # continue from last.pt
    True
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise ValueError("config: resume=true and overwrite=true: pick one (resume continues the run in "
                         f"out_dir {out}, overwrite deletes its files and starts afresh)")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out_dir: {out_dir} is a file, not a folder; pass another out_dir")
    holds_run = out.is_dir() and any((out / name).is_file() for name in RUN_MARKERS)
    if holds_run and not (resume or overwrite):
        raise FileExistsError(f"out_dir: {out_dir} already holds a run (config.yaml, last.pt ...); pass "
                              "resume=true to continue it, overwrite=true to start afresh, or another out_dir")
    if overwrite:
        if holds_run:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        return False
    if resume:
        checkpoint = out / "last.pt"
        if checkpoint.is_file():
            return True
        print(f"resume=true but no checkpoint at {checkpoint}: starting from step 0")
    return False
