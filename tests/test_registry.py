"""The file lock registry: directory checks, the inode check, listing, pruning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from aioportclaim import (
    ClaimKey,
    FileLockRegistry,
    HolderRecord,
    LockDirectoryError,
    MemoryRegistry,
    claim_port,
    open_claim,
)
from aioportclaim.registries import _file

from .conftest import find_free_ports, require_root_tools, run_python


def holder(port: int, kind: str = "tcp") -> HolderRecord:
    return HolderRecord.for_this_process(kind, port, "test-app")


class TestLockDirectory:
    async def test_symlinked_directory_rejected(self, tmp_path: Path) -> None:
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        link = tmp_path / "link"
        link.symlink_to(real)

        with pytest.raises(LockDirectoryError, match="symbolic link") as caught:
            async with claim_port(registry=FileLockRegistry(link)):
                pass

        assert caught.value.path == str(link)

    async def test_directory_of_other_user_rejected(self, tmp_path: Path) -> None:
        require_root_tools("chown")
        path = tmp_path / "theirs"
        path.mkdir(mode=0o700)
        os.chown(path, 65534, 65534)

        with pytest.raises(LockDirectoryError, match="owned by uid 65534"):
            async with claim_port(registry=FileLockRegistry(path)):
                pass

    async def test_world_writable_directory_rejected(self, tmp_path: Path) -> None:
        path = tmp_path / "open"
        path.mkdir()
        path.chmod(0o777)

        with pytest.raises(LockDirectoryError, match="sticky bit"):
            async with claim_port(registry=FileLockRegistry(path)):
                pass

    async def test_sticky_shared_directory_accepted(self, tmp_path: Path) -> None:
        path = tmp_path / "shared"
        path.mkdir()
        path.chmod(0o1777)

        async with claim_port(registry=FileLockRegistry(path)) as sock:
            assert sock.getsockname()[1] > 0

    async def test_unwritable_directory_rejected(self, tmp_path: Path) -> None:
        # Root ignores permission bits, so the directory is made immutable.
        require_root_tools("chattr")
        path = tmp_path / "frozen"
        path.mkdir(mode=0o700)
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            with pytest.raises(LockDirectoryError, match="not writable") as caught:
                async with claim_port(registry=FileLockRegistry(path)):
                    pass
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)

        assert "set AIOPORTCLAIM_LOCK_DIR" in str(caught.value)

    def test_full_disk_rejected(self, tmp_path: Path) -> None:
        require_root_tools("unshare", "mount")
        mount_point = tmp_path / "small"
        mount_point.mkdir()
        script = (
            "import anyio, os, sys\n"
            "from aioportclaim import FileLockRegistry, LockDirectoryError, claim_port\n"
            "path = sys.argv[1]\n"
            "filler = os.open(os.path.join(path, 'filler'), os.O_WRONLY | os.O_CREAT)\n"
            "try:\n"
            "    while True: os.write(filler, b'x' * 4096)\n"
            "except OSError: pass\n"
            "async def main():\n"
            "    try:\n"
            "        async with claim_port(registry=FileLockRegistry(os.path.join(path, 'locks'))):\n"
            "            print('CLAIMED')\n"
            "    except LockDirectoryError as error:\n"
            "        print('ERROR', error)\n"
            "anyio.run(main)\n"
        )
        result = subprocess.run(
            [
                "unshare", "-m", "sh", "-c",
                'mount -t tmpfs -o size=64k tmpfs "$1" && exec "$2" -c "$3" "$1"',
                "sh", str(mount_point), sys.executable, script,
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("ERROR"), result.stdout
        assert "No space left" in result.stdout

    @pytest.mark.parametrize("odd", ["symlink", "fifo", "directory"])
    async def test_odd_lock_file_skips_port(
        self, lock_dir: Path, odd: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        registry = FileLockRegistry(lock_dir)
        ports = find_free_ports(2)
        path = Path(registry.lock_path(ClaimKey(registry.scope(), "tcp", ports[0])))
        if odd == "symlink":
            target = lock_dir / "elsewhere"
            target.touch()
            path.symlink_to(target)
        elif odd == "fifo":
            os.mkfifo(path)
        else:
            path.mkdir()

        async with claim_port(ports, registry=registry) as sock:
            assert sock.getsockname()[1] == ports[1]
        with pytest.raises(TimeoutError):
            async with claim_port(ports[0], registry=registry, timeout=0.1):
                pass

        assert f"lock file {path} " in caplog.text
        assert "counts as locked" in caplog.text

    async def test_prune_removes_odd_entries(self, lock_dir: Path) -> None:
        registry = FileLockRegistry(lock_dir)
        ports = find_free_ports(2)
        link = Path(registry.lock_path(ClaimKey(registry.scope(), "tcp", ports[0])))
        fifo = Path(registry.lock_path(ClaimKey(registry.scope(), "udp", ports[1])))
        directory = Path(
            registry.lock_path(ClaimKey(registry.scope(), "tcp", ports[1]))
        )
        link.symlink_to(lock_dir / "missing")
        os.mkfifo(fifo)
        directory.mkdir()

        removed = registry.prune()

        assert sorted(removed) == sorted([str(link), str(fifo), str(directory)])
        assert not directory.exists()
        assert not link.is_symlink()
        assert not fifo.exists()

    async def test_default_directory_from_env(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AIOPORTCLAIM_LOCK_DIR", str(tmp_path / "from-env"))

        assert FileLockRegistry().path == tmp_path / "from-env"

    def test_default_directory_per_user(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIOPORTCLAIM_LOCK_DIR")

        assert FileLockRegistry().path.name == f"aioportclaim-{os.geteuid()}"


class TestInodeCheck:
    def test_replaced_lock_file_retried(
        self, registry: FileLockRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A cleaner unlinks and recreates the file between our open and our
        # lock; the race is forced by doing exactly that on the first lock.
        [port] = find_free_ports(1)
        key = ClaimKey(registry.scope(), "tcp", port)
        path = registry.lock_path(key)
        Path(path).touch()
        real_lock = _file.lock_nowait
        calls: list[int] = []

        def replace_then_lock(fd: int) -> bool:
            if not calls:
                os.unlink(path)
                Path(path).touch()
            calls.append(fd)
            return real_lock(fd)

        monkeypatch.setattr(_file, "lock_nowait", replace_then_lock)
        lease = registry.try_acquire_now(key, holder(port))

        assert lease is not None
        assert len(calls) == 2
        assert lease.is_held_now()
        assert os.fstat(lease.fd).st_ino == os.stat(path).st_ino
        lease.release_now()

    async def test_unlinked_lock_file_detected(
        self, registry: FileLockRegistry
    ) -> None:
        async with open_claim(registry=registry) as claim:
            [lease] = claim.leases
            path = registry.lock_path(lease.key)
            os.unlink(path)
            Path(path).touch()

            assert not await lease.is_held()
            assert not await claim.still_own_claim()

    def test_lock_excludes_other_process(self, registry: FileLockRegistry) -> None:
        [port] = find_free_ports(1)
        key = ClaimKey(registry.scope(), "tcp", port)
        lease = registry.try_acquire_now(key, holder(port))
        assert lease is not None
        code = (
            "import sys\n"
            "from aioportclaim import FileLockRegistry, ClaimKey, HolderRecord\n"
            "registry = FileLockRegistry(sys.argv[1])\n"
            "key = ClaimKey(registry.scope(), 'tcp', int(sys.argv[2]))\n"
            "print(registry.try_acquire_now(key, HolderRecord.for_this_process('tcp', key.port, None)) is None)\n"
        )

        held = run_python(code, str(registry.path), str(port))
        lease.release_now()
        released = run_python(code, str(registry.path), str(port))

        assert held.stdout.strip() == "True", held.stderr
        assert released.stdout.strip() == "False", released.stderr

    def test_second_lease_in_process_refused(self, registry: FileLockRegistry) -> None:
        [port] = find_free_ports(1)
        key = ClaimKey(registry.scope(), "tcp", port)
        first = registry.try_acquire_now(key, holder(port))

        assert first is not None
        assert registry.try_acquire_now(key, holder(port)) is None
        assert (
            FileLockRegistry(registry.path).try_acquire_now(key, holder(port)) is None
        )
        first.release_now()


class TestListing:
    async def test_list_shows_holder_record(self, registry: FileLockRegistry) -> None:
        async with open_claim(registry=registry, app_id="billing") as claim:
            [info] = registry.list_claims_now()

        assert info.held
        assert info.key.port == claim.port
        assert info.record is not None
        assert info.record.pid == os.getpid()
        assert info.record.app_id == "billing"
        assert info.record.kind == "tcp"

    async def test_released_claim_keeps_last_holder(
        self, registry: FileLockRegistry
    ) -> None:
        async with claim_port(registry=registry):
            pass
        [info] = await registry.list_claims()

        assert not info.held
        assert info.record is not None
        assert info.record.pid == os.getpid()

    async def test_prune_removes_only_unheld(self, registry: FileLockRegistry) -> None:
        async with claim_port(registry=registry):
            pass
        async with open_claim(registry=registry) as held:
            removed = registry.prune()
            remaining = registry.list_claims_now()

        assert len(removed) == 1
        assert [info.key.port for info in remaining] == [held.port]

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"not json",
            b"[1, 2]",
            b'{"pid": "1", "kind": "tcp", "port": 80, "started": 0}',
            b'{"pid": 1, "kind": "sctp", "port": 80, "started": 0}',
            b'{"pid": 1, "kind": "tcp", "port": 70000, "started": 0}',
            b'{"pid": true, "kind": "tcp", "port": 80, "started": 0}',
            b'{"pid": 1, "kind": "tcp", "port": 80, "started": "now"}',
            b'{"pid": 1, "kind": "tcp", "port": 80, "started": 0, "host": 5}',
            b'{"pid": 1, "kind": "tcp", "port": 80, "started": 0, "app_id": "'
            + b"x" * 5000
            + b'"}',
            b"\xff\xfe",
        ],
    )
    def test_malformed_record_parsed_as_none(self, data: bytes) -> None:
        assert HolderRecord.from_bytes(data) is None

    def test_record_round_trip(self) -> None:
        record = holder(8080)

        assert HolderRecord.from_bytes(record.to_bytes()) == record


class TestMemoryRegistry:
    async def test_memory_claims_conflict(self) -> None:
        registry = MemoryRegistry()
        [port] = find_free_ports(1)
        async with open_claim(port, registry=registry) as claim:
            [info] = await registry.list_claims()
            with pytest.raises(TimeoutError):
                async with claim_port(port, registry=registry, timeout=0.1):
                    pass

        assert info.key.port == claim.port
        assert await registry.list_claims() == []

    async def test_memory_lease_released_once(self) -> None:
        registry = MemoryRegistry()
        async with open_claim(registry=registry) as claim:
            [lease] = claim.leases
        await lease.release()

        assert not await lease.is_held()


CLAIM_AS_USER = """
import anyio, sys
from aioportclaim import FileLockRegistry, PortClaimError, claim_port
async def main():
    try:
        async with claim_port(int(sys.argv[2]), registry=FileLockRegistry(sys.argv[1]), timeout=float(sys.argv[3])):
            print("CLAIMED", flush=True)
            sys.stdin.read()
    except PortClaimError as error:
        print("FAILED", error, flush=True)
