"""Comparisons: per value (`comparators`: the typed `Status` of a result, and `COMPARATORS`, the registry an
artifact's facts choose from; its docstring says how to add one), per run (`runs`), with per-dtype tolerances
(`tolerances`)."""
