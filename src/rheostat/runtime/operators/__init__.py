"""Built-in operators; importing this package registers them by step kind."""

from rheostat.runtime.operators import join, process, stateless  # noqa: F401
