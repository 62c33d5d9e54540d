"""Users and groups as the *container* knows them.

fabns reads ``/etc/passwd`` and ``/etc/group`` from inside the target (never
from the host), then decides here which uid, gid and supplementary groups a
command runs with, and which login variables it sees -- like an SSH login.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fabns.errors import InvalidArgument, UnknownUser
from fabns.quoting import check_env_name, check_text

ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
LOGIN_VARIABLES = ("HOME", "SHELL", "USER", "LOGNAME", "PATH")
NO_LOGIN_SHELLS = ("false", "nologin", "sync", "halt", "shutdown")
#: The group of a numeric uid that has no passwd entry: the overflow group
#: ("nogroup"), never root's group 0.
NO_GROUP = 65534


def is_number(text: str) -> bool:
    """``text`` is a plain decimal number: ASCII digits only (superscripts are names)."""
    return text.isascii() and text.isdecimal()


@dataclass(frozen=True)
class Account:
    """One line of the container's ``/etc/passwd``."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class Group:
    """One line of the container's ``/etc/group``."""

    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class IdMap:
    """A ``/proc/PID/uid_map`` or ``gid_map``: which ids exist inside."""

    ranges: tuple[tuple[int, int, int], ...]

    @classmethod
    def parse(cls, text: str | None) -> IdMap:
        ranges = []
        for line in (text or "").splitlines():
            parts = line.split()
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                ranges.append((int(parts[0]), int(parts[1]), int(parts[2])))
        return cls(tuple(ranges))

    def __contains__(self, inside: object) -> bool:
        if not isinstance(inside, int):
            return False
        return any(start <= inside < start + count for start, _, count in self.ranges)


@dataclass(frozen=True)
class Credentials:
    """Who a command runs as inside the target.

    ``uid``/``gid`` of ``None`` mean "keep what the way in gives": the
    entering user, which is root after elevation. ``groups`` is the full
    supplementary list (``None``: leave alone).
    """

    uid: int | None
    gid: int | None
    groups: tuple[int, ...] | None
    account: Account | None

    def login_environment(self) -> dict[str, str]:
        """HOME, SHELL, USER, LOGNAME and PATH as a login would set them."""
        account = self.account
        uid = self.uid if self.uid is not None else 0
        env = {"PATH": ROOT_PATH if uid == 0 else USER_PATH}
        if account is None:
            env.update(HOME="/", SHELL="/bin/sh")
            return env
        env.update(HOME=account.home, SHELL=account.shell, USER=account.name, LOGNAME=account.name)
        return env

    @property
    def shell(self) -> str:
        """The login shell to run commands with; ``/bin/sh`` for no-login accounts."""
        if self.account is None or not self.account.shell.startswith("/"):
            return "/bin/sh"
        if self.account.shell.rsplit("/", 1)[-1] in NO_LOGIN_SHELLS:
            return "/bin/sh"
        return self.account.shell

    @property
    def home(self) -> str:
        return self.account.home if self.account is not None else "/"


def parse_passwd(text: str | None) -> list[Account]:
    accounts = []
    for line in (text or "").splitlines():
        parts = line.split(":")
        if len(parts) < 7 or not parts[2].isdigit() or not parts[3].isdigit():
            continue
        accounts.append(Account(parts[0], int(parts[2]), int(parts[3]), parts[5], parts[6]))
    return accounts


def parse_group(text: str | None) -> list[Group]:
    groups = []
    for line in (text or "").splitlines():
        parts = line.split(":")
        if len(parts) < 4 or not parts[2].isdigit():
            continue
        members = tuple(m for m in parts[3].split(",") if m)
        groups.append(Group(parts[0], int(parts[2]), members))
    return groups


