"""Request decoding and mode dispatch: the end of every assembled program.

The program is run as ``python3 -I -S -c PROGRAM REQUEST``, REQUEST being
base64 of a JSON object with a ``mode``. It serves the modes whose modules it
was assembled from (they add themselves to ``MODES``); anything else is a bad
request, answered on stderr with exit status 2, never with a traceback.
"""

import base64
import json
import sys

from .protocol import MODES


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
        return serve(request)
    sys.stderr.write("fabns helper: unknown mode\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
