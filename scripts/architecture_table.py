"""Write README.md's "Architectures" table: packing on every causal-LM model type transformers ships.

    python scripts/architecture_table.py          # rebuilds the matrix (196 tiny models: 6 min 54 s on 2 shared CPU cores)

Each row comes from ``ftlab.training.packing_matrix.outcome`` (a tiny random model per model type);
``tests/training/test_packing_architectures.py`` checks that the table in README.md is current.
"""

from __future__ import annotations

import sys
from pathlib import Path

from transformers.utils import logging as hf_logging

from ftlab.training.packing_matrix import architectures, outcome, render_table, replace_table

README = Path(__file__).resolve().parents[1] / "README.md"


def main() -> int:
    hf_logging.set_verbosity_error()  # tiny configs make transformers warn about their sizes
    outcomes = [outcome(t) for t in architectures()]
    wrong = [o.model_type for o in outcomes if o.status == "WRONG"]
    README.write_text(replace_table(README.read_text(), render_table(outcomes)))
    print(f"wrote {len(outcomes)} rows to {README}" + (f"; WRONG (packing not exact): {wrong}" if wrong else ""))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
