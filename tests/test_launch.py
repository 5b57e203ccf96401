"""tfllm-launch: TF_CONFIG per task, log prefixes, exit statuses, stopping the rest.

The launched command here is a few lines of Python that act on their
TF_CONFIG, so these tests need no TensorFlow and take seconds.
"""

import io
import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import launch_command, run_command
from distributed_helpers import REPO, subprocess_env

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


def test_parameter_server_job_stops_when_its_last_worker_dies():
    """Without --restart_workers, the chief's coordinator would wait forever for
    a worker: the launcher asks the chief to save and stop, and says why."""
    body = (
        "if t['type'] == 'chief':\n"
        "    import signal\n"
        "    signal.signal(signal.SIGTERM, lambda *a: (print('chief saved', flush=True), "
        "sys.exit(130)))\n"
        "    time.sleep(600)\n"
        "if t['type'] == 'worker': time.sleep(0.5 + t['index']); sys.exit(4 + t['index'])\n"
        "time.sleep(600)"
    )
    started = time.time()
    status, lines = launch(task_script(body), 2, ps=1)
    assert time.time() - started < 30
    assert status == 5  # the last worker's status, not the chief's 130
    assert any("worker 0 exited (4); the chief's coordinator carries on" in x for x in lines)
    assert (
        "[launch] worker 1 exited (5) and it was the last worker (--restart_workers is off): "
        "no step can run; stopping the job"
    ) in lines
    assert "[chief 0] chief saved" in lines


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


# A task that, on its first SIGTERM, "saves" (takes `save` seconds) and exits 130;
# a second SIGTERM while it saves cuts the save off (as tfllm-train's StopSignal does).
GRACEFUL_TASK = """
import signal
got = []
def on_term(signum, frame):
    got.append(signum)
    if len(got) > 1:
        print('save cut off', flush=True)
        os._exit(1)
signal.signal(signal.SIGTERM, on_term)
print('ready', flush=True)
while not got:
    time.sleep(0.02)
save = SAVE.get(t['type'], 0.0) if t['index'] == 0 else 0.0
print('stopping', time.time(), flush=True)
time.sleep(save)
print('saved', time.time(), flush=True)
sys.exit(130)
"""


def graceful_task(save: dict[str, float]) -> list[str]:
    return task_script(f"SAVE = {save!r}\n" + GRACEFUL_TASK)


