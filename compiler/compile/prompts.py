"""Render a Task into chat messages with the Jinja2 templates in templates/.

Taxonomy content is untrusted: templates run in a SandboxedEnvironment and taxonomy text is only
ever passed as variables, so `{{ 7*7 }}` in a task description is printed, not evaluated.
StrictUndefined turns a template typo into an error at plan time instead of an empty prompt.
Each template defines a `system` and a `user` block; both are rendered from one context.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from compiler.errors import KdcError
from compiler.compile.plan import Task
from compiler.resources import data_dir


@dataclass(frozen=True)
class Rendered:
    messages: list[dict[str, str]]
    template: str
    template_sha256: str


def _json(value) -> str:
    """One-line JSON for examples (ensure_ascii off: prompts keep the expert's characters)."""
    return json.dumps(value, ensure_ascii=False)


class Prompts:
    """The template set: loaded once, hashed (the hash is part of every cache key)."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory or data_dir("templates")
        self.env = SandboxedEnvironment(loader=FileSystemLoader(str(self.directory)), undefined=StrictUndefined,
                                        autoescape=False, keep_trailing_newline=False)
        self.env.filters["json"] = _json
        self._cache: dict[str, tuple[object, str]] = {}

    def _load(self, name: str):
        if name not in self._cache:
            path = self.directory / name
            if not path.is_file():
                raise KdcError(f"template {name} not found in {self.directory}")
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            try:
                tmpl = self.env.get_template(name)
            except TemplateError as exc:
                raise KdcError(f"template {name} is broken: {exc}", path=str(path),
                               line=getattr(exc, "lineno", None)) from None
            for block in ("system", "user"):
                if block not in tmpl.blocks:
                    raise KdcError(f"template {name} has no `{block}` block", path=str(path))
            self._cache[name] = (tmpl, sha)
        return self._cache[name]

    def sha256(self, name: str) -> str:
        return self._load(name)[1]

    def render(self, task: Task) -> Rendered:
        return self.render_vars(task.template, task.variables, task.node_id)

    def render_vars(self, template: str, variables: dict, who: str) -> Rendered:
        """Any template with its variables (the augmentation stage renders without a Task)."""
        tmpl, sha = self._load(template)
        try:
            ctx = tmpl.new_context(dict(variables))
            system = "".join(tmpl.blocks["system"](ctx)).strip()
            user = "".join(tmpl.blocks["user"](ctx)).strip()
        except TemplateError as exc:
            raise KdcError(f"template {template} failed for {who}: {exc}",
                           hint="a template refers to a variable the plan does not provide") from None
        return Rendered([{"role": "system", "content": system}, {"role": "user", "content": user}],
                        template, sha)
