"""A model for the command-line tests, importable as ``tests.functional.cli_models.Spell``."""

from repocket import ActiveRecord, attributes


class Spell(ActiveRecord):
    """A spell with an indexed name."""

    class Meta:
        namespace = "cli"

    name = attributes.Unicode(index=True)


class Scroll(ActiveRecord):
    """A model spread over 4 partitions, for ``repocket repartition``."""

    class Meta:
        namespace = "cli"
        partitions = 4

    title = attributes.Unicode(index=True)


class Potion(ActiveRecord):
    """Several attribute types, for ``repocket inspect``, ``ls``, ``count`` and ``stats``."""

    class Meta:
        namespace = "cli"

    name = attributes.Unicode(index=True)
    strength = attributes.Integer(index=True)
    secret_formula = attributes.Unicode(secret=True, null=True)
    notes = attributes.ByteStream()