def _check_id(value: int | str, what: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidArgument(f"{what} must be a number or a name, not {value!r}")
    if isinstance(value, int) and not 0 <= value < 2**32 - 1:
        raise InvalidArgument(f"{what} out of range: {value}")
    if isinstance(value, str) and (not value or "\x00" in value or ":" in value):
        raise InvalidArgument(f"not a valid {what}: {value!r}")
    if isinstance(value, str):
        check_text(value, what)
    return value


def check_id(value: int | str | None, what: str) -> int | str | None:
    """Validate a uid/gid argument (a number or a name) without looking it up."""
    return None if value is None else _check_id(value, what)


@dataclass(frozen=True)
class AccountBook:
    """The container's users, groups and id maps, with the rules that use them."""

    accounts: Sequence[Account]
    groups: Sequence[Group]
    uid_map: IdMap
    gid_map: IdMap
    where: str
    #: Files that could not be read inside (FIFO, too large, a link...), with why.
    problems: Mapping[str, str] = field(default_factory=dict)

    def _why(self, path: str) -> str:
        problem = self.problems.get(path)
        return f" ({path} could not be read: {problem})" if problem else ""

    def account(self, user: int | str) -> Account | None:
        for account in self.accounts:
            if (isinstance(user, int) and account.uid == user) or account.name == user:
                return account
        if isinstance(user, str) and is_number(user):
            return self.account(int(user))
        return None

    def group_id(self, group: int | str) -> int:
        if isinstance(group, int):
            return group
        for entry in self.groups:
            if entry.name == group:
                return entry.gid
        if is_number(group):
            return int(group)
        raise UnknownUser(
            f"no group {group!r} in /etc/group of {self.where}{self._why('/etc/group')}"
        )

    def supplementary(self, account: Account) -> tuple[int, ...]:
        """initgroups(3): the primary group plus every group naming the user."""
        gids = [account.gid]
        gids += [g.gid for g in self.groups if account.name in g.members and g.gid not in gids]
        return tuple(gid for gid in gids if gid in self.gid_map)

    def credentials(
        self, uid: int | str | None, gid: int | str | None, *, default_root: bool
    ) -> Credentials:
        """Work out uid, gid and groups, the way ``nsenter -S/-G`` or a login would.

        :param default_root:
            the way in switches to root of a new user namespace when no uid
            is given (nsenter's rule): credentials default to uid/gid 0.
        """
        account: Account | None = None
        if uid is None and default_root:
            uid = 0
        if uid is not None:
            account = self.account(uid)
            if account is None and isinstance(uid, str) and not is_number(uid):
                raise UnknownUser(
                    f"no user {uid!r} in /etc/passwd of {self.where}{self._why('/etc/passwd')}"
                )
            number = account.uid if account is not None else int(uid)
            if number not in self.uid_map:
                raise UnknownUser(
                    f"uid {number} is not mapped in the user namespace of {self.where} "
                    f"(uid_map: {self._ranges(self.uid_map)})"
                )
            uid = number
        gid_number: int | None = None
        if gid is not None:
            gid_number = self.group_id(gid)
        elif account is not None:
            gid_number = account.gid
        elif uid is not None:
            gid_number = 0 if uid == 0 else NO_GROUP
        if gid_number is not None and gid_number not in self.gid_map:
            hint = " (uid without a passwd entry: pass gid=)" if gid is None else ""
            raise UnknownUser(
                f"gid {gid_number} is not mapped in the user namespace of {self.where} "
                f"(gid_map: {self._ranges(self.gid_map)}){hint}"
            )
        groups: tuple[int, ...] | None = None
        if account is not None and account.uid != 0 and "/etc/group" in self.problems:
            raise UnknownUser(
                f"cannot work out the groups of {account.name!r} in {self.where}"
                f"{self._why('/etc/group')}"
            )
        if account is not None:
            groups = self.supplementary(account)
            if gid is not None and gid_number is not None:
                groups = (gid_number, *[g for g in groups if g != gid_number])
        elif gid_number is not None or uid is not None:
            groups = ()
        return Credentials(
            uid=uid if isinstance(uid, int) else None,
            gid=gid_number,
            groups=groups,
            account=account,
        )

    @staticmethod
    def _ranges(idmap: IdMap) -> str:
        return ", ".join(f"{a}..{a + n - 1}" for a, _, n in idmap.ranges) or "empty"


def merge_environment(
    container: Mapping[str, str], credentials: Credentials, extra: Mapping[str, object]
) -> dict[str, str]:
    """The container's environment, the login variables, then the caller's ``env``.

    The caller's names must be valid (`InvalidArgument` otherwise); entries of
    the container's own environment that no shell could export (odd names,
    bytes that are no text) are left out.
    """
    env = {k: v for k, v in container.items() if k not in LOGIN_VARIABLES and _exportable(k, v)}
    env.update(credentials.login_environment())
    for key, value in extra.items():
        check_env_name(key)
        env[key] = check_text(str(value), f"the value of {key}")
    return env


def _exportable(name: str, value: str) -> bool:
    try:
        check_env_name(name)
        check_text(value, "a value")
    except InvalidArgument:
        return False
    return True
