"""The one exception type of the project.

Every error a user can cause (bad file, bad flag, missing model) is raised as
``HBAFError`` with a message that names the problem *and* the fix. The command
line entry points catch it and print one line, no traceback, exit code 2.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from typing import Callable


class HBAFError(Exception):
    """A user-facing error: ``str(err)`` is one line saying what is wrong and what to do."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for every command line of the project: a bad flag is a user error, reported as
    one line (``HBAFError``, exit code 2 through ``cli_entry``) instead of the usage block.
    Subparsers inherit it (``add_subparsers`` passes this class on)."""

    def error(self, message: str) -> None:
        raise HBAFError(f"{message}; see `{self.prog} --help`")


def cli_entry(fn: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a ``main(argv)`` so user errors become one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return fn(argv)
        except HBAFError as err:
            msg = " ".join(str(err).split())
            print(f"error: {msg}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return 0
        except MemoryError:
            print("error: out of memory; use a smaller batch or shorter audio", file=sys.stderr)
            return 2
        except OSError as err:
            logging.getLogger("hbaf").debug("OS error", exc_info=True)
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            print(f"error: {err.strerror or err}{where}; check the path, permissions and free disk space", file=sys.stderr)
            return 2

    return wrapper
