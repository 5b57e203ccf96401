"""tfllm-compress on bad input: a non-zero exit, one last stderr line
"tfllm-compress: error: ..." naming the flag, no traceback, nothing written.

Every case fails before any training, so the commands (about 5 s each, mostly
importing TensorFlow) run three at a time in one module fixture and each test
checks its own result.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import last_stderr_line, run_cli

STUDENT = """
from tfllm.config import base_config


def get_config():
    config = base_config()
{settings}
    return config
"""

# id -> (flags other than --workdir/--output, the needles the error line must hold)
CASES = {
    "sparsity_one": (["--method=prune", "--sparsity=1.0"], ["--sparsity", "[0, 1)"]),
    "sparsity_negative": (["--method=prune", "--sparsity=-0.1"], ["--sparsity", "-0.1"]),
    "unknown_method": (["--method=shrink"], ["--method", "shrink", "prune, qat, distill"]),
    "m_by_n_reversed": (["--method=prune", "--m_by_n=4:2"], ["--m_by_n", "4:2"]),
    "distill_without_student": (["--method=distill"], ["--student_config", "required"]),
    "student_other_vocab": (
        ["--method=distill", "--student_config={student_vocab}"],
        ["--student_config", "tokenizer.vocab_size=512", "400"],
    ),
    "student_gpt_for_classifier": (
        ["--method=distill", "--student_config={student_gpt}"],
        ["--student_config", "'gpt'", "classifier"],
    ),
    "augment_above_one": (["--method=distill", "--augment=1.5"], ["--augment", "[0, 1]", "1.5"]),
    "augment_with_prune": (["--method=prune", "--augment=0.5"], ["--augment", "distill", "prune"]),
    "augment_lm_teacher": (
        ["--method=distill", "--student_config={student_gpt}", "--augment=0.5"],
        ["--augment", "classifier rows", "a gpt language model"],
    ),
    "output_is_workdir": (["--method=prune"], ["--output", "--workdir"]),
    "no_checkpoint": (["--method=prune"], ["--workdir", "no checkpoint"]),
    "output_holds_another_run": (["--method=prune"], ["--output", "already holds another run"]),
}


def _listing(root: str) -> dict[str, tuple[int, float]]:
    found = {}
    for d, _, files in os.walk(root):
        for f in files:
            stat = os.stat(os.path.join(d, f))
            found[os.path.relpath(os.path.join(d, f), root)] = (stat.st_size, stat.st_mtime)
    return found


@pytest.fixture(scope="module")
def results(trained_classifier, trained_workdir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("compress_cli")
    students = {
        "student_vocab": [
            'config.model.name = "mlp_classifier"',
            "config.tokenizer.vocab_size = 512",  # neither the default 1024 nor the teacher's
        ],
        "student_gpt": ['config.model.name = "gpt"'],
    }
    paths = {}
    for name, lines in students.items():
        path = root / f"{name}.py"
        settings = "\n".join(f"    {line}" for line in lines)
        path.write_text(STUDENT.format(settings=settings), encoding="utf-8")
        paths[name] = str(path)
    empty = root / "untrained"  # a config.json but no checkpoints/
    empty.mkdir()
    shutil.copyfile(
        os.path.join(trained_classifier, "config.json"), os.path.join(empty, "config.json")
    )

    # An --output that is a plain training run (not this compress run): left alone.
    other = root / "output_holds_another_run" / "out"
    other.mkdir(parents=True)
    shutil.copyfile(
        os.path.join(trained_classifier, "config.json"), os.path.join(other, "config.json")
    )
    jobs = {}
    for case, (flags, _) in CASES.items():
        sources = {"no_checkpoint": str(empty), "augment_lm_teacher": trained_workdir}
        source = sources.get(case, trained_classifier)
        output = source if case == "output_is_workdir" else str(root / case / "out")
        flags = [flag.format(**paths) for flag in flags]
        jobs[case] = (source, output, [f"--workdir={source}", f"--output={output}", *flags])

    before = _listing(trained_classifier)
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = dict(
            zip(
                jobs,
                pool.map(lambda job: run_cli("compress", *job[2], timeout=300), jobs.values()),
                strict=True,
            )
        )
    return {
        "procs": procs,
        "jobs": jobs,
        "source_before": before,
        "source_after": _listing(trained_classifier),
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_with_one_line_and_writes_nothing(results, case):
    proc = results["procs"][case]
    source, output, args = results["jobs"][case]
    assert proc.returncode != 0, (args, proc.stdout[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = last_stderr_line(proc)
    assert line.startswith("tfllm-compress: error: "), proc.stderr[-3000:]
    for needle in CASES[case][1]:
        assert needle in line, (needle, line)
    # The source is only read, even when it is given as --output too (no lock left).
    assert results["source_after"] == results["source_before"]
    assert not os.path.exists(os.path.join(source, ".lock"))
    if case == "output_holds_another_run":
        assert sorted(os.listdir(output)) == ["config.json"]
    elif case != "output_is_workdir":
        assert not os.path.exists(output), sorted(os.listdir(output))
        assert not os.path.exists(os.path.dirname(output))
