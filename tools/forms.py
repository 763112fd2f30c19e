"""Console forms of the tools app. They parse what people type; services validate and write.

The server form turns line formats into the services' data (``args`` one per line,
``env`` as ``NAME=value``, ``headers`` as ``Name: value``, new secrets as
``NAME=value``) with an error per bad line. Secret values are write-only: no widget
here ever renders one back, not even after an error.

The "Try it" form is generated from a tool's input schema, one field per top-level
property, and converts what was typed to the JSON types the schema asks for.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.safestring import mark_safe

from tools.choices import NETWORK_TRANSPORTS, Transport
from tools.models import MCPServer
from tools.services import SERVER_FIELDS

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Prefix of the per-secret fields of an existing server's secrets.
REPLACE_PREFIX = "secret_replace__"
REMOVE_PREFIX = "secret_remove__"


class SecretTextarea(forms.Textarea):
    """A textarea that never renders its value: what was typed is not sent back."""

    def format_value(self, value):
        return None


def _lines(text: str):
    """``(line number, stripped line)`` of every non-blank line."""
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line:
            yield number, line


def parse_assignments(text: str, *, separator: str, what: str, names: re.Pattern | None):
    """``NAME<separator>value`` lines as a dict; ``ValidationError`` lists every bad line."""
    parsed: dict[str, str] = {}
    errors = []
    shape = f"NAME{separator}value" if separator == "=" else f"Name{separator} value"
    for number, line in _lines(text):
        name, found, value = line.partition(separator)
        name, value = name.strip(), value.strip()
        if not found or not name:
            errors.append(f"line {number}: expected {shape}")
        elif names is not None and not names.match(name):
            errors.append(
                f"line {number}: {name!r} is not a valid {what} name "
                "(letters, digits and _, not starting with a digit)"
            )
        elif name in parsed:
            errors.append(f"line {number}: {name} is given twice")
        else:
            parsed[name] = value
    if errors:
        raise ValidationError(errors)
    return parsed


class ServerForm(forms.Form):
    """Register or change an MCP server; the transport decides which group of fields
    counts (stdio: command, arguments, environment, directory; network: URL, headers).

    Help texts with markup are marked safe: the tools templates escape every other one,
    since a tool's schema writes the help texts of the "Try it" form.
    """

    name = forms.CharField(max_length=100)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    transport = forms.ChoiceField(
        choices=Transport.choices,
        initial=Transport.STDIO,
        error_messages={
            "invalid_choice": "Unknown transport %(value)s; choose one of: "
            + ", ".join(Transport.values)
            + "."
        },
        help_text="stdio runs a command on the Argus host; the others connect to a URL.",
    )
    command = forms.CharField(
        required=False,
        max_length=500,
        help_text=mark_safe(
            "The program to run, e.g. <code>npx</code> or <code>/usr/bin/python3</code>."
        ),
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    args = forms.CharField(
        label="Arguments",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text="One argument per line.",
    )
    env = forms.CharField(
        label="Environment",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text=mark_safe(
            "<code>NAME=value</code> lines. Write <code>${SECRET}</code> to use a secret."
        ),
    )
    cwd = forms.CharField(
        label="Working directory",
        required=False,
        max_length=500,
        help_text="Optional absolute path.",
    )
    url = forms.CharField(
        label="URL",
        required=False,
        max_length=2000,
        widget=forms.URLInput(attrs={"spellcheck": "false"}),
        help_text="http(s):// for Streamable HTTP and SSE, ws(s):// for WebSocket.",
    )
    headers = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text=mark_safe(
            "<code>Name: value</code> lines, e.g. <code>Authorization: Bearer ${API_TOKEN}</code>."
        ),
    )
    secrets = forms.CharField(
        label="New secrets",
        required=False,
        widget=SecretTextarea(
            attrs={
                "rows": 2,
                "class": "secret-input",
                "autocomplete": "off",
                "spellcheck": "false",
                "autocapitalize": "off",
            }
        ),
        help_text=mark_safe(
            "<code>NAME=value</code> lines. Values are stored encrypted and never shown "
            "again; refer to them as <code>${NAME}</code> in the environment or headers."
        ),
    )
    enabled = forms.BooleanField(
        required=False, initial=True, help_text="Disabled servers are not checked or called."
    )
    check_interval_s = forms.IntegerField(label="Check every (seconds)", initial=60)
    timeout_s = forms.IntegerField(label="Timeout (seconds)", initial=10)

    STDIO_FIELDS = ("command", "args", "env", "cwd")
    NETWORK_FIELDS = ("url", "headers")

    def __init__(self, *args, server: MCPServer | None = None, **kwargs):
        self.server = server
        if server is not None and not kwargs.get("initial"):
            kwargs["initial"] = self.initial_from(server)
        super().__init__(*args, **kwargs)
        self.secret_names = list(server.secret_names) if server is not None else []
        for name in self.secret_names:
            self.fields[REPLACE_PREFIX + name] = forms.CharField(
                label=f"Replace {name}",
                required=False,
                strip=False,
                widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
            )
            self.fields[REMOVE_PREFIX + name] = forms.BooleanField(
                label=f"Remove {name}", required=False
            )

    @staticmethod
    def initial_from(server: MCPServer) -> dict:
        return {
            "name": server.name,
            "description": server.description,
            "transport": server.transport,
            "command": server.command,
            "args": "\n".join(str(arg) for arg in server.args),
            "env": "\n".join(f"{name}={value}" for name, value in server.env.items()),
            "cwd": server.cwd,
            "url": server.url,
            "headers": "\n".join(f"{name}: {value}" for name, value in server.headers.items()),
            "enabled": server.enabled,
            "check_interval_s": server.check_interval_s,
            "timeout_s": server.timeout_s,
        }

    # --- which group counts -------------------------------------------------------------
    def chosen_transport(self) -> str:
        if self.is_bound:
            return self.data.get("transport", "")
        return self.initial.get("transport") or self.fields["transport"].initial

    def is_network(self) -> bool:
        return self.chosen_transport() in NETWORK_TRANSPORTS

    def secret_rows(self):
        """``(name, replace field, remove field)`` per existing secret, for the template."""
        return [
            (name, self[REPLACE_PREFIX + name], self[REMOVE_PREFIX + name])
            for name in self.secret_names
        ]

    def typed_secrets(self) -> bool:
        """Whether the bound form carried secret values (which are never rendered back)."""
        return self.is_bound and any(
            self.data.get(self.add_prefix(name))
            for name in self.fields
            if name == "secrets" or name.startswith(REPLACE_PREFIX)
        )

    def main_fields(self):
        return [self[name] for name in ("name", "description", "transport")]

    def stdio_fields(self):
        return [self[name] for name in self.STDIO_FIELDS]

    def network_fields(self):
        return [self[name] for name in self.NETWORK_FIELDS]

    def health_fields(self):
        return [self[name] for name in ("enabled", "check_interval_s", "timeout_s")]

    # --- parsing ------------------------------------------------------------------------
    def clean_args(self):
        if self.is_network():
            return []
        return [line for _number, line in _lines(self.cleaned_data["args"])]

    def clean_env(self):
        if self.is_network():
            return {}
        return parse_assignments(
            self.cleaned_data["env"], separator="=", what="variable", names=NAME_RE
        )

    def clean_headers(self):
        if not self.is_network():
            return {}
        return parse_assignments(
            self.cleaned_data["headers"], separator=":", what="header", names=None
        )

    def clean_secrets(self):
        added = parse_assignments(
            self.cleaned_data["secrets"], separator="=", what="secret", names=NAME_RE
        )
        errors = [
            f"{name} already exists; replace its value above instead."
            for name in added
            if name in self.secret_names
        ]
        errors += [f"{name} needs a value." for name, value in added.items() if not value]
        if errors:
            raise ValidationError(errors)
        return added

    def clean(self):
        cleaned = super().clean()
        if self.is_network():
            cleaned.update(command="", args=[], env={}, cwd="")
        else:
            cleaned.update(url="", headers={})
        return cleaned

    def secret_changes(self) -> dict[str, str | None]:
        """What the service gets as ``secrets``: values set or replaced, ``None`` removes."""
        changes: dict[str, str | None] = dict(self.cleaned_data.get("secrets") or {})
        for name in self.secret_names:
            if self.cleaned_data.get(REMOVE_PREFIX + name):
                changes[name] = None
            elif self.cleaned_data.get(REPLACE_PREFIX + name):
                changes[name] = self.cleaned_data[REPLACE_PREFIX + name]
        return changes

    def service_data(self) -> dict[str, Any]:
        """The keyword arguments of ``create_server`` / ``update_server``."""
        data = {name: self.cleaned_data[name] for name in SERVER_FIELDS}
        data["secrets"] = self.secret_changes()
        return data


class MaintenanceForm(forms.Form):
    on = forms.BooleanField(required=False)
    reason = forms.CharField(required=False, max_length=500)


# --- Try it -------------------------------------------------------------------------------
def schema_type(schema: Any) -> str:
    """The JSON type a property asks for: its ``type`` (the first that is not ``null``),
    the type of its ``anyOf``/``oneOf`` branches, ``string`` for a bare ``enum``, or
    ``""`` when the schema does not say."""
    if not isinstance(schema, dict):
        return ""
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((kind for kind in declared if kind != "null"), "null")
    if isinstance(declared, str):
        return declared
    for key in ("anyOf", "oneOf"):
        branches = [
            schema_type(branch) for branch in schema.get(key) or [] if isinstance(branch, dict)
        ]
        kinds = {kind for kind in branches if kind and kind != "null"}
        if len(kinds) == 1:
            return kinds.pop()
        if kinds:
            return "any"
    if "enum" in schema:
        values = schema["enum"]
        if values and all(isinstance(value, str) for value in values):
            return "string"
    return ""


def schema_enum(schema: Any) -> list | None:
    """The allowed values of a property, looking through ``anyOf``/``oneOf``."""
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("enum"), list):
        return schema["enum"]
    for key in ("anyOf", "oneOf"):
        for branch in schema.get(key) or []:
            values = schema_enum(branch)
            if values:
                return values
    return None


def schema_properties(schema: Any) -> list[dict]:
    """The top-level properties of an object schema, for a readable table: name, type,
    required, description, allowed values, default."""
    if not isinstance(schema, dict):
        return []
    required = set(schema.get("required") or [])
    properties = schema.get("properties") or {}
    if not isinstance(properties, dict):
        return []
    rows = []
    for name, prop in properties.items():
        prop = prop if isinstance(prop, dict) else {}
        kind = schema_type(prop)
        if kind == "array" and isinstance(prop.get("items"), dict):
            item_kind = schema_type(prop["items"])
            kind = f"array of {item_kind}" if item_kind else kind
        rows.append(
            {
                "name": name,
                "type": kind or "any",
                "required": name in required,
                "description": prop.get("description") or prop.get("title") or "",
                "enum": schema_enum(prop),
                "has_default": "default" in prop,
                "default": json.dumps(prop.get("default")),
            }
        )
    return rows


class JSONValueField(forms.CharField):
    """A JSON value typed into a textarea (objects, arrays, anything without a form)."""

    widget = forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"})

    def to_python(self, value):
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Enter valid JSON ({exc.msg} at line {exc.lineno}).") from None

    def prepare_value(self, value):
        if isinstance(value, str) or value is None:
            return value
        return json.dumps(value, indent=2)


class ToolCallForm(forms.Form):
    """One field per top-level property of a tool's input schema.

    ``arguments()`` gives the typed values: empty optional fields are left out (the
    tool's defaults apply), and an unchecked optional checkbox is ``false`` only when
    the schema's default is ``true``.
    """

    prefix = "arguments"

    def __init__(self, *args, schema: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.schema = schema if isinstance(schema, dict) else {}
        self.kinds: dict[str, str] = {}
        self.choices: dict[str, dict[str, Any]] = {}
        self.defaults: dict[str, Any] = {}
        required = self.schema.get("required")
        self.required = set(required) if isinstance(required, list) else set()
        properties = self.schema.get("properties")
        for name, prop in (properties or {}).items() if isinstance(properties, dict) else []:
            prop = prop if isinstance(prop, dict) else {}
            field, kind = self._field_for(name, prop)
            field.label = name
            field.help_text = prop.get("description") or prop.get("title") or ""
            if "default" in prop:
                self.defaults[name] = prop["default"]
                field.initial = (
                    json.dumps(prop["default"], indent=2) if kind == "json" else prop["default"]
                )
            self.fields[name] = field
            self.kinds[name] = kind

    def _field_for(self, name: str, prop: dict) -> tuple[forms.Field, str]:
        required = name in self.required
        kind = schema_type(prop)
        enum = schema_enum(prop)
        if enum and all(isinstance(value, str | int | float) for value in enum):
            self.choices[name] = {str(value): value for value in enum}
            choices = [(str(value), str(value)) for value in enum]
            if not required:
                choices.insert(0, ("", "—"))
            return forms.ChoiceField(choices=choices, required=required), "enum"
        if kind == "string":
            return forms.CharField(required=required, strip=False), kind
        if kind == "integer":
            return forms.IntegerField(required=required), kind
        if kind == "number":
            widget = forms.NumberInput(attrs={"step": "any"})
            return forms.FloatField(required=required, widget=widget), kind
        if kind == "boolean":
            return forms.BooleanField(required=False), kind
        return JSONValueField(required=required), "json"

    def rows(self):
        """``(bound field, JSON type, required)`` per property, for the template."""
        return [(self[name], self.kinds[name], name in self.required) for name in self.fields]

    def arguments(self) -> dict[str, Any]:
        """The arguments to send, typed as the schema asks."""
        arguments: dict[str, Any] = {}
        for name, kind in self.kinds.items():
            value = self.cleaned_data.get(name)
            if kind == "boolean":
                if value or name in self.required or self.defaults.get(name) is True:
                    arguments[name] = bool(value)
                continue
            if value in (None, "") and name not in self.required:
                continue
            if kind == "enum":
                value = self.choices[name][value]
            arguments[name] = value
        return arguments
