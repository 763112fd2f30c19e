"""Console forms of the agents app. They parse what people type; ``agents.services``
validates and writes, and names the field at fault.

The agent form has no status field: the status changes only through its actions. The
LLM API key is write-only: a password field that is never rendered back (blank keeps
the stored key, "remove" clears it).
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from django import forms
from django.forms.models import ModelChoiceIterator
from django.utils.safestring import mark_safe

from agents.choices import PARENT_ROLES, AgentRole, Engine
from agents.models import Agent
from agents.services import AGENT_FIELDS, UNSET
from tools.choices import ToolState
from tools.forms import JSONValueField
from tools.models import MCPServer, Tool

TAG_SEPARATORS = re.compile(r"[\s,]+")


class RoleAwareSelect(forms.Select):
    """A select of agents whose options carry ``data-role``, so the form's script can
    offer only the parents the chosen role allows."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"]["data-role"] = instance.role
        return option


class ServerAwareSelect(forms.Select):
    """A select of tools whose options carry ``data-server`` (the prompt tool follows
    the home server)."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"]["data-server"] = str(instance.server_id)
        return option


class ToolsByServer(ModelChoiceIterator):
    """Tools grouped by server (``<optgroup>`` per server); the queryset is ordered so."""

    def __iter__(self):
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        for _server_id, tools in itertools.groupby(self.queryset, key=lambda tool: tool.server_id):
            tools = list(tools)
            yield (tools[0].server.name, [self.choice(tool) for tool in tools])


class ToolChoiceField(forms.ModelChoiceField):
    iterator = ToolsByServer

    def label_from_instance(self, tool):
        return tool.name


def callable_tools():
    """The tools an agent can be given: not removed, by server then name."""
    return (
        Tool.objects.exclude(state=ToolState.REMOVED)
        .select_related("server")
        .order_by("server__name", "server_id", "name")
    )


def agent_choices():
    return Agent.objects.order_by("name")


class AgentForm(forms.Form):
    """Create or change an agent. Which fields count depends on the engine: the prompt
    tool for the MCP tool engine, the LLM settings for the LLM engine (both groups are
    rendered, so switching keeps what was typed)."""

    name = forms.CharField(max_length=100)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    role = forms.ChoiceField(
        choices=AgentRole.choices,
        help_text="A master has no parent; a supervisor works under a master; a worker "
        "under a supervisor or a master.",
    )
    parent = forms.ModelChoiceField(
        queryset=agent_choices(),
        required=False,
        widget=RoleAwareSelect,
        empty_label="— none —",
        help_text="Its grants bound this agent's: it can never do more than its parent.",
    )
    server = forms.ModelChoiceField(
        label="Home server",
        queryset=MCPServer.objects.order_by("name"),
        required=False,
        empty_label="— none —",
    )
    engine = forms.ChoiceField(choices=Engine.choices, initial=Engine.PLAN)
    engine_tool = forms.ModelChoiceField(
        label="Prompt tool",
        queryset=callable_tools(),
        required=False,
        widget=ServerAwareSelect,
        empty_label="— choose a tool of the home server —",
        help_text="The tool of the home server that receives prompts.",
    )
    llm_base_url = forms.CharField(
        label="LLM base URL",
        required=False,
        max_length=500,
        widget=forms.URLInput(attrs={"spellcheck": "false"}),
        help_text="An OpenAI-compatible endpoint, e.g. https://api.example.com/v1.",
    )
    llm_model = forms.CharField(label="LLM model", required=False, max_length=200)
    llm_api_key = forms.CharField(
        label="LLM API key",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again.",
    )
    llm_api_key_remove = forms.BooleanField(label="Remove the stored API key", required=False)
    llm_system_prompt = forms.CharField(
        label="System prompt", required=False, widget=forms.Textarea(attrs={"rows": 4})
    )
    llm_max_steps = forms.IntegerField(
        label="Max steps", initial=10, required=False, help_text="Blank: 10 (or as it was)."
    )
    capabilities = forms.CharField(
        label="Capability tags",
        required=False,
        help_text=mark_safe(
            "Words separated by commas or spaces, e.g. <code>files, search</code>."
        ),
    )
    max_concurrent_executions = forms.IntegerField(label="Max concurrent executions", initial=1)
    max_tool_calls_per_execution = forms.IntegerField(
        label="Max tool calls per execution", required=False, initial=100
    )
    max_tool_calls_per_hour = forms.IntegerField(label="Max tool calls per hour", required=False)
    max_tool_calls_per_day = forms.IntegerField(label="Max tool calls per day", required=False)

    MAIN_FIELDS = ("name", "description", "role", "parent", "server", "engine")
    LLM_FIELDS = (
        "llm_base_url",
        "llm_model",
        "llm_api_key",
        "llm_api_key_remove",
        "llm_system_prompt",
        "llm_max_steps",
    )
    LIMIT_FIELDS = (
        "capabilities",
        "max_concurrent_executions",
        "max_tool_calls_per_execution",
        "max_tool_calls_per_hour",
        "max_tool_calls_per_day",
    )

    def __init__(self, *args, agent: Agent | None = None, **kwargs):
        self.agent = agent
        if agent is not None and not kwargs.get("initial"):
            kwargs["initial"] = self.initial_from(agent)
        super().__init__(*args, **kwargs)
        if agent is not None:
            self.fields["parent"].queryset = agent_choices().exclude(pk=agent.pk)
        if agent is None or not agent.has_llm_api_key:
            del self.fields["llm_api_key_remove"]
        else:
            self.fields[
                "llm_api_key"
            ].help_text = "A key is stored. Leave blank to keep it; type a new one to replace it."

    @staticmethod
    def initial_from(agent: Agent) -> dict:
        return {
            **{name: getattr(agent, name) for name in AGENT_FIELDS},
            "parent": agent.parent_id,
            "server": agent.server_id,
            "engine_tool": agent.engine_tool_id,
            "capabilities": ", ".join(agent.capabilities),
        }

    def parent_roles_json(self) -> str:
        """What the form's script needs: the parent roles each role allows."""
        return json.dumps({role: list(parents) for role, parents in PARENT_ROLES.items()})

    def main_fields(self):
        return [self[name] for name in self.MAIN_FIELDS]

    def llm_fields(self):
        return [self[name] for name in self.LLM_FIELDS if name in self.fields]

    def limit_fields(self):
        return [self[name] for name in self.LIMIT_FIELDS]

    def llm_errors(self) -> bool:
        """Whether an LLM setting has an error (its group then shows whatever the engine)."""
        return any(self.has_error(name) for name in self.LLM_FIELDS if name in self.fields)

    def engine_tool_errors(self) -> bool:
        return self.has_error("engine_tool")

    def typed_api_key(self) -> bool:
        """Whether the bound form carried an API key (which is never rendered back)."""
        return self.is_bound and bool(self.data.get(self.add_prefix("llm_api_key")))

    def clean_capabilities(self) -> list[str]:
        text = self.cleaned_data["capabilities"]
        return [tag for tag in TAG_SEPARATORS.split(text) if tag]

    def service_data(self) -> dict[str, Any]:
        """The keyword arguments of ``create_agent`` / ``update_agent``."""
        data = {name: self.cleaned_data[name] for name in AGENT_FIELDS}
        if data["llm_max_steps"] is None:
            del data["llm_max_steps"]  # the default, or the agent's current value
        if self.cleaned_data.get("llm_api_key_remove"):
            data["llm_api_key"] = ""
        elif self.cleaned_data.get("llm_api_key"):
            data["llm_api_key"] = self.cleaned_data["llm_api_key"]
        else:
            data["llm_api_key"] = UNSET
        return data


