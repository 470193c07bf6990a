"""The one exception type that reaches a user as a message instead of a traceback."""


class UserError(Exception):
    """A problem with the user's input, config or store, stated so the user can fix it."""
