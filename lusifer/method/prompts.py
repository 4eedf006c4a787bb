"""Prompt sets: Jinja2 templates on disk, with a version and a content hash stored per run."""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined, Template, TemplateError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lusifer.core.errors import ConfigurationError

TEMPLATE_NAMES = (
    "profile_system",
    "profile_first",
    "profile_update",
    "rating_system",
    "rating_user",
    "reask",
)

# A context with every variable a template may use; rendering it at load time turns a
# template that names an undefined variable into a configuration error before any LLM call.
_SAMPLE_RATED = [{"item_id": 1, "info": "Title: Sample; Year: 1995", "rating": 4}]
_SAMPLE_CONTEXT: dict[str, Any] = {
    "user_info": "Age: 30; Gender: F; Occupation: writer",
    "profile": "Likes sample films.",
    "ratings": _SAMPLE_RATED,
    "recent": _SAMPLE_RATED,
    "items": [{"item_id": 2, "info": "Title: Other; Year: 1996"}],
    "missing": [2],
    "problems": ["item 2 was not rated"],
}


# The labels of an item text's short fields (``lusifer.data.features.item_info``). A model
# tells "Heat; 1995; Action, Crime" apart as well as the labelled form, which costs 7 more
# tokens per item; the overview keeps its label and is never touched.
_SHORT_LABELS = re.compile(r"(?:^|(?<=; ))(?:Title|Year|Genres): ")
_OVERVIEW = "; Overview: "


def unlabelled(text: object) -> str:
    """Drop the Title/Year/Genres labels of an item text; the rest, overview included, stays."""
    head, overview, tail = str(text).partition(_OVERVIEW)
    return _SHORT_LABELS.sub("", head) + overview + tail


def untrusted(text: object) -> str:
    """Neutralise tag delimiters in data text so it cannot close or open an ``<item>`` block."""
    return str(text).replace("<", "‹").replace(">", "›")


@dataclass(frozen=True)
class PromptSet:
    """A named, versioned set of templates."""

    name: str
    version: str
    description: str
    chunk_size: int
    directory: Path
    sources: dict[str, str]
    content_hash: str

    def render(self, template: str, **context: Any) -> str:
        """Render one template; an undefined variable is a configuration error."""
        try:
            text = _compiled(self.sources[template]).render(**context).strip()
        except UndefinedError as err:
            raise ConfigurationError(
                f"prompt template {self.name}/{template}.j2 uses an undefined variable "
                f"({err.message}); use only: {', '.join(sorted(_SAMPLE_CONTEXT))}"
            ) from None
        except SecurityError as err:
            raise ConfigurationError(
                f"prompt template {self.name}/{template}.j2 reaches outside its data ({err}); "
                "templates may use their variables and filters only"
            ) from None
        except TemplateError as err:
            # Templates travel through the database: a worker of another version may lack a
            # filter the coordinator's templates use.
            raise ConfigurationError(
                f"prompt template {self.name}/{template}.j2 cannot be rendered here ({err}); "
                "run workers and coordinator of the same Lusifer version"
            ) from None
        if not text:
            raise ConfigurationError(
                f"prompt template {self.name}/{template}.j2 rendered an empty prompt; fix it"
            )
        return text


@lru_cache(maxsize=128)
def _compiled(source: str) -> Template:
    # Compiling costs more than rendering; a compiled template is safe to share between threads.
    return _environment().from_string(source)


def _environment() -> Environment:
    # Sandboxed: templates are data (a --prompts-dir, or rows of the database that every worker
    # renders), so `{{ cycler.__init__.__globals__.os.system(...) }}` must not run anything.
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
    )
    env.filters["untrusted"] = untrusted
    env.filters["unlabelled"] = unlabelled
    return env


def builtin_prompts_dir() -> Path:
    """The directory of the prompt sets that ship with Lusifer."""
    return Path(str(resources.files("prompts")))


def available_prompt_sets(prompts_dir: Path | None = None) -> list[str]:
    """Names of the prompt sets found in a directory."""
    base = prompts_dir or builtin_prompts_dir()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "prompt_set.toml").is_file())


def load_prompt_set(name: str, prompts_dir: Path | None = None) -> PromptSet:
    """Load, check and hash a prompt set by name."""
    base = prompts_dir or builtin_prompts_dir()
    directory = base / name
    meta_path = directory / "prompt_set.toml"
    if not meta_path.is_file():
        known = ", ".join(available_prompt_sets(prompts_dir)) or "none"
        raise ConfigurationError(f"unknown prompt set {name!r} in {base}; choose one of: {known}")
    try:
        meta = tomllib.loads(meta_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigurationError(f"{meta_path} is not valid TOML ({err}); fix the file") from None
    sources: dict[str, str] = {}
    for template in TEMPLATE_NAMES:
        path = directory / f"{template}.j2"
        if not path.is_file():
            raise ConfigurationError(
                f"prompt set {name!r} lacks {template}.j2 in {directory}; add the template"
            )
        sources[template] = path.read_text(encoding="utf-8")
    digest = hashlib.sha256()
    for template in TEMPLATE_NAMES:
        digest.update(f"{template}\0{sources[template]}\0".encode())
    digest.update(meta_path.read_bytes())
    chunk_size = int(meta.get("chunk_size", 20))
    if chunk_size < 1:
        raise ConfigurationError(f"{meta_path}: chunk_size must be at least 1")
    prompt_set = PromptSet(
        name=name,
        version=str(meta.get("version", "0")),
        description=str(meta.get("description", "")),
        chunk_size=chunk_size,
        directory=directory,
        sources=sources,
        content_hash=digest.hexdigest()[:16],
    )
    for template in TEMPLATE_NAMES:
        try:
            prompt_set.render(template, **_SAMPLE_CONTEXT)
        except TemplateError as err:
            raise ConfigurationError(
                f"prompt template {name}/{template}.j2 is invalid ({err}); fix the template"
            ) from None
    return prompt_set
