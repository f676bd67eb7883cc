"""Strategies defined outside the ``sdbert`` package, as a researcher's own module would."""
