"""Write docs/configuration.md, the configuration reference, from the config schema.

    python docs/configuration.py           # rewrite docs/configuration.md
    python docs/configuration.py --check   # exit 1 when the page is not what the schema says

Every key of workflow/schemas/config.schema.yaml becomes a row: its path, what values it
takes (type, choices, bounds), its default and its description. Keys the schema leaves
undescribed take the comment written beside them in config.yaml. tests/test_docs.py runs
the check, so the page cannot drift from the schema.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
CONFIG = ROOT / "config.yaml"
PAGE = ROOT / "docs" / "configuration.md"

INTRO = """# Configuration reference

Generated from `workflow/schemas/config.schema.yaml` by `python docs/configuration.py`; a
test fails when the two disagree. The schema validates every config before any job starts
(an unknown key, a wrong type or a value out of bounds stops the run with one line naming
the key) and fills in the defaults below. `config.yaml` is the default study, commented;
a study of your own is a YAML file with the same keys, passed with `--configfile`.
`{family}` and `{run}` stand for the names you choose under `families:` and `runs:`.
"""


def config_comments(path: Path = CONFIG) -> dict[str, str]:
    """Comments of config.yaml by dotted key path; a comment continued on the next lines,
    indented past the key, is joined to it. `runs.default.x` is also filed as `runs.{run}.x`."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last: str | None = None
    for line in path.read_text().splitlines():
        key = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if key:
            indent, name, rest = len(key.group(1)), key.group(2), key.group(3)
            stack = [(i, n) for i, n in stack if i < indent] + [(indent, name)]
            dotted = ".".join(n for _, n in stack)
            last = None
            if "#" in rest:
                comments[dotted] = rest.split("#", 1)[1].strip()
                last = dotted
            inline = re.match(r"^\s*\{(.*)\}", rest)
            if inline:
                for part in inline.group(1).split(","):
                    sub = part.split(":", 1)[0].strip()
                    if sub and "#" in rest:
                        comments.setdefault(f"{dotted}.{sub}", "")
        elif last and re.match(r"^\s+#", line):
            comments[last] += " " + line.split("#", 1)[1].strip()
    for dotted in list(comments):
        if dotted.startswith("runs.default."):
            comments["runs.{run}." + dotted.removeprefix("runs.default.")] = comments[dotted]
    return {k: v for k, v in comments.items() if v}


def values(spec: dict[str, Any]) -> str:
    """What a key accepts, in words: type, choices, bounds."""
    if "enum" in spec:
        return " \\| ".join(f"`{v}`" for v in spec["enum"])
    if "const" in spec:
        return f"`{spec['const']}`"
    for alternative in ("anyOf", "oneOf"):
        if alternative in spec:
            return " or ".join(values(s) for s in spec[alternative])
    kind = spec.get("type", "")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    bounds = []
    for word, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                       ("exclusiveMaximum", "<"), ("maxLength", "length <=")):
        if word in spec:
            bounds.append(f"{sign} {spec[word]}")
    return f"{kind} {', '.join(bounds)}".strip() or "see description"


def rows(spec: dict[str, Any], path: str, defs: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows (key, values, default, description) for `spec` and every key under it."""
    if "$ref" in spec:
        spec = defs[spec["$ref"].rsplit("/", 1)[-1]]
    found: list[tuple[str, ...]] = []
    children = spec.get("properties", {})
    pattern = spec.get("additionalProperties")
    if path:
        default = spec.get("default")
        shown = "" if default is None or children or isinstance(pattern, dict) else f"`{default}`"
        found.append((f"`{path}`", values(spec) if not children else "mapping", shown,
                      " ".join(str(spec.get("description", "")).split())))
    for name, child in children.items():
        found += rows(child, f"{path}.{name}" if path else name, defs)
    if isinstance(pattern, dict):
        placeholder = {"families": "{family}", "runs": "{run}"}.get(path, "{name}")
        found += rows(pattern, f"{path}.{placeholder}", defs)
    return found


def page() -> str:
    schema = yaml.safe_load(SCHEMA.read_text())
    comments = config_comments()
    lines = [INTRO]
    for section, spec in schema["properties"].items():
        lines += [f"## `{section}`", "", "| key | values | default | meaning |",
                  "|---|---|---|---|"]
        for key, accepted, default, description in rows(spec, section, schema.get("$defs", {})):
            description = (description or comments.get(key.strip("`"), "")).replace("|", "\\|")
            lines.append(f"| {key} | {accepted} | {default} | {description} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = page()
    if args.check:
        if PAGE.exists() and PAGE.read_text() == text:
            return 0
        print(f"{PAGE} is out of date: run python docs/configuration.py", file=sys.stderr)
        return 1
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
