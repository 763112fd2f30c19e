"""Template tags shared by every console page."""

from django import template

from argus.choices import badge as badge_for

register = template.Library()


@register.inclusion_tag("partials/badge.html")
def badge(value, vocabulary):
    """``{% badge obj.status "agents.AgentStatus" %}``: a coloured status badge."""
    label, color = badge_for(value, vocabulary)
    return {"label": label, "color": color, "value": value}
