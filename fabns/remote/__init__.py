"""The fabns remote helper: enter the namespaces of a process with setns(2).

These modules are run on the remote host, sent over the SSH channel as one
program (``python3 -c``, see `fabns.helper`) and never written to disk there.
They use only the standard library of Python 3.6 or newer (``ctypes`` stands
in for ``os.setns``, which Python only has from 3.12 on).

The program is called with one argument, a base64 JSON request, and has three
modes:

``probe`` (`probe`)
    Report what the client needs to know about a target PID: whether it
    exists, its start time and namespace inodes, our own namespaces, the
    target's user-namespace facts, its environment, the tools on the host,
    and files read from *inside* the target (``/etc/passwd``...). The report
    is one JSON line on stdout.

``exec`` (`enter`)
    Verify that the PID is still the leader that was resolved (same start
    time, same namespace inodes), enter its namespaces, root and cgroups,
    switch to the requested credentials and exec the command with exactly
    the environment given. Progress is reported with marker lines on
    stdout (see ``protocol.marker``) so the client can tell "entered, your
    command runs now" from "failed at step X with errno Y".

``sftp`` (`sftp`)
    Enter like ``exec``, then serve SFTP on stdin/stdout (``SftpServer``).

Threat model: the helper runs as host root (or as the unprivileged owner of
the container) and the container's root is hostile. It controls every file
in the container, can race and ptrace inside its namespaces. So: the process
is non-dumpable (re-asserted after every credential change) while it holds
host file descriptors; every descriptor except stdio is closed before
anything of the container runs or is read; files the container controls are
read with size caps, without following a final symlink, never from a FIFO or
device, under a deadline, and only ever passed on as data; nothing read after
the chroot decides anything; no host environment variable reaches the
command.

Assembly
--------

The client imports these modules normally (``fabns.remote.protocol`` holds
every constant both sides share), and `fabns.helper.program` assembles the
program of a mode by concatenating the modules it needs in dependency order
-- ``protocol``, ``enter``, then ``probe`` or ``sftp`` (or neither, for
``exec``), then ``main`` -- with their imports of each other dropped.
For that to work, the rules are:

- A remote module imports only the standard library and its sibling modules.
- A sibling is imported only at top level, by a statement of the form
  ``from .X import NAME, ...`` (parenthesised over several lines is fine),
  alone on its lines; X comes before the importing module in every program
  it is part of. The assembler drops these statements, so the names are the
  ones X defined earlier in the same program.
- Module-level names must not collide across modules: in the program they
  all share one namespace.
- Nothing runs at import time except definitions, the ``MODES`` registration
  of a mode module, and ``main``'s ``if __name__ == "__main__"`` call.
  ``protocol`` in particular loads nothing (the client imports it).
- Python 3.6 syntax and stdlib only; no annotations (``vermin -t=3.6-``).

This package itself (``__init__``) is never sent.
"""
