"""`python algorithm.py --help [KEY or prefix]`: the usage, examples, and every config key with its default and its
comment, read from config.yaml itself so the help cannot drift from it."""

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from kit.errors import KitError

USAGE = """\
usage: python algorithm.py [key.sub=value ...] [config=FILE]
       python algorithm.py --help [KEY or a prefix, e.g. inference]

Trains env.py's task with verl's workers (GRPO by default). Every key below can be set on the command line, OmegaConf
style; config=FILE lays a file of keys (an example's config.yaml) over config.yaml.

examples:
  python algorithm.py                                              # GRPO on the embedded SmolLM2-135M-Instruct
  python algorithm.py batch_size=8 training.actor.lr=5e-6          # any key
  python algorithm.py model_path=embedded:tiny steps_per_epoch=5   # a 2-layer model: a smoke run in seconds
  python algorithm.py config=examples/tool_use/config.yaml         # an example: multi-turn tool calls
"""
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_]\w*):(?P<value>[^#]*?)\s*(?:(?P<hash>#)\s?(?P<comment>.*))?$")
COMMENT_LINE = re.compile(r"^(?P<indent> *)#\s?(?P<comment>.*)$")


@dataclass
class Entry:
    key: str  # dotted, e.g. inference.engine; a section's key names the section
    default: str | None  # the value as config.yaml writes it; None for a section
    comment: str
    note: bool = False  # a comment line of its own inside a section: it heads the keys after it


def entries(path: str = "config.yaml") -> list[Entry]:
    """config.yaml's keys, sections and notes in file order. A comment continued on the next line (a line holding
    only a comment, in the same column as the key's) joins that key's comment."""
    result, parents, comment_column = [], [], None  # parents: (indent, name) of the open sections
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if match := KEY_LINE.match(line):
            indent = len(match["indent"])
            parents = [(i, name) for i, name in parents if i < indent]
            key = ".".join([name for _, name in parents] + [match["key"]])
            value = match["value"].strip()
            result.append(Entry(key, value if value else None, match["comment"] or ""))
            if not value:
                parents.append((indent, match["key"]))
            comment_column = line.index("#") if match["hash"] else None
        elif match := COMMENT_LINE.match(line):
            if comment_column is not None and len(match["indent"]) == comment_column:
                result[-1].comment += " " + match["comment"]
            elif parents:  # a note inside a section (comments before the first key are the file's header)
                result.append(Entry(".".join(name for _, name in parents), None, match["comment"], note=True))
                comment_column = None
    return result


def help_text(path: str = "config.yaml", prefix: str | None = None) -> str:
    """The usage and every key (or the keys under `prefix`, a key or a section), grouped by section."""
    all_entries = entries(path)
    shown = [e for e in all_entries if prefix is None or e.key == prefix or e.key.startswith(prefix + ".")]
    if not shown:
        keys = [e.key for e in all_entries if not e.note]
        close = difflib.get_close_matches(prefix, keys, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else "run python algorithm.py --help for them all"
        raise KitError(f"--help {prefix}: no config key or section of that name: {hint}")
    width = min(max(len(e.key) + len(e.default or "") for e in shown if e.default is not None) + 3, 48)
    section_comments = {e.key: e.comment for e in all_entries if e.default is None and not e.note}
    lines, current = [USAGE, f"config keys (from {path}): KEY = DEFAULT   what it does"], ""
    for e in shown:
        if e.default is None and not e.note:
            continue  # a section's header comes with its first key
        section = e.key if e.note else e.key.rpartition(".")[0]
        if section != current:
            comment = section_comments.get(section)
            lines.append(f"\n{section}:" + (f"  # {comment}" if comment else ""))
            current = section
        if e.note:
            lines.append(f"  # {e.comment}")
        else:
            lines.append(f"  {(e.key + ' = ' + e.default).ljust(width)} {e.comment}".rstrip())
    return "\n".join(lines).rstrip() + "\n"
