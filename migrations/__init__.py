"""rotator's Alembic migrations, installed as the package ``rotator.migrations``.

A package so that ``importlib.resources`` finds them in a wheel as in the source tree.
"""
