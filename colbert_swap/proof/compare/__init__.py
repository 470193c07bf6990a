"""Comparisons: per value (`comparators`), per run (`runs`), with per-dtype tolerances (`tolerances`)."""
