"""Request decoding and mode dispatch: the end of every assembled program.

The program is run as ``python3 -I -S -c PROGRAM REQUEST``, REQUEST being
base64 of a JSON object with a ``mode``. It serves the modes whose modules it
was assembled from (they add themselves to ``MODES``); anything else is a bad
request, answered on stderr with exit status 2, never with a traceback.
"""

import base64
import json
import os
import signal
import sys

from .protocol import EXIT_SETUP_FAILED, MODES


def seal():
    """From here on, nothing can run code from a file, and nothing prints a traceback.

    After entering, paths name the container's files (its root, its
    /usr/lib/python3*). Every module the helper uses is loaded by now, so the
    import system keeps only the built-in and frozen importers: a lazy import
    (Python 3.13 imports ``traceback`` to print an uncaught exception) fails
    instead of running the container's code as host root. SIGINT from inside
    the target kills instead of raising, and an exception that still escapes
    ends the process without a hook.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.path[:] = []
    sys.path_hooks[:] = []
    sys.path_importer_cache.clear()
    sys.meta_path[:] = [
        finder
        for finder in sys.meta_path
        if getattr(finder, "__name__", "") in ("BuiltinImporter", "FrozenImporter")
    ]
    sys.excepthook = lambda *info: os._exit(EXIT_SETUP_FAILED)
    if hasattr(sys, "unraisablehook"):  # Python 3.8+
        sys.unraisablehook = lambda unraisable: None  # novermin


def main(argv):
    try:
        # surrogateescape: raw bytes survive as the same lone surrogates that
        # json's "\udcXX" escapes give, and go back out as the original bytes.
        request = json.loads(base64.b64decode(argv[1]).decode("utf-8", "surrogateescape"))
        if not isinstance(request, dict):
            raise ValueError("not a JSON object")
    except Exception as e:
        sys.stderr.write("fabns helper: bad request: %s\n" % e)
        return 2
    mode = request.get("mode")
    serve = MODES.get(mode) if isinstance(mode, str) else None
    if serve is not None:
        seal()
        try:
            return serve(request)
        except BaseException:  # never a traceback, never a hook: see seal()
            os._exit(EXIT_SETUP_FAILED)
    sys.stderr.write("fabns helper: unknown mode\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
