"""The drafting pipeline: pure, staged, the only code that talks to (or stands in for) a
model. ``run(spec, values, engine=...) -> DraftResult``; see run.py for the stages."""
from .run import run
from .types import DraftResult

__all__ = ["DraftResult", "run"]
