"""Badge colours for status vocabularies, so the console renders every badge one way.

Each app's ``choices.py`` declares its ``TextChoices`` and registers a colour for every
member next to it; templates render ``{% badge value "app.Vocabulary" %}``.
"""

from django.db import models

COLORS = {"gray", "blue", "green", "orange", "red", "purple", "teal"}
_vocabularies: dict[str, tuple[type[models.TextChoices], dict[str, str]]] = {}


def register_colors(choices: type[models.TextChoices], colors: dict) -> dict[str, str]:
    """Register the badge colour of every member of ``choices``; returns the map.

    Raises ``ValueError`` when a member has no colour or a colour is unknown, so a
    new status cannot reach the console unstyled.
    """
    missing = [member.value for member in choices if member not in colors]
    if missing:
        raise ValueError(f"{choices.__name__}: no badge colour for {missing}")
    unknown = set(colors.values()) - COLORS
    if unknown:
        raise ValueError(f"{choices.__name__}: unknown colours {sorted(unknown)}")
    app_label = choices.__module__.split(".")[0]
    mapping = {str(value): color for value, color in colors.items()}
    _vocabularies[f"{app_label}.{choices.__name__}"] = (choices, mapping)
    return mapping


def badge(value: str, vocabulary: str) -> tuple[str, str]:
    """The label and colour of ``value`` in the named vocabulary (``"orgs.Role"``)."""
    try:
        choices, mapping = _vocabularies[vocabulary]
    except KeyError:
        raise LookupError(f"no badge colours registered for {vocabulary!r}") from None
    value = str(value)
    label = dict(choices.choices).get(value, value)
    return str(label), mapping.get(value, "gray")
