"""The ``fabns`` command line."""


def main() -> None:
    from fabns import __version__

    print(f"fabns {__version__}")
