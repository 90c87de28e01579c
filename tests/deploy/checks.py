"""What the deployment tests share: is an argv a real `pagemill` command, is a variable a
real setting. Both read the code at test time, so a renamed option or setting fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import typer

from app.cli import cli
from app.processes import worker_command
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def setting_names() -> set[str]:
    """Every PAGEMILL_* variable the settings object reads."""
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def check_settings(values: dict[str, str], where: str) -> None:
    """Every variable is a setting, and together they make a valid Settings."""
    unknown = sorted(set(values) - setting_names())
    assert not unknown, f"{where}: not pagemill settings: {unknown}"
    prefix = len(Settings.model_config.get("env_prefix", ""))
    Settings(**{name[prefix:].lower(): value for name, value in values.items()})


def check_pagemill_argv(argv: list[str], where: str) -> None:
    """argv runs the `pagemill` script and parses as one of its commands and options."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("pagemill") == "app.cli:main", "the pagemill script moved"
    assert argv and argv[0] == "pagemill", f"{where}: {argv} is not a pagemill command"
    group: Any = typer.main.get_command(cli)  # Typer's own copy of click's Group
    assert len(argv) > 1, f"{where}: no subcommand"
    command = group.get_command(typer.Context(group), argv[1])
    assert command is not None, f"{where}: no command `pagemill {argv[1]}`"
    try:
        # Parses and converts every argument and option without running the command.
        ctx = command.make_context(f"pagemill {argv[1]}", list(argv[2:]))
    except Exception as exc:  # click's UsageError, BadParameter, ...
        raise AssertionError(f"{where}: {argv}: {exc}") from None
    if argv[1] == "worker":
        # The role is checked inside the command: ask the function that builds workers.
        worker_command(ctx.params["role"], Settings())


def is_pagemill(argv: list[str] | None) -> bool:
    return bool(argv) and argv[0] == "pagemill"  # type: ignore[index]


def as_argv(command: Any) -> list[str] | None:
    """A compose `command` / healthcheck `test` or a probe's exec command, as argv."""
    if command is None:
        return None
    if isinstance(command, str):
        return command.split()
    argv = [str(part) for part in command]
    if argv and argv[0] in ("CMD", "CMD-SHELL"):
        return argv[1:] if argv[0] == "CMD" else argv[1].split()
    return argv


def check_celery_apps(command: str, where: str) -> None:
    """`celery -A module:attribute` in a health check names a real Celery app."""
    import importlib

    for module, attribute in re.findall(r"-A\s+([\w.]+):(\w+)", command):
        app = getattr(importlib.import_module(module), attribute)
        assert hasattr(app, "control"), f"{where}: {module}:{attribute} is no Celery app"
