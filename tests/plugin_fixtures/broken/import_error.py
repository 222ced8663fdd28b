"""A plugin whose dependency is not installed: it must be disabled with the import error."""

import bygheartd_no_such_dependency  # noqa: F401