class LaunchedCommand:
    """`tfllm-launch` as a process of its own, so a test can signal it."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            cwd=str(REPO),
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for_lines(self, text: str, count: int) -> None:
        while sum(text in x for x in self.lines) < count:
            line = self.proc.stdout.readline()
            assert line, "\n".join(self.lines)
            self.lines.append(line.rstrip("\n"))

    def finish(self, timeout: float) -> int:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:  # the old launcher: a 2nd and 3rd signal end it
                for _ in range(3):
                    self.proc.send_signal(signal.SIGTERM)
                    time.sleep(1)
                self.proc.kill()
        self.lines += out.splitlines()
        return self.proc.returncode


def test_sigterm_to_a_synchronous_job_is_forwarded_once_so_the_chief_can_save():
    """Worker 1 stops at once, worker 0 (the chief) takes 2 s to save: the launcher
    must not send it a second SIGTERM ("stop now") because worker 1 has exited."""
    job = LaunchedCommand(launch_command(2, 0, graceful_task({"worker": 2.0})))
    job.wait_for_lines("ready", 2)
    job.proc.send_signal(signal.SIGTERM)
    status = job.finish(timeout=30)
    assert status == 130, job.lines
    assert "[worker 0] save cut off" not in job.lines
    assert any(x.startswith("[worker 0] saved") for x in job.lines), job.lines
    assert "[launch] signal 15: asking every task to save and stop" in job.lines


def test_sigterm_to_a_parameter_server_job_stops_the_chief_first():
    """The chief's checkpoint reads the variables from the ps tasks: they (and the
    workers that run the in-flight steps) must outlive its save."""
    job = LaunchedCommand(launch_command(2, 1, graceful_task({"chief": 1.5})))
    job.wait_for_lines("ready", 4)
    job.proc.send_signal(signal.SIGTERM)
    status = job.finish(timeout=30)
    assert status == 130, job.lines
    chief_saved = [x for x in job.lines if x.startswith("[chief 0] saved")]
    assert chief_saved, job.lines
    saved_at = float(chief_saved[0].split()[-1])
    others = [x for x in job.lines if x.startswith(("[worker ", "[ps "))]
    stopped = [float(x.split()[-1]) for x in others if " stopping " in x]
    assert not stopped or min(stopped) >= saved_at, job.lines  # nobody else stopped before
    assert "[launch] chief exited with status 130; stopping the cluster" in job.lines


def test_a_task_that_ignores_sigterm_is_stopped_after_the_timeout():
    body = (
        "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True); time.sleep(600)"
    )
    argv = launch_command(1, 0, task_script(body))
    argv.insert(argv.index("--"), "--stop_timeout=1")
    job = LaunchedCommand(argv)
    job.wait_for_lines("ready", 1)
    started = time.time()
    job.proc.send_signal(signal.SIGTERM)
    status = job.finish(timeout=30)
    assert status == 137, job.lines
    assert time.time() - started < 15
    assert "[launch] worker 0 has not stopped in time; telling it to stop now" in job.lines
    assert "[launch] worker 0 is still running; killing it" in job.lines


def test_restart_workers_gives_up_after_max_restarts_with_backoff():
    """A worker that always fails is restarted --max_restarts times, each pause
    twice the last; then one line says why and the job stops (chief first)."""
    body = (
        "if t['type'] == 'chief':\n"
        "    import signal\n"
        "    signal.signal(signal.SIGTERM, lambda *a: (print('chief saved', flush=True), "
        "sys.exit(130)))\n"
        "    time.sleep(600)\n"
        "if t['type'] == 'worker': print('up', time.time(), flush=True); sys.exit(3)\n"
        "time.sleep(600)"
    )
    started = time.time()
    status, lines = launch(
        task_script(body), 1, ps=1, restart_workers=True, max_restarts=3, restart_backoff=0.2
    )
    assert time.time() - started < 20
    assert status == 3  # the worker's last status
    ups = [float(x.split()[-1]) for x in lines if x.startswith("[worker 0] up")]
    assert len(ups) == 4  # the first start and 3 restarts
    gaps = [b - a for a, b in zip(ups, ups[1:], strict=False)]
    for gap, pause in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert gap >= pause, gaps
    assert [x for x in lines if "giving up" in x] == [
        "[launch] giving up on worker 0: it exited with status 3 after 3 restarts "
        "(--max_restarts=3); stopping the job"
    ]
    assert "[chief 0] chief saved" in lines


def test_a_worker_that_ran_healthy_before_dying_gets_a_fresh_restart_count():
    """Four failures with --max_restarts=1 are no reason to give up when each
    came after a healthy run (a preempted worker of a long job); the count
    resets, and a quick failure after that still counts."""
    body = (
        "if t['type'] == 'chief': time.sleep(9); sys.exit(0)\n"
        "if t['type'] == 'worker': print('up', flush=True); time.sleep(1.0); sys.exit(3)\n"
        "time.sleep(600)"
    )
    status, lines = launch(
        task_script(body), 1, ps=1, restart_workers=True, max_restarts=1,
        restart_backoff=0.2, healthy_seconds=0.5,
    )
    assert status == 0, lines  # the chief's: the job was never given up on
    assert sum(line == "[worker 0] up" for line in lines) >= 4
    assert not [x for x in lines if "giving up" in x]
    assert any("its restart count starts again" in x for x in lines)


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
        (["--workers=1", "--ps=1", "--max_restarts=2", "--", "true"], "--restart_workers"),
        (
            ["--workers=1", "--ps=1", "--restart_workers", "--max_restarts=-1", "--", "true"],
            "--max_restarts: -1 must not be negative",
        ),
        (["--workers=1", "--stop_timeout=0", "--", "true"], "--stop_timeout: 0.0 must be"),
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
