"""tfllm-launch: TF_CONFIG per task, log prefixes, exit statuses, stopping the rest.

The launched command here is a few lines of Python that act on their
TF_CONFIG, so these tests need no TensorFlow and take seconds.
"""

import io
import json
import sys
import time

import pytest
from conftest import launch_command, run_command

from tfllm.launch import Launcher, cluster_spec, parse_args

PY = sys.executable


def task_script(body: str) -> list[str]:
    """A command whose `task` (type, index) comes from its TF_CONFIG."""
    prelude = "import json, os, sys, time; c = json.loads(os.environ['TF_CONFIG']); t = c['task']\n"
    return [PY, "-c", prelude + body]


def launch(command, workers, ps=0, **kwargs):
    out = io.StringIO()
    status = Launcher(command, workers, ps, out=out, **kwargs).run()
    return status, [line for line in out.getvalue().splitlines() if line]


def test_cluster_spec_has_distinct_localhost_ports():
    spec = cluster_spec(workers=3, ps=2, chief=True)
    assert list(spec) == ["chief", "worker", "ps"]
    addresses = [a for job in spec.values() for a in job]
    assert len(addresses) == 6 == len(set(addresses))
    assert all(a.startswith("localhost:") for a in addresses)


def test_every_worker_gets_its_own_tf_config_and_prefix():
    body = "print(t['type'], t['index'], len(c['cluster']['worker']))"
    status, lines = launch(task_script(body), 2)
    assert status == 0
    assert "[worker 0] worker 0 2" in lines and "[worker 1] worker 1 2" in lines


def test_a_failing_worker_stops_the_others_and_gives_its_status():
    body = "sys.exit(3) if t['index'] == 1 else time.sleep(600)"
    started = time.time()
    status, lines = launch(task_script(body), 2)
    assert status == 3
    assert "[launch] worker 1 failed with status 3; stopping the others" in lines
    assert time.time() - started < 30  # worker 0 was stopped, not waited for


def test_parameter_server_job_ends_with_the_chief_and_tolerates_a_dead_worker():
    body = (
        "if t['type'] == 'chief': time.sleep(2); sys.exit(0)\n"
        "if t['type'] == 'worker' and t['index'] == 1: sys.exit(9)\n"
        "time.sleep(600)"
    )
    status, lines = launch(task_script(body), 2, ps=1)
    assert status == 0
    assert any("worker 1 exited (9); the chief's coordinator carries on" in x for x in lines)
    assert "[launch] chief exited with status 0; stopping the cluster" in lines


def test_restart_workers_restarts_a_dead_worker():
    body = (
        "if t['type'] == 'chief': time.sleep(4); sys.exit(0)\n"
        "if t['type'] == 'worker': print('up', flush=True); sys.exit(1)\n"
        "time.sleep(600)"
    )
    status, lines = launch(task_script(body), 1, ps=1, restart_workers=True)
    assert status == 0
    assert sum(line == "[worker 0] up" for line in lines) >= 2
    assert any("worker 0 exited (1); restarting it" in x for x in lines)


def test_killed_task_reports_the_shell_status():
    body = "os.kill(os.getpid(), 9)"
    status, lines = launch(task_script(body), 1)
    assert status == 137


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workers=2"], "no command given"),
        (["--workers=0", "--", "true"], "--workers: 0 must be at least 1"),
        (["--workers=1", "--restart_workers", "--", "true"], "only meaningful with --ps"),
    ],
)
def test_bad_arguments_are_one_clear_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_entry_point_runs_a_cluster():
    proc = run_command(launch_command(2, 0, [PY, "-c", "print('hi')"]), timeout=60)
    assert proc.returncode == 0
    assert "[worker 0] hi" in proc.stdout and "[worker 1] hi" in proc.stdout
    cluster = json.loads(proc.stdout.splitlines()[0].removeprefix("[launch] cluster: "))
    assert len(cluster["worker"]) == 2


def test_missing_program_is_one_clear_line():
    proc = run_command(launch_command(1, 0, ["no-such-program-xyz"]), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "tfllm-launch: error: cannot run 'no-such-program-xyz': No such file or directory"
    )
