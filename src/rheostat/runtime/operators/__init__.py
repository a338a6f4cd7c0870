"""Built-in operators; importing this package registers them by step kind."""

from rheostat.runtime.operators import join, process, stateless, windows  # noqa: F401
