"""The ``rheostat`` command line (see :mod:`rheostat.cli.main`)."""
