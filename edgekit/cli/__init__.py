"""The ``edgekit`` command: a thin layer over the Python API that adds formatting only.

Each command calls a public function (``edgekit.Forge``, ``edgekit.dist``, ``edgekit.hub``,
``edgekit.demo``, ...) and formats what it returns. One module per command group:
``build`` (validate, schema, forge, build), ``iso``, ``dist`` (push, pull, referrers),
``hub`` (hub, token, hosts, cluster), ``demo``, ``simulate`` and ``plugins``; ``_common``
holds the root group, error handling, JSON output and progress bars.

Exit codes: 0 success, 1 failure, 2 usage or configuration error. Errors a user can cause
print a message (every problem, with its path) and never a traceback; ``EDGEKIT_DEBUG=1``
adds the traceback.
"""

from __future__ import annotations

import sys

import click

# Importing the command modules registers their commands on ``cli``.
from edgekit.cli import build, demo, disk, dist, hub, iso, plugins, rollouts, simulate  # noqa: F401
from edgekit.cli._common import cli, console, fail, fail_unexpected
from edgekit.errors import EdgekitError

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``edgekit`` command."""
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="edgekit", standalone_mode=False)
    except click.exceptions.Abort:
        console(stderr=True).print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except EdgekitError as exc:  # raised outside a command's own handler
        fail(exc, as_json="--json" in args)
    except KeyboardInterrupt:
        console(stderr=True).print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: one line and a hint, never a raw traceback
        fail_unexpected(exc, as_json="--json" in args)


if __name__ == "__main__":
    main()
