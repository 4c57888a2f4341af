"""Command line: ``python -m gradlab <command>`` (also installed as ``gradlab``).

A thin dispatcher: each subcommand parses its flags here and calls a library
function, imported only when that subcommand runs. ``sweep`` and
``sweep-length`` hand their arguments to :mod:`gradlab.scripts`, whose parsers
(every config option is a flag) are built, with torch imported, only then.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gradlab.sweep.workers import exit_quickly


def _figures(args: argparse.Namespace) -> int:
    from gradlab.analysis.commands import figures

    formats = [fmt.strip() for fmt in args.formats.split(",") if fmt.strip()]
    out = args.out
    if out is None:
        if len(args.runs_dir) > 1:
            print("gradlab figures: error: several runs directories have no one default output folder; "
                  "give --out", file=sys.stderr)
            return 2
        out = Path(args.runs_dir[0]) / "figures"
    figures(args.runs_dir, out, formats=formats, dpi=args.dpi, n_resamples=args.resamples, seed=args.seed,
            overwrite=args.overwrite, every_configuration=args.all_figures, jobs=args.jobs)
    return 0


def _processes(text: str) -> int:
    """``--jobs``: a whole number of processes, at least 1."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (1 draws in one process), got {count}")
    return count


def _inspect(args: argparse.Namespace) -> int:
    from gradlab.analysis.commands import inspect

    inspect(args.runs_dir, rows=args.rows)
    return 0


#: Commands that train, by name: (help, the function that parses their arguments and runs them).
SWEEPS: dict[str, str] = {
    "sweep": "train and record a sweep of cells x options x seeds (experiments/compare_cells.py; "
             "gradlab sweep --help lists every flag)",
    "sweep-length": "sweep the sequence length T (experiments/sequence_length.py; gradlab sweep-length --help)",
}


def _sweep(command: str, argv: Sequence[str]) -> int:
    from gradlab.scripts import compare_cells, sequence_length

    run = compare_cells if command == "sweep" else sequence_length
    return run(list(argv), prog=f"gradlab {command}")


def build_parser() -> argparse.ArgumentParser:
    """The ``gradlab`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="gradlab", description="Gradient dynamics in recurrent networks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in SWEEPS.items():  # listed here; main() hands their arguments to their own parsers
        commands.add_parser(name, help=help_text, add_help=False)

    figures = commands.add_parser(
        "figures", help="regenerate every figure and the findings report from saved runs (no training)"
    )
    figures.add_argument("runs_dir", nargs="+", metavar="RUNS_DIR",
                         help="a sweep folder (<sweep>/<run_id>/...) or a folder of sweeps; several allowed")
    figures.add_argument("--out", default=None,
                         help="output folder (default: RUNS_DIR/figures, beside the runs it draws)")
    figures.add_argument("--overwrite", action="store_true",
                         help="replace a findings report in the output folder that other sweeps made, and its "
                              "figures (without it such a report is refused)")
    figures.add_argument("--formats", default="png,pdf",
                         help="comma-separated figure formats: png, pdf, svg (default: png,pdf)")
    figures.add_argument("--dpi", type=int, default=200, help="resolution of PNG figures (default: 200)")
    figures.add_argument("--all-figures", action="store_true",
                         help="also draw every configuration's own figures (gradient profiles, curves, gates ... "
                              "of each sweep and speaker fold; hundreds for the controlled sweeps); by default "
                              "only the answers' and the dynamics figures")
    figures.add_argument("--resamples", type=int, default=2000,
                         help="resamples of the stratified bootstrap behind the interquartile-mean accuracies "
                              "(every other interval is a t interval over seeds; default: 2000)")
    figures.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default: 0)")
    figures.add_argument("--jobs", type=_processes, default=None, metavar="N",
                         help="processes that draw the figures while the report is built (default: every available "
                              "CPU; 1 draws them one after another in one process); the output is the same")
    figures.set_defaults(handler=_figures)

    inspect = commands.add_parser("inspect", help="print a sweep's summary table and the head of its gradient frame")
    inspect.add_argument("runs_dir", nargs="+", metavar="RUNS_DIR",
                         help="a sweep folder or a folder of sweeps; several allowed")
    inspect.add_argument("--rows", type=int, default=5, help="rows of the gradient frame to print (default: 5)")
    inspect.set_defaults(handler=_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    2 for bad input (a missing or empty runs directory, a report that other sweeps made), 1 for a failure of
    the disk; either is one line without the usage, which argparse prints only for a wrong flag.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SWEEPS:
        return _sweep(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:  # `gradlab inspect ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error as Python flushes stdout
        return 0
    except Exception as error:
        from gradlab.analysis.commands import ReportExistsError
        from gradlab.analysis.load import RunsDirError

        if isinstance(error, (RunsDirError, ReportExistsError)):
            print(f"gradlab {args.command}: error: {error}", file=sys.stderr)
            return 2
        if isinstance(error, OSError):  # a full or read-only disk, an unreadable file: the message names it
            print(f"gradlab {args.command}: error: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    exit_quickly(main)  # sys.exit(main()), without tearing torch and pandas down (0.6-0.9 s)
