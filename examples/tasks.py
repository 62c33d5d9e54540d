"""Invoke entry point for the examples: ``inv -r examples deploy.status -H ...``."""

import deploy
from invoke import Collection

ns = Collection(deploy.ns)
