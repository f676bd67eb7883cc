"""``python -m sdbert.analysis.report <sweep dirs> [--out DIR]``."""

from sdbert.analysis.report.cli import main

raise SystemExit(main())
