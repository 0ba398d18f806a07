"""The command line: pick, run, list and gc, in child processes."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest

import aioportclaim
from aioportclaim import (
    FileLockRegistry,
    HolderRecord,
    RedisRegistry,
    default_candidate_ports,
)
from aioportclaim.registries import REGISTRY_ENV, ClaimKey, FileLease

from .conftest import HELPERS, find_free_ports

# Importing the fixture registers it for this module's tests.
from .redis_server import redis_server_fixture  # noqa: F401

if TYPE_CHECKING:
    from .redis_server import RedisServer

COMMAND = [sys.executable, "-m", "aioportclaim"]
ENV_LISTENER = [sys.executable, str(HELPERS / "cli_env_listener.py")]
# Runs gc 20 times in one process, so the loop is not dominated by start-up.
REPEATED_GC = """
import sys
from aioportclaim.__main__ import main
for _ in range(20):
    main(["--lock-dir", sys.argv[1], "gc", "--json"])
"""
NOTICE = re.compile(
    r"^aioportclaim: (\S+) \(pid (\d+)\) listens on tcp 127\.0\.0\.1 port (\d+)$"
)


ORPHAN_CHECK = [sys.executable, str(HELPERS / "cli_orphan_check.py")]
# A lock-file holder record with a line break and a terminal escape sequence
# in its text fields, as a hostile or broken process could write one.
HOSTILE_TEXT = "web\nfake row\x1b[31mred\\"
ESCAPED_TEXT = "web\\nfake row\\x1b[31mred\\\\"


def cli(
    *arguments: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Return the one line of stderr, failing if there is more or a traceback."""
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aioportclaim"), lines[0]
    return lines[0]