class AgentDeleteForm(forms.Form):
    """Deleting an agent that has children: where they go."""

    reparent_to = forms.ModelChoiceField(
        label="Move its children to",
        queryset=agent_choices(),
        required=False,
        empty_label="— choose an agent —",
    )

    def __init__(self, *args, agent: Agent, children: list[Agent], **kwargs):
        super().__init__(*args, **kwargs)
        # Only agents every child can have as parent (which also leaves out the agent's
        # own descendants: none of them has a role above its children's).
        roles = set(AgentRole.values)
        for child in children:
            roles &= set(PARENT_ROLES[child.role])
        self.fields["reparent_to"].queryset = (
            agent_choices().exclude(pk=agent.pk).filter(role__in=sorted(roles))
        )
        if not children:
            del self.fields["reparent_to"]


class SuspendForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=5000, required=False, widget=forms.Textarea(attrs={"rows": 2})
    )


# --- tool grants ---------------------------------------------------------------------------
class GrantForm(forms.Form):
    """Change what an agent may do with one tool; never more than its parent may."""

    allowed = forms.BooleanField(
        required=False, initial=True, help_text="Unchecked: the grant refuses the tool."
    )
    requires_approval = forms.BooleanField(
        label="Each call needs approval",
        required=False,
        help_text="A person approves every call before it runs.",
    )
    max_calls_per_execution = forms.IntegerField(
        label="Max calls per execution", required=False, help_text="Blank: no limit of its own."
    )
    max_calls_per_hour = forms.IntegerField(
        label="Max calls per hour", required=False, help_text="Blank: no limit of its own."
    )
    argument_schema = JSONValueField(
        label="Argument schema",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "mono"}),
        help_text=mark_safe(
            "Optional JSON Schema the call's arguments must also satisfy, e.g. "
            '<code>{"type": "object", "properties": {"path": {"pattern": "^/srv/"}}}</code>.'
        ),
    )
    reason = forms.CharField(max_length=500, required=False, help_text="Why the agent needs it.")

    FIELDS = (
        "allowed",
        "requires_approval",
        "max_calls_per_execution",
        "max_calls_per_hour",
        "argument_schema",
        "reason",
    )

    def service_data(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in self.FIELDS}


class GrantCreateForm(GrantForm):
    """A new grant: which tool (of the tools the user can see, grouped by server)."""

    tool = ToolChoiceField(queryset=callable_tools(), empty_label="— choose a tool —")

    field_order = ["tool"]

    def __init__(self, *args, agent: Agent, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tool"].queryset = callable_tools().exclude(agent_grants__agent=agent)
