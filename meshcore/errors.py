"""Errors about one field of a document a person wrote (genesis, config)."""


class FieldError(ValueError):
    """A value is invalid; ``field`` is its dotted path, e.g. ``token.symbol``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
