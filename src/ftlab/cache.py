"""``python -m ftlab.cache [--cache-dir DIR] ls|verify|gc``: inspect and prune the reuse cache.

    ls       keys with their kind, size, dates and config (``-v``: the full config, ``--json``);
             ``--run OVERRIDES``: that run's plan of steps instead, each with its entry (or why none)
    verify   re-check every entry against its manifest; damaged entries and orphaned build dirs
             (``tmp/<key>.<token>/`` of a killed builder) are listed (exit 1) and removed with
             ``--delete`` (the next run that needs them rebuilds them)
    gc       remove entries not used since ``--unused-since DATE`` and/or least recently used ones
             beyond ``--max-size SIZE``, plus builds abandoned by crashed jobs (``--dry-run``)

The cache dir defaults to what runs use: ``$FTLAB_CACHE_DIR``, else ``experiments/.cache``; point
``--cache-dir`` at another cache (``paths.cache_dir``) to manage that one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ftlab.core.errors import FtlabError, report_error
from ftlab.reuse.cache_admin import cmd_gc, cmd_ls, cmd_ls_run, cmd_verify, default_cache_dir, open_store


def run_plan(overrides: list[str]):
    """The plan of steps of the run these overrides compose (what ``python -m ftlab`` executes)."""
    # composition imports the config checks (torch, peft: ~4 s): only `ls --run` pays, not ls/verify/gc
    from ftlab.preflight.compose import compose_run
    from ftlab.reuse.handover import plan_for_run
    from ftlab.reuse.steps import as_plain

    cfg = compose_run(overrides)
    return cfg, plan_for_run(as_plain(cfg))  # the plan the composition checks computed


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ftlab.cache", description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="the cache (default: $FTLAB_CACHE_DIR, else paths.cache_dir's default)")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list entries")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("-v", "--verbose", action="store_true", help="print each entry's full config")
    ls.add_argument("--run", nargs="+", default=None, metavar="OVERRIDE",
                    help="list this run's plan of steps and their entries (overrides as for python -m ftlab; "
                         "the cache dir defaults to the run's paths.cache_dir)")
    ver = sub.add_parser("verify", help="check every entry's checksums")
    ver.add_argument("--delete", action="store_true", help="remove damaged entries")
    gc = sub.add_parser("gc", help="remove old or least recently used entries")
    gc.add_argument("--unused-since", default=None, metavar="DATE", help="remove entries not used since DATE")
    gc.add_argument("--max-size", default=None, metavar="SIZE", help="then remove LRU entries beyond SIZE")
    gc.add_argument("--dry-run", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg, steps = run_plan(args.run) if getattr(args, "run", None) else (None, None)
        if args.cache_dir is None:
            args.cache_dir = Path(str(cfg.paths.cache_dir)) if cfg is not None else default_cache_dir()
        store = open_store(args.cache_dir)
        if steps is not None:
            return cmd_ls_run(store, args, steps)
        return {"ls": cmd_ls, "verify": cmd_verify, "gc": cmd_gc}[args.command](store, args)
    except FtlabError as err:
        return report_error(err)


if __name__ == "__main__":
    sys.exit(main())
