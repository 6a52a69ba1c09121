"""A model for the command-line tests, importable as ``tests.functional.cli_models.Spell``."""

from repocket import ActiveRecord, attributes


class Spell(ActiveRecord):
    """A spell with an indexed name."""

    class Meta:
        namespace = "cli"

    name = attributes.Unicode(index=True)
