"""The whole set the fabns test suite uses: one sshd and the standard containers, `Harness`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabns.testing.base import TEST_USER, HarnessError, require_root
from fabns.testing.containers import Container, chroot_limitation
from fabns.testing.sshd import SSHServer

__all__ = ["STANDARD_CONTAINERS", "Harness"]

#: The standard containers: key -> (name and hostname, mode, owner).
STANDARD_CONTAINERS = {
    "plain": ("fabns-plain", "plain", "root"),
    "rootns": ("fabns-rootns", "maproot", "root"),
    "alice-maproot": ("fabns-amap", "maproot", TEST_USER),
    "alice-subid": ("fabns-asub", "subid", TEST_USER),
}


@dataclass
class Harness:
    """Everything the behaviour tests need: one sshd and the standard containers.

    ``containers`` maps the keys of `STANDARD_CONTAINERS` (``"plain"``,
    ``"rootns"``, ``"alice-maproot"``, ``"alice-subid"``) to running `Container` s.
    """

    sshd: SSHServer
    containers: dict[str, Container]
    #: A 0755 directory holding the sshd's files and the containers.
    directory: Path
    #: Standard containers that cannot exist on this machine, with the reason (see
    #: `chroot_limitation`); empty on a normal machine.
    unavailable: dict[str, str] = field(default_factory=dict)
    _remove_directory: bool = field(default=True, repr=False, compare=False)

    @classmethod
    def start(cls, directory: Path | None = None) -> Harness:
        """Start the sshd and the standard containers in ``directory`` (default: a new temp dir).

        If any piece fails, what was started is stopped again before `HarnessError` is raised.
        """
        require_root()
        created = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="fabns-harness-", dir="/tmp"))
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)  # the unprivileged owners' containers live below it
        sshd: SSHServer | None = None
        containers: dict[str, Container] = {}
        try:
            sshd = SSHServer.start(directory / "sshd")
            (directory / "containers").mkdir(exist_ok=True)
            (directory / "containers").chmod(0o755)
            limitation = chroot_limitation()
            unavailable: dict[str, str] = {}
            for key, (name, mode, owner) in STANDARD_CONTAINERS.items():
                if mode != "plain" and limitation:
                    unavailable[key] = limitation
                    continue
                containers[key] = Container.start(directory / "containers", name, mode, owner)
        except BaseException:
            _stop_all(sshd, containers.values())
            if created:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(
            sshd=sshd,
            containers=containers,
            directory=directory,
            unavailable=unavailable,
            _remove_directory=created,
        )

    def stop(self) -> None:
        """Stop every container and the sshd (by PID), then remove the directory if it made it."""
        _stop_all(self.sshd, self.containers.values())
        if self._remove_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> dict[str, object]:
        """JSON-able state (ports, PIDs, paths), enough for `stop_described` in another process."""
        sshd = self.sshd
        return {
            "directory": str(self.directory),
            "remove_directory": self._remove_directory,
            "sshd": {
                "directory": str(sshd.directory),
                "host": sshd.host,
                "port": sshd.port,
                "pid": sshd.pid,
                "start_time": sshd._start_time,
                "client_key": str(sshd.client_key),
                "known_hosts": str(sshd.known_hosts),
            },
            "containers": {key: ctr.describe() for key, ctr in self.containers.items()},
        }

    @classmethod
    def from_description(cls, state: Mapping[str, Any]) -> Harness:
        """The harness `describe` described, e.g. one started by ``inv harness-up``."""
        s = state["sshd"]
        sshd = SSHServer(
            directory=Path(s["directory"]),
            port=int(s["port"]),
            pid=int(s["pid"]),
            client_key=Path(s["client_key"]),
            known_hosts=Path(s["known_hosts"]),
            host=s["host"],
            _start_time=s["start_time"],
        )
        containers = {
            key: Container.from_description(ctr) for key, ctr in state["containers"].items()
        }
        return cls(
            sshd=sshd,
            containers=containers,
            directory=Path(state["directory"]),
            _remove_directory=bool(state["remove_directory"]),
        )

    @classmethod
    def stop_described(cls, state: Mapping[str, Any]) -> None:
        """Stop a harness from its `describe` output (PIDs are checked against start times)."""
        cls.from_description(state).stop()


def stop_all(pieces: Iterable[Container | SSHServer], what: str = "the harness") -> None:
    """Stop every piece, even when one fails; then raise the first failure."""
    errors: list[BaseException] = []
    for piece in pieces:
        try:
            piece.stop()
        except Exception as error:
            errors.append(error)
    if errors:
        raise HarnessError(f"stopping {what} failed: {errors}") from errors[0]


def _stop_all(sshd: SSHServer | None, containers: Iterable[Container]) -> None:
    """Stop the containers, then the sshd."""
    stop_all([*containers, *([sshd] if sshd is not None else [])])
