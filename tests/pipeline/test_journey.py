"""The journey (`tfllm-pipeline`'s default config): bad input fails in one line
before anything is written.

The journey itself runs end to end as the README's first command in
tests/docs/test_docs_run.py (tiny parts, every stage, the report and its plots,
results.json, resume and docs/pipeline.md's --force), so it runs once per suite.
"""

import pytest
from conftest import last_stderr_line, run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--config.cnn.train.batch_size=0"], "config.cnn.train.batch_size"),
        (["--config.distil.student.train.num_steps=-1"], "config.distil.student.train.num_steps"),
        (["--force=mlp.train"], "--force=mlp.train"),
        (["--force=lm.everything"], "--force: unknown stage(s) lm.everything"),
        (["--config=configs/mlp_sst2.py", "--profile=full"], "--profile"),
    ],
)
def test_journey_bad_input_is_one_line(tmp_path, flags, expected):
    proc = run_cli("pipeline", f"--workdir={tmp_path / 'j'}", *flags)
    assert proc.returncode != 0
    assert expected in last_stderr_line(proc), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "j" / "lm").exists()  # nothing half-written
