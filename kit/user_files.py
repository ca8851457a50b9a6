"""The user's own files the config names (env.py, tools.yaml, a tool's module, a config=FILE), read with
one-line errors: a missing file, a syntax error or an import that raises names the file and the fix."""

import importlib.util
from pathlib import Path

import yaml

from kit.errors import KitError


def import_file(path: str, what: str):
    """A Python file the config names (the task, a tool's module), imported as a module named after it."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except KitError:  # the file's own one-line error (a VerlDataset it loads, say)
        raise
    except Exception as err:
        raise KitError(f"{what} '{path}' failed to import ({type(err).__name__}: {err}): fix it") from None
    return module


def read_yaml(path: str, what: str, fix: str):
    """A YAML file's content ({} when empty), or a one-line error naming `what` file it is; `fix` when missing."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (FileNotFoundError, IsADirectoryError):
        raise KitError(f"{what} '{path}' not found: {fix}") from None
    except UnicodeDecodeError:
        raise KitError(f"{what} '{path}' is not UTF-8 text: save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise KitError(f"{what} '{path}' is not valid YAML ({str(err).splitlines()[0]}): fix its syntax") from None
