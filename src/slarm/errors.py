"""How a slarm command ends: the errors a user can act on, each carrying its exit status, and
the one place (run_command) that turns them into a message and that status for all three
commands.

    0  done
    1  failed (SlarmError): the work was tried and did not succeed (a disk, a device, the Hub)
    2  refused before any work (Refused, and click's own usage errors): fix the command or config
    130 interrupted (Interrupted, Ctrl-C, SIGTERM, SIGHUP)

The library raises these; only run_command prints them. Any other exception is a bug of ours:
it still ends as status 1 with its one-line text, never as a traceback.
"""

from __future__ import annotations

import logging
import os
import sys

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class SlarmError(Exception):
    """The work failed; the text says what happened and what to do (it is the whole message).
    `shown`: the command has said it already, in its place among its other lines."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str = "", *, shown: bool = False):
        super().__init__(message)
        self.shown = shown


class Refused(SlarmError):
    """Refused before any work: an argument, a config, a dataset that differs, another run."""

    exit_code = EXIT_USAGE


class Interrupted(SlarmError):
    """Stopped by the user (Ctrl-C, SIGTERM); the text says what state the work was left in."""

    exit_code = EXIT_INTERRUPTED


def run_command(command) -> None:
    """Run a slarm click command and exit with its status (above): a SlarmError prints as
    "error: ..." on stderr; click's usage errors as click prints them; Ctrl-C as "interrupted"
    (click would say "Aborted!" and exit 1). The process exits at once, without Python's
    teardown: the command has closed its files by then, and the teardown of what it imported
    (torch, rerun-sdk) only costs time, or waits on a Rerun viewer that died."""
    status = exit_status(command)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(status)


def exit_status(command, args: list[str] | None = None) -> int:
    """Run the click command (with `args`, or the command line's) and return its exit status,
    having printed what ended it."""
    import click

    try:
        status = command.main(args, standalone_mode=False)
        return status if isinstance(status, int) else EXIT_OK
    except SlarmError as e:
        if not e.shown:
            click.echo(f"error: {e}", err=True)
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_FAILURE if e.code else EXIT_OK
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("error: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug of ours: one line, not a traceback
        text = (str(e).strip() or type(e).__name__).splitlines()[0]
        click.echo(f"error: {type(e).__name__}: {text} (a bug in slarm: please report it)", err=True)
        return EXIT_FAILURE
