"""The model registry: every family registers itself with one decorator.

A family is a function ``build(layers, spec, input_shape, n_out) -> nn.Module`` written once
against a layer factory (``layers.py``); the decorator records its name template (from which its
name, the pattern users see and the regex of the names it accepts all follow), its paper, the
``model.*`` options it takes with their defaults, and which of its weight matrices count in the
default average rank. :func:`resolve` turns a :class:`~rankbias.config.ModelConfig` into a
:class:`ModelSpec`; every mistake is a ``ValueError`` naming the config key.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..config import ModelConfig, check_values

OPTIONS = ("width", "bias", "activation", "dropout", "mlp_dim", "bn_detach_var")


@dataclass(frozen=True)
class Family:
    name: str  # e.g. "mlp-bn"
    pattern: str  # the name as users write it, e.g. "mlp-bn-L-H"
    regex: re.Pattern  # the lower-case names it accepts, sizes in named groups
    build: Callable
    paper: str
    description: str
    defaults: dict  # option -> default value, for the model.* options this family takes
    uncounted: tuple[str, ...]  # glob patterns of matrices left out of the default average rank
    classifier: str  # the final layer's name
    loop_on_cpu: bool = False  # CohortModel's "auto" strategy: members one by one on a CPU


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: family, the sizes in its name, and every option's value (``None``: an
    option the family does not take)."""

    family: str
    depth: int | None = None
    width: int | None = None
    bias: bool | None = None
    activation: str | None = None
    dropout: float | None = None
    mlp_dim: int | None = None
    bn_detach_var: bool = False


FAMILIES: dict[str, Family] = {}

SIZES = ("depth", "width")  # the sizes a name may carry (ModelSpec fields)
_PLACEHOLDER = re.compile(r"\{(\w+):(\w+)\}")


def parse_template(template: str) -> tuple[str, str, re.Pattern]:
    """A family's name template → its name, the pattern users see, the regex of the names it accepts.

    ``"mlp-bn-{depth:L}-{width:H}"`` → ``"mlp-bn"``, ``"mlp-bn-L-H"`` and a regex matching
    ``mlp-bn-10-100`` with the groups ``depth=10``, ``width=100``. A placeholder ``{size:LETTER}``
    is an integer in the name (``size`` one of :data:`SIZES`) shown to users as ``LETTER``; the
    family's name is the text before the first placeholder (the whole template if none)."""
    literals, pattern, regex, position = [], [], [], 0
    for match in _PLACEHOLDER.finditer(template):
        literals.append(template[position : match.start()])
        pattern += [literals[-1], match[2]]
        regex += [re.escape(literals[-1]), rf"(?P<{match[1]}>\d+)"]
        position = match.end()
    literals.append(template[position:])
    pattern.append(literals[-1])
    regex.append(re.escape(literals[-1]))
    sizes = [m[1] for m in _PLACEHOLDER.finditer(template)]
    text = "".join(literals)  # names are matched in lower case: a bug in rankbias otherwise
    assert (
        set(sizes) <= set(SIZES)
        and len(set(sizes)) == len(sizes)
        and text == text.lower()
        and not set("{}") & set(text)
    ), template
    name = literals[0].rstrip("-") if sizes else template
    return name, "".join(pattern), re.compile("".join(regex))


def register(template: str, paper: str, *, uncounted=(), classifier: str, loop_on_cpu: bool = False, **defaults):
    """Register the family built by the decorated function (its docstring describes it) under the
    name ``template`` (:func:`parse_template`: ``"mlp-bn-{depth:L}-{width:H}"``, ``"vgg16"``)."""
    name, pattern, regex = parse_template(template)

    def decorate(build: Callable) -> Callable:
        doc = (build.__doc__ or "").strip().splitlines()
        unknown = set(defaults) - set(OPTIONS)
        assert not unknown, f"{pattern}: unknown option(s) {unknown}"  # a bug in rankbias
        description = doc[0] if doc else ""
        FAMILIES[name] = Family(
            name, pattern, regex, build, paper, description, defaults, tuple(uncounted), classifier, loop_on_cpu
        )
        return build

    return decorate


def _known() -> str:
    return "; ".join(f"{f.pattern} ({f.description})" for f in FAMILIES.values())


def family_of(name: str) -> tuple[Family, dict]:
    for family in FAMILIES.values():
        match = family.regex.fullmatch(name.lower())
        if match:
            return family, {k: int(v) for k, v in match.groupdict().items() if v is not None}
    raise ValueError(f"unknown model {name!r}. Known: {_known()}")


def resolve(config) -> ModelSpec:
    """``ModelConfig`` → :class:`ModelSpec`; a ``ValueError`` ``"model.<key>: ..."`` on bad input."""
    try:
        family, sizes = family_of(config.name)
    except ValueError as exc:
        raise ValueError(f"model.name: {exc}") from None
    if any(v < 1 for v in sizes.values()):
        raise ValueError(f"model.name: {config.name!r}: depth and width must be at least 1")
    options = dict(family.defaults)
    for key in OPTIONS:
        value = getattr(config, key, None)
        if value is None or (key == "bn_detach_var" and value is False):
            continue
        if key in sizes:
            raise ValueError(f"model.{key}: the {key} of {config.name!r} is part of its name ({family.pattern})")
        if key not in family.defaults:
            takes = ", ".join(f"model.{k}" for k in family.defaults) or "none"
            raise ValueError(f"model.{key}: does not apply to {family.pattern} (its options: {takes})")
        options[key] = value
    _check_options(options)
    width = sizes.get("width", options.pop("width", None))
    return ModelSpec(family.name, sizes.get("depth"), width, **options)


def _check_options(options: dict) -> None:
    # the ranges and choices declared on ModelConfig's fields (a ValueError)
    check_values(ModelConfig, options, "model")


def is_counted(family: Family, matrix: str) -> bool:
    return matrix != family.classifier and not any(fnmatch.fnmatchcase(matrix, p) for p in family.uncounted)


def list_models() -> list[dict]:
    """Every family: its name pattern, what it is, its paper, its options with their defaults."""
    return [
        {
            "pattern": f.pattern,
            "description": f.description,
            "paper": f.paper,
            "options": dict(f.defaults),
            "not counted": [f.classifier, *f.uncounted],
        }
        for f in FAMILIES.values()
    ]
