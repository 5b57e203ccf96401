"""Stand-ins for the two non-tfllm programs the docs' shell blocks call.

`tensorboard` would serve forever, so the docs run checks instead that the
directory it is pointed at holds event files for it to show. `pip install` is
skipped: the suite already runs in the installed checkout, and the docs run
must not change the environment it is testing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def tensorboard() -> None:
    parser = argparse.ArgumentParser(prog="tensorboard")
    parser.add_argument("--logdir", required=True)
    args, _ = parser.parse_known_args()
    events = list(Path(args.logdir).rglob("events.out.tfevents.*"))
    if not events:
        sys.exit(f"tensorboard (docs stub): no event files under {args.logdir}")
    print(f"tensorboard (docs stub): {len(events)} event file(s) under {args.logdir}")


def pip() -> None:
    if sys.argv[1:2] != ["install"]:
        sys.exit(f"pip (docs stub): only `pip install` appears in the docs, got {sys.argv[1:]}")
    print(f"pip (docs stub): skipped {' '.join(sys.argv[1:])}")
