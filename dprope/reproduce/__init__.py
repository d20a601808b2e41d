"""The paper's comparison at small scale, end to end: pre-train, analyse, extend, fine-tune, report."""

from dprope.reproduce.config import Reproduction
from dprope.reproduce.pipeline import Pipeline

__all__ = ["Pipeline", "Reproduction"]