def read_line(stream: IO[str], timeout: float) -> str:
    """Read one line from a pipe, failing after `timeout` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            pytest.fail(f"no output line within {timeout} s")
    return stream.readline()


def cli_without_reader(
    *arguments: str, stream: str = "stdout"
) -> subprocess.CompletedProcess[str]:
    """Run the command line with `stream` on a pipe whose reader has already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    other = subprocess.PIPE
    try:
        return subprocess.run(
            [*COMMAND, *arguments],
            stdin=subprocess.DEVNULL,
            stdout=write_end if stream == "stdout" else other,
            stderr=write_end if stream == "stderr" else other,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


def try_lock(
    registry: FileLockRegistry, port: int, app_id: str | None = None
) -> FileLease | None:
    key = ClaimKey(registry.scope(), "tcp", port)
    holder = HolderRecord.for_this_process("tcp", port, app_id)
    return registry.try_acquire_now(key, holder)


def lock(lock_dir: Path, port: int, app_id: str | None = None) -> FileLease:
    lease = try_lock(FileLockRegistry(lock_dir), port, app_id)
    assert lease is not None
    return lease


def has_exited(pid: int) -> bool:
    """Tell whether `pid` is gone or a zombie that its new parent has not collected."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            state = file.read().rpartition(b")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state == b"Z"


def wait_for_file(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} was not written within {timeout} s")
        time.sleep(0.05)
    return path.read_text()


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class TestPick:
    def test_pick_prints_default_port(self) -> None:
        result = cli("pick")

        assert result.returncode == 0, result.stderr
        assert int(result.stdout) in default_candidate_ports()

    def test_pick_json_for_udp(self) -> None:
        result = cli("pick", "--udp", "--json")
        output = json.loads(result.stdout)

        assert result.returncode == 0, result.stderr
        assert output["protocol"] == "udp"
        assert output["host"] == "127.0.0.1"
        assert output["port"] in default_candidate_ports()

    def test_pick_honors_preference(self) -> None:
        ports = find_free_ports(4)
        spec = f"{ports[0]}-{ports[-1]}"

        result = cli("pick", spec, "--prefer", f"{ports[2]}-{ports[2]}:5")

        assert int(result.stdout) == ports[2]

    @pytest.mark.parametrize("form", ["port", "pattern"])
    def test_pick_honors_exclusion(self, form: str) -> None:
        ports = find_free_ports(2)
        excluded = str(ports[0]) if form == "port" else f"*{ports[0] % 10}"

        result = cli("pick", f"{ports[0]},{ports[1]}", "--exclude", excluded)

        assert int(result.stdout) == ports[1]

    def test_pick_busy_port_exhausted(self) -> None:
        [port] = find_free_ports(1)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", port))
            holder.listen()
            result = cli("pick", str(port), "--claim-timeout", "0.2")

        assert result.returncode == 1
        assert "no port could be claimed" in error_line(result)
        assert "1 in use" in error_line(result)

    def test_console_script_runs(self) -> None:
        script = Path(sys.executable).parent / "aioportclaim"
        result = subprocess.run(
            [str(script), "pick", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["protocol"] == "tcp"


class TestErrors:
    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            (["pick", "70000"], "invalid port spec '70000'"),
            (["pick", "9000-80"], "invalid port spec '9000-80'"),
            (["pick", "--exclude", "80x"], "invalid --exclude value '80x'"),
            (["pick", "--prefer", "8000-8100:zero"], "invalid --prefer weight 'zero'"),
            (["pick", "--host", "example.com"], "resolve host names"),
            (["pick", "--claim-timeout", "-1"], "invalid number of seconds '-1'"),
            (["pick", "--claim-timeout", "0"], "invalid number of seconds '0'"),
            (["run", "--timeout", "0", "--", "true"], "invalid number of seconds '0'"),
            (["run", "--timeout", "nan", "--", "true"], "greater than 0"),
            (["run", "--kill-after", "0", "--", "true"], "argument --kill-after"),
            (["run", "--kill-after", "-1", "--", "true"], "seconds '-1'"),
            (["pick", "--bogus"], "unrecognized arguments: --bogus"),
            (["run", "abc", "--", "true"], "invalid port spec 'abc'"),
            (["run"], "run needs a command after '--'"),
            (["list", "--", "true"], "used only by run"),
            ([], "the following arguments are required: COMMAND"),
        ],
    )
    def test_usage_error_one_line(self, arguments: list[str], message: str) -> None:
        result = cli(*arguments)

        assert result.returncode == 2
        assert message in error_line(result)

    @pytest.mark.parametrize("name", ["A=B", "1PORT", "", "MY-PORT", "PORT\n"])
    def test_run_env_name_rule(self, name: str) -> None:
        result = cli("run", "--env", name, "--", "true")
        message = error_line(result)

        assert result.returncode == 2
        assert f"invalid environment variable name {name!r}" in message
        assert "letters, digits and underscores, not starting with a digit" in message

    @pytest.mark.parametrize(
        ("arguments", "value"),
        [
            (["pick", "abc"], "port spec 'abc'"),
            (["pick", "8000-80x"], "port spec '8000-80x'"),
            (["pick", "--exclude", "0"], "--exclude value '0'"),
            (["pick", "--prefer", "1-x:2"], "--prefer ports '1-x'"),
            (["run", "x", "--", "true"], "port spec 'x'"),
        ],
    )
    def test_spec_error_shell_forms(self, arguments: list[str], value: str) -> None:
        result = cli(*arguments)
        message = error_line(result)

        assert result.returncode == 2
        assert f"invalid {value}" in message
        assert "8000-8100" in message
        assert "range(" not in message
        assert "None" not in message
        assert "(low, high)" not in message

    def test_negative_spec_shell_forms(self) -> None:
        result = cli("pick", "-1")
        message = error_line(result)

        assert result.returncode == 2
        assert "invalid port spec '-1'" in message
        assert "leave SPEC out for the default ports" in message
        assert "None" not in message

    @pytest.mark.parametrize(
        ("arguments", "status"),
        [
            (["pick"], 1),
            (["list"], 1),
            (["gc"], 1),
            (["run", "--", "true"], 125),
        ],
    )
    def test_unusable_lock_dir_one_line(
        self, tmp_path: Path, arguments: list[str], status: int
    ) -> None:
        not_a_directory = tmp_path / "file"
        not_a_directory.write_text("")

        result = cli("--lock-dir", str(not_a_directory), *arguments)

        assert result.returncode == status
        assert "is not a directory" in error_line(result)
        assert error_line(result).endswith(", or pass another --lock-dir")

    def test_lock_dir_error_from_environment(self, tmp_path: Path) -> None:
        not_a_directory = tmp_path / "file"
        not_a_directory.write_text("")

        result = cli("pick", env={"AIOPORTCLAIM_LOCK_DIR": str(not_a_directory)})

        assert result.returncode == 1
        assert "set AIOPORTCLAIM_LOCK_DIR to another path" in error_line(result)
        assert "--lock-dir" not in error_line(result)

    def test_lock_dir_error_names_registry_option(self, tmp_path: Path) -> None:
        not_a_directory = tmp_path / "file"
        not_a_directory.write_text("")

        result = cli("--registry", f"file://{not_a_directory}", "pick")

        assert result.returncode == 1
        assert error_line(result).endswith(", or pass another --registry")

    def test_symlinked_lock_dir_one_line(self, tmp_path: Path) -> None:
        (tmp_path / "real").mkdir(mode=0o700)
        (tmp_path / "link").symlink_to(tmp_path / "real")

        result = cli("--lock-dir", str(tmp_path / "link"), "pick")

        assert result.returncode == 1
        assert "is a symbolic link" in error_line(result)
        assert "or pass another --lock-dir" in error_line(result)

    def test_version_prints_package_version(self) -> None:
        result = cli("--version")

        assert result.returncode == 0, result.stderr
        assert result.stdout == f"aioportclaim {aioportclaim.__version__}\n"


class TestClosedOutput:
    @pytest.mark.parametrize(
        ("arguments", "status"),
        [
            (["pick"], 141),
            (["pick", "--json"], 141),
            (["list"], 141),
            (["list", "--all"], 141),
            (["list", "--json"], 141),
            (["gc"], 141),
            (["gc", "--json"], 141),
            # argparse drops its own output when stdout is closed.
            (["--version"], 0),
            (["--help"], 0),
            (["run", "--help"], 0),
        ],
    )
    def test_closed_stdout_ends_quietly(
        self, lock_dir: Path, arguments: list[str], status: int
    ) -> None:
        [port] = find_free_ports(1)
        lock(lock_dir, port, app_id="web").release_now()

        result = cli_without_reader("--lock-dir", str(lock_dir), *arguments)

        assert result.returncode == status
        assert result.stderr == ""

    @pytest.mark.parametrize("unbuffered", ["", "1"])
    def test_closed_stdout_through_head(self, lock_dir: Path, unbuffered: str) -> None:
        # More rows than a pipe buffers, so list is still writing when head exits.
        registry = FileLockRegistry(lock_dir)
        for port in range(20000, 20100):
            lease = try_lock(registry, port, app_id="x" * 1000)
            assert lease is not None
            lease.release_now()
        shell = f"{' '.join(COMMAND)} --lock-dir {lock_dir} list --all --json | head -3"
        # Unbuffered, the text layer would drop the rest of a partial write
        # to a pipe whose reader has gone; the command writes in a loop instead.
        env = dict(os.environ)
        env.pop("PYTHONUNBUFFERED", None)
        if unbuffered:
            env["PYTHONUNBUFFERED"] = unbuffered

        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", shell],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )

        assert result.returncode == 141
        assert result.stderr == ""
        assert len(result.stdout.splitlines()) == 3

    def test_closed_stderr_keeps_run_status(self) -> None:
        result = cli_without_reader(
            *["run", "--stats", "--"],
            *[*ENV_LISTENER, "PORT", "--hold", "0.2", "--status", "3"],
            stream="stderr",
        )

        assert result.returncode == 3
        assert result.stdout == ""


class TestRun:
    def test_run_serves_http_and_forwards_signals(self) -> None:
        command = [*COMMAND, "run", "--", sys.executable, "-m", "http.server", "{port}"]
        command += ["--bind", "127.0.0.1"]
        runs = [
            subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            notices = [NOTICE.match(read_line(run.stderr, 30)) for run in runs]  # type: ignore[arg-type]
            assert all(notices), notices
            children = [int(notice.group(2)) for notice in notices]  # type: ignore[union-attr]
            ports = [int(notice.group(3)) for notice in notices]  # type: ignore[union-attr]
            statuses = [fetch_status(port) for port in ports]

            runs[0].send_signal(signal.SIGINT)
            runs[1].send_signal(signal.SIGTERM)
            exits = [run.wait(timeout=30) for run in runs]
        finally:
            for run in runs:
                if run.poll() is None:
                    run.kill()
                run.communicate(timeout=30)

        assert statuses == [200, 200]
        assert ports[0] != ports[1]
        assert exits == [0, 128 + signal.SIGTERM]  # http.server exits 0 on SIGINT
        assert all(process_gone(pid) for pid in children)
        assert all(refuses_connections(port) for port in ports)

    def test_run_sets_variable_and_exit_status(self) -> None:
        result = cli(
            "run",
            "--env",
            "SERVICE_PORT",
            "--quiet",
            "--",
            *ENV_LISTENER,
            "SERVICE_PORT",
            "--hold",
            "0.5",
            "--status",
            "7",
        )

        assert result.returncode == 7, result.stderr
        assert result.stderr == ""

    def test_run_stops_never_listening_child(self, tmp_path: Path) -> None:
        pid_file = tmp_path / "child.pid"
        start = time.monotonic()

        result = cli(
            "run",
            "--timeout",
            "0.5",
            "--",
            *ENV_LISTENER,
            "PORT",
            "--never",
            "--pid-file",
            str(pid_file),
        )
        elapsed = time.monotonic() - start
        message = error_line(result)

        assert result.returncode == 124
        assert re.search(
            r"did not listen on tcp 127\.0\.0\.1 port \d+ within 0\.5 s", message
        )
        assert message.endswith("it was stopped")
        assert process_gone(int(pid_file.read_text()))
        assert elapsed < 10

    def test_run_reports_early_exit(self) -> None:
        result = cli("run", "--", sys.executable, "-c", "raise SystemExit(3)")

        assert result.returncode == 3
        assert "exited with status 3 before it listened" in error_line(result)

    def test_run_command_not_found(self) -> None:
        result = cli("run", "--", "aioportclaim-no-such-command")

        assert result.returncode == 127
        assert "command not found: 'aioportclaim-no-such-command'" in error_line(result)

    def test_run_command_not_executable(self, tmp_path: Path) -> None:
        script = tmp_path / "server.sh"
        script.write_text("#!/bin/sh\n")

        result = cli("run", "--", str(script))

        assert result.returncode == 126
        assert f"cannot execute '{script}': Permission denied" in error_line(result)

    def test_run_kill_after_escalates(self, tmp_path: Path) -> None:
        pid_file = tmp_path / "child.pid"
        run = subprocess.Popen(
            [
                *[*COMMAND, "run", "--kill-after", "0.5", "--"],
                *[*ENV_LISTENER, "PORT", "--ignore-signals"],
                *["--pid-file", str(pid_file)],
            ],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            notice = NOTICE.match(read_line(run.stderr, 30))  # type: ignore[arg-type]
            run.send_signal(signal.SIGTERM)
            signalled_at = time.monotonic()
            status = run.wait(timeout=20)
            stopped_after = time.monotonic() - signalled_at
        finally:
            if run.poll() is None:
                run.kill()
            _, stderr = run.communicate(timeout=30)

        assert notice is not None
        assert status == 128 + signal.SIGKILL
        assert 0.5 <= stopped_after < 5
        assert "did not exit within 0.5 s after SIGTERM; sending SIGKILL" in stderr
        assert process_gone(int(pid_file.read_text()))

    def test_run_kill_after_before_listening(self, tmp_path: Path) -> None:
        pid_file = tmp_path / "child.pid"
        run = subprocess.Popen(
            [
                *[*COMMAND, "run", "--kill-after", "0.3", "--"],
                *[*ENV_LISTENER, "PORT", "--ignore-signals", "--never"],
                *["--pid-file", str(pid_file)],
            ],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            child = int(wait_for_file(pid_file, 30))
            run.send_signal(signal.SIGINT)
            status = run.wait(timeout=20)
        finally:
            if run.poll() is None:
                run.kill()
            _, stderr = run.communicate(timeout=30)

        assert status == 128 + signal.SIGKILL
        assert "after SIGINT; sending SIGKILL" in stderr
        assert process_gone(child)

    def test_run_command_gets_sigterm_when_run_killed(self, tmp_path: Path) -> None:
        signal_file = tmp_path / "signal.txt"

        result = subprocess.run(
            [
                *[*ORPHAN_CHECK, "10", "run", "--"],
                *[*ENV_LISTENER, "PORT", "--signal-file", str(signal_file)],
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        # The handler exits with 0. The kernel sends the death signal again
        # for each of run's threads that the command was re-parented to, and
        # a second SIGTERM during interpreter shutdown ends it with -15.
        assert result.returncode == 0, result.stderr
        assert result.stdout in ("EXITED 0\n", f"EXITED {-signal.SIGTERM}\n")
        assert signal_file.read_text() == "SIGTERM"

    def test_run_reports_daemonized_listener(self) -> None:
        result = cli(
            "run",
            "--",
            *[sys.executable, str(HELPERS / "handoff_listener.py"), "{port}"],
            *["--daemon", "--hold", "10"],
        )
        daemon = int(result.stdout.split()[1])
        os.kill(daemon, signal.SIGTERM)
        message = error_line(result)

        assert result.returncode == 125
        assert f"pid {daemon} (python" in message
        assert "daemonized" in message
        assert message.endswith("the command was stopped")

    def test_run_busy_port_exhausted(self) -> None:
        [port] = find_free_ports(1)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", port))
            holder.listen()
            result = cli("run", str(port), "--claim-timeout", "0.2", "--", "true")

        assert result.returncode == 125
        assert "no port could be claimed" in error_line(result)

    def test_run_keeps_reservation_while_child_runs(self, tmp_path: Path) -> None:
        [port] = find_free_ports(1)
        lock_dir = tmp_path / "locks"
        run = subprocess.Popen(
            [
                *[*COMMAND, "--lock-dir", str(lock_dir), "run", str(port), "--"],
                *[*ENV_LISTENER, "PORT", "--hold", "30"],
            ],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            notice = NOTICE.match(read_line(run.stderr, 30))  # type: ignore[arg-type]
            claims = FileLockRegistry(lock_dir).list_claims_now()
        finally:
            run.terminate()
            run.communicate(timeout=30)

        assert notice is not None
        assert [(info.key.port, info.held) for info in claims] == [(port, True)]
        assert claims[0].record is not None
        assert claims[0].record.pid == run.pid


def fetch_status(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return int(response.status)


class TestListAndGc:
    def test_list_shows_live_claim(self, lock_dir: Path) -> None:
        [port] = find_free_ports(1)
        lease = lock(lock_dir, port, app_id="web")
        try:
            result = cli("--lock-dir", str(lock_dir), "list")
        finally:
            lease.release_now()
        header, row = result.stdout.splitlines()

        assert header.split() == ["PORT", "PROTO", "PID", "APP_ID", "AGE", "HOLDER"]
        assert row.split()[:4] == [str(port), "tcp", str(os.getpid()), "web"]
        assert row.split()[5] == "alive"

    def test_list_escapes_control_characters(self, lock_dir: Path) -> None:
        [port] = find_free_ports(1)
        lease = try_lock(FileLockRegistry(lock_dir), port, app_id=HOSTILE_TEXT)
        assert lease is not None
        try:
            result = cli("--lock-dir", str(lock_dir), "list")
        finally:
            lease.release_now()
        lines = result.stdout.splitlines()

        assert result.returncode == 0, result.stderr
        assert len(lines) == 2
        assert "\x1b" not in result.stdout
        assert ESCAPED_TEXT in lines[1]

    def test_list_truncates_long_app_id(self, lock_dir: Path) -> None:
        [port] = find_free_ports(1)
        long_id = "a" * 30 + "\t" + "b" * 200
        lock(lock_dir, port, app_id=long_id).release_now()

        table = cli("--lock-dir", str(lock_dir), "list", "--all")
        as_json = cli("--lock-dir", str(lock_dir), "list", "--all", "--json")
        app_id_cell = table.stdout.splitlines()[1].split()[3]
        [claim] = json.loads(as_json.stdout)

        assert app_id_cell == "a" * 30 + "\\t" + "b" * 5 + "..."
        assert len(app_id_cell) == 40
        assert claim["app_id"] == long_id

    def test_list_json_escapes_app_id(self, lock_dir: Path) -> None:
        [port] = find_free_ports(1)
        lock(lock_dir, port, app_id=HOSTILE_TEXT).release_now()

        result = cli("--lock-dir", str(lock_dir), "list", "--all", "--json")
        [claim] = json.loads(result.stdout)

        assert "\x1b" not in result.stdout
        assert claim["app_id"] == HOSTILE_TEXT

    def test_list_json_marks_released_claim(self, lock_dir: Path) -> None:
        ports = find_free_ports(2)
        held_lease = lock(lock_dir, ports[0])
        lock(lock_dir, ports[1]).release_now()
        try:
            result = cli("--lock-dir", str(lock_dir), "list", "--json", "--all")
        finally:
            held_lease.release_now()
        claims = {claim["port"]: claim for claim in json.loads(result.stdout)}

        assert claims[ports[0]]["held"] is True
        assert claims[ports[0]]["pid"] == os.getpid()
        assert claims[ports[0]]["protocol"] == "tcp"
        assert 0 <= claims[ports[0]]["age_seconds"] < 60
        assert claims[ports[1]]["held"] is False

    def test_list_all_scopes_adds_column(self, lock_dir: Path) -> None:
        [port] = find_free_ports(1)
        lock(lock_dir, port).release_now()

        result = cli("--lock-dir", str(lock_dir), "list", "--all-scopes", "--all")
        header, row = result.stdout.splitlines()

        assert header.split()[-1] == "SCOPE"
        assert row.split()[-1] == FileLockRegistry(lock_dir).scope()

    def test_list_hides_released_by_default(self, lock_dir: Path) -> None:
        ports = find_free_ports(2)
        held_lease = lock(lock_dir, ports[0])
        lock(lock_dir, ports[1]).release_now()
        try:
            default = cli("--lock-dir", str(lock_dir), "list")
            everything = cli("--lock-dir", str(lock_dir), "list", "--all")
        finally:
            held_lease.release_now()
        default_ports = [line.split()[0] for line in default.stdout.splitlines()[1:]]
        released_row = everything.stdout.splitlines()[2].split()

        assert default_ports == [str(ports[0])]
        assert released_row[0] == str(ports[1])
        assert released_row[5] == "released"

    def test_gc_removes_only_unheld_files(self, lock_dir: Path) -> None:
        ports = find_free_ports(3)
        held_lease = lock(lock_dir, ports[0])
        for port in ports[1:]:
            lock(lock_dir, port).release_now()
        try:
            result = cli("--lock-dir", str(lock_dir), "gc")
            remaining = FileLockRegistry(lock_dir).list_claims_now()
            still_held = held_lease.is_held_now()
        finally:
            held_lease.release_now()

        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("removed 2 unheld lock files from ")
        assert [info.key.port for info in remaining] == [ports[0]]
        assert still_held

    def test_gc_json_lists_removed_paths(self, lock_dir: Path) -> None:
        [port] = find_free_ports(1)
        lock(lock_dir, port).release_now()

        result = cli("--lock-dir", str(lock_dir), "gc", "--json")
        removed = json.loads(result.stdout)

        assert [Path(path).name for path in removed] == [f"tcp-{port}.lock"]

    def test_gc_leaves_concurrent_claims(self, lock_dir: Path) -> None:
        ports = find_free_ports(4)
        for port in ports:
            lock(lock_dir, port).release_now()
        gc = subprocess.Popen(
            [sys.executable, "-c", REPEATED_GC, str(lock_dir)],
            stdout=subprocess.DEVNULL,
        )
        registry = FileLockRegistry(lock_dir)
        held_checks = 0
        lost = []
        try:
            while gc.poll() is None:
                leases = [try_lock(registry, port) for port in ports]
                time.sleep(0.005)  # let gc pass over the held files
                for lease in leases:
                    if lease is None:
                        continue  # gc held the file for a moment, as a claimer would
                    held_checks += 1
                    if not lease.is_held_now():
                        lost.append(lease.path)
                    lease.release_now()
        finally:
            gc.wait(timeout=60)

        assert gc.returncode == 0
        assert held_checks > 0
        assert lost == []


def plant_redis_claim(
    server: RedisServer,
    port: int,
    *,
    token: int = 77,
    scope: str | None = None,
    lease_ms: int = 30_000,
    host: str | None = None,
) -> str:
    """Write the claim key of another holder of `port` into Redis; return the key."""
    registry = RedisRegistry(server.url)
    key = registry.redis_key(ClaimKey(scope or registry.scope(), "tcp", port))
    holder = HolderRecord.for_this_process("tcp", port, "web")
    if host is not None:
        holder = HolderRecord(holder.pid, "tcp", port, "web", host)
    record = holder.to_bytes()
    value = b"v1 planted %d %s" % (token, record)
    server.command("SET", key, value, "PX", lease_ms)
    return key


def free_port_without_server() -> int:
    return find_free_ports(1)[0]


class TestRegistryOption:
    def test_pick_skips_port_claimed_in_redis(self, redis_server: RedisServer) -> None:
        ports = find_free_ports(2)
        planted = plant_redis_claim(redis_server, ports[0])

        result = cli(
            *["--registry", redis_server.url, "pick", f"{ports[0]},{ports[1]}"],
            *["--prefer", f"{ports[0]}-{ports[0]}"],
        )

        assert result.returncode == 0, result.stderr
        assert int(result.stdout) == ports[1]
        assert redis_server.keys("aioportclaim:claim:*") == [planted.encode()]
        assert redis_server.get("aioportclaim:fence") is not None

    def test_registry_read_from_environment(self, redis_server: RedisServer) -> None:
        [port] = find_free_ports(1)
        plant_redis_claim(redis_server, port)

        in_redis = cli(
            "pick",
            str(port),
            "--claim-timeout",
            "0.3",
            env={REGISTRY_ENV: redis_server.url},
        )
        in_lock_dir = cli("pick", str(port))

        assert in_redis.returncode == 1
        assert "1 locked by another holder" in error_line(in_redis)
        assert int(in_lock_dir.stdout) == port

    def test_lock_dir_overrides_environment(self, lock_dir: Path) -> None:
        unreachable = f"redis://127.0.0.1:{free_port_without_server()}"

        result = cli(
            "--lock-dir", str(lock_dir), "pick", env={REGISTRY_ENV: unreachable}
        )

        assert result.returncode == 0, result.stderr
        assert int(result.stdout) in default_candidate_ports()

    def test_file_url_selects_lock_dir(self, lock_dir: Path) -> None:
        [port] = find_free_ports(1)
        lease = lock(lock_dir, port, app_id="web")
        try:
            result = cli("--registry", f"file://{lock_dir}", "list", "--json")
        finally:
            lease.release_now()
        [claim] = json.loads(result.stdout)

        assert claim["port"] == port
        assert claim["app_id"] == "web"
        assert claim["path"].startswith(str(lock_dir))

    def test_list_shows_token_and_expiry(self, redis_server: RedisServer) -> None:
        [port] = find_free_ports(1)
        plant_redis_claim(redis_server, port, token=77)

        result = cli("--registry", redis_server.url, "list")
        header, row = result.stdout.splitlines()
        cells = dict(zip(header.split(), row.split(), strict=True))

        assert result.returncode == 0, result.stderr
        assert header.split() == [
            *["PORT", "PROTO", "PID", "HOST", "APP_ID", "AGE", "TOKEN", "EXPIRES"]
        ]
        assert cells["PORT"] == str(port)
        assert cells["PID"] == str(os.getpid())
        assert cells["APP_ID"] == "web"
        assert cells["TOKEN"] == "77"
        assert 25.0 <= float(cells["EXPIRES"].rstrip("s")) <= 30.0

    def test_list_escapes_redis_host(self, redis_server: RedisServer) -> None:
        [port] = find_free_ports(1)
        plant_redis_claim(redis_server, port, host=HOSTILE_TEXT)

        result = cli("--registry", redis_server.url, "list")
        lines = result.stdout.splitlines()

        assert result.returncode == 0, result.stderr
        assert len(lines) == 2
        assert "\x1b" not in result.stdout
        assert ESCAPED_TEXT in lines[1]

    def test_list_json_all_scopes(self, redis_server: RedisServer) -> None:
        ports = find_free_ports(2)
        local_key = plant_redis_claim(redis_server, ports[0], token=5)
        remote_key = plant_redis_claim(
            redis_server, ports[1], token=6, scope="other-host:net-1"
        )

        local = cli("--registry", redis_server.url, "list", "--json")
        everywhere = cli(
            "--registry", redis_server.url, "list", "--json", "--all-scopes"
        )
        local_claims = json.loads(local.stdout)
        all_claims = {claim["key"]: claim for claim in json.loads(everywhere.stdout)}

        assert [claim["key"] for claim in local_claims] == [local_key]
        assert set(all_claims) == {local_key, remote_key}
        assert all_claims[remote_key]["scope"] == "other-host:net-1"
        assert all_claims[remote_key]["fencing_token"] == 6
        assert 0 < all_claims[remote_key]["expires_in_seconds"] <= 30

    def test_list_all_scopes_adds_scope_column(self, redis_server: RedisServer) -> None:
        [port] = find_free_ports(1)
        plant_redis_claim(redis_server, port, scope="other-host:net-1")

        result = cli("--registry", redis_server.url, "list", "--all-scopes")
        header, row = result.stdout.splitlines()

        assert header.split()[-1] == "SCOPE"
        assert row.split()[-1] == "other-host:net-1"

    def test_gc_explains_redis_expiry(self, redis_server: RedisServer) -> None:
        [port] = find_free_ports(1)
        planted = plant_redis_claim(redis_server, port)

        result = cli("--registry", f"{redis_server.url}?lease=2", "gc")
        as_json = cli("--registry", redis_server.url, "gc", "--json")

        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("nothing to remove: a claim in Redis")
        assert "(a lease is 2 s" in result.stdout
        assert len(result.stdout.splitlines()) == 1
        assert json.loads(as_json.stdout) == []
        assert redis_server.keys("aioportclaim:claim:*") == [planted.encode()]

    def test_run_stops_child_when_lease_lost(
        self, redis_server: RedisServer, tmp_path: Path
    ) -> None:
        pid_file = tmp_path / "child.pid"
        run = subprocess.Popen(
            [
                *[*COMMAND, "--registry", f"{redis_server.url}?lease=0.6", "run"],
                *["--", *ENV_LISTENER, "PORT", "--hold", "30"],
                *["--pid-file", str(pid_file)],
            ],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            notice = NOTICE.match(read_line(run.stderr, 30))  # type: ignore[arg-type]
            keys = redis_server.keys("aioportclaim:claim:*")
            for key in keys:
                redis_server.command("DEL", key)
            deleted_at = time.monotonic()
            status = run.wait(timeout=30)
            stopped_after = time.monotonic() - deleted_at
        finally:
            if run.poll() is None:
                run.kill()
            _, stderr = run.communicate(timeout=30)
        last_line = stderr.splitlines()[-1]

        assert notice is not None
        assert [key.rsplit(b":", 1)[1] for key in keys] == [notice.group(3).encode()]
        assert status == 125
        assert last_line.startswith(f"aioportclaim: error: stopped {notice.group(1)}")
        assert "was lost: its key in Redis was deleted" in last_line
        assert "Traceback" not in stderr
        assert process_gone(int(pid_file.read_text()))
        assert stopped_after < 5

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("http://127.0.0.1", "invalid registry URL 'http://127.0.0.1'"),
            ("/var/lib/ports", "invalid registry URL '/var/lib/ports'"),
            ("", "invalid registry URL ''"),
            ("redis://[::1", "invalid registry URL: Invalid IPv6 URL"),
            ("redis://127.0.0.1:99999", "Port out of range"),
            ("redis://user:secret@127.0.0.1:x", "'redis://127.0.0.1:x'"),
            ("unix://", "missing the socket path"),
            ("redis://127.0.0.1?lease=soon", "invalid lease 'soon'"),
            ("file://otherhost/ports", "file:///path/to/lock-directory"),
        ],
    )
    def test_bad_registry_url_one_line(self, url: str, message: str) -> None:
        result = cli("--registry", url, "pick")

        assert result.returncode == 2
        assert message in error_line(result)
        assert "secret" not in result.stderr

    def test_bad_environment_url_names_variable(self) -> None:
        result = cli("list", env={REGISTRY_ENV: "ftp://127.0.0.1"})

        assert result.returncode == 2
        assert f"invalid {REGISTRY_ENV} 'ftp://127.0.0.1'" in error_line(result)

    @pytest.mark.parametrize(
        ("arguments", "status"),
        [(["pick"], 1), (["list"], 1), (["gc"], 1), (["run", "--", "true"], 125)],
    )
    def test_unreachable_redis_one_line(
        self, arguments: list[str], status: int
    ) -> None:
        url = f"redis://127.0.0.1:{free_port_without_server()}"

        result = cli("--registry", url, *arguments)

        assert result.returncode == status
        assert f"connecting failed at Redis {url}" in error_line(result)
        assert "Connection refused" in error_line(result)

    def test_missing_unix_socket_one_line(self, tmp_path: Path) -> None:
        path = tmp_path / "redis.sock"

        result = cli("--registry", f"unix://{path}", "pick")

        assert result.returncode == 1
        assert f"unix://{path}: No such file or directory" in error_line(result)

    def test_registry_and_lock_dir_exclusive(self, lock_dir: Path) -> None:
        result = cli("--lock-dir", str(lock_dir), "--registry", "redis://x", "pick")

        assert result.returncode == 2
        assert "not allowed with argument" in error_line(result)


def stats_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """Parse the metrics that --stats json writes as the last line of stderr."""
    snapshot: dict[str, Any] = json.loads(result.stderr.splitlines()[-1])
    return snapshot


class TestStats:
    def test_run_stats_text_on_stderr(self) -> None:
        result = cli(
            *["run", "--quiet", "--stats", "--"],
            *[*ENV_LISTENER, "PORT", "--hold", "0.2", "--status", "3"],
        )
        lines = result.stderr.splitlines()

        assert result.returncode == 3
        assert result.stdout == ""
        assert lines[0] == "aioportclaim: claim metrics:"
        assert lines[1] == "aioportclaim: attempts 1, successes 1, releases 1, held 0"
        assert lines[2].startswith("aioportclaim: failures: in_use 0,")
        assert lines[3].startswith("aioportclaim: claim duration (ms, 1 observed)")
        assert len(lines) == 5

    def test_run_stats_json_last_line(self) -> None:
        result = cli(
            *["run", "--quiet", "--stats", "json", "--"],
            *[*ENV_LISTENER, "PORT", "--hold", "0.2"],
        )
        snapshot = stats_json(result)

        assert result.returncode == 0, result.stderr
        assert snapshot["successes"] == 1
        assert snapshot["releases"] == 1
        assert snapshot["held"] == 0
        assert snapshot["claim_duration"]["count"] == 1

    def test_run_stats_through_redis(self, redis_server: RedisServer) -> None:
        result = cli(
            *["--registry", redis_server.url, "run", "--quiet", "--stats=json"],
            *["--", *ENV_LISTENER, "PORT", "--hold", "0.2"],
        )
        snapshot = stats_json(result)

        assert result.returncode == 0, result.stderr
        assert snapshot["successes"] == 1
        assert snapshot["releases"] == 1

    def test_pick_stats_keep_stdout_clean(self) -> None:
        result = cli("pick", "--stats", "json")
        snapshot = stats_json(result)

        assert result.returncode == 0, result.stderr
        assert int(result.stdout) in default_candidate_ports()
        assert snapshot["attempts"] >= 1
        assert snapshot["successes"] == 1

    def test_stats_follow_failed_claim(self) -> None:
        [port] = find_free_ports(1)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", port))
            holder.listen()
            result = cli("pick", str(port), "--claim-timeout", "0.2", "--stats", "json")
        error, _ = result.stderr.splitlines()
        snapshot = stats_json(result)

        assert result.returncode == 1
        assert "no port could be claimed" in error
        assert snapshot["successes"] == 0
        assert snapshot["failures"]["in_use"] >= 1
        assert snapshot["failures"]["exhausted"] == 1

    def test_stats_rejects_unknown_format(self) -> None:
        result = cli("pick", "--stats=xml")

        assert result.returncode == 2
        assert "argument --stats: invalid choice: 'xml'" in error_line(result)
