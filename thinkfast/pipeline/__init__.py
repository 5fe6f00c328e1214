"""`thinkfast run`: the whole claim in one command.

teacher -> convert (hybrid, pure) -> distil -> [SFT] -> speed -> sample -> grade/score -> plots -> report,
each stage cached on disk so a rerun or a resumed run skips what is done.
"""

from thinkfast.pipeline.config import RunConfig, StudentRun
from thinkfast.pipeline.runner import STAGES, run_pipeline

__all__ = ["STAGES", "RunConfig", "StudentRun", "run_pipeline"]
