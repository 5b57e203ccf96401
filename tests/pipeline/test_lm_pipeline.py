"""tfllm-pipeline on one LM: bad input.

The pipeline itself (every stage, the report, resume) runs in
tests/docs/test_docs_run.py as the docs' `tfllm-pipeline
--config=configs/shakespeare.py` (and again, resuming, in docs/pipeline.md),
checked by its `_check_lm_pipeline`, so it runs once per suite.
"""

import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow


def test_pipeline_rejects_unknown_force_stage(tmp_path):
    proc = run_cli("pipeline", f"--workdir={tmp_path}", "--force=everything")
    assert proc.returncode != 0
    assert "--force" in proc.stderr and "Traceback" not in proc.stderr
