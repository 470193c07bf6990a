"""One module per `task=`; each exposes `run(cfg) -> int` (the exit status)."""