anyio.run(main)
"""


def start_as_user(
    uid: int, lock_dir: Path, port: int, timeout: float
) -> subprocess.Popen[str]:
    """Start a child that claims `port` as user `uid` and holds it until stdin closes."""
    command = [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        sys.executable, "-c", CLAIM_AS_USER, str(lock_dir), str(port), str(timeout),
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class TestSharedDirectory:
    def test_two_users_share_sticky_directory(self) -> None:
        require_root_tools("setpriv")
        # pytest's own temporary directories are private to root, so the
        # shared directory sits directly in the system temporary directory.
        shared = Path(tempfile.mkdtemp(prefix="aioportclaim-shared-"))
        shared.chmod(0o1777)
        [port] = find_free_ports(1)
        try:
            first = start_as_user(12345, shared, port, 5)
            assert first.stdout is not None
            first_line = first.stdout.readline().strip()
            blocked = start_as_user(65534, shared, port, 0.3)
            blocked_out, blocked_err = blocked.communicate("", timeout=60)
            first.communicate("", timeout=60)
            after = start_as_user(65534, shared, port, 5)
            after_out, after_err = after.communicate("", timeout=60)
        finally:
            shutil.rmtree(shared)

        assert first_line == "CLAIMED"
        assert blocked_out.startswith("FAILED"), blocked_err
        assert "stayed busy" in blocked_out
        assert after_out.strip() == "CLAIMED", after_err
